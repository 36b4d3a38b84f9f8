from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, UniqueConstraint, false, text
from sqlmodel import Field, SQLModel

from domain.models.base import UtcDateTime, utcnow


class AlertReceipt(SQLModel, table=True):
    """One alert of an Alertmanager webhook, kept for audit and replay; redelivery is a no-op.

    ``signals_pending`` marks a receipt whose signals the worker's pipeline has yet to take in: set
    in the webhook's transaction, cleared in the transaction that saves what the pipeline made of
    them. A worker killed between the two commits leaves it set, and a worker replays it (see
    :meth:`worker.pipeline.processor.SignalProcessor.replay_pending`); a redelivery of the alert would not, being
    a duplicate.
    """

    __tablename__ = "alert_receipt"
    __table_args__ = (
        UniqueConstraint("fingerprint", "starts_at", "status"),
        Index(
            "ix_alert_receipt_signals_pending",
            "received_at",
            postgresql_where=text("signals_pending"),
            sqlite_where=text("signals_pending"),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(max_length=64)
    starts_at: datetime = Field(sa_type=UtcDateTime)
    status: str = Field(max_length=16)
    alertname: str | None = Field(default=None, max_length=253)
    payload: dict[str, Any] = Field(sa_type=JSON)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime, index=True)
    signals_pending: bool = Field(
        default=False,
        sa_column_kwargs={"server_default": false()},
        description="Its signals are stored but not yet taken in by the pipeline.",
    )
