from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, UniqueConstraint
from sqlmodel import Field, SQLModel

from domain.models.base import UtcDateTime, utcnow


class AlertReceipt(SQLModel, table=True):
    """One alert of an Alertmanager webhook, kept for audit and replay; redelivery is a no-op."""

    __tablename__ = "alert_receipt"
    __table_args__ = (UniqueConstraint("fingerprint", "starts_at", "status"),)
    id: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(max_length=64)
    starts_at: datetime = Field(sa_type=UtcDateTime)
    status: str = Field(max_length=16)
    alertname: str | None = Field(default=None, max_length=253)
    payload: dict[str, Any] = Field(sa_type=JSON)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime, index=True)
