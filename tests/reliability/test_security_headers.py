"""Security headers on every kind of response, the scripts pages load, and HSTS exactly when behind TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from litestar import Litestar, get
from litestar.testing import TestClient

from tests.conftest import settings_for, sqlite_copy
from tests.reliability.security_support import fleet_template, login, ownership
from tests.reliability.test_authorization_matrix import PUBLIC, calls_for, routes_of
from web.app import create_app
from worker.receiver import create_receiver_app

CSP_DIRECTIVES = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
    "frame-ancestors": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "object-src": ["'none'"],
}
HTMX = re.compile(r"^/static/htmx[\w.-]*\.js$")


def csp_of(response: Any) -> dict[str, list[str]]:
    policies = response.headers.get_list("content-security-policy")
    assert len(policies) == 1, f"{response.url}: {len(policies)} CSP headers"
    return {d.split()[0]: d.split()[1:] for d in policies[0].split(";") if d.strip()}


def assert_headers(response: Any, what: str, *, hsts: bool = False) -> None:
    csp = csp_of(response)
    assert csp == CSP_DIRECTIVES, f"{what}: CSP {csp}"
    assert not any("unsafe" in v for values in csp.values() for v in values), f"{what}: unsafe CSP source"
    assert response.headers.get("x-frame-options") == "DENY", what
    assert response.headers.get("x-content-type-options") == "nosniff", what
    assert response.headers.get("referrer-policy") == "same-origin", what
    assert ("strict-transport-security" in response.headers) == hsts, f"{what}: HSTS {'missing' if hsts else 'sent'}"


class Scripts(HTMLParser):
    """Every script a page would run: external sources, inline bodies, event handler attributes, js: URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str | None] = []
        self.inline: list[str] = []
        self.handlers: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            self.sources.append(values.get("src"))
            self._in_script = True
        for name, value in attrs:
            if name.startswith("on"):
                self.handlers.append(f"<{tag} {name}>")
            if value and value.strip().lower().startswith("javascript:"):
                self.handlers.append(f"<{tag} {name}={value}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data.strip()[:80])


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fleet_template(tmp_path_factory.mktemp("security-fleet"))


@pytest.fixture
def site(template: Path, tmp_path: Path) -> Iterator[tuple[Litestar, Any]]:
    engine = sqlite_copy(template, tmp_path)
    app = create_app(settings_for(engine), engine)

    @get("/__boom", include_in_schema=False)
    async def boom() -> None:
        raise RuntimeError("a bug")

    app.register(boom)
    try:
        yield app, engine
    finally:
        engine.dispose()


def test_every_kind_of_response_carries_the_headers(site, reliability) -> None:
    app, engine = site
    owned = ownership(engine)
    anonymous, alice, admin = TestClient(app), TestClient(app), TestClient(app)
    login(alice, "alice")
    login(admin, "admin")
    gpu = owned["alpha"].first("gpu_id")
    kinds = {
        "login page": anonymous.get("/login"),
        "login redirect": anonymous.get("/projects", follow_redirects=False),
        "page": alice.get("/projects"),
        "detail page": alice.get(f"/gpus/{gpu}"),
        "fragment": alice.get("/projects", headers={"HX-Request": "true", "HX-Target": "table"}),
        "fragment 401": anonymous.get("/projects", headers={"HX-Request": "true"}),
        "API JSON": alice.get("/api/v1/projects"),
        "NGSI-LD": alice.get("/ngsi-ld/v1/entities?type=GPU"),
        "NGSI-LD context": anonymous.get("/ngsi-ld/v1/context.jsonld"),
        "CSV export": alice.get("/reports/monthly.csv"),
        "API 401": anonymous.get("/api/v1/projects"),
        "page 403": alice.get("/admin/access"),
        "API 404": alice.get(f"/api/v1/gpus/{owned['beta'].first('gpu_id')}"),
        "page 404": alice.get("/no-such-page"),
        "405": alice.delete("/projects"),
        "CSRF 403": alice.post("/logout"),
        "413": anonymous.post(
            "/login", content=b"x" * (11 * 1024 * 1024), headers={"content-type": "application/x-www-form-urlencoded"}
        ),
        "500": alice.get("/__boom"),
        "static htmx": anonymous.get("/static/htmx.min.js"),
        "static css": anonymous.get("/static/style.css"),
        "OpenAPI": anonymous.get("/schema/openapi.json"),
        "health": anonymous.get("/healthz"),
        "metrics": anonymous.get("/metrics"),
        "OPTIONS": anonymous.options("/projects"),
    }
    statuses = {name: r.status_code for name, r in kinds.items()}
    for name, status in {
        "API 401": 401,
        "page 403": 403,
        "API 404": 404,
        "page 404": 404,
        "405": 405,
        "CSRF 403": 403,
        "413": 413,
        "500": 500,
        "fragment 401": 401,
    }.items():
        assert statuses[name] == status, f"{name}: {statuses[name]}"
    for name, response in kinds.items():
        assert_headers(response, name)
    assert "a bug" not in kinds["500"].text

    # HSTS: the same app asked over https (as uvicorn reports TLS or a trusted proxy's X-Forwarded-Proto)
    secure = TestClient(app, base_url="https://testserver.local")
    for path in ("/login", "/api/v1/projects", "/static/htmx.min.js", "/no-such-page"):
        assert_headers(secure.get(path, follow_redirects=False), f"https {path}", hsts=True)
    reliability.record(
        area="Security",
        tried=f"Checked the headers of {len(kinds)} kinds of response (pages, fragments, API, NGSI-LD, CSV, static, "
        "OpenAPI, login, 401/403/404/405/413/500, OPTIONS) over http and https",
        held="each carried exactly the self-only CSP (script-src 'self', frame-ancestors 'none', nothing unsafe), "
        "X-Frame-Options DENY and nosniff; HSTS only over https",
        kinds=len(kinds),
    )


def test_pages_load_only_the_vendored_htmx(site, reliability) -> None:
    app, engine = site
    owned = ownership(engine)
    admin = TestClient(app)
    login(admin, "admin")
    pages = 0
    for route in routes_of(app):
        if route.method != "GET" or route.api or route.path.startswith(("/static", "/schema")):
            continue
        for call in calls_for(route, owned):
            if call.htmx:
                continue
            response = admin.get(call.url)
            if not response.headers.get("content-type", "").startswith("text/html"):
                continue
            parser = Scripts()
            parser.feed(response.text)
            pages += 1
            assert parser.sources and all(s and HTMX.match(s) for s in parser.sources), (call.url, parser.sources)
            assert not parser.inline, f"{call.url}: inline script {parser.inline}"
            assert not parser.handlers, f"{call.url}: {parser.handlers}"
            assert_headers(response, call.url)
    for page in ("/login",):
        parser = Scripts()
        parser.feed(TestClient(app).get(page).text)
        assert all(s and HTMX.match(s) for s in parser.sources) and not parser.inline and not parser.handlers
    assert pages >= 15
    assert ("GET", "/login") in PUBLIC
    reliability.record(
        area="Security",
        tried=f"Parsed the HTML of every page the matrix reaches ({pages} pages, as the admin) for scripts",
        held="the only script is the vendored /static/htmx*.js: no inline script, no on* handler, no javascript: URL",
        pages=pages,
    )


# --- HSTS through a real uvicorn: TLS served directly, and behind a TLS-terminating proxy ----------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(app: Litestar, **config: Any) -> Iterator[int]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", timeout_graceful_shutdown=2, **config
        )
    )
    thread = threading.Thread(target=server.run, name="headers-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_hsts_exactly_when_the_request_came_over_tls(site, tmp_path: Path, reliability) -> None:
    app, engine = site
    receiver = create_receiver_app(settings_for(engine), engine)
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    seen: dict[str, bool] = {}
    for name, target in (("site", app), ("receiver", receiver)):
        with serving(target, ssl_certfile=str(cert), ssl_keyfile=str(key)) as port:
            tls = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=trust)
            seen[f"{name} over TLS"] = "strict-transport-security" in tls.headers
        with serving(target, proxy_headers=True, forwarded_allow_ips="127.0.0.1") as port:
            base = f"http://127.0.0.1:{port}/healthz"
            seen[f"{name} over http"] = "strict-transport-security" in httpx.get(base).headers
            proxied = httpx.get(base, headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"})
            seen[f"{name} behind a TLS proxy"] = "strict-transport-security" in proxied.headers
        with serving(target, proxy_headers=True, forwarded_allow_ips="192.0.2.1") as port:
            spoofed = httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"X-Forwarded-Proto": "https"})
            seen[f"{name} with X-Forwarded-Proto from an untrusted peer"] = (
                "strict-transport-security" in spoofed.headers
            )
    expected = {k: ("TLS" in k and "untrusted" not in k) for k in seen}
    assert seen == expected
    with serving(app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as port:
        page = httpx.get(f"https://127.0.0.1:{port}/login", verify=trust)
        assert_headers(page, "login over TLS", hsts=True)
        assert 'name="_csrf_token"' in page.text  # the login form works over TLS too
    with serving(receiver) as port:
        answer = httpx.post(f"http://127.0.0.1:{port}/webhooks/alertmanager", content=b"{}")
        assert answer.status_code == 401
        assert answer.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
    reliability.record(
        area="Security",
        tried="Served the site and the receiver through real uvicorn servers: TLS with a self-signed certificate, "
        "plain http, behind a trusted proxy sending X-Forwarded-Proto: https, and with that header from an "
        "untrusted peer",
        held="HSTS was sent over TLS and behind the trusted proxy only, never over plain http or on a spoofed "
        "header; the receiver's answers carry a deny-all CSP, nosniff and DENY framing",
        servers=8,
    )


def test_the_site_command_trusts_its_proxy_for_hsts(template: Path, tmp_path: Path, reliability) -> None:
    from tests.reliability.test_secrets_not_logged import child_env, running

    engine = sqlite_copy(template, tmp_path)
    engine.dispose()
    port = free_port()
    output: list[str] = []
    seen = {}
    for trusted in ("127.0.0.1", "192.0.2.1"):
        env = child_env(site_session_secret="s" * 40, site_trusted_proxies=trusted)
        command = ["site", "--database-url", f"sqlite:///{tmp_path / 'security.db'}", "--port", str(port)]
        with running(command, env, port, output) as base:
            for proto in ("https", None):
                headers = {"X-Forwarded-Proto": proto} if proto else {}
                answer = httpx.get(f"{base}/login", headers=headers)
                seen[(trusted, proto)] = "strict-transport-security" in answer.headers
    assert seen == {
        ("127.0.0.1", "https"): True,
        ("127.0.0.1", None): False,
        ("192.0.2.1", "https"): False,
        ("192.0.2.1", None): False,
    }
    reliability.record(
        area="Security",
        tried="Ran `ai-telemetry site` with AI_TELEMETRY_SITE_TRUSTED_PROXIES naming the proxy (127.0.0.1) and "
        "naming another host, and asked for the login page with and without X-Forwarded-Proto: https",
        held="HSTS only when the trusted proxy said https; never over plain http or from an untrusted peer",
    )
