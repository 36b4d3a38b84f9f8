"""Bad webhooks: raw bytes at the Alertmanager webhook parser and at the receiver's endpoint, with and
without credentials.

Builds on tests/test_alert_payload_properties.py (near-valid v4 payloads, one field replaced by anything)
and breaks the bytes themselves: invalid UTF-8, truncation, deep nesting, enormous numbers, NaN, duplicate
keys, byte-order marks, other encodings, non-object top levels, any Content-Type, 10,000 alerts.

The receiver's one operation is driven by hypothesis directly rather than by schemathesis over an OpenAPI
document: its contract is Alertmanager's webhook format, which the strategies below generate far more
sharply (near-valid payloads, then broken bytes) than a schema-derived generator would, and a second
OpenAPI document would be public surface to keep in step with Alertmanager for no extra finding power.

Documented answers (worker/alerts/routes.py): 200, 400 naming the field, 401, 403, 413, and 503 only
when the alerts cannot be persisted (the database is up here, so never).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from domain.models import AlertReceipt
from tests.test_alert_payload_properties import json_values, payloads, valid_payloads
from worker.alerts.payload import InvalidPayload, parse_webhook
from worker.receiver import create_receiver_app

AREA = "Bad input"
TOKEN = "bad-webhook-token-0123456789"
URL = "/webhooks/alertmanager"
DOCUMENTED_WITH_TOKEN = {200, 400, 413}
FUZZ = settings(
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


def stored(engine: Engine) -> int:
    with Session(engine) as db:
        return int(db.exec(select(func.count()).select_from(AlertReceipt)).one())


# --- broken bytes ---------------------------------------------------------------------------------

valid_bodies = st.one_of(valid_payloads, payloads()).map(lambda p: json.dumps(p).encode())


@st.composite
def broken_bodies(draw: st.DrawFn) -> bytes:  # noqa: PLR0911  (one case per way of breaking a body)
    body = draw(valid_bodies)
    how = draw(
        st.sampled_from(
            [
                "truncate",
                "invalid-utf8",
                "nest",
                "huge-number",
                "nan",
                "duplicate-key",
                "top-level",
                "bom",
                "utf16",
                "splice",
                "raw",
            ]
        )
    )
    if how == "truncate":
        return body[: draw(st.integers(min_value=0, max_value=max(0, len(body) - 1)))]
    if how == "invalid-utf8":
        at = draw(st.integers(min_value=0, max_value=len(body)))
        junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80\x80", b"\xc0\xaf"]))
        return body[:at] + junk + body[at:]
    if how == "nest":
        depth = draw(st.sampled_from([100, 1_000, 10_000, 100_000]))
        inner = draw(st.sampled_from(["[", '{"a":']))
        close = "]" if inner == "[" else "}"
        where = draw(st.sampled_from(["top", "labels", "alerts"]))
        nested = inner * depth + "1" + close * depth
        if where == "top":
            return nested.encode()
        document = json.loads(body)
        document["commonLabels" if where == "labels" else "alerts"] = "@@"
        return json.dumps(document).replace('"@@"', nested).encode()
    if how == "huge-number":
        number = draw(
            st.sampled_from(
                [
                    "1e999999",
                    "-1e400",
                    "9" * 5000,
                    "1" + "0" * 400,
                    "0." + "0" * 5000 + "1",
                    "18446744073709551616",
                    "-9223372036854775809",
                ]
            )
        )
        field = draw(st.sampled_from(["truncatedAlerts", "version", "status", "alerts"]))
        document = json.loads(body)
        document[field] = "@@"
        return json.dumps(document).replace('"@@"', number).encode()
    if how == "nan":
        token = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "nan", "undefined", "null"]))
        document = json.loads(body)
        document[draw(st.sampled_from(["truncatedAlerts", "alerts", "commonLabels", "version"]))] = "@@"
        return json.dumps(document).replace('"@@"', token).encode()
    if how == "duplicate-key":
        key = draw(st.sampled_from(["version", "status", "alerts", "receiver"]))
        value = json.dumps(draw(json_values))
        return b"{" + f'"{key}": {value}, '.encode() + body[1:]
    if how == "top-level":
        return json.dumps(draw(st.one_of(json_values, st.lists(valid_payloads, max_size=2)))).encode()
    if how == "bom":
        return b"\xef\xbb\xbf" + body
    if how == "utf16":
        return body.decode().encode(draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32"])))
    if how == "splice":  # two documents, or a document and trailing garbage
        return body + draw(st.sampled_from([body, b"x", b"\x00", b" ", b"\n\n", b"}"]))
    return draw(st.binary(max_size=500))


@given(body=broken_bodies())
@settings(FUZZ, max_examples=300)
def _parse(body: bytes, seen: Counter[str]) -> None:
    try:
        parsed = parse_webhook(body)
    except InvalidPayload as exc:
        assert exc.field is None or isinstance(exc.field, str)
        assert exc.message
        seen["invalid"] += 1
    else:
        seen["valid"] += 1
        assert all(alert.starts_at.tzinfo is not None for alert in parsed.alerts)


def test_the_parser_answers_broken_bytes_with_invalid_payload_only(reliability) -> None:  # type: ignore[no-untyped-def]
    seen: Counter[str] = Counter()
    _parse(seen=seen)
    assert seen["invalid"] > 0 and seen["valid"] > 0
    reliability.record(
        area=AREA,
        tried="parse_webhook with broken bytes: truncated JSON, invalid UTF-8, nesting up to 100,000 deep, "
        "enormous numbers, NaN/Infinity, duplicate keys, non-object top levels, BOMs, UTF-16/32, trailing garbage",
        held="every body parsed or raised InvalidPayload; no other exception",
        bodies=sum(seen.values()),
        invalid=seen["invalid"],
        valid=seen["valid"],
    )


# --- the endpoint, with and without credentials -----------------------------------------------------

content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "multipart/form-data",
        "application/octet-stream",
        "",
        "application/json; charset=latin-1",
        "\u00e9/\u00e9",
    ]
)
credentials = st.sampled_from(
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Bearer {TOKEN}x",
        f"bearer {TOKEN[:-1]}",
        "Basic dXNlcjpwYXNz",
        "Bearer " + "a" * 10_000,
        "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        f"Token {TOKEN}",
    ]
)


@pytest.fixture
def receiver(sqlite_engine: Engine, make_settings) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    settings = make_settings(sqlite_engine, receiver={"webhook_token": TOKEN, "max_body_bytes": 65_536})
    with TestClient(create_receiver_app(settings, sqlite_engine)) as client:
        yield client


def post(client: TestClient, body: bytes, content_type: str, authorization: str | None) -> Any:
    headers = {"content-type": content_type.encode("latin-1")} if content_type else {}  # bytes: any octet
    if authorization is not None:
        headers["authorization"] = authorization.encode("latin-1")
    return client.post(URL, content=body, headers=headers)


@given(
    body=st.one_of(broken_bodies(), valid_bodies),
    content_type=content_types,
)
@settings(FUZZ, max_examples=200)
def _with_token(client: TestClient, body: bytes, content_type: str, seen: Counter[int]) -> None:
    response = post(client, body, content_type, f"Bearer {TOKEN}")
    seen[response.status_code] += 1
    assert response.status_code in DOCUMENTED_WITH_TOKEN, (response.status_code, response.text, body[:200])
    if response.status_code == 400:
        answer = response.json()
        assert answer["error"] == "invalid payload" and "field" in answer and answer["detail"]


@given(body=st.one_of(broken_bodies(), valid_bodies), content_type=content_types, authorization=credentials)
@settings(FUZZ, max_examples=100)
def _without_token(
    client: TestClient, body: bytes, content_type: str, authorization: str | None, seen: Counter[int]
) -> None:
    response = post(client, body, content_type, authorization)
    seen[response.status_code] += 1
    assert response.status_code == 401, (response.status_code, response.text, authorization)
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_the_endpoint_answers_broken_webhooks_with_documented_codes(  # type: ignore[no-untyped-def]
    receiver: TestClient, sqlite_engine: Engine, reliability
) -> None:
    with_token: Counter[int] = Counter()
    _with_token(client=receiver, seen=with_token)
    stored_with_token = stored(sqlite_engine)
    without: Counter[int] = Counter()
    _without_token(client=receiver, seen=without)
    assert stored(sqlite_engine) == stored_with_token, "a request without valid credentials stored something"
    assert with_token[400] > 0 and with_token[200] > 0
    assert not [code for code in with_token | without if code >= 500]
    reliability.record(
        area=AREA,
        tried="POST /webhooks/alertmanager in-process with generated broken and near-valid bodies under ten "
        "Content-Types, with the token and with none, empty, wrong, truncated, oversized, Basic and unsigned-JWT "
        "credentials",
        held="with the token only 200/400/413 (every 400 naming the field), without it only 401 and nothing "
        "stored; never a 5xx",
        requests=sum(with_token.values()) + sum(without.values()),
        **{f"answered_{code}": count for code, count in sorted((with_token + without).items())},
    )


def big_webhook(alerts: int) -> bytes:
    template = {
        "status": "firing",
        "labels": {"alertname": "GPUWorkloadStarted", "cluster": "moc-prod", "namespace": "ml", "UUID": "GPU-0"},
        "annotations": {"summary": "x"},
        "startsAt": "2026-11-23T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
    }
    return json.dumps(
        {
            "version": "4",
            "status": "firing",
            "receiver": "ai-telemetry",
            "alerts": [
                {**template, "fingerprint": f"{i:016x}", "labels": {**template["labels"], "pod": f"p{i}"}}
                for i in range(alerts)
            ],
        }
    ).encode()


def test_ten_thousand_alerts_in_one_webhook(sqlite_engine: Engine, make_settings, reliability) -> None:  # type: ignore[no-untyped-def]
    body = big_webhook(10_000)
    auth = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    default = make_settings(sqlite_engine, receiver={"webhook_token": TOKEN})
    with TestClient(create_receiver_app(default, sqlite_engine)) as client:
        refused = client.post(URL, content=body, headers=auth)
    assert len(body) > default.receiver.max_body_bytes and refused.status_code == 413
    raised = make_settings(sqlite_engine, receiver={"webhook_token": TOKEN, "max_body_bytes": 2 * len(body)})
    with TestClient(create_receiver_app(raised, sqlite_engine)) as client:
        start = time.monotonic()
        accepted = client.post(URL, content=body, headers=auth)
        seconds = time.monotonic() - start
        again = client.post(URL, content=body, headers=auth)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["received"] == 10_000 and accepted.json()["new"] == 10_000
    assert again.status_code == 200 and again.json()["new"] == 0
    assert stored(sqlite_engine) == 10_000
    reliability.record(
        area=AREA,
        tried=f"one webhook with 10,000 alerts ({len(body) / 1e6:.1f} MB), at the default body limit and at a "
        "raised one, then redelivered",
        held="413 at the default 1 MiB limit; with the limit raised all 10,000 stored once (200), the "
        "redelivery stored nothing new",
        alerts=10_000,
        body_mb=round(len(body) / 1e6, 2),
        stored_in_s=round(seconds, 2),
    )
