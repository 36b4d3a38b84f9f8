"""Oversized input: bodies over the limit on every unsafe route of the site and on the receiver's webhook,
announced or chunked, and oversized request lines and headers through a real uvicorn.

The site's unsafe routes are read from ``app.routes``, so a route added later is covered without a
change here. Whatever is sent, nothing is written and nothing answers 5xx.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import httpx
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import TestClient
from sqlalchemy import Engine, text
from sqlmodel import SQLModel

from domain.access.demo import seed_demo_identities
from domain.settings import HttpSettings
from tests.reliability.servers import raw_exchange, served, status_of
from web.app import create_app
from worker.receiver import create_receiver_app

AREA = "Bad input"
LIMIT = 4096
TOKEN = "oversized-token-0123456789"
WEBHOOK = "/webhooks/alertmanager"
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
FORM = "application/x-www-form-urlencoded"


def unsafe_routes(app: Litestar) -> list[tuple[str, str]]:
    """(method, concrete path) of every route that changes something; path parameters become 1."""
    found = []
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for method in sorted(route.methods & UNSAFE):
                found.append((method, re.sub(r"\{[^}]+\}", "1", route.path)))
    return found


def digest(engine: Engine) -> str:
    """A hash of every row of every table: equal before and after means nothing was written."""
    sha = hashlib.sha256()
    with engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            query = text(f'SELECT * FROM "{table.name}" ORDER BY 1')  # noqa: S608  (names from the models)
            for row in connection.execute(query):
                sha.update(repr(tuple(row)).encode())
    return sha.hexdigest()


@pytest.fixture
def site_app(sqlite_engine: Engine, make_settings) -> Litestar:  # type: ignore[no-untyped-def]
    seed_demo_identities(sqlite_engine)
    return create_app(make_settings(sqlite_engine, site={"max_body_bytes": LIMIT}), sqlite_engine)


@pytest.fixture
def receiver_app(sqlite_engine: Engine, make_settings) -> Litestar:  # type: ignore[no-untyped-def]
    return create_receiver_app(
        make_settings(sqlite_engine, receiver={"webhook_token": TOKEN, "max_body_bytes": LIMIT}), sqlite_engine
    )


def log_in(client: TestClient, username: str = "admin") -> str:
    """Log in through the form; returns the CSRF token."""
    page = client.get("/login")
    token = re.search(r'name="_csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    answer = client.post(
        "/login",
        data={"username": username, "password": f"{username}-demo", "_csrf_token": token},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    client.get("/")  # the first page after the login issues the session its own CSRF token (web/csrf.py)
    return str(client.cookies.get("csrftoken"))


def chunks(total: int, prefix: bytes = b"") -> Iterator[bytes]:
    """A body without Content-Length (httpx sends it chunked)."""
    yield prefix
    sent = len(prefix)
    while sent < total:
        yield b"a" * min(1024, total - sent)
        sent += 1024


def test_every_unsafe_site_route_refuses_an_oversized_body(  # type: ignore[no-untyped-def]
    site_app: Litestar, sqlite_engine: Engine, reliability
) -> None:
    routes = unsafe_routes(site_app)
    assert ("POST", "/admin/access/grant") in routes and ("POST", "/login") in routes
    before = digest(sqlite_engine)
    statuses: list[int] = []
    with TestClient(site_app) as anonymous, TestClient(site_app) as admin:
        csrf = log_in(admin)
        before = digest(sqlite_engine)
        for method, path in routes:
            for client, headers in ((anonymous, {}), (admin, {"x-csrftoken": csrf})):
                for content_type in (FORM, "application/json", "multipart/form-data; boundary=x", "text/plain"):
                    announced = client.request(
                        method, path, content=b"a" * (LIMIT + 1), headers={**headers, "content-type": content_type}
                    )
                    assert announced.status_code == 413, (method, path, content_type, announced.status_code)
                    statuses.append(announced.status_code)
            # chunked: the size is only known while reading; a browser form carries its CSRF token in the body,
            # so the whole body is read (and refused) before anything acts on it
            body = chunks(4 * LIMIT, prefix=f"_csrf_token={csrf}&name=".encode())
            streamed = admin.request(method, path, content=body, headers={"content-type": FORM})
            assert streamed.status_code == 413, (method, path, "chunked", streamed.status_code)
            statuses.append(streamed.status_code)
        after = digest(sqlite_engine)
    assert after == before, "an oversized request wrote something"
    assert all(status < 500 for status in statuses)
    reliability.record(
        area=AREA,
        tried=f"a body over the site's {LIMIT}-byte limit (AI_TELEMETRY_SITE_MAX_BODY_BYTES) on every unsafe route "
        "read from app.routes, anonymous and as a logged-in admin, four content types, announced and chunked",
        held="every request was answered 413 and the database was unchanged (before: no limit was configured "
        "beyond Litestar's 10 MB, and a CSRF or login check answered first)",
        routes=len(routes),
        requests=len(statuses),
    )


def test_the_webhook_refuses_an_oversized_body(  # type: ignore[no-untyped-def]
    receiver_app: Litestar, sqlite_engine: Engine, reliability
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    before = digest(sqlite_engine)
    with TestClient(receiver_app) as client:
        announced = client.post(WEBHOOK, content=b" " * (LIMIT + 1), headers=auth)
        streamed = client.post(WEBHOOK, content=chunks(100 * LIMIT, b'{"version": "4", "alerts": ['), headers=auth)
        anonymous = client.post(WEBHOOK, content=b" " * (LIMIT + 1), headers={"content-type": "application/json"})
    assert announced.status_code == 413 and announced.json()["error"] == "payload too large"
    assert streamed.status_code == 413
    assert anonymous.status_code == 401  # credentials are checked first: a stranger's body is never read
    assert digest(sqlite_engine) == before
    reliability.record(
        area=AREA,
        tried=f"webhooks over the receiver's {LIMIT}-byte limit, announced and chunked (400 kB), with and without "
        "a token",
        held="413 with a token, 401 without, nothing stored",
        requests=3,
    )


def raw(target: str, *headers: str, method: str = "GET", body: str = "") -> bytes:
    """A raw HTTP/1.1 request; the server closes the connection after answering."""
    lines = [f"{method} {target} HTTP/1.1", "Host: t", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def through_uvicorn_cases(limit: int) -> list[tuple[str, bytes, tuple[int, ...]]]:
    big = "a" * (limit + 100)
    many = [f"X-H{i}: {'b' * 100}" for i in range(limit // 100)]
    auth = f"Authorization: Bearer {TOKEN}"
    return [
        ("a long path", raw(f"/{big}"), (414,)),
        ("a long query string", raw(f"/healthz?q={big}"), (414,)),
        ("one huge header", raw("/healthz", f"X-Big: {big}"), (431,)),
        ("many headers", raw("/healthz", *many), (431,)),
        ("a huge cookie", raw("/healthz", f"Cookie: ait_session={big}"), (431,)),
        ("a path just under the limit", raw(f"/{'a' * (limit - 200)}"), (404,)),
        ("headers just under the limit", raw("/healthz", *many[: len(many) // 2]), (200,)),
        ("a malformed request line", b"GET / HTTP/1.1 extra\r\n\r\n", (400,)),
        ("a bad Content-Length", raw(WEBHOOK, auth, "Content-Length: -5", method="POST"), (400,)),
        (
            "an absurd Content-Length",
            raw(WEBHOOK, auth, f"Content-Length: {10**30}", method="POST", body="{}"),
            (400, 413),
        ),
    ]


@pytest.mark.parametrize("which", ["site", "receiver"])
def test_oversized_request_lines_and_headers_are_4xx_through_uvicorn(  # type: ignore[no-untyped-def]
    which: str, site_app: Litestar, receiver_app: Litestar, reliability
) -> None:
    limits = HttpSettings(max_header_bytes=16_384)
    app = site_app if which == "site" else receiver_app
    seen: dict[str, int] = {}
    with served(app, limits) as server:
        for name, request, expected in through_uvicorn_cases(limits.max_header_bytes):
            status = status_of(raw_exchange(server.host, server.port, request))
            seen[name] = status
            assert status in expected, (which, name, status)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=server.url, timeout=30) as client:
            announced = client.post(
                WEBHOOK if which == "receiver" else "/login",
                content=b"a" * (LIMIT + 1),
                headers={**auth, "content-type": FORM},
            )
            streamed = client.post(
                WEBHOOK if which == "receiver" else "/login",
                headers={**auth, "content-type": FORM},
                content=chunks(50 * LIMIT, b"_csrf_token=x&"),
            )
            alive = client.get("/healthz")
        assert announced.status_code == 413 and streamed.status_code == 413, (announced, streamed)
        assert alive.status_code == 200
    assert all(0 < status < 500 for status in seen.values()), seen
    reliability.record(
        area=AREA,
        tried=f"through a real uvicorn ({which}): request lines, query strings, single and many headers and cookies "
        f"over the {limits.max_header_bytes}-byte AI_TELEMETRY_HTTP_MAX_HEADER_BYTES, malformed lines and "
        "Content-Lengths, announced and chunked bodies over the limit",
        held="414 / 431 / 400 / 413 as due, requests just under the limit served, no 5xx (before: uvicorn took "
        "headers of any size)",
        requests=len(seen) + 3,
    )
