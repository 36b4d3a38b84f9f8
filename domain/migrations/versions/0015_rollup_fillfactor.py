"""rollup fill factor: room in the ledger tiers' pages for each poll's in-place additions (issue 16)

Revision ID: 0015_rollup_fillfactor
Revises: 0014_workload_names
Create Date: 2026-12-06 14:00:00.000000

Every poll adds its window to the current bucket's row of every GPU and slice in the fine, hourly
and daily tiers (about 10,000 rows each at 10,000 GPUs), and to the clusters' and hubs' rows. No
column it changes is indexed, so PostgreSQL can update a row within its page (a HOT update: no new
entry in the table's indexes, the old version pruned in place) when the page has room; at the
default fill factor of 100 it never has. As ``0012_poll_floor`` did for the workloads, a fill factor
of :data:`~domain.ledger.partitions.ROLLUP_FILLFACTOR` leaves that room in the pages written from
now on: set here on the plain tables and on every existing partition (a partitioned table itself
holds no pages), and given to each partition created later (:mod:`domain.ledger.partitions`).
SQLite has no such setting: nothing to do there.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_rollup_fillfactor"
down_revision: str | None = "0014_workload_names"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLLUP_FILLFACTOR = 70
"""As :data:`domain.ledger.partitions.ROLLUP_FILLFACTOR` on the day this was written."""
TABLES = ("usage_rollup", "usage_rollup_hourly", "usage_rollup_daily", "cluster_rollup", "accounted_period")


def _tables_with_pages() -> list[str]:
    """The plain tables of :data:`TABLES` and every partition of the partitioned ones."""
    rows = op.get_bind().execute(
        sa.text(
            "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' AND c.relname = ANY(:tables) "
            "AND pg_table_is_visible(c.oid) UNION "
            "SELECT child.relname FROM pg_inherits i JOIN pg_class parent ON parent.oid = i.inhparent "
            "JOIN pg_class child ON child.oid = i.inhrelid WHERE parent.relname = ANY(:tables) "
            "AND pg_table_is_visible(parent.oid) ORDER BY 1"
        ),
        {"tables": list(TABLES)},
    )
    return [name for (name,) in rows]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _tables_with_pages():
            op.execute(f'ALTER TABLE "{table}" SET (fillfactor = {ROLLUP_FILLFACTOR})')


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _tables_with_pages():
            op.execute(f'ALTER TABLE "{table}" RESET (fillfactor)')
