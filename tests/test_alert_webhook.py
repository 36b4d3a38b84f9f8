"""``POST /webhooks/alertmanager`` with the payloads Alertmanager really sent, on SQLite and PostgreSQL:
persistence before 2xx, idempotent redelivery, sessions, authentication, size limit, errors."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import Engine, text
from sqlmodel import Session, select

from domain.database import create_db_engine, session_scope
from domain.models import AlertReceipt, Cluster, Hub, ResearchProject, Workload, utcnow
from domain.settings import DatabaseSettings, Settings
from tests.keycloak_standin import KeycloakStandIn, keycloak_standin
from tests.services import free_port
from worker.receiver import create_receiver_app
from worker.tracing import OtelWorkloadTracer

DATA = Path(__file__).parent / "data" / "alertmanager"
TOKEN = "webhook-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
URL = "/webhooks/alertmanager"


def sample(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"alertmanager-webhook-{name}.json").read_text())


FIRING = sample("firing")
RESOLVED = sample("resolved")


def with_alerts(base: dict[str, Any], alerts: list[dict[str, Any]]) -> dict[str, Any]:
    payload = copy.deepcopy(base)
    payload["alerts"] = alerts
    return payload


def alert_like(base: dict[str, Any], fingerprint: str, **labels: str) -> dict[str, Any]:
    alert = copy.deepcopy(base["alerts"][0])
    alert["fingerprint"] = fingerprint
    alert["labels"].update(labels)
    return alert


def receipts(engine: Engine) -> list[AlertReceipt]:
    with Session(engine) as db:
        return list(db.exec(select(AlertReceipt).order_by(AlertReceipt.id)))


def sessions(engine: Engine) -> list[Workload]:
    with Session(engine) as db:
        return list(db.exec(select(Workload).order_by(Workload.id)))


def seed_project(engine: Engine, cluster: str = "moc-prod", namespace: str = "ml-team-a") -> int:
    now = utcnow()
    with session_scope(engine) as db:
        hub = Hub(name="hub", kind="prometheus")
        db.add(hub)
        db.flush()
        row = Cluster(hub_id=hub.id, name=cluster)
        db.add(row)
        db.flush()
        project = ResearchProject(
            cluster_id=row.id, namespace=namespace, display_name=namespace, first_seen=now, last_seen=now
        )
        db.add(project)
        db.flush()
        return project.id or 0


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def receiver(db_engine: Engine, make_settings: Callable[..., Settings], spans) -> Iterator[TestClient]:
    settings = make_settings(db_engine, receiver={"webhook_token": TOKEN})
    tracer = OtelWorkloadTracer(spans, batch=False)
    with TestClient(create_receiver_app(settings, db_engine, tracer=tracer)) as client:
        yield client
    tracer.shutdown()


def test_firing_then_resolved_is_one_session_and_one_span(receiver: TestClient, db_engine: Engine, spans) -> None:
    project_id = seed_project(db_engine)

    fired = receiver.post(URL, json=FIRING, headers=AUTH)

    assert fired.status_code == 200, fired.text
    assert fired.json() | {"caller": None} == {
        "status": "ok",
        "received": 1,
        "new": 1,
        "duplicates": 0,
        "workloads_opened": 1,
        "workloads_closed": 0,
        "caller": None,
    }
    [opened] = sessions(db_engine)
    assert (opened.cluster, opened.namespace, opened.pod, opened.container) == (
        "moc-prod",
        "ml-team-a",
        "train-1795424131-0",
        "probe",
    )
    assert opened.gpu_uuid == "GPU-31b5485b-26f4-b613-bf1b-a43fe0f64e36"
    assert (opened.node, opened.gpu_model, opened.source) == ("moc-a100-02", "NVIDIA A100-SXM4-80GB", "alert")
    assert opened.started_at == datetime(2026, 11, 23, 8, 55, 35, 656000, tzinfo=UTC)
    assert opened.ended_at is None and opened.project_id == project_id
    assert opened.alert_fingerprint == "3b2181aa9ec3121f"
    assert len(opened.trace_id) == 32 and int(opened.trace_id, 16)
    assert spans.get_finished_spans() == ()

    resolved = receiver.post(URL, json=RESOLVED, headers=AUTH)

    assert resolved.json()["workloads_closed"] == 1
    [closed] = sessions(db_engine)
    assert closed.id == opened.id
    assert closed.ended_at == datetime(2026, 11, 23, 8, 55, 38, 656000, tzinfo=UTC)
    [span] = spans.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == closed.trace_id
    assert span.attributes["k8s.pod.name"] == "train-1795424131-0"
    assert (span.end_time - span.start_time) == 3_000_000_000
    stored = receipts(db_engine)
    assert [(r.status, r.alertname) for r in stored] == [
        ("firing", "GPUWorkloadStarted"),
        ("resolved", "GPUWorkloadStarted"),
    ]
    assert stored[0].payload["alert"]["labels"]["pod"] == "train-1795424131-0"
    assert stored[0].payload["groupKey"] == FIRING["groupKey"]


def test_redelivery_and_repeat_notifications_change_nothing(receiver: TestClient, db_engine: Engine) -> None:
    first = receiver.post(URL, json=FIRING, headers=AUTH)
    # Alertmanager re-sends a firing alert on every repeat_interval (same fingerprint and startsAt)
    repeated = copy.deepcopy(FIRING)
    repeated["alerts"][0]["annotations"]["description"] = "activity 80%"
    again = receiver.post(URL, json=repeated, headers=AUTH)
    third = receiver.post(URL, json=FIRING, headers=AUTH)

    assert first.json()["new"] == 1
    assert [(r.json()["new"], r.json()["duplicates"]) for r in (again, third)] == [(0, 1), (0, 1)]
    assert len(receipts(db_engine)) == 1
    assert len(sessions(db_engine)) == 1


def test_a_group_of_alerts_with_a_duplicate_inside(receiver: TestClient, db_engine: Engine) -> None:
    alerts = [alert_like(FIRING, f"{i:016x}", pod=f"train-{i}") for i in range(40)]
    payload = with_alerts(FIRING, [*alerts, alerts[3]])

    response = receiver.post(URL, json=payload, headers=AUTH)

    assert response.status_code == 200
    assert response.json()["new"] == 40 and response.json()["duplicates"] == 1
    assert len(receipts(db_engine)) == 40
    assert sorted(s.pod for s in sessions(db_engine)) == sorted(f"train-{i}" for i in range(40))


def test_resolved_without_firing_records_the_whole_session(receiver: TestClient, db_engine: Engine, spans) -> None:
    response = receiver.post(URL, json=RESOLVED, headers=AUTH)

    assert response.json()["workloads_opened"] == 1 and response.json()["workloads_closed"] == 1
    [row] = sessions(db_engine)
    assert row.ended_at is not None and (row.ended_at - row.started_at).total_seconds() == 3
    assert len(spans.get_finished_spans()) == 1


def test_a_new_start_after_resolution_is_a_new_session(receiver: TestClient, db_engine: Engine) -> None:
    receiver.post(URL, json=FIRING, headers=AUTH)
    receiver.post(URL, json=RESOLVED, headers=AUTH)
    again = copy.deepcopy(FIRING)
    again["alerts"][0]["startsAt"] = "2026-11-23T09:10:00Z"

    receiver.post(URL, json=again, headers=AUTH)

    rows = sessions(db_engine)
    assert [r.ended_at is None for r in rows] == [False, True]
    assert len({r.trace_id for r in rows}) == 2


def test_xid_alert_becomes_an_event_of_the_open_session(receiver: TestClient, db_engine: Engine, spans) -> None:
    receiver.post(URL, json=FIRING, headers=AUTH)
    xid = copy.deepcopy(FIRING)
    alert = xid["alerts"][0]
    alert.update(fingerprint="77aa00bb11cc22dd", startsAt="2026-11-23T08:55:37Z")
    alert["labels"].update(
        alertname="GPUXidError",
        event="gpu-xid",
        err_code="79",
        err_msg="GPU has fallen off the bus",
        severity="critical",
    )
    for key in ("namespace", "pod", "container"):
        del alert["labels"][key]  # an XID belongs to the GPU, not to a pod

    assert receiver.post(URL, json=xid, headers=AUTH).status_code == 200
    receiver.post(URL, json=RESOLVED, headers=AUTH)

    [row] = sessions(db_engine)
    assert [(e["name"], e["attributes"]["gpu.xid.code"]) for e in row.events] == [("gpu.xid_error", 79)]
    [span] = spans.get_finished_spans()
    assert [e.name for e in span.events] == ["gpu.xid_error"]
    assert span.status.description == "XID 79"


def test_unrelated_alerts_are_stored_but_open_no_session(receiver: TestClient, db_engine: Engine) -> None:
    other = alert_like(FIRING, "00000000000000ff", alertname="NodeDiskFull", event="disk")

    response = receiver.post(URL, json=with_alerts(FIRING, [other]), headers=AUTH)

    assert response.status_code == 200 and response.json()["new"] == 1
    assert len(receipts(db_engine)) == 1 and sessions(db_engine) == []


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda p: p.pop("version"), "version"),
        (lambda p: p.update(version="3"), "version"),
        (lambda p: p.update(status="pending"), "status"),
        (lambda p: p.update(alerts={}), "alerts"),
        (lambda p: p.update(truncatedAlerts=-1), "truncatedAlerts"),
        (lambda p: p["alerts"][0].pop("fingerprint"), "alerts[0].fingerprint"),
        (lambda p: p["alerts"][0].update(fingerprint=""), "alerts[0].fingerprint"),
        (lambda p: p["alerts"][0].update(startsAt="yesterday"), "alerts[0].startsAt"),
        (lambda p: p["alerts"][0].update(startsAt="2026-11-23T08:55:35"), "alerts[0].startsAt"),
        (lambda p: p["alerts"][0].update(endsAt=17), "alerts[0].endsAt"),
        (lambda p: p["alerts"][0]["labels"].update(gpu=2), "alerts[0].labels[...]"),
        (lambda p: p["alerts"][0]["labels"].update(pod="a\x00b"), "alerts[0].labels.pod"),
        (lambda p: p["alerts"][0].update(status=None), "alerts[0].status"),
    ],
)
def test_invalid_payloads_are_400_naming_the_field(receiver: TestClient, db_engine: Engine, mutate, field) -> None:
    payload = copy.deepcopy(FIRING)
    mutate(payload)

    response = receiver.post(URL, json=payload, headers=AUTH)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid payload"
    assert response.json()["field"] == field
    assert receipts(db_engine) == []


def test_unknown_fields_are_ignored(receiver: TestClient) -> None:
    payload = copy.deepcopy(FIRING)
    payload["notification_reason"] = "repeat_interval"
    payload["somethingNew"] = {"nested": [1, 2]}
    payload["alerts"][0]["silencedBy"] = []

    assert receiver.post(URL, json=payload, headers=AUTH).status_code == 200


def test_malformed_json_is_400(receiver: TestClient) -> None:
    response = receiver.post(URL, content=b'{"version": "4",', headers={**AUTH, "content-type": "application/json"})

    assert response.status_code == 400 and response.json()["field"] is None


def test_bodies_above_the_limit_are_413(db_engine: Engine, make_settings) -> None:
    settings = make_settings(db_engine, receiver={"webhook_token": TOKEN, "max_body_bytes": 4096})
    payload = with_alerts(FIRING, [alert_like(FIRING, f"{i:016x}") for i in range(10)])
    assert len(json.dumps(payload)) > 4096

    with TestClient(create_receiver_app(settings, db_engine)) as client:
        response = client.post(URL, json=payload, headers=AUTH)

    assert response.status_code == 413 and response.json()["error"] == "payload too large"
    assert receipts(db_engine) == []


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer "}],
    ids=["missing", "wrong", "not-bearer", "empty"],
)
def test_wrong_or_missing_credentials_are_401(receiver: TestClient, db_engine: Engine, headers) -> None:
    response = receiver.post(URL, json=FIRING, headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert receipts(db_engine) == []


def test_no_configured_credentials_refuses_everyone(sqlite_engine: Engine, make_settings) -> None:
    with TestClient(create_receiver_app(make_settings(sqlite_engine), sqlite_engine)) as client:
        response = client.post(URL, json=FIRING, headers=AUTH)

    assert response.status_code == 401 and "no webhook credentials" in response.json()["detail"]


@pytest.fixture
def realm() -> Iterator[KeycloakStandIn]:
    with keycloak_standin(audience="ai-telemetry-receiver") as server:
        yield server


def keycloak_receiver(engine: Engine, make_settings, realm: KeycloakStandIn) -> TestClient:
    settings = make_settings(engine, keycloak={"url": realm.base_url, "realm": realm.realm})
    return TestClient(create_receiver_app(settings, engine))


def test_keycloak_tokens_for_our_audience_are_accepted(sqlite_engine: Engine, make_settings, realm) -> None:
    with keycloak_receiver(sqlite_engine, make_settings, realm) as client:
        good = client.post(URL, json=FIRING, headers={"Authorization": f"Bearer {realm.issue()}"})
        other = client.post(URL, json=RESOLVED, headers={"Authorization": f"Bearer {realm.issue(audience='account')}"})
        expired = client.post(
            URL, json=RESOLVED, headers={"Authorization": f"Bearer {realm.issue(lifetime_seconds=-300)}"}
        )

    assert (good.status_code, good.json()["caller"]) == (200, "keycloak")
    assert other.status_code == 403 and "audience" in other.json()["detail"]
    assert expired.status_code == 401
    assert [r.status for r in receipts(sqlite_engine)] == ["firing"]


def test_unreachable_realm_keys_are_503_so_alertmanager_retries(sqlite_engine: Engine, make_settings, realm) -> None:
    realm.available = False
    with keycloak_receiver(sqlite_engine, make_settings, realm) as client:
        response = client.post(URL, json=FIRING, headers={"Authorization": f"Bearer {realm.issue()}"})

    assert response.status_code == 503 and response.headers["retry-after"] == "5"


def test_database_down_is_503(make_settings) -> None:
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    engine = create_db_engine(DatabaseSettings(url=url))
    settings = make_settings(url, receiver={"webhook_token": TOKEN})
    try:
        with TestClient(create_receiver_app(settings, engine)) as client:
            response = client.post(URL, json=FIRING, headers=AUTH)
    finally:
        engine.dispose()

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "retry" in response.json()["detail"]


def test_a_failure_after_the_receipts_leaves_nothing_half_written(sqlite_engine: Engine, make_settings) -> None:
    with sqlite_engine.begin() as connection:  # the session step fails after the receipts were inserted
        connection.execute(
            text("CREATE TRIGGER no_sessions BEFORE INSERT ON workload BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        )
    settings = make_settings(sqlite_engine, receiver={"webhook_token": TOKEN})
    with TestClient(create_receiver_app(settings, sqlite_engine)) as client:
        failed = client.post(URL, json=FIRING, headers=AUTH)
        with sqlite_engine.begin() as connection:
            connection.execute(text("DROP TRIGGER no_sessions"))
        retried = client.post(URL, json=FIRING, headers=AUTH)

    assert failed.status_code == 503
    assert (retried.status_code, retried.json()["new"]) == (200, 1)  # the retry is not mistaken for a duplicate
    assert len(receipts(sqlite_engine)) == 1 and len(sessions(sqlite_engine)) == 1


def test_webhook_metrics(receiver: TestClient) -> None:
    receiver.post(URL, json=FIRING, headers=AUTH)
    receiver.post(URL, json=FIRING, headers=AUTH)
    receiver.post(URL, json=FIRING)

    body = receiver.get("/metrics").text

    assert 'ai_telemetry_webhook_requests_total{code="200"} 2.0' in body
    assert 'ai_telemetry_webhook_requests_total{code="401"} 1.0' in body
    assert 'ai_telemetry_webhook_alerts_total{outcome="new"} 1.0' in body
    assert 'ai_telemetry_webhook_alerts_total{outcome="duplicate"} 1.0' in body
    assert 'ai_telemetry_workloads_total{event="opened",view="alert"} 1.0' in body


def test_fault_alerts_reach_the_signal_pipeline_and_usage_alerts_do_not(sqlite_engine: Engine, make_settings) -> None:
    from domain.models import Finding
    from worker.scheduler import create_scheduler

    settings = make_settings(sqlite_engine, receiver={"webhook_token": TOKEN})
    scheduler = create_scheduler(settings, sqlite_engine, [])
    assert scheduler.signals is not None
    xid = copy.deepcopy(FIRING)
    xid["alerts"][0].update(fingerprint="77aa00bb11cc22dd")
    xid["alerts"][0]["labels"].update(alertname="GPUXidError", event="gpu-xid", err_code="79", severity="critical")

    with TestClient(create_receiver_app(settings, sqlite_engine, scheduler)) as client:
        assert client.post(URL, json=FIRING, headers=AUTH).status_code == 200
        assert client.post(URL, json=xid, headers=AUTH).status_code == 200

    with Session(sqlite_engine) as db:
        found = [(f.kind, f.subject) for f in db.exec(select(Finding))]
    assert found == [("xid_error", "gpu:GPU-31b5485b-26f4-b613-bf1b-a43fe0f64e36")]
