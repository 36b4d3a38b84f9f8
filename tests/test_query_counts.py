"""No N+1: every list view issues the same small number of statements whatever the page size."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from tests.test_access_end_to_end import demo, identity, login  # noqa: F401  (demo is a fixture)

LISTS = [
    "/api/v1/clusters",
    "/api/v1/nodes",
    "/api/v1/gpus",
    "/api/v1/slices",
    "/api/v1/projects",
    "/clusters",
    "/nodes",
    "/gpus",
    "/slices",
    "/projects",
]


@contextmanager
def counting(engine) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.mark.parametrize("path", LISTS)
def test_list_views_use_a_constant_number_of_queries(demo, path: str) -> None:  # noqa: F811
    client, _, engine = demo
    login(client, "admin", identity("admin").password)
    counts = []
    for limit in (2, 40):
        with counting(engine) as statements:
            assert client.get(f"{path}?limit={limit}").status_code == 200
        counts.append(len(statements))
    assert counts[0] == counts[1], f"{path}: {counts} statements for 2 and 40 rows"
    assert counts[1] <= 8, f"{path}: {counts[1]} statements"
