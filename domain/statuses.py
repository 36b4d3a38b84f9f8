"""Status vocabularies, declared once with label and colour; templates and the API read them here."""

from __future__ import annotations

from enum import StrEnum


class _Vocabulary(StrEnum):
    @property
    def label(self) -> str:
        return _LABELS[self][0]

    @property
    def colour(self) -> str:
        return _LABELS[self][1]


class ClusterStatus(_Vocabulary):
    OK = "ok"
    STALE = "stale"
    UNREACHABLE = "unreachable"


class Health(_Vocabulary):
    """Health of a node, GPU or slice."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILING = "failing"
    MISSING = "missing"


class FindingStatus(_Vocabulary):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Severity(_Vocabulary):
    """Severity of a signal or finding (``ok`` only ever on signals)."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class WorkloadSource(_Vocabulary):
    ALERT = "alert"
    POLL = "poll"


class OutboxStatus(_Vocabulary):
    """Where a notification stands in the outbox."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


# colour names map to CSS custom properties in static/style.css (--ok, --warn, --bad, --muted)
_LABELS: dict[StrEnum, tuple[str, str]] = {
    ClusterStatus.OK: ("OK", "ok"),
    ClusterStatus.STALE: ("Stale", "warn"),
    ClusterStatus.UNREACHABLE: ("Unreachable", "bad"),
    Health.HEALTHY: ("Healthy", "ok"),
    Health.DEGRADED: ("Degraded", "warn"),
    Health.FAILING: ("Failing", "bad"),
    Health.MISSING: ("Missing", "muted"),
    FindingStatus.OPEN: ("Open", "bad"),
    FindingStatus.ACKNOWLEDGED: ("Acknowledged", "warn"),
    FindingStatus.RESOLVED: ("Resolved", "ok"),
    Severity.CRITICAL: ("Critical", "bad"),
    Severity.WARNING: ("Warning", "warn"),
    Severity.INFO: ("Info", "muted"),
    WorkloadSource.ALERT: ("Alert", "muted"),
    WorkloadSource.POLL: ("Poll", "muted"),
    OutboxStatus.PENDING: ("Pending", "warn"),
    OutboxStatus.SENT: ("Sent", "ok"),
    OutboxStatus.FAILED: ("Failed", "bad"),
}


def vocabulary_of(value: str) -> _Vocabulary | None:
    """Find the declared status for a stored string, for templates rendering a badge."""
    for vocabulary in (ClusterStatus, Health, FindingStatus, WorkloadSource, Severity, OutboxStatus):
        try:
            return vocabulary(value)
        except ValueError:
            continue
    return None
