"""The workloads' SQL: the reads and writes of :mod:`worker.workloads.jobs`, and the advisory locks.

Webhooks touching the same workloads (a group's firing and resolved notifications, or two
Alertmanager replicas) take turns on PostgreSQL: each holds a transaction-level advisory lock per
workload key, so the second sees what the first wrote; otherwise a resolved alert racing its firing
one would record a closed workload beside an open one that nothing closes. Nothing here commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from sys import intern
from typing import Any

import msgspec
from sqlalchemy import BindParameter, ColumnElement, String, Table, Text, any_, bindparam, cast, insert, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Session, col, or_, select

from domain.models import Cluster, Gpu, ResearchProject, Workload
from domain.models.base import naive_utc
from domain.statuses import Health
from worker.bulk import insert_rows, is_postgresql, update_rows
from worker.workloads.rules import Candidate, Pending, WorkloadChanges, workload_lock_ids
from worker.workloads.samples import OPEN_COLUMNS, OpenRow

CHUNK = 500
WORKLOAD_LOCK_CLASS = 0x5E55
"""First key of the two-key advisory locks on workload keys (the pollers' source locks use the one-key form)."""
TABLE: Table = Workload.metadata.tables["workload"]
"""The workload table, for the Core statements that skip building ORM objects."""


def chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def project_ids(db: Session, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Research project ids by (cluster name, namespace)."""
    wanted = set(pairs)
    if not wanted:
        return {}
    stmt = (
        select(ResearchProject.id, Cluster.name, ResearchProject.namespace)
        .join(Cluster, col(ResearchProject.cluster_id) == col(Cluster.id))
        .where(
            col(Cluster.name).in_({c for c, _ in wanted}),
            col(ResearchProject.namespace).in_({n for _, n in wanted}),
        )
        .order_by(col(ResearchProject.id))
    )
    found: dict[tuple[str, str], int] = {}
    for project_id, cluster, namespace in db.exec(stmt):
        if (cluster, namespace) in wanted and project_id is not None:
            found.setdefault((cluster, namespace), project_id)
    return found


# --- the alert view ---------------------------------------------------------------------------------


def lock_workloads(db: Session, digests: Sequence[str]) -> None:
    """Wait for any other transaction touching these workloads to end (PostgreSQL; held until commit)."""
    db.execute(
        text("SELECT pg_advisory_xact_lock(:class, k) FROM unnest(CAST(:keys AS integer[])) AS k"),
        {"class": WORKLOAD_LOCK_CLASS, "keys": workload_lock_ids(digests)},
    )


def key_in(digests: Sequence[str], postgresql: bool) -> ColumnElement[bool]:
    """``workload_key IN (...)``; on PostgreSQL ``= ANY(array)``: one parameter, so once the driver
    prepares the statement the server's generic plan still uses the index (a long IN list may not)."""
    if postgresql:
        return col(Workload.workload_key) == any_(bindparam("keys", list(digests), type_=ARRAY(String)))
    return col(Workload.workload_key).in_(digests)


def rows_by_key(
    db: Session, digests: Sequence[str], earliest: datetime, postgresql: bool
) -> dict[str, list[Candidate]]:
    """The keys' open workloads and those that ended at or after ``earliest``, by key."""
    by_key: dict[str, list[Candidate]] = {}
    for chunk in chunks(digests):
        stmt = select(Workload).where(
            key_in(chunk, postgresql),
            or_(col(Workload.ended_at).is_(None), col(Workload.ended_at) >= earliest),
        )
        for row in db.exec(stmt):
            by_key.setdefault(row.workload_key, []).append(row)
    return by_key


def write_ends(db: Session, closing: dict[datetime, list[int]]) -> None:
    for ended_at, ids in closing.items():  # a group resolves together: usually one UPDATE for all
        db.execute(update(TABLE).where(TABLE.c.id.in_(ids), TABLE.c.ended_at.is_(None)).values(ended_at=ended_at))


def insert_pending(db: Session, pending: list[Pending], changes: WorkloadChanges) -> None:
    insert_open(db, [p.values() for p in pending if p.ended_at is None])
    for done in (p for p in pending if p.ended_at is not None):  # rare: ORM rows, so spans can be made of them
        row = done.row()
        db.add(row)
        changes.closed.append(row)


def insert_open(db: Session, rows: list[dict[str, Any]]) -> None:
    """New open workloads as plain rows (every column but ``id``, the same keys in each), never as
    ORM objects: the first poll of a 10,000-GPU fleet opens ~9,000 at once."""
    if not rows:
        return
    if is_postgresql(db):
        for values in rows:
            values["started_at"] = naive_utc(values["started_at"])
        insert_rows(db, TABLE, rows, columns=tuple(rows[0]))
    else:  # RETURNING makes SQLAlchemy send multi-row INSERTs rather than one statement per row
        db.execute(insert(TABLE).returning(TABLE.c.id), rows)


def column_values(row: Workload) -> dict[str, Any]:
    """A new (transient) workload's columns as :func:`insert_open` takes them."""
    return {name: getattr(row, name) for name in _NEW_COLUMNS}


_NEW_COLUMNS = tuple(column.name for column in TABLE.columns if column.name != "id")


def open_on_gpus(db: Session, uuids: Sequence[str]) -> dict[tuple[str, str], list[Workload]]:
    """The open workloads on these GPUs, by (cluster, GPU UUID)."""
    open_rows: dict[tuple[str, str], list[Workload]] = {}
    for chunk in chunks(uuids):
        stmt = select(Workload).where(col(Workload.ended_at).is_(None), col(Workload.gpu_uuid).in_(chunk))
        for row in db.exec(stmt):
            open_rows.setdefault((row.cluster, row.gpu_uuid or ""), []).append(row)
    return open_rows


# --- the poll view ----------------------------------------------------------------------------------


def open_plain_rows(db: Session, clusters: Sequence[str]) -> list[Any]:
    """The open workloads of these clusters as :class:`OpenRow` of :data:`OPEN_COLUMNS` (no events), the
    profiling sums as their JSON text (decoded one row at a time by the plan)."""
    columns = [cast(TABLE.c[n], Text).label(n) if n == "profiling" else TABLE.c[n] for n in OPEN_COLUMNS]
    query = select(*columns).where(TABLE.c.ended_at.is_(None), TABLE.c.cluster.in_(clusters))
    # a thousand rows at a time: PostgreSQL's driver would otherwise hold the whole result (the sums'
    # text makes it ~9 MB at 10,000 GPUs) beside its rows, while the source's answers are decoded
    return [_shared(row) for row in db.execute(query.execution_options(yield_per=1000))]


_SHARED = tuple(OPEN_COLUMNS.index(n) for n in ("cluster", "namespace", "source", "gpu_model", "node", "container"))
"""Columns whose values repeat across a fleet's workloads."""


def _shared(row: Any) -> Any:
    """The row with one string object per distinct value of :data:`_SHARED` (~3 MB of 9,000 rows, held
    through a 10,000-GPU poll)."""
    values = list(row)
    for i in _SHARED:
        if type(values[i]) is str:  # not None, nor an enum member
            values[i] = intern(values[i])
    return OpenRow._make(values)


def write_samples(db: Session, updates: list[dict[str, Any]]) -> None:
    """One bulk UPDATE by primary key per shape of row (the columns a sample changed; project ids alone)."""
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for values in updates:
        shapes.setdefault(tuple(values), []).append(values)
    for shape, rows in shapes.items():
        columns = [name for name in shape if name != "id"]
        if is_postgresql(db):
            update_rows(db, TABLE, rows, columns=columns)
        else:  # profiling sums come encoded (msgspec.Raw): SQLite keeps JSON as text, so they go in as such
            stmt = update(TABLE).where(TABLE.c.id == bindparam("_id")).values({c: _bound(c) for c in columns})
            db.execute(stmt, [{f"_{name}": _plain(value) for name, value in r.items()} for r in rows])


def _bound(column: str) -> BindParameter[Any]:
    return bindparam(f"_{column}", type_=Text) if column == "profiling" else bindparam(f"_{column}")


def _plain(value: Any) -> Any:
    return bytes(value).decode() if isinstance(value, msgspec.Raw) else value


def load(db: Session, ids: list[int]) -> list[Workload]:
    rows: list[Workload] = []
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        rows.extend(db.exec(select(Workload).where(col(Workload.id).in_(chunk))))
    return sorted(rows, key=lambda r: r.id or 0)


def on_missing_gpus(db: Session, rows: list[Any]) -> list[int]:
    """Ids of the open workloads on GPUs the poll did not report and the inventory marked missing."""
    uuids = sorted({r.gpu_uuid for r in rows if r.gpu_uuid})
    missing: set[str] = set()
    for chunk in chunks(uuids):
        missing.update(db.exec(select(Gpu.uuid).where(col(Gpu.uuid).in_(chunk), Gpu.health == Health.MISSING.value)))
    return [r.id for r in rows if r.gpu_uuid in missing]


def alert_closed_since(db: Session, digests: Sequence[str], after: datetime) -> set[str]:
    """Of these keys, those whose workload an alert confirmed and that ended after ``after``."""
    just_closed: set[str] = set()
    for chunk in chunks(digests):
        just_closed.update(
            db.exec(
                select(Workload.workload_key).where(
                    col(Workload.workload_key).in_(chunk),
                    col(Workload.alert_fingerprint).is_not(None),
                    col(Workload.ended_at) > after,
                )
            )
        )
    return just_closed
