"""Open redirects: the login's ``next``, the logout, the admin forms' ``back`` and the login redirect of
protected pages, with a battery of off-site targets. Every Location must stay on the site, read the
way a browser reads it (tabs and newlines dropped, backslashes as slashes, leading blanks trimmed)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urljoin, urlsplit

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine

from tests.conftest import settings_for, sqlite_copy
from tests.reliability.security_support import PASSWORDS, csrf_token, fleet_template, login, ownership
from web.app import create_app
from web.login import safe_next

SITE = "https://site.example/"
BATTERY = [
    "//evil.example",
    "//evil.example/path",
    "https://evil.example",
    "http://evil.example/",
    "/\\evil.example",
    "\\\\evil.example",
    "/%2F/evil.example",
    "%2F%2Fevil.example",
    "/%09/evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r/evil.example",
    "\t//evil.example",
    " //evil.example",
    "\n//evil.example",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "/\r\nSet-Cookie: evil=1",
    "/%0d%0aSet-Cookie:%20evil=1",
    "///evil.example",
    "/.//evil.example",
    "https:evil.example",
    "/\x00//evil.example",
    "\x01//evil.example",
]


def as_a_browser_reads(location: str) -> str:
    """Resolve a Location header the way the WHATWG URL parser does against the site."""
    trimmed = location.strip("".join(chr(c) for c in range(0x21)))
    cleaned = re.sub(r"[\t\n\r]", "", trimmed).replace("\\", "/")
    return urljoin(SITE, cleaned)


def assert_on_site(location: str, what: str) -> None:
    assert "\r" not in location and "\n" not in location, f"{what}: header injection in {location!r}"
    target = urlsplit(as_a_browser_reads(location))
    assert (target.scheme, target.netloc) == ("https", "site.example"), f"{what}: off-site Location {location!r}"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fleet_template(tmp_path_factory.mktemp("security-fleet"))


@pytest.fixture
def site(template: Path, tmp_path: Path) -> Iterator[tuple[TestClient, Engine]]:
    engine = sqlite_copy(template, tmp_path)
    try:
        yield TestClient(create_app(settings_for(engine), engine)), engine
    finally:
        engine.dispose()


NEXT_FIELD = re.compile(r'name="next" value="([^"]*)"')


def test_login_next_never_leads_off_site(site, reliability) -> None:
    client, _ = site
    checked = 0
    for payload in BATTERY:
        assert_on_site(safe_next(payload), f"safe_next({payload!r})")
        form = client.get(f"/login?next={quote(payload, safe='')}")
        assert form.status_code == 200
        rendered = NEXT_FIELD.search(form.text)
        assert rendered, "the login form lost its next field"
        assert_on_site(html.unescape(rendered.group(1)), f"login form next for {payload!r}")
        token = csrf_token(client)
        wrong = client.post(
            "/login", data={"username": "alice", "password": "wrong", "next": payload, "_csrf_token": token}
        )
        assert wrong.status_code == 401
        assert_on_site(html.unescape(NEXT_FIELD.search(wrong.text).group(1)), f"failed login next for {payload!r}")  # type: ignore[union-attr]
        done = client.post(
            "/login",
            data={"username": "alice", "password": PASSWORDS["alice"], "next": payload, "_csrf_token": token},
            follow_redirects=False,
        )
        assert done.status_code == 303
        assert_on_site(done.headers["location"], f"login next={payload!r}")
        # no cookie injected, nor the payload carried in one (checked on cookie names and on "evil." and
        # "evil=1", which a base64 session value cannot hold: "evil" alone turns up in one now and then)
        cookies = done.headers.get_list("set-cookie")
        assert not any(c.strip().lower().startswith("evil") for c in cookies), cookies
        assert not any("evil." in c or "evil=1" in c for c in cookies), cookies
        out = client.post(
            f"/logout?next={quote(payload, safe='')}",
            data={"next": payload},
            headers={"x-csrftoken": csrf_token(client)},
            follow_redirects=False,
        )
        assert out.status_code == 303 and out.headers["location"] == "/login"
        checked += 5
    # a legitimate deep link still works
    deep = "/projects?q=team&limit=10"
    assert login(client, "alice", next_url=deep).headers["location"] == deep
    reliability.record(
        area="Security",
        tried=f"Fed {len(BATTERY)} off-site targets (//host, schemes, backslashes, encoded and raw tab/CR/LF, "
        "javascript:, data:, blanks, CRLF header injection) to the login form, the login, a failed login "
        "and the logout",
        held=f"all {checked} answers stayed on the site as a browser reads them, with no injected header; "
        "a same-site deep link still worked",
        targets=len(BATTERY),
        answers=checked,
    )


def test_other_redirects_stay_on_site(site, reliability) -> None:
    client, engine = site
    project = ownership(engine)["alpha"].first("project_id")
    checked = 0
    for payload in BATTERY:
        # the login redirect of a protected page carries the page as next, whatever the path looks like
        for path in (f"/{quote(payload, safe='')}", f"/projects?q={quote(payload, safe='')}"):
            anonymous = TestClient(client.app).get(path, follow_redirects=False)
            if anonymous.status_code in (302, 303):
                assert_on_site(anonymous.headers["location"], f"login redirect of {path!r}")
                target = parse_qs(urlsplit(anonymous.headers["location"]).query).get("next", ["/"])[0]
                assert_on_site(safe_next(target), f"next of the login redirect of {path!r}")
                checked += 1
    login(client, "admin")
    for payload in BATTERY:
        back = client.post(
            "/admin/access/grant",
            data={"project_id": project, "kind": "user", "name": "admin", "back": payload},
            headers={"x-csrftoken": csrf_token(client)},
            follow_redirects=False,
        )
        assert back.status_code == 303
        assert_on_site(back.headers["location"], f"admin back={payload!r}")
        assert back.headers["location"].startswith("/admin/access")
        checked += 1
    reliability.record(
        area="Security",
        tried="Requested protected pages with the battery in the path and query anonymously, and sent it as the "
        "admin grant form's back field",
        held=f"all {checked} redirects stayed on the site (login redirects quote the page, back falls back to "
        "/admin/access)",
        answers=checked,
    )
