"""Alembic environment: runs against the engine handed over by domain.database.upgrade.

On PostgreSQL the migration holds a transaction-level advisory lock, so replicas starting together
(site, worker, their init containers) migrate one after the other: the first upgrades, the others
wait, then find the schema at head and do nothing.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlmodel import SQLModel

import domain.models  # noqa: F401  (registers every table on the metadata)
from domain.ledger.partitions import include_name
from domain.revision_ids import rename_old_revisions

# Any fixed 64-bit number, the same in every process: "ai-telemetry migrations".
MIGRATION_LOCK_ID = 0x41495F4D4947

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    rename_old_revisions(connection)  # a database migrated before the ids became file stems
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=include_name,
    )
    context.run_migrations()
