"""A real worker process (``ai-telemetry worker``) for the reliability tests, and its simulated fleet.

The worker runs as the command line runs it in production: its own process, configured by
environment variables (``AI_TELEMETRY_*``) and a TOML file of ``[[sources]]``, its output going to
a log file under the test's ``tmp_path``. Typical use::

    fleet = write_fleet_file(tmp_path / "fleet.toml", clusters=2, nodes=20)
    config = write_simulated_config(tmp_path / "sources.toml", fleet, poll_interval_seconds=5)
    with running_worker(tmp_path, database_url, config, token=TOKEN) as worker:
        httpx.post(worker.webhook_url, ...)
        worker.rss_mb(), worker.metrics(), worker.kill()

:func:`running_worker` always stops the process (SIGTERM, then SIGKILL) when the block ends, so a
failing test leaves nothing running. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool

from domain.models import AlertReceipt
from domain.settings import PROJECT_ROOT
from simulator.generate import generate_fleet, write_fleet
from tests.services import free_port

START_TIMEOUT_SECONDS = 120.0
"""Start-up includes the schema upgrade; a busy shared machine can make it slow."""
STOP_TIMEOUT_SECONDS = 30.0
"""SIGTERM lets the poll in progress finish (the scheduler shuts down with wait=True)."""
ENV_PREFIX = "AI_TELEMETRY_"


class WorkerFailed(RuntimeError):
    """The worker process exited or never became healthy; the message carries its log's tail."""


def write_fleet_file(path: Path, *, clusters: int, nodes: int, seed: int = 7) -> Path:
    """A generated fleet of ``nodes`` nodes of 8 GPUs over ``clusters`` clusters (20 x 1250: 10,000 GPUs)."""
    return write_fleet(generate_fleet(clusters=clusters, nodes=nodes, seed=seed), path)


def write_simulated_config(
    path: Path, fleet: Path, *, name: str = "fleet", poll_interval_seconds: float | None = None, seed: int = 42
) -> Path:
    """A sources file with one ``kind = "simulated"`` source reading ``fleet``."""
    lines = ["[[sources]]", f'name = "{name}"', 'kind = "simulated"', f'fleet = "{fleet}"', f"seed = {seed}"]
    if poll_interval_seconds is not None:
        lines.append(f"poll_interval_seconds = {poll_interval_seconds}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def count_alert_receipts(database_url: str) -> int:
    """Alert receipts stored in the database (one per distinct alert the receiver acknowledged)."""
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(AlertReceipt)).scalar_one()
    finally:
        engine.dispose()


def read_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used, in seconds (/proc/<pid>/stat); raises OSError once it is gone."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (VmRSS of /proc/<pid>/status); raises OSError once it is gone."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise OSError(f"no VmRSS for pid {pid}")


_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of metric ``name`` (exact sample name, e.g. ``..._total``) in Prometheus text format."""
    found = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match["name"] == name:
            found.append((dict(_LABEL.findall(match["labels"] or "")), float(match["value"])))
    return found


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample of ``name`` whose labels include ``labels``, or None if there is none."""
    for sample_labels, value in metric_samples(text, name):
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            return value
    return None


@dataclass
class WorkerProcess:
    """A running ``ai-telemetry worker``: its process, receiver URL and log file."""

    process: subprocess.Popen[bytes]
    url: str
    """``http://127.0.0.1:PORT``, the receiver (webhook, /healthz, /readyz, /metrics)."""
    log: Path
    token: str
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/webhooks/alertmanager"

    @property
    def headers(self) -> dict[str, str]:
        """Authorization (the static webhook token) and content type for webhook posts."""
        return {"authorization": f"Bearer {self.token}", "content-type": "application/json"}

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self, tail: int = 8000) -> str:
        """The last ``tail`` characters of the worker's output (stdout and stderr)."""
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-tail:]
        except OSError:
            return "(no log)"

    def wait_healthy(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Wait until ``/healthz`` answers 200; raise :class:`WorkerFailed` if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise WorkerFailed(f"worker exited with {self.process.returncode}:\n{self.log_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise WorkerFailed(f"worker not healthy after {timeout:.0f} s:\n{self.log_text()}")
            time.sleep(0.2)

    def get(self, path: str, timeout: float = 10) -> httpx.Response:
        """GET a path of the receiver (``/healthz``, ``/readyz``, ``/metrics``)."""
        return httpx.get(f"{self.url}{path}", timeout=timeout)

    def metrics(self, timeout: float = 10) -> str:
        """The worker's ``/metrics`` text (see :func:`metric_value`)."""
        response = self.get("/metrics", timeout=timeout)
        response.raise_for_status()
        return response.text

    def rss_mb(self) -> float:
        """The worker's resident memory in MB."""
        return read_rss_mb(self.pid)

    def cpu_seconds(self) -> float:
        """CPU time the worker has used so far (all its threads), in seconds."""
        return read_cpu_seconds(self.pid)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; the exit code (negative: the signal). Idempotent."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def kill(self) -> int:
        """SIGKILL now (no clean-up in the worker: a crash); the exit code. Idempotent."""
        if self.alive():
            self.process.kill()
        return self.process.wait(timeout=STOP_TIMEOUT_SECONDS)


def worker_command() -> list[str]:
    """The installed ``ai-telemetry`` script beside this interpreter, else the same entry point through ``-c``."""
    script = Path(sys.executable).with_name("ai-telemetry")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from ai_telemetry.cli import main; sys.exit(main())"]


def worker_environment(
    database_url: str, config: Path, token: str, port: int, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The process environment: this one without any ``AI_TELEMETRY_*`` it may carry, plus the worker's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(
        {
            f"{ENV_PREFIX}DATABASE_URL": database_url,
            f"{ENV_PREFIX}CONFIG": str(config),
            f"{ENV_PREFIX}RECEIVER_WEBHOOK_TOKEN": token,
            f"{ENV_PREFIX}RECEIVER_HOST": "127.0.0.1",
            f"{ENV_PREFIX}RECEIVER_PORT": str(port),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def start_worker(
    log_dir: Path,
    database_url: str,
    config: Path,
    *,
    token: str,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    wait: bool = True,
    name: str = "worker",
) -> WorkerProcess:
    """Start ``ai-telemetry worker`` (logging to ``log_dir/<name>.log``) and, with ``wait``, wait for /healthz.

    ``env`` adds or overrides environment variables (e.g. ``AI_TELEMETRY_DATABASE_POOL_SIZE``). The
    caller must :meth:`~WorkerProcess.stop` it; prefer :func:`running_worker`.
    """
    port = port or free_port()
    log = log_dir / f"{name}.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [*worker_command(), "worker"],
            cwd=PROJECT_ROOT,
            env=worker_environment(database_url, config, token, port, env),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    worker = WorkerProcess(process=process, url=f"http://127.0.0.1:{port}", log=log, token=token)
    if wait:
        try:
            worker.wait_healthy()
        except BaseException:
            worker.stop()
            raise
    return worker


@contextmanager
def running_worker(
    log_dir: Path,
    database_url: str,
    config: Path,
    *,
    token: str,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    name: str = "worker",
) -> Iterator[WorkerProcess]:
    """A healthy worker for the block; stopped (SIGTERM, SIGKILL fallback) when the block ends."""
    worker = start_worker(log_dir, database_url, config, token=token, port=port, env=env, name=name)
    try:
        yield worker
    finally:
        worker.stop()
