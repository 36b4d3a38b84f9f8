from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from domain.models.base import UtcDateTime, utcnow


class HubBase(SQLModel):
    name: str = Field(max_length=128, unique=True, description="Source name from the configuration.")
    kind: str = Field(max_length=32, description="prometheus, thanos, acm or simulated.")
    url: str | None = Field(default=None, max_length=512)
    last_poll_at: datetime | None = Field(
        default=None, sa_type=UtcDateTime, description="When the source was last polled, by any worker replica."
    )
    last_polled_by: str | None = Field(default=None, max_length=128, description="The replica that polled it last.")
    accounted_until: datetime | None = Field(
        default=None,
        sa_type=UtcDateTime,
        description="End of the hub's last accounted window, on the source's clock (NULL: never accounted).",
    )


class Hub(HubBase, table=True):
    """One configured source: an ACM hub (many clusters) or one cluster's Prometheus."""

    __tablename__ = "hub"
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class HubRead(HubBase):
    id: int
