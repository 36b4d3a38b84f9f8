"""The inventory's entry points for the poll: apply a snapshot, or mark a failed source's clusters."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from domain.inventory.health import DEGRADED_TEMPERATURE_C
from domain.models import Cluster, Hub
from domain.statuses import ClusterStatus
from domain.telemetry.readings import Snapshot
from worker.inventory.rules import InventoryChanges
from worker.inventory.store import Existing, add_moved_in, load_inventory
from worker.inventory.upsert import Upsert

UNREACHABLE_AFTER_FAILURES = 3
"""Consecutive failed polls after which a cluster is shown unreachable rather than stale."""
REASON_MAX_LENGTH = 512


def apply_snapshot(
    session: Session,
    hub: Hub,
    snapshot: Snapshot,
    *,
    missing_after: timedelta,
    existing: Existing | None = None,
    hot_threshold_c: float = DEGRADED_TEMPERATURE_C,
) -> InventoryChanges:
    """Bring the hub's inventory in line with ``snapshot``, writing only rows whose values changed.

    ``existing``: the hub's rows from :func:`load_inventory` in this session, if already loaded.
    ``hot_threshold_c``: the temperature from which a GPU is degraded (the pipeline's configured one).
    """
    if hub.id is None:
        session.flush()
    with session.no_autoflush:
        upsert = Upsert(session, hub, snapshot, missing_after, hot_threshold_c)
        if existing is None:
            existing = load_inventory(session, hub.id or 0)
        add_moved_in(session, existing, [r.uuid for r in upsert.readings])
    return upsert.run(existing)


def mark_source_failed(
    session: Session,
    hub: Hub,
    reason: str,
    now: datetime,
    *,
    consecutive_failures: int = 1,
    unreachable_after: int = UNREACHABLE_AFTER_FAILURES,
) -> list[Cluster]:
    """A poll failed as a whole: every cluster of the hub goes stale with the reason; nothing else changes.

    A cluster becomes unreachable after ``unreachable_after`` consecutive failures, or at once when
    it never had a successful poll. Returns the clusters, so the caller can report their status.
    """
    clusters = list(session.exec(select(Cluster).where(Cluster.hub_id == hub.id).order_by(col(Cluster.name))))
    for cluster in clusters:
        unreachable = consecutive_failures >= unreachable_after or cluster.last_success_at is None
        cluster.status = (ClusterStatus.UNREACHABLE if unreachable else ClusterStatus.STALE).value
        cluster.status_reason = reason[:REASON_MAX_LENGTH]
        cluster.last_poll_at = now
    session.flush()
    return clusters
