"""The pipeline's own tables: cumulative counters, and a bounded record of its inputs for replay."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, LargeBinary
from sqlmodel import Field, SQLModel

from domain.models.base import UtcDateTime


class PipelineCounter(SQLModel, table=True):
    """One cumulative pipeline counter (``raw``, ``dedupe.dropped``, ``safety.critical_suppressed`` ...).

    The worker adds what each poll counted, so the figures survive restarts and the site (another
    process) reads the same numbers.
    """

    __tablename__ = "pipeline_counter"
    name: str = Field(primary_key=True, max_length=128)
    value: int = Field(default=0, sa_type=BigInteger)
    updated_at: datetime = Field(sa_type=UtcDateTime)


class PipelineInput(SQLModel, table=True):
    """One poll's readings (or one alert's signals), compressed, kept ``input_retention_hours`` for replay."""

    __tablename__ = "pipeline_input"
    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=128)
    kind: str = Field(max_length=16, description="poll (readings) or alert (signals).")
    taken_at: datetime = Field(sa_type=UtcDateTime, index=True)
    window_seconds: float = 0
    items: int = Field(default=0, description="GPUs (poll) or signals (alert) in the payload.")
    payload: bytes = Field(sa_type=LargeBinary)
