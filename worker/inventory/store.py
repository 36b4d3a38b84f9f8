"""The inventory's reads and bulk writes: a hub's rows loaded as plain rows, written back by primary key."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from domain.models import Allocation, Cluster, Gpu, GpuSlice, Node, ResearchProject
from domain.models.base import naive_utc
from worker.bulk import is_postgresql, update_rows

CHUNK = 500
"""Bind parameters per IN list; well under SQLite's and PostgreSQL's limits."""

Slot = tuple[int, int | None]
"""An allocatable slot: (gpu id, slice id or None for the whole GPU)."""


@dataclass(slots=True, eq=False)
class GpuRow:
    """A ``gpu`` row as loaded for comparison: the columns a poll compares or writes, no ORM state
    (``first_seen`` is never rewritten, so not loaded: 10,000 datetimes fewer per poll). Writes go by ``id``."""

    id: int
    uuid: str
    node_id: int
    index: int
    model: str
    pci_bus_id: str | None
    memory_total_mib: float | None
    mig_mode: bool
    utilization: float | None
    memory_used_mib: float | None
    power_watts: float | None
    temperature_c: float | None
    last_xid: int | None
    health: str
    last_seen: datetime


@dataclass(slots=True, eq=False)
class AllocationRow:
    """An open ``allocation`` row as loaded for comparison (``since`` is never rewritten, so not
    loaded); closing it is written by ``id``."""

    id: int
    gpu_id: int
    slice_id: int | None
    project_id: int
    pod: str
    container: str | None
    until: datetime | None


def columns_of(row_class: type, model: Any) -> Select[Any]:
    """``SELECT`` of the model's columns in the order of ``row_class``'s fields (``row_class(*row)``)."""
    table = model.__table__
    return select(*(table.c[f.name] for f in fields(row_class)))


def _gpu_rows(session: Session, query: Select[Any]) -> Iterator[GpuRow]:
    for row in session.execute(query):
        yield GpuRow(*row)


def _allocation_rows(session: Session, query: Select[Any]) -> Iterator[AllocationRow]:
    for row in session.execute(query):
        yield AllocationRow(*row)


@dataclass
class Existing:
    """The hub's rows as loaded by a fixed number of bulk queries."""

    clusters: dict[str, Cluster]
    nodes: dict[tuple[int, str], Node]
    gpus: dict[str, GpuRow]
    slices: dict[tuple[int, int], GpuSlice]
    projects: dict[tuple[int, str], ResearchProject]
    open_allocations: dict[Slot, list[AllocationRow]] = field(default_factory=dict)


def chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def hub_gpu_ids(hub_id: int) -> SelectOfScalar[int | None]:
    """The ids of the hub's GPUs (through their nodes and clusters), as a query or a subquery."""
    return (
        select(col(Gpu.id))
        .join(Node, col(Gpu.node_id) == col(Node.id))
        .join(Cluster, col(Node.cluster_id) == col(Cluster.id))
        .where(Cluster.hub_id == hub_id)
        .correlate(None)
    )


def of_hub(column: Any, hub_id: int) -> ColumnElement[bool]:
    """Condition on a ``gpu_id`` column: a GPU of the hub."""
    return col(column).in_(hub_gpu_ids(hub_id))


def hub_project_ids(session: Session, hub_id: int) -> dict[tuple[str, str], int]:
    """The hub's research project ids by (cluster name, namespace)."""
    return {
        (cluster, namespace): project_id or 0
        for project_id, cluster, namespace in session.exec(
            select(ResearchProject.id, Cluster.name, ResearchProject.namespace)
            .join(Cluster, col(ResearchProject.cluster_id) == col(Cluster.id))
            .where(Cluster.hub_id == hub_id)
        )
    }


def load_inventory(session: Session, hub_id: int) -> Existing:
    """The hub's rows in six bulk queries; :func:`apply_snapshot` takes them pre-loaded (``existing``),
    so a poller can read the database while the source is still answering."""
    with session.no_autoflush:
        clusters = {c.name: c for c in session.exec(select(Cluster).where(Cluster.hub_id == hub_id))}
        nodes = {
            (n.cluster_id, n.hostname): n
            for n in session.exec(
                select(Node).join(Cluster, col(Node.cluster_id) == col(Cluster.id)).where(Cluster.hub_id == hub_id)
            )
        }
        gpus = {
            g.uuid: g
            for g in _gpu_rows(
                session,
                columns_of(GpuRow, Gpu)
                .join(Node, col(Gpu.node_id) == col(Node.id))
                .join(Cluster, col(Node.cluster_id) == col(Cluster.id))
                .where(col(Cluster.hub_id) == hub_id),
            )
        }
        slices = {
            (s.gpu_id, s.mig_instance_id): s
            for s in session.exec(select(GpuSlice).where(of_hub(GpuSlice.gpu_id, hub_id)))
        }
        projects = {
            (p.cluster_id, p.namespace): p
            for p in session.exec(
                select(ResearchProject)
                .join(Cluster, col(ResearchProject.cluster_id) == col(Cluster.id))
                .where(Cluster.hub_id == hub_id)
            )
        }
        existing = Existing(clusters, nodes, gpus, slices, projects)
        for allocation in _allocation_rows(
            session,
            columns_of(AllocationRow, Allocation)
            .where(col(Allocation.until).is_(None), of_hub(Allocation.gpu_id, hub_id))
            .order_by(col(Allocation.id)),
        ):
            existing.open_allocations.setdefault((allocation.gpu_id, allocation.slice_id), []).append(allocation)
    return existing


def add_moved_in(session: Session, existing: Existing, uuids: Sequence[str]) -> None:
    """GPUs first seen by this hub may already exist under another hub (the UUID is global)."""
    unknown = [u for u in uuids if u not in existing.gpus]
    moved_in: list[int] = []
    for chunk in chunks(unknown):
        for gpu in _gpu_rows(session, columns_of(GpuRow, Gpu).where(col(Gpu.uuid).in_(chunk))):
            existing.gpus[gpu.uuid] = gpu
            moved_in.append(gpu.id or 0)
    if not moved_in:
        return
    for part in session.exec(select(GpuSlice).where(col(GpuSlice.gpu_id).in_(moved_in))):
        existing.slices[(part.gpu_id, part.mig_instance_id)] = part
    for allocation in _allocation_rows(
        session,
        columns_of(AllocationRow, Allocation)
        .where(col(Allocation.until).is_(None), col(Allocation.gpu_id).in_(moved_in))
        .order_by(col(Allocation.id)),
    ):
        existing.open_allocations.setdefault((allocation.gpu_id, allocation.slice_id), []).append(allocation)


def assign(row: Any, values: Mapping[str, Any]) -> bool:
    """Set only the attributes that differ, so the ORM emits an UPDATE only for real changes."""
    changed = False
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return changed


class BulkUpdate:
    """Existing rows of one table whose values changed in this poll, written in one statement.

    The new values are set on the ORM objects as already committed (so later stages see them and
    the ORM does not write them again); :meth:`write` sends every row's ``columns`` by primary key.
    """

    def __init__(self, model: Any, columns: Sequence[str]) -> None:
        self.table = model.__table__
        self.columns = tuple(columns)
        self.rows: list[Any] = []

    def stage(self, row: Any, changed: Mapping[str, Any]) -> None:
        orm = hasattr(row, "_sa_instance_state")  # plain rows (GpuRow) are not tracked by the ORM
        for name, value in changed.items():
            if orm:
                set_committed_value(row, name, value)
            else:
                setattr(row, name, value)
        self.rows.append(row)

    def write(self, session: Session) -> None:
        if not self.rows:
            return
        if is_postgresql(session):
            rows = [{"id": row.id, **{c: plain(getattr(row, c)) for c in self.columns}} for row in self.rows]
            update_rows(session, self.table, rows, columns=self.columns)
        else:
            stmt = (
                update(self.table)
                .where(self.table.c.id == bindparam("_id"))
                .values({c: bindparam(f"_{c}") for c in self.columns})
            )
            rows = [{"_id": row.id, **{f"_{c}": getattr(row, c) for c in self.columns}} for row in self.rows]
            session.execute(stmt, rows)
        self.rows = []


def plain(value: Any) -> Any:
    """A value as the JSON of :func:`worker.bulk.update_rows` carries it (datetimes naive UTC)."""
    return naive_utc(value) if isinstance(value, datetime) else value


GPU_COLUMNS = (
    "node_id",
    "index",
    "model",
    "mig_mode",
    "utilization",
    "memory_used_mib",
    "power_watts",
    "temperature_c",
    "last_xid",
    "health",
    "pci_bus_id",
    "memory_total_mib",
    "last_seen",
)
SLICE_COLUMNS = ("profile", "utilization", "memory_used_mib", "health", "memory_total_mib", "last_seen")
