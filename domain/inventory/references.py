"""Filter values that name a row by its id or by its name, resolved within the caller's scope.

``?cluster=3`` and ``?cluster=moc-prod`` select the same rows. A value of digits only is an id;
anything else is a name:

=========  ======================================
filter     a name is
=========  ======================================
cluster    ``name``, or ``hub/name``
node       ``hostname``, or ``cluster/hostname``
gpu        the GPU's ``UUID``
project    ``namespace``, or ``cluster/namespace``
=========  ======================================

Names are looked up only among the rows the caller may read, so a name outside the caller's scope
resolves exactly as a name that does not exist: to :data:`NO_ROW`, an id no row has, and the list
comes back empty, as it does for an unknown id. A name that matches several rows the caller may
read is refused (:class:`~domain.inventory.paging.InvalidQuery`, 400) naming the form that picks
one; the ids it lists are the caller's own.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlmodel import Session, col

from domain.access import ReadScope
from domain.inventory.paging import InvalidQuery
from domain.inventory.visibility import clusters_visible, gpus_visible, nodes_visible, projects_visible
from domain.models import Cluster, Gpu, Hub, Node, ResearchProject

ID_MAX = 2**31 - 1
"""Row ids are 32-bit integers in PostgreSQL: a larger path id is bad input (400); in a filter it is an
unknown id (:data:`NO_ROW`). Neither is ever sent to the database."""
NO_ROW = 0
"""Ids start at 1: a filter on this one selects nothing, as an unknown id does."""
MAX_MATCHES = 5
"""Ids named in the answer to an ambiguous name."""


def parse_id(value: str) -> int | None:
    """The id a filter value spells (digits only), or None when it is a name.

    Digits that no id can be (0, or beyond :data:`ID_MAX`) are an unknown id: :data:`NO_ROW`, never sent
    to the database as they are.
    """
    if not value.isascii() or not value.isdigit():
        return None
    number = int(value)
    return number if 1 <= number <= ID_MAX else NO_ROW


def _one(session: Session, name: str, value: str, stmt: Select[Any], longer: str) -> int:
    ids = list(session.execute(stmt.limit(MAX_MATCHES)).scalars())
    if not ids:
        return NO_ROW
    if len(ids) > 1:
        shown = ", ".join(str(i) for i in sorted(ids))
        raise InvalidQuery(f"{name}: {value!r} names several rows (ids {shown}); give {longer} or the id")
    return int(ids[0])


def _split(value: str) -> tuple[str | None, str]:
    """``outer/inner`` or ``inner``."""
    outer, slash, inner = value.rpartition("/")
    return (outer, inner) if slash else (None, value)


def resolve_cluster(session: Session, scope: ReadScope, value: str | None, *, name: str = "cluster") -> int | None:
    """A cluster filter's id: None without a filter, :data:`NO_ROW` when nothing readable matches."""
    if not value:
        return None
    number = parse_id(value)
    if number is not None:
        return number
    hub, cluster = _split(value)
    stmt = select(col(Cluster.id)).join(Hub, col(Hub.id) == col(Cluster.hub_id)).where(col(Cluster.name) == cluster)
    if hub is not None:
        stmt = stmt.where(col(Hub.name) == hub)
    return _one(session, name, value, stmt.where(clusters_visible(scope)), "hub/name")


def resolve_node(session: Session, scope: ReadScope, value: str | None, *, name: str = "node") -> int | None:
    """A node filter's id: by id, ``hostname`` or ``cluster/hostname``."""
    if not value:
        return None
    number = parse_id(value)
    if number is not None:
        return number
    cluster, hostname = _split(value)
    stmt = (
        select(col(Node.id))
        .join(Cluster, col(Cluster.id) == col(Node.cluster_id))
        .where(col(Node.hostname) == hostname)
    )
    if cluster is not None:
        stmt = stmt.where(col(Cluster.name) == cluster)
    return _one(session, name, value, stmt.where(nodes_visible(scope)), "cluster/hostname")


def resolve_gpu(session: Session, scope: ReadScope, value: str | None, *, name: str = "gpu") -> int | None:
    """A GPU filter's id: by id or UUID."""
    if not value:
        return None
    number = parse_id(value)
    if number is not None:
        return number
    stmt = (
        select(col(Gpu.id))
        .join(Node, col(Node.id) == col(Gpu.node_id))
        .where(col(Gpu.uuid) == value, gpus_visible(scope))
    )
    return _one(session, name, value, stmt, "the UUID")


def resolve_project(session: Session, scope: ReadScope, value: str | None, *, name: str = "project") -> int | None:
    """A research project filter's id: by id, ``namespace`` or ``cluster/namespace``."""
    if not value:
        return None
    number = parse_id(value)
    if number is not None:
        return number
    cluster, namespace = _split(value)
    stmt = (
        select(col(ResearchProject.id))
        .join(Cluster, col(Cluster.id) == col(ResearchProject.cluster_id))
        .where(col(ResearchProject.namespace) == namespace)
    )
    if cluster is not None:
        stmt = stmt.where(col(Cluster.name) == cluster)
    return _one(session, name, value, stmt.where(projects_visible(scope)), "cluster/namespace")
