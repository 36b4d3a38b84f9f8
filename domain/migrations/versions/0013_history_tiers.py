"""history tiers: hourly and daily sums of the ledger, per cluster, per hub; partitions (issue 16)

Revision ID: 0013_history_tiers
Revises: 0012_poll_floor
Create Date: 2026-12-06 08:00:00.000000

New tables, all exact sums of what the ledger already holds (docs/ledger.md, "Tiers"):
``usage_rollup_hourly`` and ``usage_rollup_daily`` (``usage_rollup`` per hour and per UTC day),
``cluster_rollup`` (per cluster, project and hour or day) and ``accounted_period`` (each hub's
accounted windows pro-rated to hours and days). They are filled from the existing rows and windows,
losslessly: every tier's total equals the fine rows' (``domain.ledger.tiers.rebuild_tiers``).

On PostgreSQL ``usage_rollup`` becomes a table partitioned by day on ``bucket_start`` (its primary
key becomes ``(id, bucket_start)``, as partitioning requires) and ``usage_rollup_hourly`` is created
partitioned by month, each with a DEFAULT partition; partitions cover the existing rows and a few
periods ahead, and the worker's maintenance job creates the next ones. Downgrading drops the tiers
and turns ``usage_rollup`` back into a plain table, rows kept.
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

import domain.models.base
from domain.ledger.partitions import ensure_partitions
from domain.ledger.tiers import rebuild_tiers

revision: str = "0013_history_tiers"
down_revision: str | None = "0012_poll_floor"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _measures() -> list[sa.Column]:
    def total(name: str) -> sa.Column:
        return sa.Column(name, sa.Float(), nullable=False)

    def peak(name: str) -> sa.Column:
        return sa.Column(name, sa.Float(), nullable=True)

    return [
        total("seconds"),
        total("seconds_idle"),
        total("seconds_util_known"),
        total("util_seconds"),
        peak("util_max"),
        total("memory_mib_seconds"),
        peak("memory_max_mib"),
        total("energy_wh"),
        total("power_seconds_known"),
        peak("temperature_max_c"),
    ]


def _bucket() -> sa.Column:
    return sa.Column("bucket_start", domain.models.base.UtcDateTime(), nullable=False)


def _per_gpu(name: str, **partitioning: Any) -> None:  # dialect table options, as Table(**kw: Any) takes them
    op.create_table(
        name,
        _bucket(),
        *_measures(),
        sa.Column("gpu_id", sa.Integer(), nullable=False),
        sa.Column("slice_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["gpu_id"], ["gpu.id"], name=op.f(f"fk_{name}_gpu_id_gpu")),
        sa.PrimaryKeyConstraint("gpu_id", "slice_id", "project_id", "bucket_start", name=op.f(f"pk_{name}")),
        **partitioning,
    )
    op.create_index(op.f(f"ix_{name}_bucket_start"), name, ["bucket_start"])
    op.create_index(op.f(f"ix_{name}_project_id"), name, ["project_id"])


def _partition_rollups(bind: sa.Connection) -> None:
    """PostgreSQL: ``usage_rollup`` becomes partitioned by day, rows, ids and names kept."""
    for statement in (
        "ALTER TABLE usage_rollup RENAME TO usage_rollup_plain",
        "ALTER INDEX pk_usage_rollup RENAME TO pk_usage_rollup_plain",
        "ALTER INDEX uq_usage_rollup_gpu_id_slice_id_project_id_bucket_start RENAME TO uq_usage_rollup_plain_key",
        "ALTER INDEX ix_usage_rollup_bucket_start RENAME TO ix_usage_rollup_plain_bucket_start",
        "ALTER INDEX ix_usage_rollup_project_id RENAME TO ix_usage_rollup_plain_project_id",
        "ALTER TABLE usage_rollup_plain RENAME CONSTRAINT fk_usage_rollup_gpu_id_gpu TO fk_usage_rollup_plain_gpu",
        "ALTER SEQUENCE usage_rollup_id_seq OWNED BY NONE",
        "CREATE TABLE usage_rollup (LIKE usage_rollup_plain INCLUDING DEFAULTS) PARTITION BY RANGE (bucket_start)",
        "ALTER TABLE usage_rollup ADD CONSTRAINT pk_usage_rollup PRIMARY KEY (id, bucket_start)",
        "ALTER TABLE usage_rollup ADD CONSTRAINT uq_usage_rollup_gpu_id_slice_id_project_id_bucket_start "
        "UNIQUE (gpu_id, slice_id, project_id, bucket_start)",
        "ALTER TABLE usage_rollup ADD CONSTRAINT fk_usage_rollup_gpu_id_gpu FOREIGN KEY (gpu_id) REFERENCES gpu (id)",
        "CREATE INDEX ix_usage_rollup_bucket_start ON usage_rollup (bucket_start)",
        "CREATE INDEX ix_usage_rollup_project_id ON usage_rollup (project_id)",
        "ALTER SEQUENCE usage_rollup_id_seq OWNED BY usage_rollup.id",
        "CREATE TABLE usage_rollup_default PARTITION OF usage_rollup DEFAULT",
        "CREATE TABLE usage_rollup_hourly_default PARTITION OF usage_rollup_hourly DEFAULT",
    ):
        bind.execute(sa.text(statement))
    oldest = bind.execute(sa.text("SELECT min(bucket_start) FROM usage_rollup_plain")).scalar()
    now = datetime.now(UTC)
    ensure_partitions(bind, now, since=min(oldest.replace(tzinfo=UTC), now) if oldest else None)
    bind.execute(sa.text("INSERT INTO usage_rollup SELECT * FROM usage_rollup_plain"))
    bind.execute(sa.text("DROP TABLE usage_rollup_plain"))


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    _per_gpu("usage_rollup_hourly", **({"postgresql_partition_by": "RANGE (bucket_start)"} if postgres else {}))
    _per_gpu("usage_rollup_daily")
    op.create_table(
        "cluster_rollup",
        _bucket(),
        *_measures(),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["cluster_id"], ["cluster.id"], name=op.f("fk_cluster_rollup_cluster_id_cluster")),
        sa.PrimaryKeyConstraint("width", "cluster_id", "project_id", "bucket_start", name=op.f("pk_cluster_rollup")),
    )
    op.create_index(op.f("ix_cluster_rollup_bucket_start"), "cluster_rollup", ["bucket_start"])
    op.create_table(
        "accounted_period",
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("hub_id", sa.Integer(), nullable=False),
        _bucket(),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("capacity_gpu_seconds", sa.Float(), nullable=False),
        sa.Column("unaccounted_gpu_seconds", sa.Float(), nullable=False),
        sa.Column("unaccounted_seconds", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["hub_id"], ["hub.id"], name=op.f("fk_accounted_period_hub_id_hub")),
        sa.PrimaryKeyConstraint("width", "hub_id", "bucket_start", name=op.f("pk_accounted_period")),
    )
    op.create_index(op.f("ix_accounted_period_bucket_start"), "accounted_period", ["bucket_start"])
    if postgres:
        _partition_rollups(bind)
    rebuild_tiers(bind)


def downgrade() -> None:
    bind = op.get_bind()
    op.drop_table("accounted_period")
    op.drop_table("cluster_rollup")
    op.drop_table("usage_rollup_daily")
    op.drop_table("usage_rollup_hourly")
    if bind.dialect.name != "postgresql":
        return
    for statement in (
        "ALTER TABLE usage_rollup RENAME TO usage_rollup_partitioned",
        "ALTER INDEX pk_usage_rollup RENAME TO pk_usage_rollup_partitioned",
        "ALTER INDEX uq_usage_rollup_gpu_id_slice_id_project_id_bucket_start RENAME TO uq_usage_rollup_partitioned_key",
        "ALTER INDEX ix_usage_rollup_bucket_start RENAME TO ix_usage_rollup_partitioned_bucket_start",
        "ALTER INDEX ix_usage_rollup_project_id RENAME TO ix_usage_rollup_partitioned_project_id",
        "ALTER TABLE usage_rollup_partitioned RENAME CONSTRAINT fk_usage_rollup_gpu_id_gpu "
        "TO fk_usage_rollup_partitioned_gpu",
        "ALTER SEQUENCE usage_rollup_id_seq OWNED BY NONE",
        "CREATE TABLE usage_rollup (LIKE usage_rollup_partitioned INCLUDING DEFAULTS)",
        "INSERT INTO usage_rollup SELECT * FROM usage_rollup_partitioned",
        "DROP TABLE usage_rollup_partitioned",
        "ALTER TABLE usage_rollup ADD CONSTRAINT pk_usage_rollup PRIMARY KEY (id)",
        "ALTER TABLE usage_rollup ADD CONSTRAINT uq_usage_rollup_gpu_id_slice_id_project_id_bucket_start "
        "UNIQUE (gpu_id, slice_id, project_id, bucket_start)",
        "ALTER TABLE usage_rollup ADD CONSTRAINT fk_usage_rollup_gpu_id_gpu FOREIGN KEY (gpu_id) REFERENCES gpu (id)",
        "CREATE INDEX ix_usage_rollup_bucket_start ON usage_rollup (bucket_start)",
        "CREATE INDEX ix_usage_rollup_project_id ON usage_rollup (project_id)",
        "ALTER SEQUENCE usage_rollup_id_seq OWNED BY usage_rollup.id",
    ):
        bind.execute(sa.text(statement))
