"""Throwaway Alertmanager and Prometheus for tests, run from Debian's binaries on loopback ports.

``running_alertmanager(config)`` and ``running_prometheus(...)`` start a private instance in a
temporary directory (HA gossip off, storage in the directory), wait until it answers ``/-/ready``
and stop it afterwards, also when the test fails. ``scripts/install-test-services``
(``ensure_alertmanager``) installs ``prometheus-alertmanager`` (with ``amtool``) and ``prometheus``
(with ``promtool``). A missing binary skips loudly, or fails with ``CI=true``.

The Prometheus runner is deliberately minimal; it is to be replaced by ``tests/prometheus_service.py``
(the Prometheus source's test service) once that lands.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest
import yaml

from domain.settings import PROJECT_ROOT
from tests.services import free_port, in_ci

ALERTMANAGER_DIR = PROJECT_ROOT / "alertmanager"
RULES_FILE = ALERTMANAGER_DIR / "gpu-rules.yml"
START_TIMEOUT_SECONDS = 30
INSTALL_HINT = (
    "run scripts/install-test-services (as root on Debian: apt-get install prometheus-alertmanager prometheus)"
)
TOOLS = {
    "alertmanager": ("prometheus-alertmanager", "alertmanager"),
    "amtool": ("amtool",),
    "prometheus": ("prometheus",),
    "promtool": ("promtool",),
}


class ServiceError(RuntimeError):
    """A server did not start; the message carries its log."""


def find_tool(name: str) -> str | None:
    for candidate in TOOLS[name]:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def tool_or_skip(name: str) -> str:
    """The binary's path; skip (fail in CI) with the reason spelled out when it is missing."""
    found = find_tool(name)
    if found is None:
        reason = f"{name} not found on PATH; {INSTALL_HINT}"
        if in_ci():
            pytest.fail(f"{name} is required in CI: {reason}", pytrace=False)
        pytest.skip(f"ALERTING NOT TESTED: {reason}")
    return found


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    last: str = "no answer"
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServiceError(f"{what} exited with {process.returncode}:\n{_tail(log)}")
            try:
                response = client.get(f"{url}/-/ready")
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.1)
    raise ServiceError(f"{what} at {url} not ready after {START_TIMEOUT_SECONDS}s ({last}):\n{_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-4000:]
    except OSError:
        return "(no log)"


@contextmanager
def _running(command: Sequence[str], url: str, base: Path, what: str) -> Iterator[str]:
    log = base / f"{what}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=base, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(url, process, log, what)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@contextmanager
def running_alertmanager(config: dict[str, object], *, binary: str | None = None) -> Iterator[str]:
    """An Alertmanager with ``config``; yields its base URL (``http://127.0.0.1:PORT``)."""
    binary = binary or tool_or_skip("alertmanager")
    base = Path(tempfile.mkdtemp(prefix="ai-telemetry-am-"))
    try:
        config_file = base / "alertmanager.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        command = [
            binary,
            f"--config.file={config_file}",
            f"--storage.path={base / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=info",
        ]
        with _running(command, f"http://127.0.0.1:{port}", base, "alertmanager") as url:
            yield url
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def running_prometheus(
    *,
    targets: Sequence[str],
    rule_files: Sequence[Path] = (),
    alertmanager: str | None = None,
    interval: str = "1s",
    binary: str | None = None,
) -> Iterator[str]:
    """A Prometheus scraping ``targets`` (host:port) and evaluating ``rule_files`` every ``interval``,
    sending alerts to ``alertmanager`` (a base URL); yields its base URL. Minimal: see the module doc."""
    binary = binary or tool_or_skip("prometheus")
    base = Path(tempfile.mkdtemp(prefix="ai-telemetry-prom-"))
    try:
        config: dict[str, object] = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": "dcgm", "static_configs": [{"targets": list(targets)}]}],
        }
        if alertmanager is not None:
            config["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": [alertmanager.removeprefix("http://")]}]}]
            }
        config_file = base / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        command = [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={base / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=info",
        ]
        with _running(command, f"http://127.0.0.1:{port}", base, "prometheus") as url:
            yield url
    finally:
        with suppress(OSError):
            shutil.rmtree(base, ignore_errors=True)
