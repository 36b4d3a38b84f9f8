"""Alert receipts in the database: one row per (fingerprint, startsAt, status), so a redelivery is a no-op."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

from domain.models import AlertReceipt
from domain.models.base import naive_utc, table_of
from worker.alerts.payload import AlertRecord
from worker.bulk import insert_rows, is_postgresql

RECEIPT_COLUMNS = ("fingerprint", "starts_at", "status", "alertname", "payload", "received_at", "signals_pending")
RECEIPT_KEY = ("fingerprint", "starts_at", "status")

ReceiptKey = tuple[str, datetime, str]


def store_receipts(
    db: Session,
    records: Sequence[AlertRecord],
    received_at: datetime,
    *,
    signals_pending: Callable[[AlertRecord], bool] | None = None,
) -> list[AlertRecord]:
    """Insert a receipt per alert (``INSERT .. ON CONFLICT DO NOTHING``); returns the alerts that were new
    (not a redelivery).

    ``signals_pending``: which receipts to mark as awaiting the signal pipeline (none if omitted).
    """
    unique: dict[ReceiptKey, AlertRecord] = {}
    for record in records:
        unique.setdefault(record.receipt_key, record)
    if not unique:
        return []
    postgresql = is_postgresql(db)
    moment: Callable[[datetime], datetime | None] = naive_utc if postgresql else _as_given
    rows = [
        {
            "fingerprint": r.fingerprint,
            "starts_at": moment(r.starts_at),
            "status": r.status,
            "alertname": r.alertname,
            "payload": r.payload,
            "received_at": moment(received_at),
            "signals_pending": bool(signals_pending and signals_pending(r)),
        }
        for r in unique.values()
    ]
    inserted = _insert_new(db, rows, postgresql=postgresql)
    return [record for key, record in unique.items() if key in inserted]


def _as_given(moment: datetime) -> datetime | None:
    return moment


def _insert_new(db: Session, rows: list[dict[str, Any]], *, postgresql: bool) -> set[ReceiptKey]:
    """Insert ``rows``, skipping stored receipts; the keys of the rows inserted."""
    table = table_of(AlertReceipt)
    if postgresql:  # one statement over a JSON array: no bind parameter per value
        returned = insert_rows(
            db,
            table,
            rows,
            columns=RECEIPT_COLUMNS,
            returning=RECEIPT_KEY,
            conflict="ON CONFLICT (fingerprint, starts_at, status) DO NOTHING",
        )
        keys = cast(list[ReceiptKey], returned)  # the RETURNING columns: fingerprint, starts_at, status
        return {(f, s.replace(tzinfo=UTC), st) for f, s, st in keys}
    # one statement, compiled once; SQLAlchemy batches the rows into multi-row INSERTs
    stmt = (
        sqlite_insert(table)
        .on_conflict_do_nothing(index_elements=list(RECEIPT_KEY))
        .returning(table.c.fingerprint, table.c.starts_at, table.c.status)
    )
    return {(f, s, st) for f, s, st in db.execute(stmt, rows)}
