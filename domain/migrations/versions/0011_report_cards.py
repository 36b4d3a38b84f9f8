"""report cards: time-weighted sums and peaks per workload session (issue 17)

Revision ID: 0011_report_cards
Revises: 0010_notifications
Create Date: 2026-12-06 08:00:00.000000

Sessions recorded before this revision start with zero sums and no profiling figures: their cards
say the figures were not collected (the old per-poll averages stay in ``util_avg``/``samples``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0011_report_cards"
down_revision: str | None = "0010_notifications"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SUMS = ("seconds", "gpu_seconds", "idle_gpu_seconds", "util_seconds", "util_known_seconds")


def upgrade() -> None:
    with op.batch_alter_table("workload_session", schema=None) as batch_op:
        for name in _SUMS:
            batch_op.add_column(sa.Column(name, sa.Float(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("memory_total_mib", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("profiling", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("profiling_missing", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workload_session", schema=None) as batch_op:
        for name in ("profiling_missing", "profiling", "memory_total_mib", *reversed(_SUMS)):
            batch_op.drop_column(name)
