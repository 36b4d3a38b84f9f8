"""Weekly and monthly digests: each project's statement from the ledger, and what changed since the period before.

The period is the last one completed (an ISO week, Monday to Monday, or a calendar month, in UTC),
sent once it ended at least ``DIGEST_DELAY`` ago. Each project that held GPUs in it gets one e-mail:
GPU-hours, idle GPU-hours and their share, GPU-hours of unknown utilisation (neither idle nor busy),
energy and cost (from the rate card, if any), its lines per GPU model, each beside the period
before, and the notices and exemptions of the period. Its idempotency key names the kind, the
period and the project, so a digest is decided once however often the job runs. Rendering is pure
(:func:`digest_message`); reading the statements is :func:`due_digests`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import func, select
from sqlmodel import Session, col

from domain.access import ReadScope
from domain.ledger.rate_card import RateCard
from domain.ledger.statements import ProjectStatement, Totals, build_statement
from domain.models import IdleNotice, NotificationExemption, NotificationOutbox
from domain.notifications.store import OutboxMessage

DigestKind = Literal["weekly", "monthly"]
DIGEST_KINDS: tuple[DigestKind, ...] = ("weekly", "monthly")
DIGEST_DELAY = timedelta(hours=1)
"""After a period ends, the ledger's last windows of it are in (polls run every few seconds to minutes)."""


def period_containing(moment: datetime, kind: DigestKind) -> tuple[datetime, datetime]:
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if kind == "weekly":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    start = day.replace(day=1)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def last_completed(now: datetime, kind: DigestKind) -> tuple[datetime, datetime]:
    """The latest period of ``kind`` that ended at or before ``now``."""
    start, _end = period_containing(now, kind)
    return period_containing(start - timedelta(seconds=1), kind)


def digest_key(kind: DigestKind, start: datetime, project_id: int) -> str:
    return f"digest:{kind}:{start:%Y%m%d}:{project_id}"


def _change(now: float, before: float | None) -> str:
    if before is None:
        return ""
    if before == 0:
        return " (new)" if now else ""
    return f" ({(now - before) / before:+.0%} on the period before: {before:,.1f})"


def _money(totals: Totals, currency: str | None) -> str:
    if totals.cost is None:
        return "no price (no rate card, or none for these GPUs)"
    extra = f"; {totals.unpriced_gpu_hours:,.1f} GPU-hours unpriced" if totals.unpriced_gpu_hours else ""
    return f"{totals.cost:,.2f} {currency or ''}".rstrip() + extra


def digest_message(
    kind: DigestKind,
    start: datetime,
    end: datetime,
    project: ProjectStatement,
    before: ProjectStatement | None,
    *,
    currency: str | None,
    provisional: bool,
    notices: int,
    exemptions: int,
    recipients: Sequence[str],
    site_url: str,
) -> OutboxMessage:
    t, b = project.totals, before.totals if before is not None else None
    period = f"{start:%Y-%m-%d} to {end - timedelta(days=1):%Y-%m-%d}"
    subject = f"[AI Telemetry] {kind.capitalize()} statement for {project.namespace} ({project.cluster}): {period}"
    lines = [
        f"{kind.capitalize()} statement of project {project.namespace} on cluster {project.cluster}, {period} (UTC)"
        + (" - provisional: the ledger has not accounted the whole period yet." if provisional else "."),
        "",
        f"GPU-hours held:             {t.gpu_hours:,.1f}{_change(t.gpu_hours, b.gpu_hours if b else None)}",
        f"  of which idle:            {t.idle_gpu_hours:,.1f} ({t.idle_share:.0%})"
        f"{_change(t.idle_gpu_hours, b.idle_gpu_hours if b else None)}",
        f"  utilisation unknown:      {t.unknown_util_gpu_hours:,.1f} (neither idle nor busy)",
        f"Energy:                     {t.energy_kwh:,.1f} kWh",
        f"Cost:                       {_money(t, currency)}",
        "",
        "By GPU model:",
    ]
    for line in project.lines:
        profile = "" if line.profile == "whole" else f" {line.profile}"
        lines.append(
            f"  {line.model}{profile}: {line.gpu_hours:,.1f} GPU-hours, {line.idle_gpu_hours:,.1f} idle"
            + (f", {line.cost:,.2f}" if line.cost is not None else "")
        )
    lines += [
        "",
        f"Idle-GPU notices about this project in the period: {notices}; exemptions set: {exemptions}.",
        f"Statement: {site_url}/reports/monthly?month={start:%Y-%m}",
        f"Notifications: {site_url}/notifications",
    ]
    return OutboxMessage(
        digest_key(kind, start, project.project_id),
        "email",
        "digest",
        project.project_id,
        tuple(recipients),
        subject,
        "\n".join(lines) + "\n",
        {},
    )


@dataclass(frozen=True)
class DueDigest:
    kind: DigestKind
    start: datetime
    end: datetime
    project: ProjectStatement
    before: ProjectStatement | None
    currency: str | None
    provisional: bool
    notices: int
    exemptions: int


def decided_projects(session: Session, kind: DigestKind, start: datetime) -> set[int]:
    """The projects whose digest of this period is already in the outbox (checked per project: one
    project whose recipients could not be read must not hold back, or lose, the others)."""
    prefix = f"digest:{kind}:{start:%Y%m%d}:"
    keys = session.execute(
        select(col(NotificationOutbox.idempotency_key)).where(
            col(NotificationOutbox.idempotency_key).startswith(prefix)
        )
    ).scalars()
    return {int(key[len(prefix) :]) for key in keys if key[len(prefix) :].isdigit()}


def due_digests(
    session: Session, kinds: Sequence[DigestKind], now: datetime, rate_card: RateCard | None
) -> list[DueDigest]:
    """The digests of the last completed periods not yet in the outbox, project by project."""
    out: list[DueDigest] = []
    for kind in kinds:
        start, end = last_completed(now, kind)
        if now < end + DIGEST_DELAY:
            continue
        decided = decided_projects(session, kind, start)
        current = build_statement(session, ReadScope.all(), start=start, end=end, rate_card=rate_card, now=now)
        previous_start, _ = last_completed(start, kind)
        previous = build_statement(
            session, ReadScope.all(), start=previous_start, end=start, rate_card=rate_card, now=now
        )
        earlier = {p.project_id: p for p in previous.projects}
        notices = dict(
            session.execute(
                select(col(IdleNotice.project_id), func.count())
                .where(col(IdleNotice.decided_at) >= start, col(IdleNotice.decided_at) < end)
                .group_by(col(IdleNotice.project_id))
            ).all()
        )
        exemptions = dict(
            session.execute(
                select(col(NotificationExemption.project_id), func.count())
                .where(col(NotificationExemption.created_at) >= start, col(NotificationExemption.created_at) < end)
                .group_by(col(NotificationExemption.project_id))
            ).all()
        )
        for project in current.projects:
            if project.totals.gpu_hours <= 0 or project.project_id in decided:
                continue
            out.append(
                DueDigest(
                    kind,
                    start,
                    end,
                    project,
                    earlier.get(project.project_id),
                    current.currency,
                    current.provisional,
                    notices.get(project.project_id, 0),
                    exemptions.get(project.project_id, 0),
                )
            )
    return out
