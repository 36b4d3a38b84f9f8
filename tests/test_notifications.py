"""Notices about idle GPUs through real parts: aiosmtpd on loopback, a real Alertmanager, SQLite and PostgreSQL.

Decisions go to the outbox before any send; deciding again adds nothing; replicas never send the
same row twice; a refusing or stalled SMTP server leaves the message pending with its reason.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from domain.access import Principal, ReadScope
from domain.access.users import create_user, set_disabled
from domain.database import session_scope
from domain.models import AccessGrant, Cluster, Hub, IdleNotice, NotificationOutbox, ResearchProject
from domain.notifications import queries, store
from domain.notifications.recipients import LocalRecipients, StaticRecipients
from domain.settings import NotificationPolicies, NotificationSettings, PolicySettings
from tests.alertmanager_service import running_alertmanager
from tests.notification_support import Inbox, add_idle_finding, smtp_server, stalled_smtp_server, webhook_server
from worker.metrics import WorkerMetrics
from worker.notifications.channels import AlertmanagerChannel, SmtpChannel, WebhookChannel
from worker.notifications.jobs import NotificationJobs, decide_turn
from worker.scheduler import create_scheduler

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
POLICIES = NotificationPolicies(default=PolicySettings(grace_minutes=60, reminder_interval_minutes=240))


def notify_settings(smtp_port: int | None = None, **extra) -> NotificationSettings:
    given = {"enabled": True, "site_url": "https://telemetry.example.test", "smtp_starttls": False}
    if smtp_port is not None:
        given.update(smtp_host="127.0.0.1", smtp_port=smtp_port, smtp_timeout_seconds=2)
    given.update(extra)
    return NotificationSettings(**given)


def jobs_for(
    engine: Engine,
    settings: NotificationSettings,
    *,
    owner: str = "w1",
    metrics: WorkerMetrics | None = None,
    **channels,
) -> NotificationJobs:
    built = {}
    if settings.smtp_host:
        built["email"] = SmtpChannel(settings)
    built.update(channels)
    return NotificationJobs(
        settings,
        POLICIES,
        engine,
        built,
        StaticRecipients(["ada@example.test", "bo@example.test"]),
        owner=owner,
        metrics=metrics,
    )


def outbox(engine: Engine) -> list[NotificationOutbox]:
    with Session(engine) as session:
        return list(session.execute(select(NotificationOutbox).order_by(NotificationOutbox.id)).scalars())


def test_email_after_grace_with_recipients_subject_and_link(db_engine: Engine) -> None:
    add_idle_finding(db_engine, idle_since=NOW - timedelta(minutes=90), last_seen=NOW - timedelta(minutes=1))
    with smtp_server() as (port, inbox):
        jobs = jobs_for(db_engine, notify_settings(port))
        early = jobs.decide(NOW - timedelta(minutes=40))  # 50 min idle: inside the grace period
        assert early.messages == 0
        report = jobs.decide(NOW)
        assert report.messages == 1 and report.notices == 1
        assert jobs.send(NOW).sent == 1
    ((rcpts, message),) = inbox.messages
    assert sorted(rcpts) == ["ada@example.test", "bo@example.test"]
    assert "GPUs allocated but idle" in message["Subject"] and "ml-team (c1)" in message["Subject"]
    body = message.get_payload(decode=True).decode()
    assert "https://telemetry.example.test/notifications/projects/1/exempt?pod=notebook-0" in body
    assert "utilisation 0.0 %" in body and "idle since 2026-12-06 10:30 UTC" in body
    (row,) = outbox(db_engine)
    assert row.status == "sent" and row.attempts == 1 and row.last_error is None
    assert message["Message-ID"].startswith("<email.")


def test_deciding_again_adds_nothing_and_reminder_waits_for_interval(db_engine: Engine) -> None:
    add_idle_finding(db_engine, idle_since=NOW - timedelta(hours=2), last_seen=NOW)
    jobs = jobs_for(db_engine, notify_settings(2525))
    assert jobs.decide(NOW).messages == 1
    assert jobs.decide(NOW).messages == 0  # a restart deciding the same moment again
    assert jobs.decide(NOW + timedelta(hours=3)).messages == 0  # reminder interval is 4 h
    add_idle_finding(db_engine, idle_since=NOW - timedelta(hours=2), last_seen=NOW + timedelta(hours=4))
    assert jobs.decide(NOW + timedelta(hours=4)).messages == 1
    with Session(db_engine) as session:
        kinds = list(session.execute(select(IdleNotice.kind).order_by(IdleNotice.id)).scalars())
    assert kinds == ["notice", "reminder"]


def test_unknown_utilisation_is_not_idle(db_engine: Engine) -> None:
    """A finding the polls stopped refreshing (stale) has unknown utilisation: no notice."""
    add_idle_finding(db_engine, idle_since=NOW - timedelta(hours=5), last_seen=NOW - timedelta(hours=2))
    jobs = jobs_for(db_engine, notify_settings(2525))
    report = jobs.decide(NOW)
    assert report.idle == 1 and report.messages == 0


def test_refusing_smtp_server_leaves_message_pending_with_reason(db_engine: Engine) -> None:
    add_idle_finding(db_engine, idle_since=NOW - timedelta(hours=2), last_seen=NOW)
    with smtp_server(Inbox(refuse="451 4.3.0 Mailbox temporarily unavailable")) as (port, inbox):
        metrics = WorkerMetrics()
        jobs = jobs_for(db_engine, notify_settings(port), metrics=metrics)
        jobs.decide(NOW)
        report = jobs.send(NOW)
        assert report.retrying == 1 and inbox.messages == []
        (row,) = outbox(db_engine)
        assert row.status == "pending" and row.attempts == 1
        assert "451" in (row.last_error or "")
        assert row.next_attempt_at > NOW  # backed off
        assert jobs.send(NOW).sent == 0  # not due yet
        inbox.refuse = None
        assert jobs.send(row.next_attempt_at).sent == 1
    assert len(inbox.messages) == 1
    (row,) = outbox(db_engine)
    assert row.status == "sent" and row.attempts == 2
    assert metrics.notification_attempts.labels("email", "retrying")._value.get() == 1
    assert metrics.notification_attempts.labels("email", "sent")._value.get() == 1
    assert metrics.notifications_decided.labels("notice")._value.get() == 1


def test_stalled_smtp_server_times_out_and_keeps_message(db_engine: Engine) -> None:
    add_idle_finding(db_engine, idle_since=NOW - timedelta(hours=2), last_seen=NOW)
    with stalled_smtp_server() as port:
        jobs = jobs_for(db_engine, notify_settings(port, smtp_timeout_seconds=0.5))
        jobs.decide(NOW)
        jobs.run()  # the scheduled job: never raises
        report = jobs.send(NOW + timedelta(hours=1))
    assert report.sent == 0
    (row,) = outbox(db_engine)
    assert row.status == "pending" and row.attempts >= 1
    assert "timed out" in (row.last_error or "").lower() or "timeout" in (row.last_error or "").lower()


def test_gives_up_after_max_attempts_but_keeps_the_row(db_engine: Engine) -> None:
    add_idle_finding(db_engine, idle_since=NOW - timedelta(hours=2), last_seen=NOW)
    with smtp_server(Inbox(refuse="554 5.7.1 Rejected")) as (port, _inbox):
        jobs = jobs_for(db_engine, notify_settings(port, max_attempts=3))
        jobs.decide(NOW)
        later = NOW
        for _ in range(3):
            jobs.send(later)
            later += timedelta(days=1)
    (row,) = outbox(db_engine)
    assert row.status == "failed" and row.attempts == 3 and "554" in (row.last_error or "")


def test_two_replicas_claim_disjoint_rows(db_engine: Engine) -> None:
    """Replicas claiming at the same moment from separate connections never hold the same row."""
    for index in range(60):
        add_idle_finding(
            db_engine, pod=f"p{index}", namespace=f"ns{index % 7}", idle_since=NOW - timedelta(hours=2), last_seen=NOW
        )
    jobs = jobs_for(db_engine, notify_settings(2525))
    assert jobs.decide(NOW).messages == 7
    claimed: dict[str, list[int]] = {}
    barrier = threading.Barrier(4)

    def replica(name: str) -> None:
        with Session(db_engine) as session:
            barrier.wait()
            claimed[name] = [r.id for r in store.claim(session, name, NOW, timedelta(minutes=2), 3)]

    threads = [threading.Thread(target=replica, args=(f"r{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [i for rows in claimed.values() for i in rows]
    assert len(ids) == len(set(ids)) == 7
    with Session(db_engine) as session:  # the lease blocks a later claim until it expires
        assert store.claim(session, "late", NOW + timedelta(minutes=1), timedelta(minutes=2), 10) == []
        again = store.claim(session, "late", NOW + timedelta(minutes=3), timedelta(minutes=2), 10)
    assert len(again) == 7


def test_only_the_lease_holder_records_the_result(db_engine: Engine) -> None:
    add_idle_finding(db_engine, idle_since=NOW - timedelta(hours=2), last_seen=NOW)
    jobs_for(db_engine, notify_settings(2525)).decide(NOW)
    with Session(db_engine, expire_on_commit=False) as slow, Session(db_engine, expire_on_commit=False) as fast:
        (stale,) = store.claim(slow, "slow", NOW, timedelta(seconds=30), 10)
        (fresh,) = store.claim(fast, "fast", NOW + timedelta(minutes=1), timedelta(seconds=30), 10)
        assert store.finish(fast, fresh, NOW, None, None)
        assert not store.finish(slow, stale, NOW, "late failure", NOW)
    (row,) = outbox(db_engine)
    assert row.status == "sent" and row.attempts == 1 and row.last_error is None


def test_webhook_gets_slack_payload_with_idempotency_key(db_engine: Engine) -> None:
    add_idle_finding(db_engine, idle_since=NOW - timedelta(hours=2), last_seen=NOW)
    with webhook_server() as hook:
        hook.status = 503
        settings = notify_settings(webhook_url=hook.url)
        jobs = jobs_for(db_engine, settings, webhook=WebhookChannel(hook.url))
        jobs.decide(NOW)
        assert jobs.send(NOW).retrying == 1
        (row,) = outbox(db_engine)
        assert row.status == "pending" and "answered 503" in (row.last_error or "")
        hook.status = 200
        assert jobs.send(row.next_attempt_at).sent == 1
    assert len(hook.requests) == 2
    (first, _), (headers, body) = hook.requests
    assert first["idempotency-key"] == headers["idempotency-key"] == row.idempotency_key  # the retry is recognisable
    payload = json.loads(body)
    assert set(payload) == {"text"} and "notebook-0" in payload["text"] and "GPU-hours held idle" in payload["text"]


def test_alertmanager_receives_and_resolves_gpu_allocated_idle(db_engine: Engine) -> None:
    config = {"route": {"receiver": "null"}, "receivers": [{"name": "null"}]}
    add_idle_finding(db_engine, idle_since=NOW - timedelta(hours=2), last_seen=NOW)
    with running_alertmanager(config) as url:
        settings = notify_settings(alertmanager_url=url, alert_ttl_seconds=3600)
        jobs = jobs_for(db_engine, settings, alertmanager=AlertmanagerChannel(url))
        real_now = datetime.now(UTC)
        # Alertmanager judges endsAt against its own clock, so this test runs on real time.
        add_idle_finding(db_engine, pod="train-1", idle_since=real_now - timedelta(hours=2), last_seen=real_now)
        report = jobs.decide(real_now)
        assert report.alerts >= 1
        assert jobs.send(real_now).sent >= 1
        alerts = httpx.get(f"{url}/api/v2/alerts", params={"filter": 'alertname="GPUAllocatedIdle"'}).json()
        firing = {a["labels"]["pod"]: a for a in alerts if a["status"]["state"] == "active"}
        assert "train-1" in firing
        labels = firing["train-1"]["labels"]
        assert labels["namespace"] == labels["project"] == "ml-team"
        assert labels["cluster"] == "c1" and labels["node"] == "node-1" and labels["gpu"] == "0"
        assert "idle_gpu_hours" in firing["train-1"]["annotations"]
        # The pod stops being idle: its finding resolves, the next run posts endsAt=now.
        with Session(db_engine) as session:
            for row in session.execute(select(store.Finding)).scalars():
                row.status = "resolved"
                session.add(row)
            session.commit()
        later = datetime.now(UTC)
        assert jobs.decide(later).alerts >= 1
        jobs.send(later)
        alerts = httpx.get(
            f"{url}/api/v2/alerts", params={"filter": 'alertname="GPUAllocatedIdle"', "active": "true"}
        ).json()
        assert not [a for a in alerts if a["labels"]["pod"] == "train-1" and a["status"]["state"] == "active"]


def test_outbox_counts(db_engine: Engine) -> None:
    add_idle_finding(db_engine, idle_since=NOW - timedelta(hours=2), last_seen=NOW)
    jobs_for(db_engine, notify_settings(2525)).decide(NOW)
    with Session(db_engine) as session:
        assert store.outbox_counts(session) == {"pending": 1}
        assert session.execute(select(func.count()).select_from(IdleNotice)).scalar_one() == 1


def test_scheduler_runs_the_notification_job_only_when_enabled(sqlite_engine: Engine, make_settings) -> None:
    off = create_scheduler(make_settings(sqlite_engine), sqlite_engine, [])
    on = create_scheduler(
        make_settings(sqlite_engine, notify={"enabled": True, "smtp_host": "127.0.0.1"}), sqlite_engine, []
    )
    assert off.notifications is None
    assert on.notifications is not None and set(on.notifications.channels) == {"email"}
    on.start()
    try:
        assert "notifications" in {job.id for job in on.jobs}
    finally:
        on.shutdown()


def test_project_without_recipients_fails_at_once_with_the_reason(db_engine: Engine) -> None:
    add_idle_finding(db_engine, idle_since=NOW - timedelta(hours=2), last_seen=NOW)
    settings = notify_settings(2525)
    jobs = NotificationJobs(settings, POLICIES, db_engine, {"email": SmtpChannel(settings)}, StaticRecipients([]))
    assert jobs.decide(NOW).messages == 1
    assert jobs.send(NOW).failed == 1
    (row,) = outbox(db_engine)
    assert row.status == "failed" and row.attempts == 1 and "no recipient" in (row.last_error or "")
    fallback = notify_settings(2525, fallback_emails="ops@example.test")
    add_idle_finding(db_engine, pod="other", idle_since=NOW - timedelta(hours=2), last_seen=NOW)
    jobs = NotificationJobs(fallback, POLICIES, db_engine, {"email": SmtpChannel(fallback)}, StaticRecipients([]))
    jobs.decide(NOW)
    assert outbox(db_engine)[-1].recipients == ["ops@example.test"]


def test_an_episode_whose_start_moves_earlier_is_not_noticed_again(db_engine: Engine) -> None:
    """A workload finding can absorb a GPU idle for longer: its idle-since moves back, the episode is the same."""
    add_idle_finding(db_engine, idle_since=NOW - timedelta(hours=2), last_seen=NOW)
    jobs = jobs_for(db_engine, notify_settings(2525))
    assert jobs.decide(NOW).messages == 1
    add_idle_finding(db_engine, idle_since=NOW - timedelta(hours=3), last_seen=NOW + timedelta(minutes=5))
    assert jobs.decide(NOW + timedelta(minutes=5)).messages == 0
    # a new episode after the workload was busy (its findings resolved) starts again with a notice
    with Session(db_engine) as session:
        for row in session.execute(select(store.Finding)).scalars():
            row.status = "resolved"
            session.add(row)
        session.commit()
    add_idle_finding(db_engine, idle_since=NOW + timedelta(hours=1), last_seen=NOW + timedelta(hours=3))
    assert jobs.decide(NOW + timedelta(hours=3)).notices == 1


def test_local_recipients_granted_users_and_admins_for_escalations(db_engine: Engine) -> None:
    project_id = add_idle_finding(db_engine, idle_since=NOW - timedelta(hours=2), last_seen=NOW)
    with session_scope(db_engine) as db:
        cluster_id = db.get(ResearchProject, project_id).cluster_id
        create_user(db, "ada", password="ada-password-1234", email="ada@example.test")
        create_user(db, "cy", password="cy-password-12345", email="cy@example.test")
        create_user(db, "ed", password="ed-password-12345", email="ed@example.test")
        create_user(db, "root", password="root-password-123", email="root@example.test", is_admin=True)
        create_user(db, "nomail", password="nomail-password-1")
        db.add(AccessGrant(principal="user:ada", project_id=project_id))
        db.add(AccessGrant(principal="user:cy", cluster_id=cluster_id))  # the whole cluster
        db.add(AccessGrant(principal="user:ed", project_id=project_id))
        db.add(AccessGrant(principal="user:nomail", project_id=project_id))
        set_disabled(db, "ed", True)
    settings = notify_settings(2525, admin_emails="ops@example.test")
    policies = NotificationPolicies(
        default=PolicySettings(grace_minutes=60, reminder_interval_minutes=600, escalate_after_minutes=60)
    )
    jobs = NotificationJobs(settings, policies, db_engine, {"email": SmtpChannel(settings)}, LocalRecipients(db_engine))
    jobs.decide(NOW)
    jobs.decide(NOW + timedelta(minutes=5))
    notice, escalation = outbox(db_engine)
    assert notice.kind == "notice" and notice.recipients == ["ada@example.test", "cy@example.test"]
    assert escalation.kind == "escalation"
    assert escalation.recipients == ["ada@example.test", "cy@example.test", "ops@example.test", "root@example.test"]


class RecipientsAfterBarrier(StaticRecipients):
    """Real recipients, but each lookup waits at a barrier: two deciders have both read the history
    before either writes (the window in which replicas race)."""

    def __init__(self, members: list[str], barrier: threading.Barrier) -> None:
        super().__init__(members)
        self.barrier = barrier

    def members(self, project):  # type: ignore[no-untyped-def]
        self.barrier.wait(timeout=30)
        return super().members(project)


def test_two_deciders_racing_never_carry_the_same_notice(pg_engine: Engine) -> None:
    """Two replicas deciding at once (the lock bypassed): each notice is in one message only."""
    add_idle_finding(pg_engine, pod="notebook-0", idle_since=NOW - timedelta(hours=2), last_seen=NOW)
    # idle for 59 min at NOW, 61 at NOW + 2 min: only the later decider sees it past the grace period
    add_idle_finding(pg_engine, pod="notebook-1", idle_since=NOW - timedelta(minutes=59), last_seen=NOW)
    barrier = threading.Barrier(2)
    settings = notify_settings(2525)
    deciders = [
        NotificationJobs(
            settings,
            POLICIES,
            pg_engine,
            {"email": SmtpChannel(settings)},
            RecipientsAfterBarrier(["ada@example.test"], barrier),
            owner=f"w{i}",
        )
        for i in (1, 2)
    ]
    reports = {}
    threads = [
        threading.Thread(target=lambda j=j, at=at: reports.__setitem__(j.owner, j._decide(at)))
        for j, at in zip(deciders, (NOW, NOW + timedelta(minutes=2)), strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(reports) == ["w1", "w2"]
    bodies = [row.body for row in outbox(pg_engine)]
    assert sum("notebook-0 " in b for b in bodies) == 1
    assert sum("notebook-1 " in b for b in bodies) == 1
    assert sum(r.notices for r in reports.values()) == 2
    with Session(pg_engine) as session:
        linked = session.execute(select(func.count()).where(IdleNotice.outbox_id.is_not(None))).scalar_one()
    assert linked == 2


def test_deciding_is_serialised_across_replicas_on_postgresql(pg_engine: Engine) -> None:
    add_idle_finding(pg_engine, idle_since=NOW - timedelta(hours=2), last_seen=NOW)
    jobs = jobs_for(pg_engine, notify_settings(2525))
    with decide_turn(pg_engine) as held:  # another replica deciding
        assert held
        assert jobs.decide(NOW).skipped
        assert outbox(pg_engine) == []
    report = jobs.decide(NOW)
    assert not report.skipped and report.messages == 1


def test_worker_warns_when_links_would_point_at_the_default_loopback_url(
    sqlite_engine: Engine, make_settings, caplog
) -> None:
    with caplog.at_level(logging.WARNING, logger="worker.notifications.jobs"):
        create_scheduler(make_settings(sqlite_engine, notify={"enabled": True}), sqlite_engine, [])
    assert any("AI_TELEMETRY_NOTIFY_SITE_URL" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="worker.notifications.jobs"):
        create_scheduler(make_settings(sqlite_engine), sqlite_engine, [])  # notifications off: nothing to say
        create_scheduler(
            make_settings(sqlite_engine, notify={"enabled": True, "site_url": "https://telemetry.example.test"}),
            sqlite_engine,
            [],
        )
    assert not [r for r in caplog.records if "SITE_URL" in r.getMessage()]


def test_readme_settings_table_lists_every_notification_setting() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    documented: set[str] = set()
    for row in readme.splitlines():
        names = re.findall(r"`(AI_TELEMETRY_NOTIFY_\w+|_\w+)`", row.split("|")[1] if row.startswith("| `") else "")
        if not names or not names[0].startswith("AI_TELEMETRY_NOTIFY_"):
            continue
        first = names[0].removeprefix("AI_TELEMETRY_NOTIFY_")
        stem = first.rsplit("_", 1)[0] if "_" in first else ""
        documented.add(first)
        for suffix in names[1:]:
            documented |= {suffix[1:], f"{stem}{suffix}"}
    missing = {name.upper() for name in NotificationSettings.model_fields} - documented
    assert not missing, f"README's settings table lacks AI_TELEMETRY_NOTIFY_ {sorted(missing)}"


def test_an_exemption_silences_its_own_hubs_workload_only(db_engine: Engine) -> None:
    """Cluster names are unique only within a hub: an exemption does not silence a namesake pod of another hub."""
    first = add_idle_finding(db_engine, idle_since=NOW - timedelta(hours=2), last_seen=NOW)
    with session_scope(db_engine) as session:
        other = Hub(name="h2", kind="simulated")
        session.add(other)
        session.flush()
        cluster = Cluster(name="c1", hub_id=other.id)
        session.add(cluster)
        session.flush()
        project = ResearchProject(
            cluster_id=cluster.id, namespace="ml-team", display_name="ml-team", first_seen=NOW, last_seen=NOW
        )
        session.add(project)
        session.flush()
        second = project.id
    with session_scope(db_engine) as session:
        exemption = queries.exempt(
            session,
            ReadScope.all(),
            Principal(subject="user:admin", name="admin", is_admin=True),
            first,
            "notebook-0",
            "still training",
            timedelta(days=1),
            POLICIES,
            NOW,
        )
        assert exemption.hub == "h"
    with Session(db_engine) as session:
        (seen,) = store.idle_allocations(session, NOW, timedelta(minutes=15))
        namesake = dataclasses.replace(seen, project_id=second, hub="h2")  # c1/ml-team/notebook-0 of hub h2
        exempt = store.active_exemptions(session, [seen, namesake], NOW)
    assert set(exempt) == {("h", seen.subject)}  # the namesake in hub h2 is not silenced
