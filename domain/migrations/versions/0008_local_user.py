"""local users: an e-mail address (for notices) and a disabled flag (user management)

Revision ID: 0008_local_user
Revises: 0007_receipt_signals_pending
Create Date: 2026-12-06 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0008_local_user"
down_revision: str | None = "0007_receipt_signals_pending"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("local_user", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=254), nullable=True))
        batch_op.add_column(sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("local_user", schema=None) as batch_op:
        batch_op.drop_column("disabled")
        batch_op.drop_column("email")
