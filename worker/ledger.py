"""The ledger's write side: account one window of one hub into rollups, its window row and the cursor.

Everything for one window happens in the caller's transaction, in this order:

1. the cursor moves from the window's start to its end with a compare-and-set on ``hub``
   (:func:`advance_cursor`); zero rows updated means another replica, or an earlier run, accounted
   this time first: :class:`CursorMoved` is raised, the caller rolls back, nothing is counted twice;
2. the window's reported GPUs are attributed (:func:`domain.ledger.attribute`) and added to the
   rollup rows of the buckets it overlaps;
3. one ``accounted_window`` row records the window: its GPUs (reported and counted, plus those the
   inventory knows but the source did not report: *silent*) and the seconds no rollup holds.

Bad input is counted once with a clear log line: a GPU reported by two clusters of one poll counts
for the first; a GPU another hub still reports counts for the hub with the lower id only (the
inventory may move the GPU's row back and forth; the ledger does not follow it); an unknown MIG
profile gives its share to the GPU's unsliced rest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select as core_select  # typed for any number of columns (sqlmodel's: up to 4)
from sqlalchemy import text, update
from sqlmodel import Session, col, select

from domain.json_parameter import in_documents
from domain.ledger import (
    UNACCOUNTED,
    GpuUse,
    Holder,
    MigProfileError,
    Part,
    Split,
    Window,
    attribute,
    profile_share,
)
from domain.ledger.attribution import MEASURES, PEAKS, UNSLICED, WHOLE, RowKey
from domain.ledger.tiers import WINDOW_ROWS, measure_values, rows_document, upsert_sums, write_period, write_tiers
from domain.models import AccountedWindow, Cluster, Gpu, Hub, Node, UsageRollup
from domain.models.base import table_of
from domain.statuses import Health
from domain.telemetry.readings import GpuReading, PodRef, Snapshot
from worker.bulk import is_postgresql
from worker.inventory.rules import InventoryIds

log = logging.getLogger(__name__)
_CHUNK = 500
"""Bind parameters per IN list; well under SQLite's and PostgreSQL's limits."""


class CursorMoved(Exception):
    """The hub's cursor is no longer where this window starts: someone else accounted it."""


@dataclass
class WindowResult:
    """What accounting one window wrote, for logs, the poll outcome and the counters."""

    window: Window
    gpu_count: int = 0
    gpu_seconds_unaccounted: float = 0.0
    rollup_rows: int = 0
    split: Split = field(default_factory=Split)

    @property
    def capacity(self) -> float:
        return self.gpu_count * self.window.seconds


def read_cursor(session: Session, hub_name: str) -> datetime | None:
    """The hub's ``accounted_until`` (None: never accounted, or no such hub yet)."""
    return session.exec(select(Hub.accounted_until).where(Hub.name == hub_name)).first()


def advance_cursor(session: Session, hub: Hub, start: datetime | None, end: datetime) -> None:
    """Compare-and-set ``hub.accounted_until`` from ``start`` to ``end``; :class:`CursorMoved` else."""
    session.flush()
    result = session.exec(
        update(Hub)
        .where(col(Hub.id) == hub.id, col(Hub.accounted_until).is_not_distinct_from(start))
        .values(accounted_until=end)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise CursorMoved(f"hub {hub.name}: accounted_until is no longer {start}; the window was accounted elsewhere")
    session.expire(hub, ["accounted_until"])


@dataclass(frozen=True)
class Known:
    """What the inventory knew before a window's snapshot was applied to it."""

    present: frozenset[str]
    """UUIDs of the hub's GPUs not marked missing: reported or silent, they are the hub's capacity."""
    elsewhere: frozenset[str] = frozenset()
    """UUIDs another hub with a lower id still reports: that hub counts them."""


class _InventoriedGpu(Protocol):
    """What :func:`known_before` reads of an inventoried GPU: an ORM ``Gpu`` or a loaded row."""

    health: str


def known_before(
    session: Session,
    hub: Hub,
    gpus: Mapping[str, _InventoriedGpu],
    snapshot: Snapshot | None,
    *,
    missing_after: timedelta,
) -> Known:
    """The hub's present GPUs (from ``gpus``, the inventory loaded for the poll) and, for the
    snapshot's GPUs the hub does not have, those another hub still reports."""
    present = frozenset(uuid for uuid, gpu in gpus.items() if gpu.health != Health.MISSING.value)
    if snapshot is None:
        return Known(present)
    strangers = list(dict.fromkeys(r.uuid for r in snapshot.gpus if r.uuid not in gpus))
    elsewhere: set[str] = set()
    fresh_after = snapshot.taken_at - missing_after
    for start in range(0, len(strangers), _CHUNK):
        rows = session.execute(
            core_select(col(Gpu.uuid), col(Cluster.hub_id), col(Hub.name), col(Gpu.health), col(Gpu.last_seen))
            .join(Node, col(Gpu.node_id) == col(Node.id))
            .join(Cluster, col(Node.cluster_id) == col(Cluster.id))
            .join(Hub, col(Cluster.hub_id) == col(Hub.id))
            .where(col(Gpu.uuid).in_(strangers[start : start + _CHUNK]))
        )
        for uuid, other_id, other_name, health, last_seen in rows:
            if other_id == hub.id or health == Health.MISSING.value or last_seen < fresh_after:
                continue
            counted_by = other_name if other_id < (hub.id or 0) else hub.name
            log.warning(
                "ledger: GPU %s is reported by hubs %s and %s; its seconds are counted once, by %s",
                uuid,
                other_name,
                hub.name,
                counted_by,
            )
            if counted_by == other_name:
                elsewhere.add(uuid)
    return Known(present, frozenset(elsewhere))


def _holders(reading: GpuReading, workloads: Iterable[PodRef], ids: InventoryIds) -> tuple[Holder, ...]:
    """One holder per pod: a time-sliced GPU or slice held by k pods gives each 1/k."""
    return tuple(Holder(ids.projects.get((reading.cluster, w.namespace), 0), w.namespace) for w in workloads)


def gpu_use(reading: GpuReading, gpu_id: int, ids: InventoryIds, hub: str) -> GpuUse:
    """A reading as the ledger's attribution sees it: a whole GPU, or a MIG GPU's slices and rest."""
    if not reading.slices:
        part = Part(
            0,
            WHOLE,
            1.0,
            _holders(reading, reading.workloads, ids),
            reading.utilization,
            reading.utilization_max,
            reading.memory_used_mib,
        )
        return GpuUse(gpu_id, reading.cluster, reading.model, (part,), reading.power_watts, reading.temperature_c)
    parts: list[Part] = []
    for reported in reading.slices:
        slice_id = ids.slices.get((gpu_id, reported.mig_instance_id))
        try:
            share = profile_share(reading.model, reported.profile)
        except MigProfileError as exc:
            log.warning(
                "ledger: hub %s, GPU %s, MIG instance %d: %s; counted as unsliced",
                hub,
                reading.uuid,
                reported.mig_instance_id,
                exc,
            )
            continue
        if slice_id is None:  # the inventory did not take the slice: its share stays with the rest
            continue
        parts.append(
            Part(
                slice_id,
                reported.profile,
                share,
                _holders(reading, reported.workloads, ids),
                reported.utilization,
                reported.utilization_max,
                reported.memory_used_mib,
            )
        )
    sliced = sum(p.share for p in parts)
    if sliced > 1.0 + 1e-9:
        log.warning("ledger: hub %s, GPU %s: its slices hold %.3f of the GPU; scaled to 1", hub, reading.uuid, sliced)
        parts = [
            Part(
                p.slice_id, p.profile, p.share / sliced, p.holders, p.utilization, p.utilization_max, p.memory_used_mib
            )
            for p in parts
        ]
        sliced = 1.0
    if sliced < 1.0:
        parts.append(Part(0, UNSLICED, 1.0 - sliced))
    return GpuUse(gpu_id, reading.cluster, reading.model, tuple(parts), reading.power_watts, reading.temperature_c)


def account_window(
    session: Session,
    hub: Hub,
    window: Window,
    cursor: datetime | None,
    snapshot: Snapshot | None,
    known: Known,
    *,
    bucket_seconds: int,
    idle_threshold_percent: float,
    replica: str | None,
    ids: InventoryIds | None = None,
) -> WindowResult:
    """Account ``window`` of ``hub`` (cursor at ``cursor``) from ``snapshot`` (None: unaccounted).

    Expects the snapshot applied to the inventory in this transaction (its GPUs, slices and projects
    have ids: ``ids``, as :func:`~worker.inventory.apply_snapshot` returned them) and ``known`` taken
    before that. Raises :class:`CursorMoved` (roll back!) when the
    window was accounted elsewhere.
    """
    advance_cursor(session, hub, cursor, window.end)
    result = WindowResult(window)
    length = window.seconds
    if snapshot is None or window.kind == UNACCOUNTED:
        result.gpu_count = len(known.present)
        result.gpu_seconds_unaccounted = result.gpu_count * length
    else:
        if ids is None:
            raise ValueError("a snapshot is accounted with the ids its inventory rows have (InventoryChanges.ids)")
        uses, counted = _uses(hub, snapshot, known, ids)
        silent = len(known.present - counted)
        result.gpu_count = len(uses) + silent
        result.gpu_seconds_unaccounted = silent * length
        rows = attribute(
            uses,
            window.start,
            window.end,
            bucket_seconds=bucket_seconds,
            idle_threshold_percent=idle_threshold_percent,
            split=result.split,
        )
        result.rollup_rows = write_rows(session, rows)
    session.add(
        AccountedWindow(
            hub_id=hub.id or 0,
            start=window.start,
            end=window.end,
            kind=window.kind,
            gpu_count=result.gpu_count,
            gpu_seconds_unaccounted=result.gpu_seconds_unaccounted,
            replica=replica,
        )
    )
    write_period(
        session, hub.id or 0, window.start, window.end, result.gpu_count, result.gpu_seconds_unaccounted, window.kind
    )
    session.flush()
    return result


def _uses(hub: Hub, snapshot: Snapshot, known: Known, ids: InventoryIds) -> tuple[list[GpuUse], set[str]]:
    """The snapshot's GPUs to count (each once) and their UUIDs."""
    readings: dict[str, GpuReading] = {}
    for reading in snapshot.gpus:
        first = readings.get(reading.uuid)
        if first is not None:
            log.warning(
                "ledger: GPU %s reported by clusters %s and %s in one poll of hub %s; counted once, for %s",
                reading.uuid,
                first.cluster,
                reading.cluster,
                hub.name,
                first.cluster,
            )
            continue
        if reading.uuid in known.elsewhere:
            continue
        readings[reading.uuid] = reading
    uses: list[GpuUse] = []
    for uuid, reading in readings.items():
        gpu_id = ids.gpus.get(uuid)
        if gpu_id is None:  # the inventory refused it (it logs why): nothing to attribute to
            continue
        uses.append(gpu_use(reading, gpu_id, ids, hub.name))
    return uses, {u for u in readings if u in ids.gpus}


def write_rows(session: Session, rows: Mapping[RowKey, list[float | None]]) -> int:
    """Add a window's attributed rows to every tier; on PostgreSQL in documents of
    :data:`~domain.json_parameter.DOCUMENT_ROWS` rows, each read by the fine tier's statement and the
    coarser tiers' (sums add and peaks keep the larger, so the tiers come out the same)."""
    if not rows:
        return 0
    if not is_postgresql(session):
        upsert_sums(
            session,
            table_of(UsageRollup),
            _ROLLUP_KEY,
            [dict(zip(_ROLLUP_KEY, key, strict=True)) | measure_values(measures) for key, measures in rows.items()],
        )
        write_tiers(session, rows)
        return len(rows)
    for part in in_documents(list(rows.items())):
        window_rows = dict(part)
        document = rows_document(window_rows)
        # PostgreSQL adds them in the server, so the ~10,000 existing rows of a 10,000-GPU poll are
        # never read back (not ON CONFLICT DO UPDATE: it draws an id from the sequence for every row)
        session.execute(text(_ROLLUP_ADD), {"rows": document})
        write_tiers(session, window_rows, document)
    return len(rows)


_ROLLUP_KEY = ("gpu_id", "slice_id", "project_id", "bucket_start")
_ROLLUP_ADD = (
    # names are the model's constants, never input
    f"WITH v AS (SELECT * FROM {WINDOW_ROWS}), "  # noqa: S608
    "found AS (UPDATE usage_rollup AS t SET "
    + ", ".join(
        f"{name} = GREATEST(t.{name}, v.{name})"  # GREATEST skips NULL, as peak(): unknown never wins
        if i in PEAKS
        else f"{name} = t.{name} + COALESCE(v.{name}, 0)"
        for i, name in enumerate(MEASURES)
    )
    + " FROM v WHERE "
    + " AND ".join(f"t.{name} = v.{name}" for name in _ROLLUP_KEY)
    + " RETURNING "
    + ", ".join(f"t.{name}" for name in _ROLLUP_KEY)
    + f") INSERT INTO usage_rollup ({', '.join((*_ROLLUP_KEY, *MEASURES))}) "
    + f"SELECT {', '.join(f'v.{name}' for name in (*_ROLLUP_KEY, *MEASURES))} FROM v "  # noqa: S608
    + "WHERE NOT EXISTS (SELECT 1 FROM found f WHERE "
    + " AND ".join(f"f.{name} = v.{name}" for name in _ROLLUP_KEY)
    + ")"
)
"""Adds each row to its bucket's existing row and inserts the rows of buckets not there yet, in one
statement run by the server."""
