"""Window planning: from the hub's cursor and a poll's evaluation time, the windows to account.

Pure rules (docs/ledger.md). Windows tile source time: the first starts at the cursor, each ends
where the next starts, the last ends at the poll's evaluation time. The poll itself reads the last
window (``live``); what lies before it is back-filled in chunks, each read from the source over
exactly the chunk, as far back as the horizon allows; what lies further back is unaccounted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

POLLED = "polled"
BACKFILLED = "backfilled"
UNACCOUNTED = "unaccounted"
MIGRATED = "migrated"


@dataclass(frozen=True, slots=True)
class Window:
    """``[start, end)`` of source time, and how it is accounted."""

    start: datetime
    end: datetime
    kind: str

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def plan_windows(
    cursor: datetime | None,
    end: datetime,
    *,
    interval_seconds: float,
    horizon_seconds: float,
    chunk_seconds: float,
    first_lookback_seconds: float | None = None,
) -> list[Window]:
    """The windows from ``cursor`` to ``end``, oldest first; empty when ``end <= cursor``.

    * ``cursor`` None (never accounted): start ``first_lookback_seconds`` (default: one interval)
      before ``end``.
    * The last window is the poll's own (``polled``): it reaches back over the whole gap when the
      gap is at most one interval, or one chunk if back-filling is allowed that far (so a short
      overrun is read in one query), else one interval.
    * Before it, ``backfilled`` chunks of at most ``chunk_seconds``, back to ``horizon_seconds``
      before ``end``; anything older is one ``unaccounted`` window.
    """
    if interval_seconds <= 0 or chunk_seconds <= 0 or horizon_seconds < 0:
        raise ValueError("interval and chunk must be positive, the horizon not negative")
    if cursor is None:
        # a hub never accounted has no gap: look back no further than the horizon allows
        lookback = min(first_lookback_seconds or interval_seconds, max(horizon_seconds, interval_seconds))
        cursor = end - timedelta(seconds=max(lookback, interval_seconds))
    if end <= cursor:
        return []
    reach = max(interval_seconds, min(chunk_seconds, horizon_seconds))
    live_start = max(cursor, end - timedelta(seconds=reach))
    windows: list[Window] = []
    earliest = max(cursor, min(live_start, end - timedelta(seconds=horizon_seconds)))
    if earliest > cursor:
        windows.append(Window(cursor, earliest, UNACCOUNTED))
    chunk = timedelta(seconds=chunk_seconds)
    start = earliest
    while start < live_start:
        stop = min(start + chunk, live_start)
        windows.append(Window(start, stop, BACKFILLED))
        start = stop
    windows.append(Window(live_start, end, POLLED))
    return windows


def bucket_start(at: datetime, bucket_seconds: int) -> datetime:
    """The start of the bucket holding ``at``, aligned to the Unix epoch so every process agrees."""
    seconds = int(at.timestamp() // bucket_seconds) * bucket_seconds
    return datetime.fromtimestamp(seconds, UTC)


def bucket_pieces(start: datetime, end: datetime, bucket_seconds: int) -> list[tuple[datetime, float]]:
    """``[start, end)`` cut at bucket boundaries: (bucket start, seconds of the window in it)."""
    pieces: list[tuple[datetime, float]] = []
    width = timedelta(seconds=bucket_seconds)
    bucket = bucket_start(start, bucket_seconds)
    while bucket < end:
        stop = bucket + width
        seconds = (min(stop, end) - max(bucket, start)).total_seconds()
        if seconds > 0:
            pieces.append((bucket, seconds))
        bucket = stop
    return pieces
