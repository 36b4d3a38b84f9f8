"""Usage history for charts, memoised briefly per caller scope.

Rollups change once per poll, and a 24-hour fleet chart aggregates every GPU's buckets, so the
same answer is shared for a short while by everyone with the same read scope. ``since`` is
rounded down to a bucket boundary so that repeated views hit the same key.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from cachetools import TTLCache, cached
from cachetools.keys import hashkey
from sqlmodel import Session

from domain.access import ReadScope
from domain.inventory.usage import ProjectUsage, UsagePoint, usage_by_project, usage_series
from domain.models import utcnow

TTL_SECONDS = 30
_lock = threading.Lock()
_series_cache: TTLCache[object, list[UsagePoint]] = TTLCache(maxsize=2048, ttl=TTL_SECONDS)
_projects_cache: TTLCache[object, list[ProjectUsage]] = TTLCache(maxsize=512, ttl=TTL_SECONDS)


def history_start(hours: int, bucket_seconds: int) -> datetime:
    since = utcnow() - timedelta(hours=hours)
    return since - timedelta(seconds=since.timestamp() % bucket_seconds)


def _key(db: Session, *args: object, **kwargs: object) -> object:
    return hashkey(db.get_bind(), *args, **kwargs)  # one entry per database, should a process serve several


@cached(_series_cache, key=_key, lock=_lock)
def series(
    db: Session,
    scope: ReadScope,
    *,
    hours: int,
    bucket_seconds: int,
    cluster_id: int | None = None,
    node_id: int | None = None,
    gpu_id: int | None = None,
    project_id: int | None = None,
) -> list[UsagePoint]:
    return usage_series(
        db,
        scope,
        since=history_start(hours, bucket_seconds),
        bucket_seconds=bucket_seconds,
        cluster_id=cluster_id,
        node_id=node_id,
        gpu_id=gpu_id,
        project_id=project_id,
    )


@cached(_projects_cache, key=_key, lock=_lock)
def top_projects(db: Session, scope: ReadScope, *, hours: int, bucket_seconds: int, limit: int) -> list[ProjectUsage]:
    return usage_by_project(db, scope, since=history_start(hours, bucket_seconds), limit=limit)


def complete_buckets(points: list[UsagePoint]) -> int:
    """Buckets the ledger has fully accounted: while fewer than two, a page says history starts with the
    worker's first poll (one poll's window can touch two partial buckets)."""
    return sum(1 for point in points if not point.partial)
