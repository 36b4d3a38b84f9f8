"""End to end: the simulator's idle notebooks through polls, the grace period, the e-mail, "still using it", silence.

Real parts: the demo fleet polled into SQLite/PostgreSQL through the signal pipeline, an SMTP
server on loopback (aiosmtpd), the site with its login, authorization and CSRF. Then the pages:
researchers see only their projects' notifications and exemptions; admins see all and set policies.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, select
from sqlmodel import Session

from domain.access.accounts import find_project, grant_project
from domain.access.demo import seed_demo_identities
from domain.access.users import create_user, set_disabled
from domain.database import session_scope
from domain.models import LocalUser, NotificationAudit, NotificationExemption, NotificationPolicyOverride
from domain.notifications.recipients import LocalRecipients
from tests.notification_support import Inbox, smtp_server
from tests.test_access_end_to_end import identity, login
from web.app import create_app
from worker.metrics import WorkerMetrics
from worker.notifications.channels import SmtpChannel
from worker.notifications.jobs import NotificationJobs
from worker.pipeline.processor import SignalProcessor
from worker.polling import SourcePoller
from worker.sources.simulated import SimulatedSource

START = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)
CONFIG = """
[[sources]]
name = "demo"
kind = "simulated"

[notifications.default]
grace_minutes = 30
reminder_interval_minutes = 30
escalate_after_minutes = 0
"""


def csrf(page: str) -> str:
    return re.search(r'name="_csrf_token" value="([^"]+)"', page).group(1)


@pytest.fixture
def fleet(db_engine: Engine, make_settings, tmp_path: Path) -> Iterator[tuple[TestClient, Engine, Inbox, object]]:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    with smtp_server() as (port, inbox):
        settings = make_settings(
            db_engine,
            config_path=config,
            pipeline={"persistence_polls": 1},
            notify={
                "enabled": True,
                "smtp_host": "127.0.0.1",
                "smtp_port": port,
                "smtp_starttls": False,
                "smtp_timeout_seconds": 5,
                "site_url": "http://testserver",
                "fallback_emails": "gpu-team@example.test",  # projects nobody with an address was granted
            },
        )
        signals = SignalProcessor(settings, db_engine, metrics=WorkerMetrics())
        source = SimulatedSource.from_settings(settings.sources[0])
        poller = SourcePoller(source, db_engine, settings.scheduler, signals=signals)
        jobs = NotificationJobs(
            settings.notify,
            settings.policies,
            db_engine,
            {"email": SmtpChannel(settings.notify)},
            LocalRecipients(db_engine),
        )
        state = {"now": START}

        def step() -> None:
            assert poller.poll_once(now=state["now"], force=True).outcome == "success"
            jobs.decide(state["now"])
            jobs.send(state["now"])
            state["now"] += STEP

        assert poller.poll_once(now=START - STEP, force=True).outcome == "success"
        assert seed_demo_identities(db_engine) == []
        with session_scope(db_engine) as db:  # local mode: notices go to the granted users' addresses
            for user in db.execute(select(LocalUser)).scalars():
                user.email = f"{user.username}@example.test"
                db.add(user)
            project = find_project(db, "moc-prod", "ml-team-a")
            create_user(db, "carol", password="carol-password-1234", email="carol@example.test")
            grant_project(db, "carol", project, granted_by="test")
            set_disabled(db, "carol", True)  # a disabled user gets nothing
        with TestClient(create_app(settings, db_engine)) as client:
            yield client, db_engine, inbox, step


def links_in(inbox: Inbox) -> list[str]:
    out = []
    for _rcpts, message in inbox.messages:
        body = message.get_payload(decode=True).decode()
        out += re.findall(r"still using it\? (\S+)", body)
    return out


def test_idle_notebook_notice_exemption_and_silence(fleet) -> None:
    client, engine, inbox, step = fleet
    for _ in range(5):  # idle since the first poll 25 minutes ago: inside the 30-minute grace period
        step()
    assert inbox.messages == []
    step()
    assert inbox.messages, "no notice at the end of the grace period"
    ml_team = [(r, m) for r, m in inbox.messages if "ml-team-a" in m["Subject"]]
    assert ml_team, [m["Subject"] for _r, m in inbox.messages]
    assert all(rcpts == ["alice@example.test"] for rcpts, _m in ml_team)  # granted, with an address, enabled
    text = "".join(m.get_payload(decode=True).decode() for _r, m in inbox.messages if "ml-team-a" in m["Subject"])
    pod = re.search(r"- ml-team-a/(\S+) on cluster (\S+?),", text)
    assert pod
    subject = f"workload:{pod.group(2)}/ml-team-a/{pod.group(1)}"
    links = [link for link in links_in(inbox) if link.endswith(f"?pod={pod.group(1)}")]
    assert links
    url = urlsplit(links[0])
    path = f"{url.path}?{url.query}"

    # the link needs a login, and read access to the project
    anonymous = client.get(path, follow_redirects=False)
    assert anonymous.status_code in (302, 303, 401) and "Still using" not in anonymous.text
    login(client, "bob", identity("bob").password)
    assert client.get(path).status_code == 404
    client.post("/logout", data={"_csrf_token": csrf(client.get("/").text)})
    login(client, "alice", identity("alice").password)
    form = client.get(path)
    assert form.status_code == 200 and "Still using" in form.text
    card = re.search(r"report card: (\S+)", text)
    assert card, "the notice links the workload's report card"
    card_page = client.get(urlsplit(card.group(1)).path)
    assert card_page.status_code == 200 and pod.group(1) in card_page.text
    action = re.search(r'action="(/notifications/projects/\d+/exempt)"', form.text).group(1)
    no_token = client.post(action, data={"pod": pod.group(1), "reason": "x", "days": "2"}, follow_redirects=False)
    assert no_token.status_code == 403
    answer = client.post(
        action,
        data={
            "pod": pod.group(1),
            "reason": "waiting for the next shard",
            "days": "300",
            "_csrf_token": csrf(form.text),
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303
    with Session(engine) as db:
        (exemption,) = db.execute(select(NotificationExemption)).scalars()
        audit = list(db.execute(select(NotificationAudit)).scalars())
    assert exemption.subject == subject and exemption.created_by == "user:alice"
    assert exemption.expires_at - exemption.created_at <= timedelta(days=14)  # capped by the default policy
    assert [a.action for a in audit] == ["exemption.create"] and audit[0].detail["capped"] is True

    # silence about that workload afterwards, while reminders continue for the others
    before = len(inbox.messages)
    for _ in range(14):
        step()
    later = inbox.messages[before:]
    assert later, "reminders about the other idle workloads should go on"
    for _rcpts, message in later:
        assert subject not in message.get_payload(decode=True).decode()

    page = client.get("/notifications/exemptions")
    assert subject in page.text and "user:alice" in page.text
    sent = client.get("/notifications?status=sent")
    assert "ml-team-a" in sent.text


def test_pages_show_only_the_callers_projects(fleet) -> None:
    client, engine, inbox, step = fleet
    for _ in range(9):
        step()
    assert inbox.messages
    login(client, "bob", identity("bob").password)
    page = client.get("/notifications?status=all")
    assert page.status_code == 200
    assert "ml-team-a" not in page.text
    assert client.get("/notifications/policies").status_code == 200
    assert "ml-team-a" not in client.get("/notifications/policies").text
    # a researcher cannot set a policy
    token = csrf(client.get("/notifications/policies").text)
    refused = client.post("/notifications/policies/1", data={"grace_minutes": "5", "_csrf_token": token})
    assert refused.status_code == 403
    client.post("/logout", data={"_csrf_token": csrf(client.get("/").text)})
    login(client, "admin", identity("admin").password)
    everything = client.get("/notifications?status=all&limit=500")
    assert "ml-team-a" in everything.text
    policies = client.get("/notifications/policies")
    project_id = int(re.search(r'action="/notifications/policies/(\d+)"', policies.text).group(1))
    done = client.post(
        f"/notifications/policies/{project_id}",
        data={"enabled": "off", "grace_minutes": "", "_csrf_token": csrf(policies.text)},
        follow_redirects=False,
    )
    assert done.status_code == 303
    with Session(engine) as db:
        (override,) = db.execute(select(NotificationPolicyOverride)).scalars()
        (audit,) = db.execute(select(NotificationAudit)).scalars()
    assert override.enabled is False and override.grace_minutes is None and override.updated_by == "user:admin"
    assert audit.action == "policy.set" and audit.actor == "user:admin"


def test_recipients_exemptions_of_real_pods_and_partial_policy_changes(fleet) -> None:
    client, engine, inbox, step = fleet
    for _ in range(7):
        step()
    assert any("ml-team-a" in m["Subject"] for _r, m in inbox.messages)
    # researchers see how many a message went to, not who
    login(client, "alice", identity("alice").password)
    mine = client.get("/notifications?status=all&limit=500")
    assert "ml-team-a" in mine.text and "@example.test" not in mine.text and "1 recipient" in mine.text
    # an exemption only for a pod that exists in the project
    form = client.get("/notifications/exemptions")
    text = "".join(m.get_payload(decode=True).decode() for _r, m in inbox.messages if "ml-team-a" in m["Subject"])
    link = urlsplit(re.search(r"still using it\? (\S+/exempt\?pod=\S+)", text).group(1))
    action = link.path
    pod = link.query.removeprefix("pod=")
    ghost = client.post(
        action,
        data={"pod": "no-such-pod-0", "reason": "later", "days": "2", "_csrf_token": csrf(form.text)},
        follow_redirects=False,
    )
    assert ghost.status_code == 400 and "no running workload" in ghost.text
    real = client.post(
        action,
        data={"pod": pod, "reason": "shard", "days": "2", "_csrf_token": csrf(form.text)},
        follow_redirects=False,
    )
    assert real.status_code == 303
    with Session(engine) as db:
        (exemption,) = db.execute(select(NotificationExemption)).scalars()
    assert exemption.hub == "demo" and exemption.subject.endswith(f"/ml-team-a/{pod}")
    # ids beyond the id type are bad input, not a lookup
    assert client.get(f"/notifications/projects/{2**31}/exempt?pod={pod}").status_code == 400
    client.post("/logout", data={"_csrf_token": csrf(client.get("/").text)})

    login(client, "admin", identity("admin").password)
    assert "alice@example.test" in client.get("/notifications?status=all&limit=500").text
    project_id = int(re.search(r"/notifications/projects/(\d+)/exempt", action).group(1))
    token = csrf(client.get("/notifications/policies").text)

    def post(**fields: str) -> int:
        return client.post(
            f"/notifications/policies/{project_id}", data={**fields, "_csrf_token": token}, follow_redirects=False
        ).status_code

    def override() -> NotificationPolicyOverride:
        with Session(engine) as db:
            return db.execute(
                select(NotificationPolicyOverride).where(NotificationPolicyOverride.project_id == project_id)
            ).scalar_one()

    assert post(grace_minutes="45", quiet_hours="22:00-07:00", timezone="Europe/Berlin", max_exemption_days="3") == 303
    assert post(enabled="off") == 303  # one field: the others stay
    kept = override()
    assert (kept.enabled, kept.grace_minutes, kept.quiet_hours, kept.timezone, kept.max_exemption_days) == (
        False,
        45,
        "22:00-07:00",
        "Europe/Berlin",
        3,
    )
    page = client.get("/notifications/policies").text
    assert 'value="45.0"' in page and 'value="22:00-07:00"' in page and "22:00\u201307:00 Europe/Berlin" in page
    assert post(quiet_hours="25:00-07:00") == 400 and post(timezone="Mars/Olympus") == 400
    assert post(max_exemption_days="0") == 400
    assert override().quiet_hours == "22:00-07:00" and override().timezone == "Europe/Berlin"  # unchanged
    assert post(grace_minutes="") == 303  # cleared: inherits
    assert override().grace_minutes is None and override().max_exemption_days == 3
