"""workload sessions: workload key (one open session per workload), events, alert link, GPU model

Revision ID: 0005_sessions
Revises: 0004_oidc_sessions
Create Date: 2026-11-23 11:13:23.570364
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0005_sessions"
down_revision: str | None = "0004_oidc_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows written before this revision get defaults: no events, not throttling, and their trace id
    # as workload key (unique, so the one-open-session index can be built over them).
    with op.batch_alter_table("workload_session", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gpu_model", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True))
        batch_op.add_column(sa.Column("alert_fingerprint", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.add_column(sa.Column("events", sa.JSON(), nullable=False, server_default=sa.text("'[]'")))
        batch_op.add_column(sa.Column("workload_key", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True))
        batch_op.add_column(sa.Column("last_xid", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("throttled", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute("UPDATE workload_session SET workload_key = trace_id")
    with op.batch_alter_table("workload_session", schema=None) as batch_op:
        batch_op.alter_column("workload_key", existing_type=sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False)
        batch_op.alter_column("events", existing_type=sa.JSON(), server_default=None)
        batch_op.alter_column("throttled", existing_type=sa.Boolean(), server_default=None)
        batch_op.create_index("ix_session_started_at", ["started_at"], unique=False)
        batch_op.create_index("ix_session_key_ended", ["workload_key", "ended_at"], unique=False)
        batch_op.create_index(
            "uq_session_open_workload",
            ["workload_key"],
            unique=True,
            postgresql_where=sa.text("ended_at IS NULL"),
            sqlite_where=sa.text("ended_at IS NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("workload_session", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_session_open_workload",
            postgresql_where=sa.text("ended_at IS NULL"),
            sqlite_where=sa.text("ended_at IS NULL"),
        )
        batch_op.drop_index("ix_session_key_ended")
        batch_op.drop_index("ix_session_started_at")
        batch_op.drop_column("throttled")
        batch_op.drop_column("last_xid")
        batch_op.drop_column("workload_key")
        batch_op.drop_column("events")
        batch_op.drop_column("alert_fingerprint")
        batch_op.drop_column("gpu_model")
