"""The bounded record of the pipeline's inputs: each poll's readings and each alert's signals, for replay.

Rows are compressed JSON (a 40-GPU poll is about a kilobyte) and kept ``input_retention_hours``;
:func:`apply_input_retention` deletes older ones. :func:`iter_inputs` reads them back in time order
a page at a time, so a replay never holds the whole record in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from domain.models import PipelineInput
from domain.pipeline.extract import PollObservation, decode_poll, decode_signals, encode_poll, encode_signals
from domain.pipeline.findings import as_datetime
from domain.pipeline.signals import Signal

POLL = "poll"
ALERT = "alert"
PAGE = 200


@dataclass(frozen=True)
class RecordedInput:
    kind: str
    source: str
    taken_at: float
    window_seconds: float
    poll: PollObservation | None = None
    signals: Sequence[Signal] = ()


def record_poll(session: Session, poll: PollObservation) -> None:
    session.add(
        PipelineInput(
            source=poll.source,
            kind=POLL,
            taken_at=as_datetime(poll.taken_at),
            window_seconds=poll.window_seconds,
            items=len(poll.gpus),
            payload=encode_poll(poll),
        )
    )


def record_alert_signals(session: Session, source: str, signals: Sequence[Signal], taken_at: float) -> None:
    """Keep the signals an alert became (see :func:`domain.pipeline.signals.signals_from_alert`)."""
    if signals:
        session.add(
            PipelineInput(
                source=source,
                kind=ALERT,
                taken_at=as_datetime(taken_at),
                window_seconds=0,
                items=len(signals),
                payload=encode_signals(signals),
            )
        )


def apply_input_retention(session: Session, now: datetime, hours: float) -> int:
    result = session.exec(delete(PipelineInput).where(col(PipelineInput.taken_at) < now - timedelta(hours=hours)))
    return int(result.rowcount or 0)


def input_span(session: Session) -> tuple[datetime | None, datetime | None, int]:
    """(oldest, newest, rows) of the record."""
    oldest, newest, rows = session.execute(
        select(func.min(PipelineInput.taken_at), func.max(PipelineInput.taken_at), func.count())
    ).one()
    return oldest, newest, int(rows)


def iter_inputs(
    session: Session, since: datetime | None = None, until: datetime | None = None
) -> Iterator[RecordedInput]:
    """The record in time order, decoded, one page of rows in memory at a time."""
    last: tuple[datetime, int] | None = None
    while True:
        stmt = select(PipelineInput).order_by(col(PipelineInput.taken_at), col(PipelineInput.id)).limit(PAGE)
        if since is not None:
            stmt = stmt.where(col(PipelineInput.taken_at) >= since)
        if until is not None:
            stmt = stmt.where(col(PipelineInput.taken_at) <= until)
        if last is not None:
            at, row_id = last
            taken_at, input_id = col(PipelineInput.taken_at), col(PipelineInput.id)
            stmt = stmt.where((taken_at > at) | ((taken_at == at) & (input_id > row_id)))
        rows = list(session.exec(stmt))
        if not rows:
            return
        for row in rows:
            t = row.taken_at.timestamp()
            if row.kind == POLL:
                yield RecordedInput(POLL, row.source, t, row.window_seconds, poll=decode_poll(row.payload))
            elif row.kind == ALERT:
                yield RecordedInput(ALERT, row.source, t, row.window_seconds, signals=decode_signals(row.payload))
        last = (rows[-1].taken_at, rows[-1].id or 0)
        session.expunge_all()
