"""receipts: whether the signal pipeline has taken in an alert's signals yet

Revision ID: 0007_receipt_signals_pending
Revises: 0006_collector
Create Date: 2026-11-23 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_receipt_signals_pending"
down_revision: str | None = "0006_collector"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alert_receipt", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signals_pending", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_index(
            "ix_alert_receipt_signals_pending",
            ["received_at"],
            unique=False,
            postgresql_where=sa.text("signals_pending"),
            sqlite_where=sa.text("signals_pending"),
        )


def downgrade() -> None:
    with op.batch_alter_table("alert_receipt", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_alert_receipt_signals_pending",
            postgresql_where=sa.text("signals_pending"),
            sqlite_where=sa.text("signals_pending"),
        )
        batch_op.drop_column("signals_pending")
