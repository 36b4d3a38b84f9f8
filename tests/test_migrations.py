"""The Alembic migrations build exactly the models' schema, on SQLite and on PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import OperationalError
from sqlmodel import SQLModel

import domain.models  # noqa: F401  (registers every table on the metadata)
from domain.database import MIGRATIONS_DIR, alembic_config, upgrade, upgrade_apart
from domain.ledger.partitions import include_name
from domain.revision_ids import RENAMED_REVISIONS, rename_old_revisions
from domain.settings import DatabaseSettings
from tests import services

# One table per model of the DESIGN's domain (plus the local-mode users and tokens).
DOMAIN_TABLES = {
    "hub",
    "cluster",
    "node",
    "gpu",
    "gpu_slice",
    "research_project",
    "allocation",
    "usage_rollup",
    "workload",
    "alert_receipt",
    "finding",
    "access_grant",
    "local_user",
    "api_token",
}


def schema_differences(engine: Engine) -> list[Any]:
    """What ``alembic check`` would report: the models compared with the migrated database."""
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "target_metadata": SQLModel.metadata, "include_name": include_name}
        )
        return compare_metadata(context, SQLModel.metadata)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(engine: Engine) -> str:
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    assert head is not None
    return head


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_one_head(empty_sqlite_engine: Engine) -> None:
    """Parallel branches must be merged before they land: upgrade "head" needs a single head."""
    heads = ScriptDirectory.from_config(alembic_config(empty_sqlite_engine)).get_heads()
    assert len(heads) == 1, f"several Alembic heads, add a merge revision: {heads}"


def test_revision_ids_are_the_file_stems_in_order(empty_sqlite_engine: Engine) -> None:
    """Read in file order, the migrations are the chain: 0001, 0002, … each revising the one before."""
    files = sorted((MIGRATIONS_DIR / "versions").glob("[0-9]*.py"))
    script = ScriptDirectory.from_config(alembic_config(empty_sqlite_engine))
    by_file = {Path(r.path).stem: r for r in script.walk_revisions("base", "heads")}
    assert sorted(by_file) == [f.stem for f in files]
    previous = None
    for number, file in enumerate(files, start=1):
        prefix, _, name = file.stem.partition("_")
        assert (prefix, bool(name)) == (f"{number:04d}", True), f"{file.name}: expected prefix {number:04d}_<name>"
        revision = by_file[file.stem]
        assert revision.revision == file.stem, f"{file.name}: revision id must be its file stem"
        assert revision.down_revision == previous, f"{file.name}: down_revision must be the previous file's stem"
        previous = file.stem


def test_renamed_ids_are_old_ids_only() -> None:
    """An old id that is also a new one would make the rename ambiguous."""
    stems = {f.stem for f in (MIGRATIONS_DIR / "versions").glob("[0-9]*.py")}
    assert set(RENAMED_REVISIONS.values()) <= stems
    assert set(RENAMED_REVISIONS) & stems == set()


@pytest.mark.parametrize("old_id", sorted(RENAMED_REVISIONS))
def test_a_database_stamped_with_an_old_revision_id_upgrades(empty_db_engine: Engine, old_id: str) -> None:
    """A database migrated before the ids became file stems (a demo SQLite, say) still upgrades to head."""
    upgrade(empty_db_engine, RENAMED_REVISIONS[old_id])
    tables = table_names(empty_db_engine)
    with empty_db_engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = :old"), {"old": old_id})
    assert current_revision(empty_db_engine) == old_id

    upgrade(empty_db_engine)

    assert current_revision(empty_db_engine) == head_revision(empty_db_engine)
    renamed = {"workload_session": "workload"}  # by 0014_workload_names
    assert table_names(empty_db_engine) >= {renamed.get(table, table) for table in tables}
    assert schema_differences(empty_db_engine) == []
    with empty_db_engine.begin() as connection:
        assert rename_old_revisions(connection) == 0  # nothing left to rename: running it again changes nothing


def test_an_old_revision_id_is_accepted_as_an_upgrade_target(empty_sqlite_engine: Engine) -> None:
    upgrade(empty_sqlite_engine, "0003_collector")
    assert current_revision(empty_sqlite_engine) == "0006_collector"


def test_upgrade_from_empty_to_head(empty_db_engine: Engine) -> None:
    assert table_names(empty_db_engine) == set()
    upgrade(empty_db_engine)
    assert current_revision(empty_db_engine) == head_revision(empty_db_engine)
    assert table_names(empty_db_engine) >= DOMAIN_TABLES


def test_upgrade_is_idempotent(db_engine: Engine) -> None:
    before = table_names(db_engine)
    upgrade(db_engine)
    upgrade(db_engine)
    assert table_names(db_engine) == before
    assert current_revision(db_engine) == head_revision(db_engine)
    assert schema_differences(db_engine) == []


def test_migrated_schema_matches_models(db_engine: Engine) -> None:
    """Our ``alembic check``: a model change without its migration fails here, on both dialects."""
    differences = schema_differences(db_engine)
    assert differences == [], "models and migrations disagree; add a revision:\n" + "\n".join(map(str, differences))


def test_every_domain_table_exists(db_engine: Engine) -> None:
    tables = table_names(db_engine)
    assert DOMAIN_TABLES - tables == set()
    assert set(SQLModel.metadata.tables) - tables == set()
    assert "alembic_version" in tables


def test_downgrade_to_base_and_up_again(db_engine: Engine) -> None:
    config = alembic_config(db_engine)
    command.downgrade(config, "base")
    assert table_names(db_engine) - {"alembic_version"} == set()
    assert current_revision(db_engine) is None
    upgrade(db_engine)
    assert current_revision(db_engine) == head_revision(db_engine)
    assert schema_differences(db_engine) == []


def test_each_revision_steps_down_and_up(empty_db_engine: Engine) -> None:
    """Every revision's downgrade undoes its upgrade, so one bad deploy can be rolled back."""
    config = alembic_config(empty_db_engine)
    revisions = [r.revision for r in ScriptDirectory.from_config(config).walk_revisions("base", "heads")]
    for revision in reversed(revisions):  # walk_revisions goes from the head down
        upgrade(empty_db_engine, revision)
        tables = table_names(empty_db_engine)
        command.downgrade(config, "-1")
        upgrade(empty_db_engine, revision)
        assert table_names(empty_db_engine) == tables, f"revision {revision} does not step down cleanly"
    assert schema_differences(empty_db_engine) == []


def test_missing_postgresql_fails_in_ci_and_skips_elsewhere(tmp_path: Path) -> None:
    """Without the binaries, CI fails loudly rather than quietly testing SQLite only."""
    assert services.find_postgres_bin(pattern=str(tmp_path / "*" / "bin"), path=str(tmp_path)) is None

    with pytest.raises(pytest.fail.Exception, match="PostgreSQL is required in CI"):
        services.service_unavailable("initdb not found", environ={"CI": "true"})
    with pytest.raises(pytest.skip.Exception, match="initdb not found"):
        services.service_unavailable("initdb not found", environ={})

    def no_binaries() -> Path | None:
        return None

    with (
        pytest.raises(pytest.fail.Exception, match="PostgreSQL is required in CI"),
        services.postgres_or_skip(environ={"CI": "true"}, finder=no_binaries),
    ):
        raise AssertionError("a server was yielded without binaries")
    with (
        pytest.raises(pytest.skip.Exception, match="PostgreSQL NOT TESTED"),
        services.postgres_or_skip(environ={"CI": "false"}, finder=no_binaries),
    ):
        raise AssertionError("a server was yielded without binaries")


CONCURRENT_UPGRADE = """
import sys
from domain.database import create_db_engine, upgrade
from domain.settings import DatabaseSettings
engine = create_db_engine(DatabaseSettings(url=sys.argv[1]))
upgrade(engine)
engine.dispose()
"""


@pytest.mark.postgres
def test_replicas_starting_together_migrate_once(empty_pg_engine: Engine) -> None:
    """Site, worker and their init containers upgrade at start, at the same moment: none may fail."""
    url = empty_pg_engine.url.render_as_string(hide_password=False)
    replicas = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT_UPGRADE, url], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    failures = []
    for process in replicas:
        _, stderr = process.communicate(timeout=120)
        if process.returncode != 0:
            failures.append(stderr[-2000:])
    assert failures == []
    assert current_revision(empty_pg_engine) == head_revision(empty_pg_engine)
    assert schema_differences(empty_pg_engine) == []


SERVER_START = """
import sys
from ai_telemetry.commands.common import migrated_engine
from domain.settings import load_settings
engine = migrated_engine(load_settings({"database": {"url": sys.argv[1]}}), apart=True)
engine.dispose()
print("alembic loaded" if "alembic" in sys.modules else "alembic not loaded")
"""


def test_a_server_migrates_in_a_child_and_never_loads_alembic(empty_db_engine: Engine) -> None:
    """The worker, the site and the demo migrate at start in a child process: Alembic and its scripts
    would otherwise stay in their memory for good."""
    url = empty_db_engine.url.render_as_string(hide_password=False)
    started = subprocess.run(
        [sys.executable, "-c", SERVER_START, url], capture_output=True, text=True, timeout=120, check=False
    )
    assert started.returncode == 0, started.stderr[-2000:]
    assert started.stdout.strip() == "alembic not loaded"
    assert current_revision(empty_db_engine) == head_revision(empty_db_engine)


def test_a_child_migration_that_cannot_reach_the_database_says_why() -> None:
    """The error crosses the process boundary as the driver's reason, which the CLI prints."""
    with pytest.raises(OperationalError, match=r"127\.0\.0\.1.*(refused|failed)"):
        upgrade_apart(DatabaseSettings(url="postgresql+psycopg://nobody@127.0.0.1:1/none"))
