"""Access management in local mode: the admin pages, the CLI and the AccessAdmin rows behind them.

Keycloak mode runs the same pages and commands against a real Keycloak in ``test_keycloak.py``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine

from ai_telemetry import cli
from domain.access import Grantee, GrantError, ProjectRef
from domain.access.demo import seed_demo_identities
from domain.access.local import LocalAccessAdmin
from domain.settings import DEMO_SOURCE
from web.app import create_app
from worker.polling import SourcePoller
from worker.sources.simulated import SimulatedSource

NOW = datetime(2026, 11, 23, 9, 0, 7, tzinfo=UTC)
VISION = ProjectRef("demo", "nerc-ocp", "vision-lab")
ROBOTICS = ProjectRef("demo", "nerc-ocp", "robotics")


@pytest.fixture
def fleet(db_engine: Engine, make_settings) -> Engine:  # type: ignore[no-untyped-def]
    settings = make_settings(db_engine)
    outcome = SourcePoller(SimulatedSource.from_settings(DEMO_SOURCE), db_engine, settings.scheduler).poll_once(
        now=NOW, force=True
    )
    assert outcome.outcome == "success"
    assert seed_demo_identities(db_engine) == []
    return db_engine


def test_local_grants_revokes_and_api_clients(fleet: Engine) -> None:
    changes: list[str] = []
    admin = LocalAccessAdmin(fleet, on_change=lambda: changes.append("changed"))
    [vision] = admin.access_of([VISION])
    assert vision.grantees == (Grantee("user", "bob"),)

    assert admin.grant(ROBOTICS, Grantee("user", "alice"), granted_by="user:admin") is True
    assert admin.grant(ROBOTICS, Grantee("user", "alice"), granted_by="user:admin") is False
    assert admin.access_of([ROBOTICS])[0].grantees == (Grantee("user", "alice"),)
    assert admin.revoke(ROBOTICS, Grantee("user", "alice")) is True
    assert admin.revoke(ROBOTICS, Grantee("user", "alice")) is False
    assert changes == ["changed", "changed"]

    with pytest.raises(GrantError, match="no local user 'zed'"):
        admin.grant(ROBOTICS, Grantee("user", "zed"), granted_by="user:admin")
    with pytest.raises(GrantError, match="local mode has no groups"):
        admin.grant(ROBOTICS, Grantee("group", "vision-lab"), granted_by="user:admin")
    with pytest.raises(GrantError, match="no research project nope"):
        admin.grant(ProjectRef("demo", "nerc-ocp", "nope"), Grantee("user", "bob"), granted_by="user:admin")

    credentials = admin.create_api_client("vision-lab", [VISION, ROBOTICS], created_by="user:admin")
    assert credentials.client_id == "vision-lab-api" and credentials.token_url is None
    assert credentials.client_secret.startswith("ait_")
    assert Grantee("user", "vision-lab-api") in admin.access_of([ROBOTICS])[0].grantees
    with pytest.raises(GrantError, match="already exists"):
        admin.create_api_client("vision-lab", [], created_by="user:admin")
    with pytest.raises(GrantError, match="lower-case"):
        admin.create_api_client("Vision Lab", [], created_by="user:admin")


@pytest.fixture
def site(fleet: Engine, make_settings) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(create_app(make_settings(fleet), fleet)) as client:
        yield client


def log_in(client: TestClient, username: str) -> None:
    page = client.get("/login")
    token = re.search(r'name="_csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    response = client.post(
        "/login",
        data={"username": username, "password": f"{username}-demo", "_csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303


def form_token(client: TestClient) -> str:
    return str(client.cookies.get("csrftoken"))


def project_ids(client: TestClient) -> dict[str, int]:
    return {p["namespace"]: p["id"] for p in client.get("/api/v1/projects?limit=500").json()["items"]}


def test_admin_page_lists_who_reads_what_and_changes_it(site: TestClient) -> None:
    log_in(site, "admin")
    ids = project_ids(site)
    page = site.get("/admin/access?limit=100")
    assert page.status_code == 200
    assert '<a href="/admin/access" aria-current="page">Access</a>' in page.text
    row = re.search(r">ml-team-a</a>.*?</tr>", page.text, re.S)
    assert row and "user <strong>alice</strong>" in row.group(0)
    fragment = site.get("/admin/access?q=robot", headers={"HX-Request": "true", "HX-Target": "table"})
    assert "<html" not in fragment.text and ">robotics</a>" in fragment.text and ">vision-lab</a>" not in fragment.text

    granted = site.post(
        "/admin/access/grant",
        data={
            "project_id": ids["robotics"],
            "kind": "user",
            "name": "bob",
            "back": "/admin/access?q=robot",
            "_csrf_token": form_token(site),
        },
    )
    assert granted.status_code == 200 and str(granted.url).endswith("/admin/access?q=robot")
    assert "user:bob can now read nerc-ocp/robotics." in granted.text
    refused = site.post(
        "/admin/access/grant",
        data={
            "project_id": ids["robotics"],
            "kind": "group",
            "name": "vision-lab",
            "_csrf_token": form_token(site),
        },
    )
    assert "local mode has no groups" in html.unescape(refused.text)
    offsite = site.post(
        "/admin/access/revoke",
        data={
            "project_id": ids["robotics"],
            "kind": "user",
            "name": "bob",
            "back": "https://evil.example/",
            "_csrf_token": form_token(site),
        },
        follow_redirects=False,
    )
    assert offsite.headers["location"] == "/admin/access"

    log_in(site, "bob")
    assert set(project_ids(site)) == {"vision-lab"}  # revoked again above
    assert site.get("/admin/access").status_code == 403
    assert (
        site.post(
            "/admin/access/grant",
            data={
                "project_id": ids["robotics"],
                "kind": "user",
                "name": "bob",
                "_csrf_token": form_token(site),
            },
        ).status_code
        == 403
    )
    assert 'href="/admin/access"' not in site.get("/").text


def test_admin_forms_need_the_csrf_token(site: TestClient) -> None:
    log_in(site, "admin")
    ids = project_ids(site)
    forged = site.post("/admin/access/grant", data={"project_id": ids["robotics"], "kind": "user", "name": "bob"})
    assert forged.status_code == 403


def test_new_api_client_is_shown_once_and_reads_its_projects(site: TestClient) -> None:
    log_in(site, "admin")
    ids = project_ids(site)
    created = site.post(
        "/admin/access/clients",
        data={
            "team": "robotics",
            "projects": [str(ids["robotics"])],
            "_csrf_token": form_token(site),
        },
    )
    assert created.status_code == 201 and created.headers["cache-control"] == "no-store"
    token = re.search(r"<dt>Bearer token</dt><dd><code>([^<]+)</code>", created.text).group(1)  # type: ignore[union-attr]
    site.cookies.clear()
    projects = site.get("/api/v1/projects", headers={"Authorization": f"Bearer {token}"}).json()["items"]
    assert [p["namespace"] for p in projects] == ["robotics"]


def test_cli_grant_and_revoke_in_local_mode(fleet: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    url = ["--database-url", fleet.url.render_as_string(hide_password=False)]
    assert cli.main(["grant", *url, "--project", "nerc-ocp/robotics", "--user", "alice"]) == 0
    assert "user:alice can now read nerc-ocp/robotics." in capsys.readouterr().out
    assert cli.main(["grant", *url, "--project", "demo/nerc-ocp/robotics", "--user", "alice"]) == 0
    assert "could already read" in capsys.readouterr().out
    assert LocalAccessAdmin(fleet).access_of([ROBOTICS])[0].grantees == (Grantee("user", "alice"),)
    assert cli.main(["revoke", *url, "--project", "nerc-ocp/robotics", "--user", "alice"]) == 0
    assert "no longer reads nerc-ocp/robotics" in capsys.readouterr().out
    assert cli.main(["grant", *url, "--project", "nerc-ocp/robotics", "--group", "vision-lab"]) == 1
    assert "local mode has no groups" in capsys.readouterr().err
    assert cli.main(["grant", *url, "--project", "robotics", "--user", "alice"]) == 2
    assert "CLUSTER/NAMESPACE" in capsys.readouterr().err
