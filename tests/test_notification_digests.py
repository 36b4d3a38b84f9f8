"""Weekly and monthly digests: the periods (hypothesis), and statements from the ledger e-mailed once per project."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlmodel import Session, select

from domain.access import ReadScope
from domain.ledger.statements import build_statement
from domain.models import NotificationOutbox
from domain.notifications.digests import DIGEST_DELAY, digest_key, last_completed, period_containing
from domain.notifications.recipients import ProjectInfo, RecipientsUnavailable, StaticRecipients
from tests.notification_support import smtp_server
from worker.notifications.channels import SmtpChannel
from worker.notifications.jobs import NotificationJobs
from worker.polling import SourcePoller
from worker.sources.simulated import SimulatedSource

moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@given(moments, st.sampled_from(["weekly", "monthly"]))
def test_last_completed_period_is_the_one_just_before(now, kind) -> None:
    start, end = last_completed(now, kind)
    current_start, current_end = period_containing(now, kind)
    assert start < end == current_start <= now < current_end
    assert start.hour == start.minute == start.second == 0
    if kind == "weekly":
        assert start.weekday() == 0 and end - start == timedelta(days=7)
    else:
        assert start.day == 1 and end.day == 1 and 28 <= (end - start).days <= 31


MONDAY = datetime(2026, 11, 30, 10, tzinfo=UTC)
"""Monday of the week 2026-11-30 to 2026-12-06, and the last day of November."""


def test_weekly_and_monthly_statements_mailed_once(db_engine: Engine, make_settings, tmp_path: Path) -> None:
    settings = make_settings(db_engine, demo=True)
    poller = SourcePoller(SimulatedSource.from_settings(settings.sources[0]), db_engine, settings.scheduler)
    for step in range(25):  # two hours of the demo fleet, every 5 minutes, into the ledger
        assert poller.poll_once(now=MONDAY + timedelta(minutes=5 * step), force=True).outcome == "success"
    with smtp_server() as (port, inbox):
        notify = make_settings(
            db_engine,
            notify={"enabled": True, "smtp_host": "127.0.0.1", "smtp_port": port, "smtp_starttls": False},
        ).notify
        jobs = NotificationJobs(
            notify, settings.policies, db_engine, {"email": SmtpChannel(notify)}, StaticRecipients(["pi@example.test"])
        )
        month_end, week_end = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 7, tzinfo=UTC)
        assert jobs.decide(month_end + DIGEST_DELAY - timedelta(minutes=1)).digests == 0  # too early
        monthly_count = jobs.decide(month_end + DIGEST_DELAY).digests  # November's statements
        assert monthly_count > 0
        assert jobs.decide(week_end + DIGEST_DELAY - timedelta(minutes=1)).digests == 0  # decided once; week not over
        weekly_count = jobs.decide(week_end + DIGEST_DELAY).digests
        assert weekly_count == monthly_count  # the same projects held GPUs in both periods
        again = NotificationJobs(
            notify, settings.policies, db_engine, {"email": SmtpChannel(notify)}, StaticRecipients(["pi@example.test"])
        )
        assert again.decide(week_end + DIGEST_DELAY + timedelta(minutes=2)).digests == 0  # a restarted worker too
        jobs.send(week_end + DIGEST_DELAY)
    subjects = [str(m["Subject"]).replace("\r\n", "") for _r, m in inbox.messages]  # unfolded
    weekly = [s for s in subjects if "Weekly statement" in s and "2026-11-30 to 2026-12-06" in s]
    monthly = [s for s in subjects if "Monthly statement" in s and "2026-11-01 to 2026-11-30" in s]
    assert len(weekly) == len(monthly) == weekly_count
    with Session(db_engine) as session:
        statement = build_statement(
            session, ReadScope.all(), start=MONDAY - timedelta(hours=10), end=week_end, rate_card=settings.rate_card
        )
    top = statement.projects[0]
    (body,) = [
        m.get_payload(decode=True).decode()
        for _r, m in inbox.messages
        if f"Weekly statement for {top.namespace} ({top.cluster})" in str(m["Subject"]).replace("\r\n", "")
    ]
    assert f"GPU-hours held:             {top.totals.gpu_hours:,.1f}" in body
    assert f"of which idle:            {top.totals.idle_gpu_hours:,.1f}" in body
    assert "/reports/monthly?month=2026-11" in body
    assert all(rcpts == ["pi@example.test"] for rcpts, _m in inbox.messages)


class DirectoryDownForOneProject(StaticRecipients):
    """Test double standing in for Keycloak failing to answer about one project's group (the others answer)."""

    def __init__(self, members: list[str], failing: int) -> None:
        super().__init__(members)
        self.failing: int | None = failing

    def members(self, project: ProjectInfo) -> list[str]:
        if project.id == self.failing:
            raise RecipientsUnavailable("directory down for this group")
        return super().members(project)


def test_a_project_whose_recipients_failed_gets_its_digest_on_the_next_run(db_engine: Engine, make_settings) -> None:
    settings = make_settings(db_engine, demo=True)
    poller = SourcePoller(SimulatedSource.from_settings(settings.sources[0]), db_engine, settings.scheduler)
    for step in range(13):
        assert poller.poll_once(now=MONDAY + timedelta(minutes=5 * step), force=True).outcome == "success"
    notify = make_settings(
        db_engine, notify={"enabled": True, "digests": ["weekly"], "smtp_host": "127.0.0.1", "smtp_port": 2525}
    ).notify
    week_end = datetime(2026, 12, 7, tzinfo=UTC) + DIGEST_DELAY
    with Session(db_engine) as session:
        start, end = last_completed(week_end, "weekly")
        held = [
            p for p in build_statement(session, ReadScope.all(), start=start, end=end).projects if p.totals.gpu_hours
        ]
    assert len(held) >= 2
    directory = DirectoryDownForOneProject(["pi@example.test"], failing=held[0].project_id)
    channels = {"email": SmtpChannel(notify)}  # never sent to here: only deciding is tested
    first = NotificationJobs(notify, settings.policies, db_engine, channels, directory)
    assert first.decide(week_end).digests == len(held) - 1
    directory.failing = None  # the directory answers again; a restarted worker decides the missing one
    again = NotificationJobs(notify, settings.policies, db_engine, channels, directory)
    assert again.decide(week_end + timedelta(minutes=1)).digests == 1
    assert again.decide(week_end + timedelta(minutes=2)).digests == 0
    with Session(db_engine) as session:
        keys = set(session.execute(select(NotificationOutbox.idempotency_key)).scalars())
    assert {digest_key("weekly", start, p.project_id) for p in held} <= keys
