"""Many rows in one INSERT or UPDATE on PostgreSQL: the rows travel as one JSON document that the server
expands with ``json_populate_recordset``.

A webhook carries dozens of alerts; as bound parameters they would make a statement with hundreds of
placeholders that the driver must rewrite on every call. As one JSON parameter
(:mod:`domain.json_parameter`) the statement is short and constant, the encoding is msgspec's, and
the server does the rest. SQLite keeps the plain SQLAlchemy path (see the callers). Datetimes must
be given naive UTC, as ``UtcDateTime`` stores them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Row, Table, text
from sqlmodel import Session

from domain.json_parameter import in_documents, json_parameter


def is_postgresql(db: Session) -> bool:
    return db.get_bind().dialect.name == "postgresql"


def insert_rows(
    db: Session,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    columns: Sequence[str],
    conflict: str = "",
    returning: Sequence[str] = (),
) -> list[Row[*tuple[Any, ...]]]:
    """``INSERT INTO table (columns) SELECT columns FROM json_populate_recordset(...) [conflict] [RETURNING]``.

    ``columns`` and ``returning`` name columns of ``table`` (never input); ``conflict`` is a fixed clause.
    """
    known = set(table.c.keys())
    unknown = [c for c in (*columns, *returning) if c not in known]
    if unknown:
        raise ValueError(f"not columns of {table.name}: {', '.join(unknown)}")
    names = ", ".join(columns)
    sql = (
        f"INSERT INTO {table.name} ({names}) SELECT {names} "  # noqa: S608  (names checked against the table)
        f"FROM json_populate_recordset(NULL::{table.name}, CAST(:rows AS json)) {conflict}"
    )
    if returning:
        sql += " RETURNING " + ", ".join(returning)
    returned: list[Row[*tuple[Any, ...]]] = []
    for document in in_documents(rows):
        result = db.execute(text(sql), {"rows": json_parameter(list(document))})
        if returning:
            returned.extend(result)
    return returned


def update_rows(db: Session, table: Table, rows: Sequence[Mapping[str, Any]], *, columns: Sequence[str]) -> int:
    """``UPDATE table SET column = v.column, ... FROM json_populate_recordset(...) v WHERE table.id = v.id``.

    Every row gives ``id`` and each of ``columns`` (names checked against the table, never input).
    Returns the number of rows updated.
    """
    known = set(table.c.keys())
    unknown = [c for c in (*columns, "id") if c not in known]
    if unknown:
        raise ValueError(f"not columns of {table.name}: {', '.join(unknown)}")
    assignments = ", ".join(f'"{name}" = v."{name}"' for name in columns)
    sql = (
        f'UPDATE "{table.name}" AS t SET {assignments} '  # noqa: S608  (names checked against the table)
        f'FROM json_populate_recordset(NULL::"{table.name}", CAST(:rows AS json)) AS v WHERE t.id = v.id'
    )
    connection = db.connection()
    return sum(
        int(connection.execute(text(sql), {"rows": json_parameter(list(document))}).rowcount or 0)
        for document in in_documents(rows)
    )
