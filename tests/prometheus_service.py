"""A real Prometheus for tests (Debian's ``prometheus`` package) and simulated exporters for it to scrape.

Reusable by any test module that needs PromQL answered by the real thing (the collector, alerting):

    from tests.prometheus_service import running_prometheus, running_simulators, scrape_config

    with running_simulators(fleet_file, ["prod", "lab"]) as sims:           # ai-telemetry simulate x2
        configs = [scrape_config("prod", [sims[0].target]), scrape_config("lab", [sims[1].target])]
        with running_prometheus(tmp_path, configs, rule_files=[rules]) as prometheus:
            prometheus.wait_for('count(up == 1)', at_least=2)               # first scrape done
            prometheus.query("DCGM_FI_DEV_GPU_TEMP")                        # [(labels, value), ...]
            httpx.get(f"{prometheus.url}/api/v1/query", params=...)         # or talk to it directly

* :func:`running_prometheus` writes a temporary configuration (JSON, which is YAML), starts
  ``prometheus`` on a free loopback port with its own storage directory, waits until ``/-/ready``,
  and stops it afterwards (also on failure). The yielded :class:`PrometheusServer` can be stopped
  and started again on the same port and storage (a source restarted between polls), and
  reloaded after editing :attr:`PrometheusServer.config`. ``rule_files`` are recording/alerting
  rule files; ``alertmanager_url`` sends alerts to an Alertmanager; ``scrape_interval`` is 1 s by
  default so the first scrape lands within a second or two.
* :func:`running_simulators` starts one ``ai-telemetry simulate`` process per cluster name (``None``:
  the whole fleet with a ``cluster`` label on every series) on free ports and waits until each
  answers ``/healthz``.
* :func:`scrape_config` builds one ``scrape_configs`` entry; ``labels`` become target labels (for
  example ``{"cluster": "prod"}``, the way a hub's Prometheus labels each cluster's series).

When the ``prometheus`` binary is missing the tests are skipped loudly (failed when ``CI=true``);
``scripts/install-test-services`` installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.services import ServiceError, free_port, service_unavailable

START_TIMEOUT_SECONDS = 30.0
INSTALL_HINT = "run scripts/install-test-services (as root on Debian/Ubuntu: apt-get install prometheus)"


def find_prometheus() -> Path | None:
    """The ``prometheus`` binary on PATH (Debian installs /usr/bin/prometheus), or None."""
    found = shutil.which("prometheus")
    return Path(found) if found else None


def prometheus_or_skip() -> Path:
    """The binary, or skip (fail in CI) with the reason spelled out."""
    binary = find_prometheus()
    if binary is None:
        service_unavailable(f"the prometheus binary is not on PATH; {INSTALL_HINT}", service="Prometheus")
        raise AssertionError("unreachable")
    return binary


def scrape_config(
    job: str,
    targets: Sequence[str],
    *,
    labels: Mapping[str, str] | None = None,
    interval: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One ``scrape_configs`` entry scraping ``host:port`` targets at ``/metrics``."""
    group: dict[str, Any] = {"targets": list(targets)}
    if labels:
        group["labels"] = dict(labels)
    config: dict[str, Any] = {"job_name": job, "static_configs": [group], **extra}
    if interval:
        config["scrape_interval"] = interval
    return config


def labelled_targets(job: str, targets: Mapping[str, str], label: str = "cluster") -> dict[str, Any]:
    """A job with one target per label value: ``{"hub-a": "127.0.0.1:9401", ...}`` -> cluster="hub-a"."""
    groups = [{"targets": [target], "labels": {label: value}} for value, target in targets.items()]
    return {"job_name": job, "static_configs": groups}


def _wait_http(url: str, deadline: float, what: str, process: subprocess.Popen[bytes] | None, log: Path) -> None:
    last: str = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServiceError(f"{what} exited with {process.returncode}:\n{_tail(log)}")
        try:
            response = httpx.get(url, timeout=1.0)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.05)
    raise ServiceError(f"{what} did not become ready at {url} ({last}):\n{_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(encoding="utf-8", errors="replace")[-3000:]
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


@dataclass
class PrometheusServer:
    """A running (or stopped) test Prometheus. ``url`` is the HTTP API base URL."""

    binary: Path
    directory: Path
    port: int
    config: dict[str, Any]
    web_config: dict[str, Any] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        scheme = "https" if self.web_config and "tls_server_config" in self.web_config else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "prometheus.yml"

    @property
    def log_path(self) -> Path:
        return self.directory / "prometheus.log"

    def _write_config(self) -> None:
        self.config_path.write_text(json.dumps(self.config, indent=2), encoding="utf-8")
        if self.web_config is not None:
            (self.directory / "web.yml").write_text(json.dumps(self.web_config), encoding="utf-8")

    def start(self) -> None:
        """Start (or restart after :meth:`stop`) on the same port and storage; wait until ready."""
        if self.process is not None and self.process.poll() is None:
            return
        self._write_config()
        command = [
            str(self.binary),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ]
        if self.web_config is not None:
            command.append(f"--web.config.file={self.directory / 'web.yml'}")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory, start_new_session=True
            )
        if self.web_config is not None:  # cannot probe over TLS without the client's certificate
            self._wait_listening(time.monotonic() + START_TIMEOUT_SECONDS)
            return
        _wait_http(
            f"{self.url}/-/ready", time.monotonic() + START_TIMEOUT_SECONDS, "prometheus", self.process, self.log_path
        )

    def _wait_listening(self, deadline: float) -> None:
        import socket

        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServiceError(f"prometheus exited with {self.process.returncode}:\n{_tail(self.log_path)}")
            with suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.05)
        raise ServiceError(f"prometheus did not listen on {self.port}:\n{_tail(self.log_path)}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); its port and storage are kept for :meth:`start`."""
        if self.process is not None:
            _stop(self.process)

    def reload(self) -> None:
        """Rewrite the configuration from :attr:`config` and ask the server to reload it."""
        self._write_config()
        httpx.post(f"{self.url}/-/reload", timeout=10).raise_for_status()

    def query(self, promql: str, *, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """An instant query's vector as (labels, value) pairs."""
        params = {"query": promql}
        if at is not None:
            params["time"] = str(at)
        response = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=10)
        response.raise_for_status()
        body = response.json()
        return [(item["metric"], float(item["value"][1])) for item in body["data"]["result"]]

    def wait_for(self, promql: str, *, at_least: float = 1, timeout: float = 30.0) -> float:
        """Wait until ``promql`` answers one series with a value of at least ``at_least`` (e.g. a count)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                result = self.query(promql)
                last = result
                if result and result[0][1] >= at_least:
                    return result[0][1]
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.1)
        raise ServiceError(f"prometheus: {promql!r} did not reach {at_least} within {timeout:g} s (last: {last})")

    def wait_for_scrape(self, jobs: Sequence[str], targets: int, timeout: float = 30.0) -> None:
        """Wait until ``targets`` targets of ``jobs`` are up (the first scrape has landed)."""
        self.wait_for(f'count(up{{job=~"{"|".join(jobs)}"}} == 1)', at_least=targets, timeout=timeout)


@contextmanager
def running_prometheus(
    tmp_path: Path | None,
    scrape_configs: Sequence[Mapping[str, Any]],
    rule_files: Sequence[Path] = (),
    alertmanager_url: str | None = None,
    *,
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    web_config: Mapping[str, Any] | None = None,
    port: int | None = None,
) -> Iterator[PrometheusServer]:
    """Start a private Prometheus scraping ``scrape_configs``; stop it and remove its files afterwards.

    ``tmp_path``: where its configuration, storage and log live (a new temporary directory if None).
    ``web_config``: Prometheus' ``--web.config.file`` contents (TLS, client certificates, basic auth).
    """
    binary = prometheus_or_skip()
    own = tmp_path is None
    directory = Path(tempfile.mkdtemp(prefix="ai-telemetry-prometheus-")) if own else Path(tmp_path) / "prometheus"
    directory.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "scrape_configs": [dict(c) for c in scrape_configs],
    }
    if rule_files:
        config["rule_files"] = [str(Path(p).resolve()) for p in rule_files]
    if alertmanager_url:
        parts = urlsplit(alertmanager_url)
        manager: dict[str, Any] = {"scheme": parts.scheme or "http", "static_configs": [{"targets": [parts.netloc]}]}
        if parts.path.strip("/"):
            manager["path_prefix"] = parts.path
        config["alerting"] = {"alertmanagers": [manager]}
    server = PrometheusServer(
        binary, directory, port or free_port(), config, dict(web_config) if web_config is not None else None
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if own:
            shutil.rmtree(directory, ignore_errors=True)


@dataclass
class SimulatorProcess:
    """One ``ai-telemetry simulate`` exporter."""

    cluster: str | None
    port: int
    process: subprocess.Popen[bytes]

    @property
    def target(self) -> str:
        """``host:port``, as a scrape config names it."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}/metrics"

    def stop(self) -> None:
        _stop(self.process)


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("ai-telemetry")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from ai_telemetry.cli import main; sys.exit(main())"]


@contextmanager
def running_simulators(
    fleet: Path | None, clusters: Sequence[str | None], *, seed: int = 42, attempts: int = 3
) -> Iterator[list[SimulatorProcess]]:
    """One simulated dcgm-exporter process per entry of ``clusters`` (None: every cluster, labelled).

    The processes start side by side (each takes a second or two to import), then each is waited for.
    """
    with running_exporters([(fleet, cluster) for cluster in clusters], seed=seed, attempts=attempts) as started:
        yield started


@contextmanager
def running_exporters(
    specs: Sequence[tuple[Path | None, str | None]], *, seed: int = 42, attempts: int = 3
) -> Iterator[list[SimulatorProcess]]:
    """Like :func:`running_simulators`, with a fleet file per process: ``[(fleet, cluster or None), ...]``."""
    with tempfile.TemporaryDirectory(prefix="ai-telemetry-simulate-") as logs:
        started: list[SimulatorProcess] = []
        try:
            started = [
                _launch(fleet, cluster, seed, Path(logs) / f"{i}.log") for i, (fleet, cluster) in enumerate(specs)
            ]
            for i, (fleet, cluster) in enumerate(specs):
                log = Path(logs) / f"{i}.log"
                for attempt in range(1, attempts + 1):
                    try:
                        _wait_http(
                            f"http://127.0.0.1:{started[i].port}/healthz",
                            time.monotonic() + START_TIMEOUT_SECONDS,
                            f"ai-telemetry simulate ({cluster or 'all clusters'})",
                            started[i].process,
                            log,
                        )
                        break
                    except ServiceError:
                        started[i].stop()
                        if attempt == attempts:  # another process may have taken the port: try a few
                            raise
                        started[i] = _launch(fleet, cluster, seed, log)
            yield started
        finally:
            for simulator in started:
                simulator.stop()


def _launch(fleet: Path | None, cluster: str | None, seed: int, log: Path) -> SimulatorProcess:
    port = free_port()
    command = [*_cli(), "simulate", "--port", str(port), "--seed", str(seed)]
    if fleet is not None:
        command += ["--fleet", str(fleet)]
    if cluster is not None:
        command += ["--cluster", cluster]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return SimulatorProcess(cluster, port, process)
