"""ledger: accounted windows, the hub's cursor, sum-only rollup measures (docs/ledger.md, issue 14)

Revision ID: 0009_ledger
Revises: 0008_local_user
Create Date: 2026-12-06 07:00:00.000000

Existing rollups are carried forward; what the old per-poll counting did not record is marked
unaccounted, never invented. Per ``usage_rollup`` row:

==========================  =================================================================
new column                  from the old row
==========================  =================================================================
``seconds``                 ``gpu_seconds_allocated`` (0 on unallocated rows: the old counting
                            never counted unallocated time; that part is unaccounted, below)
``seconds_idle``            0: the old idle seconds rest on utilisation readings taken as truth
``seconds_util_known``      where none may have been (MIG slices read 0 when DCGM had nothing);
``util_seconds``            which readings were known cannot be reconstructed, so utilisation
``util_max``                of migrated buckets is unknown (0, 0, 0, NULL), neither idle nor 0 %
``memory_mib_seconds``      ``memory_avg_mib x seconds``
``memory_max_mib``          ``memory_max_mib``, NULL where it was 0 (0 stood for "no reading")
``energy_wh``               ``energy_wh`` unchanged
``power_seconds_known``     ``energy_wh x 3600 / power_avg_watts`` (the seconds whose power was
                            read), at most ``seconds``; 0 without a power reading
``temperature_max_c``       ``temperature_max_c``, NULL where it was 0
==========================  =================================================================

The bucket width is ``AI_TELEMETRY_SCHEDULER_ROLLUP_BUCKET_SECONDS`` (default 300), read from the
environment the product migrates in. Where the old counting credited a GPU more seconds in a bucket
than the bucket lasts (a catch-up poll, a demo restart replaying counted hours), the GPU's rows of
that bucket are scaled down to the bucket's length, every sum by the same factor: that excess is
provably double-counted.

Every (hub, bucket) holding rollups gets one ``migrated`` window ``[bucket, bucket + width)`` with
``gpu_count`` the hub's GPUs having a row in the bucket (the old worker wrote one for each GPU it
read), and ``gpu_seconds_unaccounted = gpu_count x width - Σ seconds``: the unallocated time and
whatever the old counting missed. Each hub's ``accounted_until`` becomes the end of its last
migrated bucket, so the ledger carries on from there; gaps between migrated buckets stay gaps (the
old data does not say how many GPUs there were). Downgrading turns the sums back into one-sample
averages and drops the windows; it is lossy.
"""

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import domain.models.base

revision: str = "0009_ledger"
down_revision: str | None = "0008_local_user"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NEW_SUMS = (
    "seconds",
    "seconds_idle",
    "seconds_util_known",
    "util_seconds",
    "memory_mib_seconds",
    "power_seconds_known",
)
_OLD = ("samples", "util_avg", "memory_avg_mib", "power_avg_watts", "gpu_seconds_allocated", "gpu_seconds_idle")
_SCALED = ("seconds", "memory_mib_seconds", "energy_wh", "power_seconds_known")
SCALE_TABLE = "ledger_migration_scale"


def _bucket_seconds() -> int:
    raw = os.environ.get("AI_TELEMETRY_SCHEDULER_ROLLUP_BUCKET_SECONDS", "300")
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"AI_TELEMETRY_SCHEDULER_ROLLUP_BUCKET_SECONDS: not an integer: {raw!r}") from None
    if value < 60:
        raise ValueError(f"AI_TELEMETRY_SCHEDULER_ROLLUP_BUCKET_SECONDS: must be at least 60, not {value}")
    return value


def upgrade() -> None:
    bucket = _bucket_seconds()
    with op.batch_alter_table("hub", schema=None) as batch_op:
        batch_op.add_column(sa.Column("accounted_until", domain.models.base.UtcDateTime(), nullable=True))

    op.create_table(
        "accounted_window",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("hub_id", sa.Integer(), nullable=False),
        sa.Column("start", domain.models.base.UtcDateTime(), nullable=False),
        sa.Column("end", domain.models.base.UtcDateTime(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("gpu_seconds_unaccounted", sa.Float(), nullable=False),
        sa.Column("replica", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("recorded_at", domain.models.base.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["hub_id"], ["hub.id"], name=op.f("fk_accounted_window_hub_id_hub")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounted_window")),
        sa.UniqueConstraint("hub_id", "start", name=op.f("uq_accounted_window_hub_id_start")),
    )
    with op.batch_alter_table("accounted_window", schema=None) as batch_op:
        batch_op.create_index("ix_accounted_window_end", ["end"], unique=False)

    with op.batch_alter_table("usage_rollup", schema=None) as batch_op:
        for name in _NEW_SUMS:
            batch_op.add_column(sa.Column(name, sa.Float(), nullable=False, server_default="0"))
        for name in ("util_max", "memory_max_mib", "temperature_max_c"):
            batch_op.alter_column(name, existing_type=sa.Float(), nullable=True, server_default=None)

    op.execute(
        "UPDATE usage_rollup SET seconds = gpu_seconds_allocated, "
        "memory_mib_seconds = memory_avg_mib * gpu_seconds_allocated, "
        "power_seconds_known = CASE WHEN power_avg_watts > 0 THEN "
        "  CASE WHEN energy_wh * 3600 / power_avg_watts < gpu_seconds_allocated "
        "  THEN energy_wh * 3600 / power_avg_watts ELSE gpu_seconds_allocated END ELSE 0 END, "
        "util_max = NULL, "
        "memory_max_mib = CASE WHEN memory_max_mib = 0 THEN NULL ELSE memory_max_mib END, "
        "temperature_max_c = CASE WHEN temperature_max_c = 0 THEN NULL ELSE temperature_max_c END"
    )
    _scale_overcounted(bucket)

    with op.batch_alter_table("usage_rollup", schema=None) as batch_op:
        for name in _NEW_SUMS:
            batch_op.alter_column(name, existing_type=sa.Float(), nullable=False, server_default=None)
        for name in _OLD:
            batch_op.drop_column(name)

    _migrated_windows(bucket)


def _scale_overcounted(bucket: int) -> None:
    """A GPU credited more seconds in a bucket than the bucket lasts: scale its rows to the bucket."""
    op.create_table(
        SCALE_TABLE,
        sa.Column("gpu_id", sa.Integer(), nullable=False),
        sa.Column("bucket_start", domain.models.base.UtcDateTime(), nullable=False),
        sa.Column("factor", sa.Float(), nullable=False),
    )
    op.execute(
        sa.text(
            f"INSERT INTO {SCALE_TABLE} (gpu_id, bucket_start, factor) "  # noqa: S608 (constant names)
            "SELECT gpu_id, bucket_start, :bucket / sum(seconds) FROM usage_rollup "
            "GROUP BY gpu_id, bucket_start HAVING sum(seconds) > :bucket"
        ).bindparams(bucket=float(bucket))
    )
    match = f"FROM {SCALE_TABLE} m WHERE m.gpu_id = usage_rollup.gpu_id AND m.bucket_start = usage_rollup.bucket_start"
    assignments = ", ".join(f"{c} = {c} * (SELECT m.factor {match})" for c in _SCALED)
    op.execute(f"UPDATE usage_rollup SET {assignments} WHERE EXISTS (SELECT 1 {match})")  # noqa: S608
    op.drop_table(SCALE_TABLE)


def _migrated_windows(bucket: int) -> None:
    """One ``migrated`` window per (hub, bucket) holding rollups; the hub's cursor at the last one's end."""
    bind = op.get_bind()
    rollup = sa.table(
        "usage_rollup",
        sa.column("gpu_id", sa.Integer()),
        sa.column("bucket_start", domain.models.base.UtcDateTime()),
        sa.column("seconds", sa.Float()),
    )
    gpu = sa.table("gpu", sa.column("id", sa.Integer()), sa.column("node_id", sa.Integer()))
    node = sa.table("node", sa.column("id", sa.Integer()), sa.column("cluster_id", sa.Integer()))
    cluster = sa.table("cluster", sa.column("id", sa.Integer()), sa.column("hub_id", sa.Integer()))
    window = sa.table(
        "accounted_window",
        sa.column("hub_id", sa.Integer()),
        sa.column("start", domain.models.base.UtcDateTime()),
        sa.column("end", domain.models.base.UtcDateTime()),
        sa.column("kind", sa.String()),
        sa.column("gpu_count", sa.Integer()),
        sa.column("gpu_seconds_unaccounted", sa.Float()),
        sa.column("replica", sa.String()),
        sa.column("recorded_at", domain.models.base.UtcDateTime()),
    )
    hub = sa.table("hub", sa.column("id", sa.Integer()), sa.column("accounted_until", domain.models.base.UtcDateTime()))
    query = (
        sa.select(
            cluster.c.hub_id,
            rollup.c.bucket_start,
            sa.func.count(sa.distinct(rollup.c.gpu_id)),
            sa.func.sum(rollup.c.seconds),
        )
        .select_from(rollup)
        .join(gpu, gpu.c.id == rollup.c.gpu_id)
        .join(node, node.c.id == gpu.c.node_id)
        .join(cluster, cluster.c.id == node.c.cluster_id)
        .group_by(cluster.c.hub_id, rollup.c.bucket_start)
        .order_by(cluster.c.hub_id, rollup.c.bucket_start)
    )
    now = datetime.now(UTC)
    width = timedelta(seconds=bucket)
    rows: list[dict[str, object]] = []
    until: dict[int, datetime] = {}
    for hub_id, start, gpus, seconds in bind.execute(query):
        capacity = gpus * float(bucket)
        rows.append(
            {
                "hub_id": hub_id,
                "start": start,
                "end": start + width,
                "kind": "migrated",
                "gpu_count": gpus,
                "gpu_seconds_unaccounted": max(0.0, capacity - (seconds or 0.0)),
                "replica": "migration 0009_ledger",
                "recorded_at": now,
            }
        )
        until[hub_id] = start + width
        if len(rows) >= 5000:
            bind.execute(sa.insert(window), rows)
            rows = []
    if rows:
        bind.execute(sa.insert(window), rows)
    for hub_id, end in until.items():
        bind.execute(sa.update(hub).where(hub.c.id == hub_id).values(accounted_until=end))


def downgrade() -> None:
    with op.batch_alter_table("usage_rollup", schema=None) as batch_op:
        for name in _OLD:
            kind = sa.Integer() if name == "samples" else sa.Float()
            batch_op.add_column(sa.Column(name, kind, nullable=False, server_default="0"))
    op.execute(
        "UPDATE usage_rollup SET samples = 1, "
        "gpu_seconds_allocated = CASE WHEN project_id <> 0 THEN seconds ELSE 0 END, "
        "gpu_seconds_idle = CASE WHEN project_id <> 0 THEN seconds_idle ELSE 0 END, "
        "util_avg = CASE WHEN seconds_util_known > 0 THEN util_seconds / seconds_util_known ELSE 0 END, "
        "memory_avg_mib = CASE WHEN seconds > 0 THEN memory_mib_seconds / seconds ELSE 0 END, "
        "power_avg_watts = CASE WHEN power_seconds_known > 0 THEN energy_wh * 3600 / power_seconds_known ELSE 0 END, "
        "util_max = COALESCE(util_max, 0), memory_max_mib = COALESCE(memory_max_mib, 0), "
        "temperature_max_c = COALESCE(temperature_max_c, 0)"
    )
    with op.batch_alter_table("usage_rollup", schema=None) as batch_op:
        for name in _OLD:
            kind = sa.Integer() if name == "samples" else sa.Float()
            batch_op.alter_column(name, existing_type=kind, nullable=False, server_default=None)
        for name in ("util_max", "memory_max_mib"):
            batch_op.alter_column(name, existing_type=sa.Float(), nullable=False)
        batch_op.alter_column("temperature_max_c", existing_type=sa.Float(), nullable=False, server_default="0")
        for name in _NEW_SUMS:
            batch_op.drop_column(name)

    with op.batch_alter_table("accounted_window", schema=None) as batch_op:
        batch_op.drop_index("ix_accounted_window_end")
    op.drop_table("accounted_window")
    with op.batch_alter_table("hub", schema=None) as batch_op:
        batch_op.drop_column("accounted_until")
