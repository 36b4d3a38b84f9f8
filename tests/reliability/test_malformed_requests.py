"""Malformed HTTP through a real uvicorn (the product's server set-up): odd methods, paths with NULs,
invalid UTF-8, dot segments and encodings, garbage headers (Content-Length, Transfer-Encoding, Host,
cookies, forwarded addresses, credentials) and bodies, at the site and the receiver.

Whatever arrives, the answer is never a 5xx (no 503 is due: the database is up).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.routes import HTTPRoute
from sqlalchemy import Engine

from domain.access.demo import seed_demo_identities
from domain.settings import HttpSettings
from tests.reliability.servers import Served, raw_exchange, served, status_of
from web.app import create_app
from worker.receiver import create_receiver_app

AREA = "Bad input"
TOKEN = "malformed-token-0123456789"
LIMITS = HttpSettings(request_timeout_seconds=1, keep_alive_seconds=1, max_header_bytes=8192)
FUZZ = settings(
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

token = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":\\"), min_size=1, max_size=12
)
octets = st.binary(min_size=0, max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
path_junk = st.sampled_from(
    [
        b"",
        b"/",
        b"//",
        b"/..",
        b"/../../etc/passwd",
        b"/%2e%2e/%2e%2e",
        b"/%00",
        b"/%ff%fe",
        b"/%",
        b"/%zz",
        b"/\xc3\x28",
        b"/\xff",
        b";x=1",
        b"?",
        b"?a=%ff",
        b"?page=-1&page_size=99999999999999999999",
        b"?q=%00",
        b"#frag",
        b"/%C0%AF",
        b"?" + b"&" * 500,
        b"?a[]=1&a[b]=2",
        b"/1e999",
        b"/-1",
        b"/99999999999999999999999",
    ]
)
methods = st.sampled_from(
    [b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD", b"TRACE", b"FOO", b"get", b"CONNECT", b"PRI"]
)
header_values = st.one_of(
    octets,
    st.sampled_from(
        [
            b"",
            b" ",
            b"-1",
            b"0",
            b"1e3",
            b"99999999999999999999",
            b"chunked",
            b"gzip, chunked",
            b"identity",
            b"\x00",
            b"\xff\xfe",
            b"a" * 2000,
        ]
    ),
)
NAMED = [
    b"Content-Type",
    b"Transfer-Encoding",
    b"Host",
    b"Cookie",
    b"Authorization",
    b"X-Forwarded-For",
    b"X-Forwarded-Proto",
    b"Forwarded",
    b"Accept",
    b"Accept-Encoding",
    b"HX-Request",
    b"Expect",
    b"Range",
    b"If-None-Match",
    b"Origin",
    b"X-CSRFToken",
]
"""Header names worth breaking (Content-Length is broken on its own where a test needs it)."""

header_names = st.one_of(
    st.sampled_from([b"Content-Length", *NAMED]),
    token.map(str.encode),
)


def site_paths(app: Litestar) -> list[bytes]:
    paths = set()
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            paths.add(route.path.replace("{", "").replace("}", "").split(":")[0].encode())
    return sorted(paths)


printable_values = st.one_of(
    token.map(str.encode),
    st.sampled_from(
        [
            b"-1",
            b"0",
            b"1e3",
            b"99999999999999999999",
            b"chunked",
            b"gzip",
            b"application/json",
            b"text/html",
            b"multipart/form-data",
            b"Bearer x",
            b"ait_session=garbage; csrftoken=x",
            b"for=unknown",
            b"1.2.3.4, ::1",
            b"https",
            b"100-continue",
            b"bytes=0-1",
            b"a" * 2000,
        ]
    ),
)


@st.composite
def requests(draw: st.DrawFn, paths: list[bytes]) -> bytes:
    """Half well-formed HTTP with odd content (reaching the apps), half broken HTTP (reaching the parser)."""
    broken = draw(st.booleans())
    if broken:
        method = draw(methods)
        version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 x", b"HTTP/9"]))
        pairs = st.tuples(header_names, header_values)
    else:
        method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD"]))
        version = b"HTTP/1.1"
        pairs = st.tuples(st.sampled_from(NAMED), printable_values)
    target = draw(st.sampled_from(paths)) + draw(st.one_of(st.just(b""), path_junk))
    headers = [b"Host: t", b"Connection: close"]
    headers += [name + b": " + value for name, value in draw(st.lists(pairs, max_size=3))]
    if draw(st.booleans()):
        headers.append(b"Authorization: Bearer " + TOKEN.encode())
    body = draw(st.binary(max_size=200))
    if body and not any(h.lower().startswith((b"content-length", b"transfer-encoding")) for h in headers):
        headers.append(b"Content-Length: %d" % len(body))
    return method + b" " + target + b" " + version + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + body


@pytest.fixture
def servers(sqlite_engine: Engine, make_settings) -> Iterator[dict[str, tuple[Served, list[bytes]]]]:  # type: ignore[no-untyped-def]
    seed_demo_identities(sqlite_engine)
    settings = make_settings(sqlite_engine, receiver={"webhook_token": TOKEN})
    site = create_app(settings, sqlite_engine)
    receiver = create_receiver_app(settings, sqlite_engine)
    with served(site, LIMITS) as site_server, served(receiver, LIMITS) as receiver_server:
        yield {
            "site": (site_server, site_paths(site)),
            "receiver": (receiver_server, [b"/webhooks/alertmanager", b"/healthz", b"/readyz", b"/metrics", b"/"]),
        }


def _exchange(server: Served, request: bytes, seen: Counter[int]) -> None:
    status = status_of(raw_exchange(server.host, server.port, request, timeout=15))
    seen[status] += 1
    assert status < 500, (status, request[:300])


def test_malformed_requests_through_uvicorn_are_never_5xx(servers, reliability) -> None:  # type: ignore[no-untyped-def]
    seen: Counter[int] = Counter()
    for server, paths in servers.values():
        check = settings(FUZZ, max_examples=150)(given(request=requests(paths))(_exchange))
        check(server=server, seen=seen)
    assert seen[400] > 0 and any(200 <= status < 400 for status in seen)
    reliability.record(
        area=AREA,
        tried="malformed HTTP through real uvicorn servers (site, receiver): odd methods and versions, paths with "
        "NULs, invalid UTF-8, dot segments and broken escapes, garbage Content-Length, Transfer-Encoding, Host, "
        "cookies, forwarded headers and credentials, random bodies",
        held="no answer was a 5xx (status 0: the server closed an unparsable request without a word)",
        requests=sum(seen.values()),
        **{f"answered_{status}": count for status, count in sorted(seen.items())},
    )
