"""Faults of real servers: the source's clusters go stale with the reason, the inventory stays, others go on.

* a real Prometheus stopped between polls, then restarted on the same port and storage;
* a real Prometheus serving TLS that requires a client certificate (mTLS), and clients without it;
* a loopback server answering garbage, 5xx, a cut-off body, a Thanos partial response, or too slowly.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from domain.access.demo import seed_demo_identities
from domain.models import Allocation, Cluster, Gpu, Hub, ResearchProject
from domain.settings import SchedulerSettings, Settings, SourceSettings
from domain.statuses import ClusterStatus, Health
from simulator import Fleet, MetricsServer, load_fleet, make_server, parse_fleet
from tests.prometheus_service import running_prometheus, scrape_config
from tests.test_access_end_to_end import login
from tests.test_prometheus_source import gpu, identity_answer, named, values_answer, vector
from web.app import create_app
from worker.metrics import WorkerMetrics
from worker.polling import SourcePoller
from worker.sources.prometheus import PrometheusSource

INTERVAL = 2.0
SCHEDULER = SchedulerSettings(poll_interval_seconds=INTERVAL)
CLUSTER = "nerc-ocp"  # 12 GPUs of the built-in fleet


@pytest.fixture(scope="module")
def exporter() -> Iterator[str]:
    """The built-in fleet's nerc-ocp cluster as a dcgm-exporter, served in this process."""
    server = make_server(load_fleet(None), port=0, cluster=CLUSTER)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"{host!s}:{port}"
    finally:
        server.shutdown()
        server.server_close()


def gpus_of(engine: Engine) -> list[Gpu]:
    with Session(engine) as session:
        return list(session.exec(select(Gpu)))


def cluster_of(engine: Engine, name: str = CLUSTER) -> Cluster:
    with Session(engine) as session:
        return session.exec(select(Cluster).where(Cluster.name == name)).one()


def reason_metric(metrics: WorkerMetrics, source: str) -> str | None:
    for family in metrics.registry.collect():
        if family.name == "ai_telemetry_source_error_info":
            for sample in family.samples:
                if sample.labels["source"] == source and sample.value == 1:
                    return sample.labels["reason"]
    return None


@pytest.mark.verify
def test_prometheus_stopped_then_restarted_between_polls(
    exporter: str, tmp_path: Path, sqlite_engine: Engine, reliability
) -> None:
    metrics = WorkerMetrics()
    with running_prometheus(tmp_path, [scrape_config("dcgm", [exporter])]) as prometheus:
        prometheus.wait_for("count(DCGM_FI_DEV_GPU_TEMP)", at_least=12)
        settings = SourceSettings(name="prom", url=prometheus.url, cluster=CLUSTER, timeout_seconds=2)
        poller = SourcePoller(PrometheusSource(settings), sqlite_engine, SCHEDULER, metrics=metrics)
        assert poller.poll_once(datetime.now(UTC)).outcome == "success"
        assert len(gpus_of(sqlite_engine)) == 12

        prometheus.stop()
        down = poller.poll_once(datetime.now(UTC) + timedelta(seconds=INTERVAL))
        assert down.outcome == "source_error"
        assert f"cannot connect to {prometheus.url}" in (down.error or "")
        cluster = cluster_of(sqlite_engine)
        assert (cluster.status, cluster.status_reason) == (ClusterStatus.STALE, down.error)
        assert reason_metric(metrics, "prom") == down.error
        assert poller.state.next_attempt_at is not None  # backing off
        assert len(gpus_of(sqlite_engine)) == 12 and all(g.health != Health.MISSING for g in gpus_of(sqlite_engine))
        assert (
            metrics.registry.get_sample_value(
                "ai_telemetry_source_cluster_status", {"source": "prom", "cluster": CLUSTER, "status": "stale"}
            )
            == 1
        )

        prometheus.start()  # same port, same storage: the series are still there
        prometheus.wait_for("count(DCGM_FI_DEV_GPU_TEMP)", at_least=12)
        assert poller.poll_once(datetime.now(UTC), force=True).outcome == "success"
    cluster = cluster_of(sqlite_engine)
    assert (cluster.status, cluster.status_reason, cluster.gpu_count) == (ClusterStatus.OK, None, 12)
    assert len(gpus_of(sqlite_engine)) == 12  # the same GPUs, not new ones
    assert reason_metric(metrics, "prom") is None
    reliability.record(
        area="Faults",
        tried="a real Prometheus source stopped between polls, then restarted",
        held="poll failed with the reason on the cluster and in /metrics, backoff, no GPU dropped or marked "
        "missing; the next poll after the restart succeeded with the same GPUs",
        gpus_kept=12,
    )


def test_the_cluster_page_shows_why_the_last_poll_failed(sqlite_engine: Engine, make_settings: object) -> None:
    dead = SourceSettings(name="dead", url="http://127.0.0.1:9", cluster="dead-cluster", timeout_seconds=1)
    with Session(sqlite_engine) as session:  # a cluster polled once successfully, then its source died
        hub = Hub(name="dead", kind="prometheus", url=dead.url)
        session.add(hub)
        session.flush()
        session.add(Cluster(hub_id=hub.id or 0, name="dead-cluster", last_success_at=datetime.now(UTC)))
        session.commit()
    outcome = SourcePoller(PrometheusSource(dead), sqlite_engine, SCHEDULER).poll_once(datetime.now(UTC))
    assert outcome.outcome == "source_error"
    settings: Settings = make_settings(sqlite_engine)  # type: ignore[operator]
    seed_demo_identities(sqlite_engine)
    with TestClient(create_app(settings, sqlite_engine)) as client:
        login(client, "admin", "admin-demo")
        page = client.get(f"/clusters/{cluster_of(sqlite_engine, 'dead-cluster').id}")
    assert page.status_code == 200
    assert "Last poll failed: query " in page.text and "cannot connect to http://127.0.0.1:9" in page.text


# --- mTLS against a real Prometheus -----------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1, a client certificate, and a stranger's CA."""
    directory = tmp_path_factory.mktemp("pki")
    ca_key, other_key = _key(), _key()
    ca = _certificate("test-ca", ca_key, None, ca=True)
    issuer = (ca.subject, ca_key)
    server_key, client_key = _key(), _key()
    return {
        "ca": _write(directory / "ca.pem", ca),
        "other_ca": _write(directory / "other-ca.pem", _certificate("other-ca", other_key, None, ca=True)),
        "server": _write(
            directory / "server.pem", _certificate("prometheus", server_key, issuer, server=True), server_key
        ),
        "client": _write(directory / "client.pem", _certificate("ai-telemetry", client_key, issuer), client_key),
    }


def test_mutual_tls_against_a_real_prometheus(
    exporter: str, pki: dict[str, Path], tmp_path: Path, sqlite_engine: Engine
) -> None:
    web_config = {
        "tls_server_config": {
            "cert_file": str(pki["server"]),
            "key_file": str(pki["server"].with_suffix(".key")),
            "client_auth_type": "RequireAndVerifyClientCert",
            "client_ca_file": str(pki["ca"]),
        }
    }
    with running_prometheus(tmp_path, [scrape_config("dcgm", [exporter])], web_config=web_config) as prometheus:
        assert prometheus.url.startswith("https://127.0.0.1:")
        good = SourceSettings(
            name="mtls",
            url=prometheus.url,
            cluster=CLUSTER,
            timeout_seconds=5,
            tls_ca_file=pki["ca"],
            tls_cert_file=pki["client"],
            tls_key_file=pki["client"].with_suffix(".key"),
        )
        source = PrometheusSource(good)
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while len(source.poll(datetime.now(UTC), INTERVAL).gpus) < 12:  # until the first scrape has landed
            assert datetime.now(UTC) < deadline, "no scrape within 30 s"
            threading.Event().wait(0.2)
        assert SourcePoller(source, sqlite_engine, SCHEDULER).poll_once(datetime.now(UTC)).outcome == "success"

        failures = {
            "unknown server CA": good.model_copy(update={"name": "a", "tls_ca_file": pki["other_ca"]}),
            "no client certificate": good.model_copy(update={"name": "b", "tls_cert_file": None, "tls_key_file": None}),
        }
        reasons = {}
        for what, settings in failures.items():
            outcome = SourcePoller(PrometheusSource(settings), sqlite_engine, SCHEDULER).poll_once(datetime.now(UTC))
            assert outcome.outcome == "source_error", what
            reasons[what] = outcome.error or ""
    assert "CERTIFICATE_VERIFY_FAILED" in reasons["unknown server CA"]
    assert (
        "BAD_CERTIFICATE" in reasons["no client certificate"]
        or "CERTIFICATE_REQUIRED"
        in (
            reasons["no client certificate"]  # TLS 1.3 reports the refusal on the first read
        )
    )


# --- a misbehaving loopback server ------------------------------------------------------------


EMPTY = vector([])


def good_answer(prefix: str, query: str) -> dict[str, object]:
    """Two GPUs, one busy, with UUIDs of their own per server, for the identity and values queries."""
    series = [
        (named("DCGM_FI_DEV_GPU_UTIL", gpu(f"GPU-{prefix}-1", 0, namespace="lab", pod="p", container="c")), 50),
        (named("DCGM_FI_DEV_GPU_UTIL", gpu(f"GPU-{prefix}-2", 1)), 0),
    ]
    if query.startswith("count by"):
        return vector(identity_answer(series))
    if query.startswith("max by (__name__"):
        return vector(values_answer(series))
    return EMPTY


class Misbehaving(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, prefix: str = "a") -> None:
        self.mode = "good"
        self.prefix = prefix
        self.released = threading.Event()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: Misbehaving

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        query = parse_qs(self.rfile.read(length).decode())["query"][0]
        answer = good_answer(self.server.prefix, query)
        mode = self.server.mode
        if mode == "slow":
            self.server.released.wait(10)
        if mode == "5xx":
            return self._send(503, b"upstream connect error", "text/plain")
        if mode == "garbage":
            return self._send(200, b"<html><body>Sign in</body></html>", "text/html")
        if mode == "partial":
            answer = {**answer, "warnings": ["receive-1: context deadline exceeded"]}
        body = json.dumps(answer).encode()
        if mode == "cut":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return None
        return self._send(200, body, "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def misbehaving() -> Iterator[Misbehaving]:
    server = Misbehaving()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.released.set()
        server.shutdown()
        server.server_close()


MODES = {
    "5xx": "answers HTTP 503",
    "garbage": "answers garbage (malformed JSON)",
    "cut": "cuts its answer off mid-body",
    "partial": "answers a Thanos partial response",
    "slow": "answers slower than its 0.5 s timeout",
}


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("5xx", "HTTP 503 from the source: upstream connect error"),
        ("garbage", "malformed JSON"),
        ("cut", "HTTP exchange failed: RemoteProtocolError"),
        ("partial", "partial response: receive-1: context deadline exceeded"),
        ("slow", "no answer within 0.5 s (timeout)"),
    ],
)
@pytest.mark.verify
def test_a_misbehaving_source_goes_stale_while_the_others_keep_polling(
    misbehaving: Misbehaving, exporter: str, sqlite_engine: Engine, mode: str, reason: str, reliability
) -> None:
    metrics = WorkerMetrics()
    flaky = SourceSettings(name="flaky", url=misbehaving.url, cluster="flaky-cluster", timeout_seconds=0.5)
    healthy_server = Misbehaving(prefix="b")
    threading.Thread(target=healthy_server.serve_forever, daemon=True).start()
    try:
        healthy = SourceSettings(name="healthy", url=healthy_server.url, cluster="healthy-cluster")
        pollers = [
            SourcePoller(PrometheusSource(s), sqlite_engine, SCHEDULER, metrics=metrics) for s in (flaky, healthy)
        ]
        start = datetime.now(UTC)
        assert [p.poll_once(start).outcome for p in pollers] == ["success", "success"]

        misbehaving.mode = mode
        later = start + timedelta(seconds=INTERVAL)
        outcomes = [p.poll_once(later) for p in pollers]
        misbehaving.released.set()
    finally:
        healthy_server.shutdown()
        healthy_server.server_close()

    assert [o.outcome for o in outcomes] == ["source_error", "success"]
    assert reason in (outcomes[0].error or "")
    assert outcomes[0].error == cluster_of(sqlite_engine, "flaky-cluster").status_reason
    assert cluster_of(sqlite_engine, "flaky-cluster").status == ClusterStatus.STALE
    assert cluster_of(sqlite_engine, "healthy-cluster").status == ClusterStatus.OK
    assert len(gpus_of(sqlite_engine)) == 4  # two per source; none lost
    assert reason_metric(metrics, "flaky") == outcomes[0].error
    assert pollers[0].state.next_attempt_at == later + timedelta(seconds=INTERVAL)  # backing off
    assert pollers[0].poll_once(later + timedelta(seconds=INTERVAL / 4)).outcome == "skipped"
    reliability.record(
        area="Faults",
        tried=f"a Prometheus source that {MODES[mode]}, beside a healthy one",
        held=f"its clusters went stale with '{reason}', backoff, no GPU lost; the healthy source kept polling",
        gpus_kept=4,
    )


# --- pods come and go -------------------------------------------------------------------------


def _lab_fleet(second_pod: str, namespace: str) -> Fleet:
    return parse_fleet(
        {
            "clusters": [
                {
                    "name": "lab",
                    "nodes": [{"hostname": "lab-01", "model": "l40s", "gpus": 2}],
                    "workloads": [
                        {"namespace": "team-a", "pod": "train-0", "devices": [{"node": "lab-01", "gpu": 0}]},
                        {"namespace": namespace, "pod": second_pod, "devices": [{"node": "lab-01", "gpu": 1}]},
                    ],
                }
            ]
        }
    )


def _serve(fleet: Fleet, port: int = 0) -> MetricsServer:
    server = make_server(fleet, port=port, cluster="lab")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_allocations_open_and_close_as_pod_labels_appear_and_disappear(tmp_path: Path, sqlite_engine: Engine) -> None:
    first = _serve(_lab_fleet("old-job", "team-a"))
    port = int(first.server_address[1])
    second: MetricsServer | None = None
    try:
        with running_prometheus(tmp_path, [scrape_config("dcgm", [f"127.0.0.1:{port}"])]) as prometheus:
            prometheus.wait_for('count(DCGM_FI_DEV_GPU_UTIL{pod="old-job"})', at_least=1)
            settings = SourceSettings(name="lab", url=prometheus.url, cluster="lab")
            poller = SourcePoller(PrometheusSource(settings), sqlite_engine, SCHEDULER)
            before = datetime.now(UTC)
            assert poller.poll_once(before).outcome == "success"
            assert open_allocations(sqlite_engine) == {("team-a", "train-0"), ("team-a", "old-job")}

            # the exporter restarts on the same port: old-job is gone, team-b's new-job holds GPU 1
            first.shutdown()
            first.server_close()
            second = _serve(_lab_fleet("new-job", "team-b"), port=port)
            prometheus.wait_for('count(DCGM_FI_DEV_GPU_UTIL{pod="new-job"})', at_least=1)
            prometheus.wait_for('absent(DCGM_FI_DEV_GPU_UTIL{pod="old-job"})', at_least=1)  # stale-marked
            after = datetime.now(UTC)
            outcome = poller.poll_once(after, force=True)
    finally:
        for server in (first, second):
            if server is not None:
                server.shutdown()
                server.server_close()
    assert outcome.outcome == "success" and outcome.changes is not None
    assert (outcome.changes.allocations_opened, outcome.changes.allocations_closed) == (1, 1)
    assert open_allocations(sqlite_engine) == {("team-a", "train-0"), ("team-b", "new-job")}
    with Session(sqlite_engine) as session:
        closed = session.exec(select(Allocation).where(col(Allocation.until).is_not(None))).one()
        assert (closed.pod, closed.since, closed.until) == ("old-job", before, after)
        projects = {p.namespace for p in session.exec(select(ResearchProject))}
    assert projects == {"team-a", "team-b"}


def open_allocations(engine: Engine) -> set[tuple[str, str]]:
    with Session(engine) as session:
        rows = session.exec(
            select(ResearchProject.namespace, Allocation.pod)
            .join(ResearchProject, col(Allocation.project_id) == col(ResearchProject.id))
            .where(col(Allocation.until).is_(None))
        )
        return {(namespace, pod) for namespace, pod in rows}
