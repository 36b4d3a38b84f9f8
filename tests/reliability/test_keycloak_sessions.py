"""Keycloak mode against a real Keycloak: open redirects through the whole OIDC login, session fixation
at the callback, and a session cookie replayed after logout."""

from __future__ import annotations

import html
from urllib.parse import urlsplit

import httpx

from tests import test_keycloak
from tests.reliability.test_open_redirects import BATTERY
from tests.test_keycloak import LOGIN_FORM, Site, browser, csrf
from web.app import SESSION_COOKIE

site = test_keycloak.site
"""The Keycloak-mode site of tests/test_keycloak.py (a module-scoped fixture): a real Keycloak, a uvicorn site."""


def _log_in(client: httpx.Client, site: Site, username: str, next_value: str | None) -> httpx.Response:
    form_page = client.get("/login", params={} if next_value is None else {"next": next_value})
    assert form_page.url.port == site.keycloak.port, form_page.url
    action = LOGIN_FORM.search(form_page.text)
    assert action, form_page.text[:300]
    return client.post(
        html.unescape(action.group(1)),
        data={"username": username, "password": f"{username}-demo", "credentialId": ""},
    )


def _reads(site: Site, cookie: str) -> int:
    with httpx.Client(base_url=site.url, timeout=30) as replay:
        replay.cookies.set(SESSION_COOKIE, cookie, domain=urlsplit(site.url).hostname or "")
        return replay.get("/api/v1/projects").status_code


def test_oidc_login_never_redirects_off_site(site: Site, reliability) -> None:
    allowed = {
        (urlsplit(site.url).hostname, site.keycloak.port),
        (urlsplit(site.url).hostname, urlsplit(site.url).port),
    }
    for payload in BATTERY:
        visited: list[httpx.URL] = []
        with browser(site.url) as client:
            client.event_hooks["request"] = [lambda request, seen=visited: seen.append(request.url)]
            try:
                landed = _log_in(client, site, "alice", payload)
            except httpx.TransportError as exc:
                raise AssertionError(f"next={payload!r} led to {visited[-1]}: {exc}") from exc
            off_site = [str(u) for u in visited if (u.host, u.port) not in allowed]
            assert not off_site, f"next={payload!r} visited {off_site}"
            assert (landed.url.host, landed.url.port) == (urlsplit(site.url).hostname, urlsplit(site.url).port)
            logout = client.post(
                "/logout", params={"next": payload}, headers={"x-csrftoken": csrf(client)}, follow_redirects=False
            )
            assert logout.status_code == 303 and logout.headers["location"] == "/login?logged_out=true"
    reliability.record(
        area="Security",
        tried=f"Logged in through the real Keycloak (authorization code + PKCE) with each of the {len(BATTERY)} "
        "off-site next targets, and logged out with them",
        held="every login landed back on the site (its / or a same-site path) and never requested another host; "
        "logout always went to the "
        "site's own logged-out page",
        targets=len(BATTERY),
    )


def test_keycloak_login_sessions_rotate_at_login_and_die_at_logout(site: Site, reliability) -> None:
    with browser(site.url) as client:
        started = client.get("/login", follow_redirects=False)
        assert started.status_code == 303
        pending = client.cookies.get(SESSION_COOKIE)
        assert pending, "the login start keeps its state in the session"
        landed = _log_in(client, site, "alice", "/projects")
        assert str(landed.url) == f"{site.url}/projects"
        logged_in = client.cookies.get(SESSION_COOKIE)
        assert logged_in and logged_in != pending
        assert _reads(site, pending) == 401, "the pre-login cookie must not authenticate"
        assert _reads(site, logged_in) == 200
        with browser(site.url) as other:
            _log_in(other, site, "alice", None)
            elsewhere = other.cookies.get(SESSION_COOKIE)
        logout = client.post("/logout", headers={"x-csrftoken": csrf(client)})
        assert logout.status_code == 200
    assert _reads(site, logged_in) == 401, "a cookie replayed after logout still authenticates"
    assert elsewhere and _reads(site, elsewhere) in (200, 401)  # Keycloak may end the user's other sessions too
    reliability.record(
        area="Security",
        tried="In Keycloak mode, kept the session cookie from before the login and the one of the logged-in "
        "session, logged out, then replayed both",
        held="the login issued a new cookie; the pre-login cookie and the logged-out one both got 401 "
        "(the server-side session is deleted at logout)",
    )
