"""The decision rule, as pure functions: given an idle allocation, its policy and what was sent, what is due now.

Nothing here reads a clock or a database, so the rule is proved with hypothesis
(tests/test_notification_rules.py): never a notice before the grace period, reminders spaced by the
interval, none during quiet hours, none for an exempted workload, unknown utilisation never idle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

NoticeKind = Literal["notice", "reminder", "escalation"]


@dataclass(frozen=True)
class QuietHours:
    """A daily window (local time of ``timezone``) in which no notice goes out; may wrap midnight."""

    start: time
    end: time
    timezone: str = "UTC"

    def contains(self, moment: datetime) -> bool:
        local = moment.astimezone(ZoneInfo(self.timezone)).time().replace(tzinfo=None)
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    @classmethod
    def parse(cls, text: str, timezone: str = "UTC") -> QuietHours:
        """``"22:00-07:00"``; a ValueError names what is wrong."""
        try:
            start, end = (time.fromisoformat(part.strip()) for part in text.split("-"))
        except ValueError:
            raise ValueError(f"quiet hours must look like 22:00-07:00, not {text!r}") from None
        ZoneInfo(timezone)  # raises for an unknown zone
        return cls(start, end, timezone)


@dataclass(frozen=True)
class Policy:
    enabled: bool = True
    idle_threshold_percent: float = 5.0
    """Utilisation below which a held GPU counts as idle (on top of the pipeline's own threshold)."""
    grace: timedelta = timedelta(hours=1)
    """How long a GPU must have been idle before the first notice."""
    reminder_interval: timedelta = timedelta(hours=24)
    escalate_after: timedelta | None = timedelta(hours=72)
    """After the first notice, how long until managers and admins are told too; None: never."""
    quiet_hours: QuietHours | None = None
    max_exemption: timedelta = timedelta(days=14)
    """The longest "still using it" a researcher may claim."""


@dataclass(frozen=True)
class IdleAllocation:
    """A workload holding GPUs, as the signal pipeline last saw it."""

    subject: str
    project_id: int | None
    cluster: str
    namespace: str
    pod: str
    idle_since: datetime
    utilisation: float | None
    """Mean utilisation of its GPUs in per cent at the last poll; None when unknown (stale or no reading)."""
    idle_gpu_hours: float = 0.0
    gpus: tuple[str, ...] = ()
    node: str | None = None
    workload_id: int | None = None
    hub: str | None = None
    """The hub of the project's cluster (cluster names are unique only within a hub); None without a project."""


@dataclass(frozen=True)
class History:
    """What was already decided for this idle episode."""

    notices: int = 0
    last_notice_at: datetime | None = None
    escalated: bool = False


@dataclass(frozen=True)
class Decision:
    kind: NoticeKind
    number: int
    key: str = field(compare=False)


def is_idle(allocation: IdleAllocation, policy: Policy) -> bool:
    """Unknown utilisation is not idle: a missing reading never starts a notice."""
    return allocation.utilisation is not None and allocation.utilisation < policy.idle_threshold_percent


def notice_key(allocation: IdleAllocation, kind: NoticeKind, number: int) -> str:
    """Stable for a given decision, so a worker deciding it again after a crash inserts nothing."""
    since = allocation.idle_since.astimezone(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{kind}:{number}:{since}:{allocation.subject}"


def decide(  # noqa: PLR0911 - one early return per rule reads best
    allocation: IdleAllocation,
    policy: Policy,
    history: History,
    now: datetime,
    *,
    exempt_until: datetime | None = None,
) -> Decision | None:
    """The notice due now for this allocation, or None."""
    if not policy.enabled or not is_idle(allocation, policy):
        return None
    if exempt_until is not None and now < exempt_until:
        return None
    if policy.quiet_hours is not None and policy.quiet_hours.contains(now):
        return None
    idle_for = now - allocation.idle_since
    if idle_for < policy.grace:
        return None
    if history.notices == 0 or history.last_notice_at is None:
        return Decision("notice", 0, notice_key(allocation, "notice", 0))
    if policy.escalate_after is not None and not history.escalated and idle_for >= policy.grace + policy.escalate_after:
        return Decision("escalation", history.notices, notice_key(allocation, "escalation", history.notices))
    if now - history.last_notice_at >= policy.reminder_interval:
        return Decision("reminder", history.notices, notice_key(allocation, "reminder", history.notices))
    return None


def exemption_expiry(requested: timedelta, policy: Policy, now: datetime) -> datetime:
    """The expiry actually granted: what was asked, capped by the policy, never in the past."""
    granted = min(max(requested, timedelta(0)), policy.max_exemption)
    return now + granted


def backoff(attempts: int, base: timedelta, ceiling: timedelta) -> timedelta:
    """Delay before the next delivery attempt after ``attempts`` failures: doubling, capped."""
    if attempts <= 0:
        return timedelta(0)
    return min(ceiling, base * (2 ** min(attempts - 1, 30)))
