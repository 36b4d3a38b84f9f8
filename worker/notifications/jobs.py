"""The notification jobs: decide what is due into the outbox, then deliver the outbox.

Deciding and sending are separate steps joined only by the outbox table. A run decides (each
project's messages and notice records committed together), then sends what is due: claimed with a
lease, sent, recorded by the lease holder. A failed send is retried with exponential backoff and
keeps its reason; after ``max_attempts`` it is marked failed, never deleted. Neither step raises: a
failing database, directory or channel is logged and retried at the next run, and polling goes on.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, select, text
from sqlmodel import Session, col

from domain.database import session_scope
from domain.ledger.rate_card import RateCard
from domain.models import Cluster, Hub, NotificationOutbox, ResearchProject, utcnow
from domain.notifications import digests, messages, rules, store
from domain.notifications.policies import load_policies
from domain.notifications.recipients import (
    ProjectInfo,
    RecipientDirectory,
    RecipientsUnavailable,
    recipient_directory,
)
from domain.settings import DEFAULT_SITE_URL, NotificationPolicies, NotificationSettings, Settings
from worker.areas import ScheduledJob, WorkerContext
from worker.metrics import WorkerMetrics
from worker.notifications.channels import Channel, DeliveryError, channels_from

log = logging.getLogger(__name__)


@dataclass
class DecideReport:
    idle: int = 0
    notices: int = 0
    messages: int = 0
    alerts: int = 0
    projects_waiting: int = 0
    """Projects whose recipients could not be read this run."""
    digests: int = 0
    skipped: bool = False
    """Another replica held the deciding lock."""


@dataclass
class SendReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0


DECIDE_LOCK = int.from_bytes(
    hashlib.blake2b(b"ai-telemetry:notifications:decide", digest_size=8).digest(), "big", signed=True
)
"""The PostgreSQL advisory lock key (signed 64 bits) serialising the decide step across replicas."""


@contextmanager
def decide_turn(engine: Engine) -> Iterator[bool]:
    """True while this process holds the deciding lock (``pg_try_advisory_xact_lock`` on a connection of
    its own, released when its transaction ends or the process dies); always True on SQLite, which is
    single-process. The notice rows' unique keys stop repeats even without it (see store.claim_notices).
    """
    if engine.dialect.name != "postgresql":
        yield True
        return
    with engine.connect() as connection, connection.begin():
        held = connection.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": DECIDE_LOCK}).scalar()
        yield bool(held)


class NotificationJobs:
    def __init__(
        self,
        settings: NotificationSettings,
        policies: NotificationPolicies,
        engine: Engine,
        channels: Mapping[str, Channel],
        recipients: RecipientDirectory,
        *,
        owner: str = "worker",
        clock: Callable[[], datetime] = utcnow,
        metrics: WorkerMetrics | None = None,
        rate_card: RateCard | None = None,
    ) -> None:
        self.metrics = metrics
        self.rate_card = rate_card
        self._digested: set[tuple[str, datetime]] = set()
        """Periods whose digests this process has decided (or found none for): not read again."""
        self.settings = settings
        self.policies = policies
        self.engine = engine
        self.channels = dict(channels)
        self.recipients = recipients
        self.owner = owner
        self.clock = clock

    # --- the scheduled job -------------------------------------------------------------------

    def run(self) -> None:
        """Decide, then send; never raises (the next run retries)."""
        try:
            self.decide()
        except Exception:
            log.exception("deciding notifications failed; retried next run")
        try:
            self.send()
        except Exception:
            log.exception("sending notifications failed; retried next run")

    # --- deciding ----------------------------------------------------------------------------

    def decide(self, now: datetime | None = None) -> DecideReport:
        """Decide under the deciding lock; a replica that finds it held leaves this run to the holder."""
        with decide_turn(self.engine) as mine:
            if not mine:
                log.debug("another replica is deciding notifications")
                return DecideReport(skipped=True)
            return self._decide(now or self.clock())

    def _decide(self, now: datetime) -> DecideReport:
        report = DecideReport()
        with Session(self.engine) as session:
            book = load_policies(session, self.policies)
            allocations = store.idle_allocations(session, now, timedelta(seconds=self.settings.stale_after_seconds))
            history = store.histories(session, allocations)
            exempt = store.active_exemptions(session, allocations, now)
            projects = _projects(session, {a.project_id for a in allocations if a.project_id is not None})
        report.idle = len(allocations)
        due: dict[int | None, list[store.NoticeRecord]] = defaultdict(list)
        firing: list[rules.IdleAllocation] = []
        for allocation in allocations:
            policy = book.for_project(allocation.project_id)
            until = exempt.get((allocation.hub, allocation.subject))
            decision = rules.decide(
                allocation, policy, history.get(allocation.subject, rules.History()), now, exempt_until=until
            )
            if decision is not None:
                due[allocation.project_id].append(
                    store.NoticeRecord(decision.key, allocation, decision.kind, decision.number)
                )
            if _alerting(allocation, policy, now, until):
                firing.append(allocation)
        for project_id, notices in due.items():
            project = projects.get(project_id) if project_id is not None else None
            try:
                recorded, mine = self._decide_project(project, project_id, notices, now)
            except RecipientsUnavailable as exc:
                log.warning("recipients of project %s unavailable, notices wait: %s", project_id, exc)
                report.projects_waiting += 1
                continue
            report.messages += recorded
            report.notices += len(mine)
            if self.metrics is not None:
                for notice in mine:
                    self.metrics.notifications_decided.labels(notice.kind).inc()
        if "alertmanager" in self.channels:
            report.alerts = self._decide_alerts(firing, now)
        if "email" in self.channels and self.settings.digests:
            report.digests = self._decide_digests(now)
        return report

    def _decide_digests(self, now: datetime) -> int:
        kinds = [k for k in self.settings.digests if (k, digests.last_completed(now, k)[0]) not in self._digested]
        if not kinds:
            return 0
        with Session(self.engine) as session:
            due = digests.due_digests(session, kinds, now, self.rate_card)
            projects = _projects(session, {d.project.project_id for d in due})
        recorded, waiting = 0, False
        with session_scope(self.engine) as session:
            for digest in due:
                project = projects.get(digest.project.project_id)
                try:
                    members = self.recipients.members(project) if project is not None else []
                except RecipientsUnavailable as exc:
                    log.warning("recipients of project %s unavailable, its digest waits: %s", project, exc)
                    waiting = True
                    continue
                message = digests.digest_message(
                    digest.kind,
                    digest.start,
                    digest.end,
                    digest.project,
                    digest.before,
                    currency=digest.currency,
                    provisional=digest.provisional,
                    notices=digest.notices,
                    exemptions=digest.exemptions,
                    recipients=members or self.settings.fallback_emails,
                    site_url=self.settings.site_url,
                )
                recorded += store.record(session, message, now)
        for kind in kinds:
            start, end = digests.last_completed(now, kind)
            if now >= end + digests.DIGEST_DELAY and not waiting:
                self._digested.add((kind, start))
        return recorded

    def _decide_project(
        self, project: ProjectInfo | None, project_id: int | None, notices: list[store.NoticeRecord], now: datetime
    ) -> tuple[int, list[store.NoticeRecord]]:
        """Record one project's due notices and their messages; returns the messages and the notices recorded."""
        members: list[str] = []
        if project is not None:
            members = self.recipients.members(project)
            if any(n.kind == "escalation" for n in notices):
                members = sorted({*members, *self.recipients.managers(project), *self.settings.admin_emails})
        elif any(n.kind == "escalation" for n in notices):
            members = list(self.settings.admin_emails)
        if not members:
            members = list(self.settings.fallback_emails)
        label = project.label if project is not None else "an unknown project"
        if "email" not in self.channels and "webhook" not in self.channels:
            return 0, []
        with session_scope(self.engine) as session:
            # Notices first: the messages carry only those this run inserted (another decider's are its own).
            mine = store.claim_notices(session, notices, now)
            if not mine:
                return 0, []
            outgoing = messages.project_messages(
                label,
                project_id,
                mine,
                members,
                self.settings.site_url,
                now,
                email="email" in self.channels,
                webhook="webhook" in self.channels,
            )
            recorded = 0
            # The notices are linked to the first message; the others carry the same decision.
            for index, message in enumerate(outgoing):
                recorded += store.record(session, message, now, mine if index == 0 else ())
        return recorded, mine

    def _decide_alerts(self, firing: list[rules.IdleAllocation], now: datetime) -> int:
        ttl = timedelta(seconds=self.settings.alert_ttl_seconds)
        refresh = ttl / 3
        posted = 0
        with session_scope(self.engine) as session:
            for allocation in firing:
                message = messages.alert_message(allocation, self.settings.site_url, now, ttl, refresh, resolve=False)
                posted += store.record(session, message, now)
            live = {(a.subject, a.idle_since.isoformat()) for a in firing}
            recent = session.execute(
                select(col(NotificationOutbox.payload)).where(
                    col(NotificationOutbox.channel) == "alertmanager",
                    col(NotificationOutbox.kind) == "alert",
                    col(NotificationOutbox.created_at) >= now - ttl,
                )
            ).scalars()
            seen: set[tuple[str, str]] = set()
            for payload in recent:
                key = (str(payload.get("subject")), str(payload.get("idle_since")))
                if key in live or key in seen:
                    continue
                seen.add(key)
                resolution = messages.resolution_of(payload, now)
                if resolution is not None:
                    posted += store.record(session, resolution, now)
        return posted

    # --- sending -----------------------------------------------------------------------------

    def send(self, now: datetime | None = None) -> SendReport:
        report = SendReport()
        s = self.settings
        with Session(self.engine, expire_on_commit=False) as session:
            # One row claimed right before its send, so its lease covers that send only.
            for _ in range(s.batch_size):
                claimed = store.claim(session, self.owner, now or self.clock(), timedelta(seconds=s.lease_seconds), 1)
                if not claimed:
                    break
                row = claimed[0]
                error, retry = self._deliver(row)
                at = now or self.clock()
                retry_at = None
                if error is not None and retry and row.attempts + 1 < s.max_attempts:
                    wait = rules.backoff(
                        row.attempts + 1, timedelta(seconds=s.backoff_seconds), timedelta(seconds=s.backoff_max_seconds)
                    )
                    retry_at = at + wait
                store.finish(session, row, at, error, retry_at)
                outcome = "sent" if error is None else "retrying" if retry_at is not None else "failed"
                if self.metrics is not None:
                    self.metrics.notification_attempts.labels(row.channel, outcome).inc()
                if error is None:
                    report.sent += 1
                elif retry_at is not None:
                    report.retrying += 1
                    log.warning("notification %s not sent (attempt %d), retried: %s", row.id, row.attempts + 1, error)
                else:
                    report.failed += 1
                    log.error("notification %s failed for good: %s", row.id, error)
        return report

    def _deliver(self, row: NotificationOutbox) -> tuple[str | None, bool]:
        """Send one row: (None, _) when sent, else (the reason, whether a later attempt can succeed)."""
        channel = self.channels.get(row.channel)
        if channel is None:
            return f"channel {row.channel} is not configured", True
        if row.channel == "email" and not row.recipients:
            return "no recipient has an e-mail address (set the members' addresses or NOTIFY_FALLBACK_EMAILS)", False
        try:
            channel.send(row)
        except DeliveryError as exc:
            return str(exc), True
        except Exception as exc:  # a channel bug must not lose the message or stop the others
            log.exception("channel %s raised", row.channel)
            return f"{type(exc).__name__}: {exc}", True
        return None, True


def _alerting(
    allocation: rules.IdleAllocation, policy: rules.Policy, now: datetime, exempt_until: datetime | None
) -> bool:
    """Whether the operators' automation should see it: idle past the grace period and not exempted."""
    if not policy.enabled or not rules.is_idle(allocation, policy):
        return False
    if exempt_until is not None and now < exempt_until:
        return False
    return now - allocation.idle_since >= policy.grace


def _projects(session: Session, ids: set[int]) -> dict[int, ProjectInfo]:
    if not ids:
        return {}
    rows = session.execute(
        select(
            col(ResearchProject.id), col(Hub.name), col(Cluster.id), col(Cluster.name), col(ResearchProject.namespace)
        )
        .join(Cluster, col(Cluster.id) == col(ResearchProject.cluster_id))
        .join(Hub, col(Hub.id) == col(Cluster.hub_id))
        .where(col(ResearchProject.id).in_(ids))
    ).all()
    return {pid: ProjectInfo(pid, hub, cid, cluster, ns) for pid, hub, cid, cluster, ns in rows}


def create_notification_jobs(
    settings: Settings, engine: Engine, metrics: WorkerMetrics | None = None
) -> NotificationJobs:
    """The jobs with the channels the settings turn on and the recipients of the authorization mode."""
    if settings.notify.site_url.rstrip("/") == DEFAULT_SITE_URL:
        log.warning(
            "notifications are on but AI_TELEMETRY_NOTIFY_SITE_URL is the default %s: the links in every "
            "message will point at the recipient's own machine; set it to the site's public URL",
            DEFAULT_SITE_URL,
        )
    recipients = recipient_directory(settings, engine)
    return NotificationJobs(
        settings.notify,
        settings.policies,
        engine,
        channels_from(settings.notify),
        recipients,
        owner=settings.scheduler.replica,
        metrics=metrics,
        rate_card=settings.rate_card,
    )


def jobs(context: WorkerContext) -> list[ScheduledJob]:
    """Decide and send, every ``notify.interval_seconds`` (first within 10 s), when notifications are on."""
    if context.notifications is None:
        return []
    interval = context.settings.notify.interval_seconds
    return [
        ScheduledJob(
            id="notifications",
            name="decide and send notices about idle GPUs",
            run=context.notifications.run,
            interval_seconds=interval,
            first_run_after=timedelta(seconds=min(interval, 10)),
        )
    ]
