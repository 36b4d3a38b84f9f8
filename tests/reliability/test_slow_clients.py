"""Slow clients against real uvicorn servers (site and receiver, the product's server set-up, loopback):
slowloris connections dribbling header bytes, connections that send nothing, a webhook whose body arrives
a byte at a time, and a client that never reads its response.

The servers run with small AI_TELEMETRY_HTTP_* timeouts; the checks are that such clients are cut off
once those run out (408 where an answer is still possible) and that normal clients are answered meanwhile.
The latencies measured are recorded, not asserted beyond a generous client timeout.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from domain.models import AlertReceipt
from domain.settings import HttpSettings
from tests.reliability.servers import Served, served, status_of
from web.app import create_app
from worker.receiver import SECURITY_HEADERS, create_receiver_app

AREA = "Bad input"
TOKEN = "slow-client-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
WEBHOOK = "/webhooks/alertmanager"
LIMITS = HttpSettings(request_timeout_seconds=2, write_timeout_seconds=2, keep_alive_seconds=1)
CLIENT_TIMEOUT = 15.0  # a normal client must be answered within this, however busy the server is
FIRING = json.loads(
    (Path(__file__).parent.parent / "data" / "alertmanager" / "alertmanager-webhook-firing.json").read_text()
)


def stored(engine: Engine) -> int:
    with Session(engine) as db:
        return int(db.exec(select(func.count()).select_from(AlertReceipt)).one())


@pytest.fixture
def apps(sqlite_engine: Engine, make_settings) -> dict[str, Litestar]:  # type: ignore[no-untyped-def]
    settings = make_settings(sqlite_engine, receiver={"webhook_token": TOKEN})
    return {"site": create_app(settings, sqlite_engine), "receiver": create_receiver_app(settings, sqlite_engine)}


async def dribble(server: Served, head: bytes, drip: bytes, interval: float) -> tuple[int, float]:
    """Send ``head`` then ``drip`` a byte every ``interval`` until the server closes: (status, seconds)."""
    data, seconds = await dribble_raw(server, head, drip, interval)
    return status_of(data), seconds


async def dribble_raw(server: Served, head: bytes, drip: bytes, interval: float) -> tuple[bytes, float]:
    """:func:`dribble`, answering everything the server sent."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    start = time.monotonic()
    give_up = start + LIMITS.request_timeout_seconds + CLIENT_TIMEOUT  # a server that never cuts: fail, not hang
    answer = asyncio.ensure_future(reader.read())
    try:
        writer.write(head)
        index = 0
        while not answer.done() and time.monotonic() < give_up:
            await asyncio.wait([answer], timeout=interval)
            if answer.done():
                break
            writer.write(drip[index % len(drip) : index % len(drip) + 1])
            index += 1
            await writer.drain()
    except ConnectionError:
        pass
    try:
        data = await asyncio.wait_for(answer, timeout=5 if time.monotonic() >= give_up else 30)
    except (ConnectionError, TimeoutError):
        data = b""
    writer.close()
    return data, time.monotonic() - start


async def normal_clients(server: Served, call: Callable[[httpx.AsyncClient], object], seconds: float) -> list[float]:
    """Requests one after another for ``seconds``; each must succeed; returns their latencies in ms."""
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=CLIENT_TIMEOUT) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.monotonic()
            response = await call(client)  # type: ignore[misc]
            assert response.status_code == 200, response.text
            latencies.append((time.monotonic() - start) * 1000)
            await asyncio.sleep(0.05)
    return latencies


def normal_call(which: str) -> Callable[[httpx.AsyncClient], object]:
    if which == "site":
        return lambda client: client.get("/healthz")
    return lambda client: client.post(WEBHOOK, content=json.dumps(FIRING).encode(), headers=AUTH)


async def settle(server: Served, deadline: float) -> int:
    """Wait until the server holds no connection (or the deadline): the connections still open."""
    while server.open_connections() and time.monotonic() < deadline:  # noqa: ASYNC110  (another thread's state)
        await asyncio.sleep(0.1)
    return server.open_connections()


@pytest.mark.parametrize("which", ["site", "receiver"])
def test_slowloris_is_cut_off_and_normal_clients_are_served(which: str, apps: dict[str, Litestar], reliability) -> None:  # type: ignore[no-untyped-def]
    dribblers, silent = 100, 20

    async def attack(server: Served) -> tuple[list[tuple[int, float]], list[tuple[int, float]], list[float], int]:
        head = b"GET /healthz HTTP/1.1\r\nHost: t\r\n"
        slow = [dribble(server, head, b"X-Slow: loris\r\n", 0.25) for _ in range(dribblers)]
        quiet = [dribble(server, b"", b"", 60) for _ in range(silent)]
        results = asyncio.gather(*slow)
        idle = asyncio.gather(*quiet)
        latencies = await normal_clients(server, normal_call(which), LIMITS.request_timeout_seconds + 1.5)
        cut, closed = await results, await idle
        return cut, closed, latencies, await settle(server, time.monotonic() + 10)

    gc.collect()  # the other app's garbage, collected now rather than as a pause of the clients mid-measurement
    with served(apps[which], LIMITS) as server:
        cut, closed, latencies, left_open = asyncio.run(attack(server))
    timeout = LIMITS.request_timeout_seconds
    assert all(status == 408 for status, _ in cut), sorted({status for status, _ in cut})
    assert all(status == 0 for status, _ in closed), "a connection that sent nothing got an answer"
    assert all(seconds >= timeout * 0.9 for _, seconds in cut + closed), "cut off before the timeout"
    assert max(seconds for _, seconds in cut + closed) < timeout + CLIENT_TIMEOUT
    assert left_open == 0
    reliability.record(
        area=AREA,
        tried=f"{dribblers} slowloris connections dribbling a header byte every 250 ms and {silent} silent ones "
        f"against the {which} under uvicorn (AI_TELEMETRY_HTTP_REQUEST_TIMEOUT_SECONDS={timeout:g}), with a "
        "normal client asking meanwhile",
        held=f"every dribbler got 408 and every silent connection was closed after {timeout:g}-"
        f"{max(s for _, s in cut + closed):.1f} s, none left open; all {len(latencies)} normal requests answered "
        "(before: uvicorn held such connections forever)",
        slow_connections=dribblers + silent,
        cut_after_max_s=round(max(s for _, s in cut + closed), 2),
        normal_requests=len(latencies),
        normal_p50_ms=round(statistics.median(latencies), 1),
        normal_max_ms=round(max(latencies), 1),
    )


def test_a_keep_alive_connection_dribbling_its_next_request_is_cut_off(apps: dict[str, Litestar], reliability) -> None:  # type: ignore[no-untyped-def]
    first = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    with served(apps["site"], LIMITS) as server:
        data, seconds = asyncio.run(dribble_raw(server, first, b"GET /healthz HTTP/1.1\r\nX-Slow: loris\r\n", 0.25))
    statuses = [int(part[:3]) for part in data.split(b"HTTP/1.1 ")[1:]]
    assert statuses == [200, 408], statuses
    assert LIMITS.request_timeout_seconds * 0.9 <= seconds < LIMITS.request_timeout_seconds + CLIENT_TIMEOUT
    reliability.record(
        area=AREA,
        tried="a keep-alive connection that got its first answer, then dribbled its next request a byte every "
        "250 ms (site under uvicorn, keep-alive 1 s, request timeout 2 s)",
        held=f"200 for the first request, 408 for the dribbled one, closed after {seconds:.1f} s (uvicorn's own "
        "keep-alive timer stops as soon as a byte arrives)",
        cut_after_s=round(seconds, 2),
    )


def test_a_webhook_arriving_a_byte_at_a_time_is_cut_off(  # type: ignore[no-untyped-def]
    apps: dict[str, Litestar], sqlite_engine: Engine, reliability
) -> None:
    body = json.dumps(FIRING).encode()
    head = (
        f"POST {WEBHOOK} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()

    async def run(server: Served) -> tuple[tuple[int, float], list[float], int]:
        slow = asyncio.ensure_future(dribble(server, head, body, 0.1))
        await asyncio.sleep(0.2)
        before = stored(sqlite_engine)
        site_latencies = await normal_clients(server, lambda c: c.get("/healthz"), LIMITS.request_timeout_seconds)
        outcome = await slow
        assert stored(sqlite_engine) == before, "a body that never completed was stored"
        return outcome, site_latencies, await settle(server, time.monotonic() + 10)

    with served(apps["receiver"], LIMITS, retry_cut_bodies=True) as server:  # as the CLI serves the receiver
        (status, seconds), latencies, left_open = asyncio.run(run(server))
        with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as client:  # the same body, sent normally
            assert client.post(WEBHOOK, content=body, headers=AUTH).status_code == 200
            metrics = client.get("/metrics").text
    assert status == 503, status  # with Retry-After: Alertmanager retries a 5xx, drops a 4xx
    assert 'ai_telemetry_webhook_requests_total{code="503"} 1.0' in metrics
    assert not re.search(r'_total\{code="5(?!03)\d\d"\} [1-9]', metrics), "a server error was answered"
    assert LIMITS.request_timeout_seconds * 0.9 <= seconds < LIMITS.request_timeout_seconds + CLIENT_TIMEOUT
    assert left_open == 0
    reliability.record(
        area=AREA,
        tried=f"a {len(body)}-byte webhook whose body arrives a byte every 100 ms, to the receiver under uvicorn "
        f"(request timeout {LIMITS.request_timeout_seconds:g} s), while other requests are made",
        held=f"503 + Retry-After (so Alertmanager retries) after {seconds:.1f} s with nothing stored, the same "
        f"body sent normally then stored (200), all "
        f"{len(latencies)} other requests answered (before: the body could take forever)",
        cut_after_s=round(seconds, 2),
        normal_requests=len(latencies),
        normal_max_ms=round(max(latencies), 1),
    )


def test_a_login_form_arriving_a_byte_at_a_time_is_cut_off(  # type: ignore[no-untyped-def]
    apps: dict[str, Litestar], caplog: pytest.LogCaptureFixture, reliability
) -> None:
    body = b"username=admin&password=admin-demo&next=%2F&_csrf_token=" + b"t" * 64
    head = (
        "POST /login HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Cookie: csrftoken={'t' * 64}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with caplog.at_level(logging.WARNING), served(apps["site"], LIMITS) as server:
        status, seconds = asyncio.run(dribble(server, head, body, 0.1))
    assert status == 408, status
    assert LIMITS.request_timeout_seconds * 0.9 <= seconds < LIMITS.request_timeout_seconds + CLIENT_TIMEOUT
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors  # a slow client is no server error
    reliability.record(
        area=AREA,
        tried=f"a {len(body)}-byte login form arriving a byte every 100 ms, to the site under uvicorn (request "
        f"timeout {LIMITS.request_timeout_seconds:g} s)",
        held=f"408 after {seconds:.1f} s and no error logged (before: Litestar's 'client disconnected' was "
        "logged as an internal error with its traceback)",
        cut_after_s=round(seconds, 2),
    )


def test_a_client_that_never_reads_is_dropped(apps: dict[str, Litestar], reliability) -> None:  # type: ignore[no-untyped-def]
    pipelined = 200  # each answer is the 52 kB htmx file: ~10 MB, far more than the socket buffers hold

    async def run(server: Served) -> tuple[float, list[float], int]:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((server.host, server.port))
        sock.sendall(b"GET /static/htmx.min.js HTTP/1.1\r\nHost: t\r\n\r\n" * pipelined)
        start = time.monotonic()
        latencies = await normal_clients(server, lambda c: c.get("/healthz"), LIMITS.write_timeout_seconds / 2)
        left = await settle(server, start + LIMITS.write_timeout_seconds + CLIENT_TIMEOUT)
        dropped_after = time.monotonic() - start
        sock.settimeout(10)
        received = 0
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        sock.close()
        return dropped_after, latencies, left if received < pipelined * 52_000 else -1

    with served(apps["site"], LIMITS) as server:
        dropped_after, latencies, left = asyncio.run(run(server))
    assert left == 0, "the connection of a client that does not read was kept open"
    reliability.record(
        area=AREA,
        tried=f"a client pipelining {pipelined} requests for a 52 kB file and never reading, against the site under "
        f"uvicorn (AI_TELEMETRY_HTTP_WRITE_TIMEOUT_SECONDS={LIMITS.write_timeout_seconds:g})",
        held=f"the connection was dropped {dropped_after:.1f} s after the answers stalled, before the client had "
        f"them all; all {len(latencies)} other requests answered meanwhile (before: held forever)",
        dropped_after_s=round(dropped_after, 2),
        normal_requests=len(latencies),
    )


async def slow_reader(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    """An app that takes longer than the request timeout before it reads the body (a busy server)."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await asyncio.sleep(LIMITS.request_timeout_seconds * 1.5)
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(size).encode()})


def test_a_server_slow_to_read_a_big_body_does_not_time_its_client_out(reliability) -> None:  # type: ignore[no-untyped-def]
    body = b"x" * 1_000_000  # far above uvicorn's 64 kB read buffer: reading pauses until the app takes it
    with served(slow_reader, LIMITS) as server, httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as client:
        start = time.monotonic()
        response = client.post("/", content=body)
        seconds = time.monotonic() - start
    assert response.status_code == 200 and response.text == str(len(body)), response.text
    reliability.record(
        area=AREA,
        tried=f"a 1 MB upload to a server whose app reads it only after {LIMITS.request_timeout_seconds * 1.5:g} s, "
        f"beyond the {LIMITS.request_timeout_seconds:g} s request timeout",
        held=f"answered 200 after {seconds:.1f} s: time the server spends not reading is not held against the client",
        answered_after_s=round(seconds, 2),
    )


def test_the_servers_own_answers_are_json_with_the_security_headers(apps: dict[str, Litestar], reliability) -> None:  # type: ignore[no-untyped-def]
    """The receiver's contract says every answer is JSON; the 503 for a cut-off body comes from the server
    (no app saw the request), so it must be written that way too, with the headers every answer carries."""
    body = json.dumps(FIRING).encode()
    head = (
        f"POST {WEBHOOK} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with served(apps["receiver"], LIMITS, retry_cut_bodies=True) as server:
        data, _ = asyncio.run(dribble_raw(server, head, body, 0.1))
    head_text, _, payload = data.partition(b"\r\n\r\n")
    lines = head_text.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert lines[0].startswith("HTTP/1.1 503"), lines[0]
    assert headers["content-type"] == "application/problem+json", headers
    assert json.loads(payload) == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "request body not received in time; retry",
    }
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name.lower()) == value, (name, headers)
    assert headers["retry-after"] == "5"
    reliability.record(
        area=AREA,
        tried="a webhook body cut off by the request timeout at the receiver under uvicorn: the answer's bytes",
        held="503 + Retry-After as a JSON problem document with the receiver's CSP, nosniff and framing headers "
        "(before: plain text without them)",
    )
