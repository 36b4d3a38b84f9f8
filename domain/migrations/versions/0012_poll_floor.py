"""poll floor: room in workload_session's pages for each poll's in-place sample updates (issue 16)

Revision ID: 0012_poll_floor
Revises: 0011_report_cards
Create Date: 2026-12-06 08:00:00.000000

Every poll rewrites the figures of each open session (about 9,000 rows at 10,000 GPUs). None of
those columns is indexed, so PostgreSQL can update a row within its page (a HOT update, no new
entry in any of the table's six indexes) when the page has room; at the default fill factor of 100
it never has. A fill factor of 70 leaves that room in the pages written from now on. SQLite has no
such setting: nothing to do there.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012_poll_floor"
down_revision: str | None = "0011_report_cards"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SESSION_FILLFACTOR = 70


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE workload_session SET (fillfactor = {SESSION_FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE workload_session RESET (fillfactor)")
