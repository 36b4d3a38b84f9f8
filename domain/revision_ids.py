"""Migration revision ids renamed so that every id is its file's stem (issue 15), and their upgrade.

Databases migrated before the rename record one of the old ids in ``alembic_version``; before each
upgrade the old id is replaced by its new one, so Alembic finds it among the revisions. Nothing else
changed: the renamed revisions build the same schema. Keep this table for one release (until every
deployed or demo database has started once), then drop it.

==========================  ================================
old revision id             revision id (= file stem)
==========================  ================================
``0001``                    ``0001_initial_schema``
``0002``                    ``0002_rollup_temperature``
``0002_pipeline``           ``0003_pipeline``
``0006``                    ``0004_oidc_sessions``
``0004_sessions``           ``0005_sessions``
``0003_collector``          ``0006_collector``
``0007_receipt_signals``    ``0007_receipt_signals_pending``
==========================  ================================

No old id is a new id, so replacing them is unambiguous and running it twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from sqlalchemy import Connection, inspect, text

RENAMED_REVISIONS: Mapping[str, str] = MappingProxyType(
    {
        "0001": "0001_initial_schema",
        "0002": "0002_rollup_temperature",
        "0002_pipeline": "0003_pipeline",
        "0006": "0004_oidc_sessions",
        "0004_sessions": "0005_sessions",
        "0003_collector": "0006_collector",
        "0007_receipt_signals": "0007_receipt_signals_pending",
    }
)


def current_id(revision: str) -> str:
    """The revision id of ``revision``, which may be an old id (an upgrade target given by an old script)."""
    return RENAMED_REVISIONS.get(revision, revision)


def rename_old_revisions(connection: Connection) -> int:
    """Replace an old id recorded in ``alembic_version`` by its new one; the rows changed (0 or 1)."""
    if not inspect(connection).has_table("alembic_version"):
        return 0
    changed = 0
    for old, new in RENAMED_REVISIONS.items():
        result = connection.execute(
            text("UPDATE alembic_version SET version_num = :new WHERE version_num = :old"), {"new": new, "old": old}
        )
        changed += result.rowcount
    return changed
