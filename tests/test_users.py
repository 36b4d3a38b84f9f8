"""Local user management: the rules (domain/access/users.py), the admin page, and what disabling means."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from domain.access.accounts import create_token
from domain.access.users import UserError, create_user, normalise_email, set_disabled
from domain.database import session_scope
from domain.models import ApiToken, LocalUser, LoginSession
from tests.reliability.security_support import csrf_token
from web.app import create_app

ATOM = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


@given(
    local=st.lists(st.text(ATOM, min_size=1, max_size=12), min_size=1, max_size=3).map(".".join),
    labels=st.lists(LABEL, min_size=1, max_size=3),
    tld=st.from_regex(r"[a-z]{2,8}", fullmatch=True),
    upper=st.booleans(),
)
def test_addresses_of_the_usual_form_are_kept_with_the_domain_lower_cased(local, labels, tld, upper) -> None:  # type: ignore[no-untyped-def]
    domain = ".".join([*labels, tld])
    address = f"{local}@{domain.upper() if upper else domain}"
    assert normalise_email(address) == f"{local}@{domain}"
    assert normalise_email(f"  {address} ") == f"{local}@{domain}"


@given(
    good=st.just("name@example.org"),
    position=st.integers(min_value=0, max_value=16),
    bad=st.sampled_from([" ", "\t", "\n", "\x00", "\u202e", "<", ">", "(", ")", ",", ";", ":", "[", "]", '"', "\\"]),
)
def test_addresses_with_space_control_or_special_characters_are_refused(good: str, position: int, bad: str) -> None:
    with pytest.raises(UserError):
        normalise_email(good[:position] + bad + good[position:] if 0 < position < len(good) else good + bad + "x@")


@pytest.mark.parametrize(
    "address",
    ["root", "root@localhost", "@example.org", "a@b@example.org", "a..b@example.org", ".a@example.org",
     "a@-example.org", "a@example.123", "a@192.168.0.1", "a@[192.168.0.1]", "x" * 65 + "@example.org"],
)  # fmt: skip
def test_addresses_notices_cannot_reach_are_refused(address: str) -> None:
    with pytest.raises(UserError, match="not an e-mail address"):
        normalise_email(address)


def _client(app) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(app)


def _login(client: TestClient, username: str, password: str) -> int:
    return client.post(
        "/login",
        data={"username": username, "password": password, "next": "/", "_csrf_token": csrf_token(client)},
        follow_redirects=False,
    ).status_code


@pytest.fixture
def site(sqlite_engine: Engine, make_settings):  # type: ignore[no-untyped-def]
    with session_scope(sqlite_engine) as session:
        create_user(session, "root", password="root-password-123", is_admin=True, email="root@example.org")
        create_user(session, "alice", password="alice-password-123", email="alice@example.org")
        token = create_token(session, "alice")
    return sqlite_engine, create_app(make_settings(sqlite_engine), sqlite_engine), token


def _post(client: TestClient, path: str, **form: str):  # type: ignore[no-untyped-def]
    return client.post(path, data=form, headers={"x-csrftoken": csrf_token(client)}, follow_redirects=False)


def test_a_disabled_user_can_neither_log_in_nor_use_a_token(site) -> None:  # type: ignore[no-untyped-def]
    _, app, token = site
    alice, root = _client(app), _client(app)
    assert _login(alice, "alice", "alice-password-123") == 303
    assert _login(root, "root", "root-password-123") == 303
    bearer = {"Authorization": f"Bearer {token}"}
    assert alice.get("/api/v1/projects").status_code == 200
    assert _client(app).get("/api/v1/projects", headers=bearer).status_code == 200

    assert _post(root, "/admin/users/disable", username="alice").status_code == 303
    assert "alice is disabled" in root.get("/admin/users").text
    assert alice.get("/api/v1/projects").status_code == 401  # the open session ended
    assert _client(app).get("/api/v1/projects", headers=bearer).status_code == 401
    assert _login(_client(app), "alice", "alice-password-123") == 401

    assert _post(root, "/admin/users/enable", username="alice").status_code == 303
    assert _client(app).get("/api/v1/projects", headers=bearer).status_code == 200
    assert _login(_client(app), "alice", "alice-password-123") == 303


def test_admins_manage_users_on_the_page_and_researchers_may_not(site) -> None:  # type: ignore[no-untyped-def]
    engine, app, _ = site
    root, alice = _client(app), _client(app)
    _login(root, "root", "root-password-123")
    _login(alice, "alice", "alice-password-123")
    assert alice.get("/admin/users").status_code == 403
    assert _post(alice, "/admin/users/", username="mallory", password="mallory-password-1").status_code == 403

    def users() -> dict[str, LocalUser]:
        with Session(engine) as session:
            return {u.username: u for u in session.exec(select(LocalUser)).all()}

    refused = _post(root, "/admin/users/", username="bob", password="bob-password-123", email="bob at example")
    assert refused.status_code == 303 and "bob" not in users()
    assert "not an e-mail address" in root.get("/admin/users").text
    made = _post(
        root, "/admin/users/", username="bob", password="bob-password-123", email="Bob@Example.org", admin="true"
    )
    assert made.status_code == 303
    bob = users()["bob"]
    assert bob.is_admin and bob.email == "Bob@example.org" and not bob.disabled
    page = root.get("/admin/users").text
    assert "Created administrator bob." in page and re.search(r"<code>bob</code>.*Bob@example.org", page, re.S)

    assert _post(root, "/admin/users/password", username="alice", password="alice-new-password").status_code == 303
    assert alice.get("/api/v1/projects").status_code == 401  # a new password ends the open logins
    assert _login(_client(app), "alice", "alice-new-password") == 303

    assert _post(root, "/admin/users/delete", username="alice").status_code == 303
    with Session(engine) as session:
        assert not session.exec(select(ApiToken)).all()
        assert not session.exec(select(LoginSession).where(LoginSession.subject == "user:alice")).all()
    assert "alice" not in users()

    assert _post(root, "/admin/users/disable", username="bob").status_code == 303
    with session_scope(engine) as session, pytest.raises(UserError, match="last enabled administrator"):
        set_disabled(session, "root", True)
    assert _post(root, "/admin/users/delete", username="root").status_code == 303
    assert "last enabled administrator" in root.get("/admin/users").text and "root" in users()


@pytest.mark.parametrize("username", ["alice\n", "Alice", "-alice", "alice-", "a b", "user:alice", "x" * 65, ""])
def test_user_names_grants_cannot_confuse_are_refused(sqlite_engine: Engine, username: str) -> None:
    with session_scope(sqlite_engine) as session, pytest.raises(UserError, match="user names are"):
        create_user(session, username, password="a-long-enough-password")
