"""Property tests of the webhook payload parser and endpoint: whatever arrives, the answer is 2xx or 4xx
(never a 5xx while the database is healthy), and a 2xx is idempotent."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient
from sqlalchemy import Engine

from domain.settings import Settings
from worker.alerts.payload import InvalidPayload, parse_webhook
from worker.receiver import create_receiver_app

TOKEN = "property-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
URL = "/webhooks/alertmanager"
FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)

offsets = st.integers(min_value=-23 * 60, max_value=23 * 60).map(lambda m: timezone(timedelta(minutes=m)))
moments = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=offsets)
timestamps = st.one_of(
    moments.map(lambda d: d.isoformat()),
    moments.map(lambda d: d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if d.year > 1 else d.isoformat()),
    st.just("0001-01-01T00:00:00Z"),
    st.text(max_size=30),
    json_values,
)
characters = st.characters(exclude_characters="\x00")  # NUL comes in through the mutations


def text(**kwargs: Any) -> st.SearchStrategy[str]:
    return st.text(alphabet=characters, **kwargs)


names = st.one_of(text(min_size=1, max_size=40), text(max_size=300))
label_values = st.one_of(names, st.sampled_from(["", "0", "7", "79", "99999999999", "GPU-1", "moc-prod"]))
labels = st.fixed_dictionaries(
    {
        "alertname": st.sampled_from(["GPUWorkloadStarted", "GPUXidError", "Other"]) | names,
        "cluster": label_values,
        "namespace": label_values,
        "pod": label_values,
        "UUID": label_values,
    },
    optional={
        "event": st.sampled_from(["gpu-usage", "gpu-xid", "other"]),
        "container": label_values,
        "exported_namespace": label_values,
        "exported_pod": label_values,
        "pod_name": label_values,
        "GPU_I_ID": label_values,
        "Hostname": label_values,
        "modelName": label_values,
        "err_code": label_values,
        "err_msg": label_values,
    },
).flatmap(
    lambda known: st.dictionaries(text(max_size=20), text(max_size=40), max_size=3).map(
        lambda extra: {**extra, **known}
    )
)
texts = st.dictionaries(text(max_size=10), text(max_size=50), max_size=3)

valid_alerts = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["firing", "resolved"]),
        "labels": labels,
        "startsAt": st.one_of(moments.map(lambda d: d.isoformat()), st.just("0001-01-01T00:00:00Z")),
        "fingerprint": text(min_size=1, max_size=64),
    },
    optional={
        "annotations": texts,
        "endsAt": st.one_of(moments.map(lambda d: d.isoformat()), st.just("0001-01-01T00:00:00Z")),
        "generatorURL": text(max_size=40),
        "unknownField": json_values,
    },
)
valid_payloads = st.fixed_dictionaries(
    {
        "version": st.just("4"),
        "status": st.sampled_from(["firing", "resolved"]),
        "alerts": st.lists(valid_alerts, max_size=5),
    },
    optional={
        "receiver": text(max_size=20),
        "groupKey": text(max_size=40),
        "truncatedAlerts": st.integers(min_value=0, max_value=10**12),
        "groupLabels": texts,
        "commonLabels": texts,
        "commonAnnotations": texts,
        "externalURL": text(max_size=30),
        "notification_reason": text(max_size=10),
        "somethingNew": json_values,
    },
)


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    """A valid payload, or one with a single field (top-level or of one alert) replaced by anything."""
    payload = draw(valid_payloads)
    if draw(st.booleans()):
        return payload
    target = payload
    if payload["alerts"] and draw(st.booleans()):
        target = draw(st.sampled_from(payload["alerts"]))
        if draw(st.booleans()):
            target = target["labels"]
    key = draw(st.sampled_from(sorted(target)) | st.text(max_size=12))
    if draw(st.booleans()):
        target.pop(key, None)
    else:
        target[key] = draw(st.one_of(json_values, timestamps))
    return payload


@given(body=st.one_of(st.binary(max_size=500), payloads().map(lambda p: json.dumps(p).encode())))
@settings(max_examples=400, deadline=None)
def test_the_parser_raises_nothing_but_invalid_payload(body: bytes) -> None:
    try:
        parsed = parse_webhook(body)
    except InvalidPayload as exc:
        assert exc.field is None or isinstance(exc.field, str)
        return
    for alert in parsed.alerts:
        assert alert.starts_at.tzinfo is UTC
        assert alert.ends_at is None or alert.ends_at.tzinfo is UTC


@pytest.fixture
def client(db_engine: Engine, make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = make_settings(db_engine, receiver={"webhook_token": TOKEN})
    with TestClient(create_receiver_app(settings, db_engine)) as test_client:
        yield test_client


def check(client: TestClient, body: bytes) -> None:
    response = client.post(URL, content=body, headers=AUTH)
    assert response.status_code in (200, 400), (response.status_code, response.text, body[:300])
    if response.status_code == 400:
        assert response.json()["error"] == "invalid payload"
        return
    again = client.post(URL, content=body, headers=AUTH)
    assert again.status_code == 200
    assert again.json()["new"] == 0, "a redelivery stored something new"


@given(payload=payloads())
@settings(max_examples=200, deadline=None, suppress_health_check=FIXTURES)
def test_any_near_valid_payload_is_2xx_or_4xx(client: TestClient, payload: dict[str, Any]) -> None:
    check(client, json.dumps(payload).encode())


@given(body=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())))
@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURES)
def test_any_body_at_all_is_2xx_or_4xx(client: TestClient, body: bytes) -> None:
    check(client, body)
