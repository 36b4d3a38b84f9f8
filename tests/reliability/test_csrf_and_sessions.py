"""CSRF on every unsafe route of the route table, and sessions: fixation at login, replay after logout."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from domain.models import AccessGrant, ApiToken, Finding, LocalUser, LoginSession
from tests.conftest import settings_for, sqlite_copy
from tests.reliability.security_support import csrf_token, fleet_template, login, ownership, token_for
from tests.reliability.test_authorization_matrix import PUBLIC, calls_for, routes_of
from web.app import SESSION_COOKIE, create_app
from web.csrf import SessionBoundCsrfMiddleware

HOST = "testserver.local"
"""The host of Litestar's test client, for cookies set by hand."""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fleet_template(tmp_path_factory.mktemp("security-fleet"))


@dataclass
class Site:
    engine: Engine
    app: Litestar


@pytest.fixture
def site(template: Path, tmp_path: Path) -> Iterator[Site]:
    engine = sqlite_copy(template, tmp_path)
    try:
        yield Site(engine, create_app(settings_for(engine), engine))
    finally:
        engine.dispose()


def state_of(engine: Engine) -> dict[str, object]:
    """Everything an unsafe route of the site can change."""
    with Session(engine) as session:
        return {
            "grants": sorted((g.principal, g.project_id, g.cluster_id) for g in session.exec(select(AccessGrant))),
            "users": sorted(u.username for u in session.exec(select(LocalUser))),
            "tokens": session.exec(select(func.count()).select_from(ApiToken)).one(),
            "findings": sorted((f.id, f.status, f.acknowledged_by) for f in session.exec(select(Finding))),
            "sessions": session.exec(select(func.count()).select_from(LoginSession)).one(),
        }


def test_every_unsafe_route_refuses_a_missing_or_forged_csrf_token(site: Site, reliability) -> None:
    owned = ownership(site.engine)
    unsafe = [r for r in routes_of(site.app) if r.unsafe]
    assert unsafe, "no unsafe route found"
    assert not [r for r in unsafe if r.api], "the JSON API grew an unsafe route: decide how API clients pass CSRF"
    admin, bob = TestClient(site.app), TestClient(site.app)
    login(admin, "admin")
    login(bob, "bob")
    bobs_token = csrf_token(bob)
    pat = token_for(site.engine, "admin")
    before = state_of(site.engine)
    attempts = 0
    for route in unsafe:
        for call in calls_for(route, owned):
            forged = secrets.token_hex(64)
            variants = {
                "no token": ({}, call.form),
                "forged header": ({"x-csrftoken": forged}, call.form),
                "forged form field": ({}, {**(call.form or {}), "_csrf_token": forged}),
                "another session's token": ({"x-csrftoken": bobs_token}, call.form),
            }
            for what, (headers, form) in variants.items():
                response = admin.request(route.method, call.url, headers=headers, data=form, follow_redirects=False)
                attempts += 1
                assert response.status_code == 403, f"{route} with {what}: {response.status_code}"
            # a bearer token is no way around it: there is no exemption for Authorization headers
            bearer = TestClient(site.app).request(
                route.method,
                call.url,
                headers={"Authorization": f"Bearer {pat}"},
                data=call.form,
                follow_redirects=False,
            )
            attempts += 1
            assert bearer.status_code == 403, f"{route} with a bearer token and no CSRF token: {bearer.status_code}"
    assert state_of(site.engine) == before, "a refused request changed something"

    # the control: the same forms with the real token do change things
    token = csrf_token(admin)
    project = owned["alpha"].first("project_id")
    granted = admin.post(
        "/admin/access/grant",
        data={"project_id": project, "kind": "user", "name": "bob"},
        headers={"x-csrftoken": token},
        follow_redirects=False,
    )
    assert granted.status_code == 303
    assert state_of(site.engine)["grants"] != before["grants"]
    csrf = [m for m in site.app.middleware if getattr(m, "middleware", None) is SessionBoundCsrfMiddleware]
    assert len(csrf) == 1 and not csrf[0].kwargs["config"].exclude, "CSRF is missing or has exemptions"
    assert site.app.csrf_config is None, "Litestar's own CSRF middleware would render a token the session refuses"
    reliability.record(
        area="Security",
        tried=f"Posted to every unsafe site route ({len(unsafe)}) as a logged-in admin with no, a forged, a "
        "form-field-forged and another session's CSRF token, and with a bearer token instead",
        held=f"all {attempts} attempts got 403 and grants, users, tokens, findings and sessions were unchanged; "
        "the same grant with the real token went through; the JSON API has no unsafe route",
        unsafe_routes=len(unsafe),
        attempts=attempts,
    )


def _cookie(client: TestClient) -> str:
    value = client.cookies.get(SESSION_COOKIE)
    assert value, "no session cookie"
    return value


def _as(app: Litestar, cookie: str) -> TestClient:
    client = TestClient(app)
    client.cookies.set(SESSION_COOKIE, cookie, domain=HOST)
    return client


def _who(app: Litestar, cookie: str) -> set[str] | int:
    """The projects a session cookie reads through the API, or the status when it reads nothing."""
    response = _as(app, cookie).get("/api/v1/projects")
    if response.status_code != 200:
        return response.status_code
    return {p["namespace"] for p in response.json()["items"]}


def test_login_rotates_the_session_so_a_planted_cookie_is_useless(site: Site, reliability) -> None:
    attacker = TestClient(site.app)
    login(attacker, "bob")
    planted = _cookie(attacker)
    victim = TestClient(site.app)
    victim.cookies.set(SESSION_COOKIE, planted, domain=HOST)  # the attacker's cookie, planted in the victim's browser
    login(victim, "alice")
    after = _cookie(victim)
    assert after != planted
    assert _who(site.app, after) == {"team-alpha"}
    # the login ended the session the browser held (the planted one): never the victim's session
    assert _who(site.app, planted) == 401, "the planted cookie must not have become the victim's session"

    chosen = TestClient(site.app)
    chosen.cookies.set(SESSION_COOKIE, "attacker-chosen-value", domain=HOST)
    login(chosen, "alice")
    assert _cookie(chosen) != "attacker-chosen-value"
    assert _who(site.app, "attacker-chosen-value") == 401
    reliability.record(
        area="Security",
        tried="Planted another user's session cookie and an attacker-chosen one in a browser, then logged in there",
        held="each login issued a new cookie; the planted cookies never became the victim's session (401 or the "
        "attacker's own projects only)",
    )


def test_a_cookie_replayed_after_logout_authenticates_nothing(site: Site, reliability) -> None:
    browser = TestClient(site.app)
    login(browser, "alice")
    stolen = _cookie(browser)
    assert _who(site.app, stolen) == {"team-alpha"}
    other = TestClient(site.app)
    login(other, "alice")  # the same person in another browser stays logged in
    logout = browser.post("/logout", headers={"x-csrftoken": csrf_token(browser)}, follow_redirects=False)
    assert logout.status_code == 303 and logout.headers["location"] == "/login"
    assert _who(site.app, stolen) == 401
    page = _as(site.app, stolen).get("/projects", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    fragment = _as(site.app, stolen).get("/projects", headers={"HX-Request": "true"})
    assert fragment.status_code == 401 and fragment.headers["hx-redirect"] == "/login"
    replayed_post = _as(site.app, stolen)
    replayed_post.cookies.set("csrftoken", browser.cookies.get("csrftoken") or "", domain=HOST)
    acknowledged = replayed_post.post(
        f"/findings/{ownership(site.engine)['alpha'].first('finding_id')}/acknowledge",
        headers={"x-csrftoken": browser.cookies.get("csrftoken") or ""},
        follow_redirects=False,
    )
    # refused either way: by CSRF (the copy predates the token bound to the session) or as logged out
    assert acknowledged.status_code == 403 or acknowledged.headers["location"].startswith("/login")
    assert acknowledged.status_code in (303, 403)
    assert _who(site.app, _cookie(other)) == {"team-alpha"}
    reliability.record(
        area="Security",
        tried="Copied a logged-in session cookie, logged out, then replayed the copy on the API, a page, a "
        "fragment and a form post",
        held="the replayed cookie got 401 / a login redirect everywhere (the session is deleted server-side); "
        "the user's other browser stayed logged in",
    )


def test_sessions_are_server_side_and_expire(site: Site, reliability) -> None:
    browser = TestClient(site.app)
    login(browser, "alice")
    cookie = _cookie(browser)
    with Session(site.engine) as session:
        rows = session.exec(select(LoginSession)).all()
    assert len(rows) == 1 and rows[0].subject == "user:alice" and rows[0].tokens == ""
    assert rows[0].refresh_expires_at is not None
    authorizer = site.app.state["site"].authorizer
    assert authorizer.sessions.purge_expired(now=rows[0].refresh_expires_at) == 1
    assert _who(site.app, cookie) == 401
    assert PUBLIC  # the allowlist the matrix enforces also lists login and logout
    reliability.record(
        area="Security",
        tried="Logged in locally and looked at what the server keeps, then let the session pass its lifetime",
        held="the cookie names a server-side row (no token in it); once expired and purged the cookie got 401",
    )


def test_the_csrf_token_is_bound_to_the_session(site: Site, reliability) -> None:
    """A token pair minted elsewhere (anonymously, before the login, or by another session) and planted in the
    browser as the csrftoken cookie passes a double-submit check; bound to the session, it does not."""
    finding = ownership(site.engine)["alpha"].first("finding_id")
    attacker = TestClient(site.app)
    minted = csrf_token(attacker)  # a valid token, and the cookie that goes with it
    victim = TestClient(site.app)
    before_login = csrf_token(victim)
    login(victim, "alice")
    own = csrf_token(victim)
    assert own != before_login, "the login did not issue the session a token of its own"
    refused = {}
    for what, token in {"an anonymous visitor's token": minted, "the pre-login token": before_login}.items():
        victim.cookies.set("csrftoken", token, domain=HOST)  # planted, e.g. by a sibling host
        answer = victim.post(f"/findings/{finding}/acknowledge", headers={"x-csrftoken": token}, follow_redirects=False)
        refused[what] = answer.status_code
    assert set(refused.values()) == {403}, refused
    assert state_of(site.engine)["findings"] == sorted(
        (f.id, f.status, f.acknowledged_by) for f in Session(site.engine).exec(select(Finding))
    )
    victim.cookies.set("csrftoken", own, domain=HOST)
    done = victim.post(f"/findings/{finding}/acknowledge", headers={"x-csrftoken": own}, follow_redirects=False)
    assert done.status_code == 303, done.status_code
    reliability.record(
        area="Security",
        tried="Planted a valid CSRF token pair minted by an anonymous visitor, and the browser's pre-login token, "
        "as the csrftoken cookie of a logged-in session and posted a finding action with it",
        held="both 403: the session accepts only the token issued to it after the login (before: any matching "
        "cookie and token passed)",
    )


def test_logging_in_again_ends_the_previous_session(site: Site, reliability) -> None:
    browser = TestClient(site.app)
    login(browser, "alice")
    first = _cookie(browser)
    login(browser, "alice")
    second = _cookie(browser)
    assert second != first
    assert _who(site.app, second) == {"team-alpha"}
    assert _who(site.app, first) == 401, "the cookie of the session before the second login still works"
    reliability.record(
        area="Security",
        tried="Logged in, kept the session cookie, logged in again in the same browser, then replayed the first",
        held="the first cookie got 401: a login ends the session the browser had (before: it stayed valid)",
    )
