"""collector: which replica polled each source last, and when

Revision ID: 0006_collector
Revises: 0005_sessions
Create Date: 2026-11-24 09:12:40.118532
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import domain.models.base

revision: str = "0006_collector"
down_revision: str | None = "0005_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("hub", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_poll_at", domain.models.base.UtcDateTime(), nullable=True))
        batch_op.add_column(sa.Column("last_polled_by", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hub", schema=None) as batch_op:
        batch_op.drop_column("last_polled_by")
        batch_op.drop_column("last_poll_at")
