"""The real chain: simulated dcgm-exporter ▸ Prometheus with the shipped rules ▸ Alertmanager with the
shipped oauth2 configuration (client credentials against the Keycloak stand-in) ▸ the worker's receiver
▸ a workload ▸ a span at an OTLP/HTTP endpoint that decodes the protobuf.

Prometheus and Alertmanager are Debian's, on loopback ports, evaluating and grouping every second;
the simulator's clock starts once everything is up, so the workload starts, hits an XID error and
stops while the test watches. About half a minute.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
import yaml
from sqlalchemy import Engine
from sqlmodel import Session, select

from domain.models import AlertReceipt, Workload
from domain.settings import Settings
from simulator import load_fleet, make_server
from tests.alertmanager_service import (
    ALERTMANAGER_DIR,
    RULES_FILE,
    running_alertmanager,
    running_prometheus,
    tool_or_skip,
)
from tests.keycloak_standin import keycloak_standin
from tests.otlp_endpoint import otlp_endpoint
from tests.services import free_port
from worker.receiver import create_receiver_app
from worker.tracing import unix_nanos

FLEET = Path(__file__).parent / "data" / "alertmanager" / "fleet.toml"
CLIENT_ID, CLIENT_SECRET = "ai-telemetry-alertmanager", "alertmanager-client-secret"
T = TypeVar("T")


class FleetClock:
    """The simulator's clock: the fleet's epoch until started, then epoch + seconds since start."""

    def __init__(self, epoch: datetime) -> None:
        self.epoch = epoch
        self._started: float | None = None

    def start(self) -> None:
        self._started = time.monotonic()

    def __call__(self) -> datetime:
        if self._started is None:
            return self.epoch
        return self.epoch + timedelta(seconds=time.monotonic() - self._started)


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """The app under uvicorn in a thread on a loopback port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="receiver", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the receiver did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextmanager
def simulated_exporter(clock: FleetClock) -> Iterator[str]:
    server = make_server(load_fleet(FLEET), port=0, clock=clock)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="dcgm-exporter", daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"{host!s}:{port}"
    finally:
        server.shutdown()
        server.server_close()


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def alertmanager_config(receiver: str, token_url: str, secret_file: Path) -> dict[str, Any]:
    """The shipped oauth2 variant, pointed at this test's receiver and realm, with 1 s group timers."""
    config = yaml.safe_load((ALERTMANAGER_DIR / "alertmanager.yml").read_text())
    [route] = config["route"]["routes"]
    route.update(group_wait="1s", group_interval="1s")
    webhook = next(r for r in config["receivers"] if r["name"] == route["receiver"])["webhook_configs"][0]
    webhook["url"] = f"{receiver}/webhooks/alertmanager"
    webhook["http_config"]["oauth2"].update(
        client_id=CLIENT_ID, token_url=token_url, client_secret_file=str(secret_file)
    )
    return config


def sessions(engine: Engine) -> list[Workload]:
    with Session(engine) as db:
        return list(db.exec(select(Workload)))


def test_a_real_alert_opens_and_closes_a_session_that_arrives_as_a_span(
    tmp_path: Path, sqlite_engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    tool_or_skip("alertmanager")
    tool_or_skip("prometheus")
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(CLIENT_SECRET)
    fleet = load_fleet(FLEET)
    assert fleet.epoch is not None
    clock = FleetClock(fleet.epoch)
    with ExitStack() as stack:
        realm = stack.enter_context(keycloak_standin(audience="ai-telemetry-receiver"))
        realm.add_client(CLIENT_ID, CLIENT_SECRET)
        otlp = stack.enter_context(otlp_endpoint())
        settings = make_settings(
            sqlite_engine,
            keycloak={"url": realm.base_url, "realm": realm.realm},
            otel={"endpoint": otlp.url},
        )
        receiver = stack.enter_context(serving(create_receiver_app(settings, sqlite_engine)))
        exporter = stack.enter_context(simulated_exporter(clock))
        alertmanager = stack.enter_context(
            running_alertmanager(alertmanager_config(receiver, realm.token_url, secret_file))
        )
        stack.enter_context(running_prometheus(targets=[exporter], rule_files=[RULES_FILE], alertmanager=alertmanager))
        clock.start()

        opened = wait_until(lambda: [s for s in sessions(sqlite_engine) if s.ended_at is None], 45, "a session")
        closed = wait_until(
            lambda: [s for s in sessions(sqlite_engine) if s.ended_at is not None], 60, "the session to close"
        )
        [span] = otlp.wait_for(1, 30)

    assert realm.token_requests >= 1  # Alertmanager fetched a Keycloak token with the client credentials
    [session] = closed
    assert [s.id for s in opened] == [session.id]
    assert (session.cluster, session.namespace, session.pod, session.container) == (
        "e2e-prod",
        "ml-team-e2e",
        "train-e2e-0",
        "trainer",  # normalised from OpenShift's exported_* labels
    )
    gpu = next(g for g in fleet.gpus() if g.node == "e2e-gpu-01" and g.index == 1)
    assert (session.gpu_uuid, session.node, session.source) == (gpu.uuid, "e2e-gpu-01", "alert")
    assert session.gpu_model == "NVIDIA A100-SXM4-80GB"
    assert session.ended_at is not None
    assert 5 <= (session.ended_at - session.started_at).total_seconds() <= 25  # the workload ran 11 s
    assert [e["name"] for e in session.events] == ["gpu.xid_error"]
    assert session.events[0]["attributes"]["gpu.xid.code"] == 79

    assert span.trace_id == session.trace_id
    assert span.name == "gpu.workload" and span.parent_span_id == ""
    assert (span.start_unix_nano, span.end_unix_nano) == (unix_nanos(session.started_at), unix_nanos(session.ended_at))
    assert {
        k: span.attributes[k]
        for k in (
            "k8s.cluster.name",
            "k8s.namespace.name",
            "k8s.pod.name",
            "k8s.container.name",
            "k8s.node.name",
            "hw.id",
            "hw.model",
            "hw.type",
            "ai_telemetry.workload.source",
        )
    } == {
        "k8s.cluster.name": "e2e-prod",
        "k8s.namespace.name": "ml-team-e2e",
        "k8s.pod.name": "train-e2e-0",
        "k8s.container.name": "trainer",
        "k8s.node.name": "e2e-gpu-01",
        "hw.id": gpu.uuid,
        "hw.model": "NVIDIA A100-SXM4-80GB",
        "hw.type": "gpu",
        "ai_telemetry.workload.source": "alert",
    }
    assert [(name, attrs["gpu.xid.code"]) for name, _, attrs in span.events] == [("gpu.xid_error", 79)]
    assert span.status_code == 2 and span.status_message == "XID 79"  # STATUS_CODE_ERROR
    assert span.resource["service.name"] == "ai-telemetry-worker"

    with Session(sqlite_engine) as db:
        statuses = sorted((r.alertname, r.status) for r in db.exec(select(AlertReceipt)))
    assert ("GPUWorkloadStarted", "firing") in statuses and ("GPUWorkloadStarted", "resolved") in statuses
    assert ("GPUXidError", "firing") in statuses
