"""Shared fixtures: databases on both dialects and settings built without a config file.

- ``postgres_server`` (session): URL of a throwaway PostgreSQL (tests/services.py).
- ``sqlite_engine`` / ``pg_engine``: a fresh database migrated to head, one per test.
- ``db_engine``: the same test on both, ids ``sqlite`` and ``postgresql``.
- ``empty_sqlite_engine`` / ``empty_pg_engine`` / ``empty_db_engine``: the same, not migrated.
- ``make_settings`` (or :func:`settings_for`): a full :class:`~domain.settings.Settings`.

Tests that touch PostgreSQL are marked ``postgres`` automatically (``-m "not postgres"`` skips them).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from domain.database import create_db_engine, upgrade
from domain.settings import PREFIX, DatabaseSettings, Settings, load_settings
from tests import keycloak_service, services

pytest_plugins = ["tests.reliability_report"]

TEST_SESSION_SECRET = "x" * 40
POSTGRES_FIXTURES = frozenset({"postgres_server", "pg_engine", "empty_pg_engine"})
DIALECTS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


def leaked_environment() -> list[str]:
    return sorted(name for name in os.environ if name.upper().startswith(PREFIX))


def pytest_report_header(config: pytest.Config) -> list[str]:
    leaked = leaked_environment()
    if not leaked:
        return []
    return [_leak_warning(leaked)]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    leaked = leaked_environment()
    if leaked:  # repeated at the end, where -q runs show it too
        terminalreporter.write_sep("=", _leak_warning(leaked), yellow=True, bold=True)


def _leak_warning(leaked: list[str]) -> str:
    return f"WARNING: {PREFIX}* variables are set and leak into in-process settings tests: " + ", ".join(leaked)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        uses = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        if uses & POSTGRES_FIXTURES or "postgresql" in (params.get("db_engine"), params.get("empty_db_engine")):
            item.add_marker(pytest.mark.postgres)


def settings_for(
    engine_or_url: Engine | str,
    *,
    demo: bool = False,
    config_path: Path | None = None,
    **overrides: dict[str, Any],
) -> Settings:
    """Full settings for ``engine_or_url``, without reading a config file.

    ``overrides`` are sections, as on the command line: ``settings_for(engine, site={"port": 9000})``.
    The session secret defaults to a 40-character test value.
    """
    if isinstance(engine_or_url, Engine):
        url = engine_or_url.url.render_as_string(hide_password=False)
    else:
        url = engine_or_url
    sections: dict[str, dict[str, Any]] = {name: dict(values) for name, values in overrides.items()}
    sections["database"] = {"url": url, **sections.get("database", {})}
    sections["site"] = {"session_secret": TEST_SESSION_SECRET, **sections.get("site", {})}
    return load_settings(sections, config_path=config_path, demo=demo)


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """:func:`settings_for` as a fixture: ``make_settings(db_engine, auth={"mode": "local"})``."""
    return settings_for


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """``postgresql+psycopg://postgres@127.0.0.1:PORT/postgres`` of a server private to this session."""
    with services.postgres_or_skip() as url:
        yield url


def _sqlite_engine(path: Path) -> Engine:
    return create_db_engine(DatabaseSettings(url=f"sqlite:///{path}"))


@pytest.fixture
def empty_sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = _sqlite_engine(tmp_path / "test.db")
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(empty_sqlite_engine: Engine) -> Engine:
    """A fresh SQLite file database, migrated to head."""
    upgrade(empty_sqlite_engine)
    return empty_sqlite_engine


@pytest.fixture
def empty_pg_engine(postgres_server: str) -> Iterator[Engine]:
    """A fresh, empty PostgreSQL database of its own (dropped afterwards)."""
    with services.fresh_database(postgres_server) as url:
        engine = create_db_engine(DatabaseSettings(url=url, pool_size=5))
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.fixture
def pg_engine(empty_pg_engine: Engine) -> Engine:
    """A fresh PostgreSQL database, migrated to head."""
    upgrade(empty_pg_engine)
    return empty_pg_engine


@pytest.fixture(params=DIALECTS)
def db_engine(request: pytest.FixtureRequest) -> Engine:
    """A fresh migrated database: the test runs once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue("sqlite_engine" if request.param == "sqlite" else "pg_engine")


@pytest.fixture(params=DIALECTS)
def empty_db_engine(request: pytest.FixtureRequest) -> Engine:
    """A fresh empty database (no tables), once per dialect."""
    name = "empty_sqlite_engine" if request.param == "sqlite" else "empty_pg_engine"
    return request.getfixturevalue(name)


def sqlite_template(path: Path, build: Callable[[Engine], None]) -> Path:
    """Build a SQLite database once (migrated, then ``build(engine)``), for tests to copy with :func:`sqlite_copy`."""
    engine = _sqlite_engine(path)
    upgrade(engine)
    build(engine)
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


def sqlite_copy(template: Path, directory: Path) -> Engine:
    """A private copy of a database built by :func:`sqlite_template`: many tests, one costly set-up."""
    target = directory / template.name
    shutil.copyfile(template, target)
    return _sqlite_engine(target)


@pytest.fixture(scope="session")
def keycloak() -> Iterator[keycloak_service.KeycloakServer]:
    """A real Keycloak with the repository's realm imported, once per session (tests/keycloak_service.py)."""
    with keycloak_service.keycloak_or_skip() as server:
        yield server
