"""The ledger's audit trail: which span of source time each hub's polls accounted, and how.

See docs/ledger.md. The windows of a hub tile its time: the next window starts where the last
ended (``Hub.accounted_until``), so nothing is counted twice and every gap is on record.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from domain.models.base import UtcDateTime, utcnow

WINDOW_KINDS = ("polled", "backfilled", "unaccounted", "migrated")


class AccountedWindow(SQLModel, table=True):
    """One window ``[start, end)`` of source time of one hub, accounted once.

    Capacity of the window is ``gpu_count x (end - start)``; of it, ``gpu_seconds_unaccounted``
    is what no rollup holds (silent GPUs, a gap past the back-fill horizon, migrated history), the
    rest is in the rollups as project and unallocated seconds.
    """

    __tablename__ = "accounted_window"
    __table_args__ = (
        UniqueConstraint("hub_id", "start"),
        Index("ix_accounted_window_end", "end"),
    )
    id: int | None = Field(default=None, primary_key=True)
    hub_id: int = Field(foreign_key="hub.id")
    start: datetime = Field(sa_type=UtcDateTime)
    end: datetime = Field(sa_type=UtcDateTime)
    kind: str = Field(max_length=16, description="polled, backfilled, unaccounted or migrated.")
    gpu_count: int = Field(default=0, description="GPUs of the hub in the window: reported + known but silent.")
    gpu_seconds_unaccounted: float = Field(default=0, description="Capacity of the window no rollup holds.")
    replica: str | None = Field(default=None, max_length=128, description="The worker replica that wrote it.")
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    @property
    def capacity(self) -> float:
        return self.gpu_count * self.seconds
