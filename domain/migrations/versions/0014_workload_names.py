"""workload names: the table ``workload_session`` becomes ``workload``, its indexes and constraints with it (issue 15)

Revision ID: 0014_workload_names
Revises: 0013_history_tiers
Create Date: 2026-12-06 10:30:00.000000

One word per concept: a pod holding a GPU or MIG slice is a "workload" in pages, API, models and
tables ("session" is left to the database session and the login session). Rows, ids and the
identity sequence are kept as they are; only names change.

PostgreSQL renames in place: the table, its constraints (the primary and unique keys rename their
indexes with them), its indexes and the id sequence, so nothing is copied and the table keeps its
storage settings (the fill factor of ``0012_poll_floor``). No other table is renamed: the history
tables and their partitions are not named after this one.

SQLite cannot rename a constraint or an index, so it copies: the table is created under the new
names, the rows are copied with their ids, and the old table (with its indexes) is dropped. The
downgrade does the same in reverse.
"""

from collections.abc import Sequence
from typing import NamedTuple

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

import domain.models.base

revision: str = "0014_workload_names"
down_revision: str | None = "0013_history_tiers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


class Names(NamedTuple):
    table: str
    primary_key: str
    trace_id_key: str
    project_key: str
    sequence: str
    indexes: dict[str, tuple[str, ...]]
    """Index name: the one-open-row index first, then the plain ones (by their columns)."""


OLD = Names(
    table="workload_session",
    primary_key="pk_workload_session",
    trace_id_key="uq_workload_session_trace_id",
    project_key="fk_workload_session_project_id_research_project",
    sequence="workload_session_id_seq",
    indexes={
        "uq_session_open_workload": ("workload_key",),
        "ix_workload_session_project_id": ("project_id",),
        "ix_session_workload": ("cluster", "namespace", "pod", "gpu_uuid", "ended_at"),
        "ix_session_started_at": ("started_at",),
        "ix_session_key_ended": ("workload_key", "ended_at"),
    },
)
NEW = Names(
    table="workload",
    primary_key="pk_workload",
    trace_id_key="uq_workload_trace_id",
    project_key="fk_workload_project_id_research_project",
    sequence="workload_id_seq",
    indexes={
        "uq_workload_open_key": ("workload_key",),
        "ix_workload_project_id": ("project_id",),
        "ix_workload_identity": ("cluster", "namespace", "pod", "gpu_uuid", "ended_at"),
        "ix_workload_started_at": ("started_at",),
        "ix_workload_key_ended": ("workload_key", "ended_at"),
    },
)


def upgrade() -> None:
    _rename(OLD, NEW)


def downgrade() -> None:
    _rename(NEW, OLD)


def _rename(old: Names, new: Names) -> None:
    if op.get_bind().dialect.name == "postgresql":
        _rename_in_place(old, new)
    else:
        _copy(old, new)


def _rename_in_place(old: Names, new: Names) -> None:
    op.rename_table(old.table, new.table)
    for before, after in (
        (old.primary_key, new.primary_key),
        (old.trace_id_key, new.trace_id_key),
        (old.project_key, new.project_key),
    ):
        op.execute(f"ALTER TABLE {new.table} RENAME CONSTRAINT {before} TO {after}")
    for before, after in zip(old.indexes, new.indexes, strict=True):
        op.execute(f"ALTER INDEX {before} RENAME TO {after}")
    op.execute(f"ALTER SEQUENCE IF EXISTS {old.sequence} RENAME TO {new.sequence}")


def _columns() -> list[sa.Column]:
    """The table's columns at this revision, in their stored order (0001, then 0005 and 0011's additions)."""

    def text(name: str, length: int, *, nullable: bool) -> sa.Column:
        return sa.Column(name, AutoString(length=length), nullable=nullable)

    def figure(name: str) -> sa.Column:
        return sa.Column(name, sa.Float(), nullable=False)

    return [
        text("trace_id", 32, nullable=False),
        text("cluster", 128, nullable=False),
        text("namespace", 253, nullable=False),
        text("pod", 253, nullable=False),
        text("container", 253, nullable=True),
        text("node", 253, nullable=True),
        text("gpu_uuid", 64, nullable=True),
        sa.Column("mig_instance_id", sa.Integer(), nullable=True),
        sa.Column("started_at", domain.models.base.UtcDateTime(), nullable=False),
        sa.Column("ended_at", domain.models.base.UtcDateTime(), nullable=True),
        text("source", 16, nullable=False),
        text("summary", 1024, nullable=True),
        sa.Column("samples", sa.Integer(), nullable=False),
        figure("util_avg"),
        figure("util_max"),
        figure("memory_max_mib"),
        figure("energy_wh"),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=True),
        text("gpu_model", 128, nullable=True),
        text("alert_fingerprint", 64, nullable=True),
        sa.Column("events", sa.JSON(), nullable=False),
        text("workload_key", 40, nullable=False),
        sa.Column("last_xid", sa.Integer(), nullable=True),
        sa.Column("throttled", sa.Boolean(), nullable=False),
        *(
            sa.Column(name, sa.Float(), nullable=False, server_default="0")
            for name in ("seconds", "gpu_seconds", "idle_gpu_seconds", "util_seconds", "util_known_seconds")
        ),
        sa.Column("memory_total_mib", sa.Float(), nullable=True),
        sa.Column("profiling", sa.JSON(), nullable=False, server_default="{}"),
        text("profiling_missing", 16, nullable=True),
    ]


def _copy(old: Names, new: Names) -> None:
    columns = _columns()
    target = op.create_table(
        new.table,
        *columns,
        sa.ForeignKeyConstraint(["project_id"], ["research_project.id"], name=new.project_key),
        sa.PrimaryKeyConstraint("id", name=new.primary_key),
        sa.UniqueConstraint("trace_id", name=new.trace_id_key),
    )
    names = [c.name for c in columns]
    source = sa.table(old.table, *(sa.column(name) for name in names))
    op.execute(sa.insert(target).from_select(names, sa.select(*(source.c[name] for name in names))))
    op.drop_table(old.table)
    (open_key, open_columns), *plain = new.indexes.items()
    for name, index_columns in plain:
        op.create_index(name, new.table, list(index_columns), unique=False)
    op.create_index(open_key, new.table, list(open_columns), unique=True, sqlite_where=sa.text("ended_at IS NULL"))
