"""Engine, sessions and schema migrations for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import StaticPool
from sqlmodel import Session

from domain.revision_ids import current_id
from domain.settings import DatabaseSettings

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def create_db_engine(settings: DatabaseSettings) -> Engine:
    """One engine per process. SQLite gets WAL and foreign keys; PostgreSQL a bounded pool."""
    url = settings.url
    if settings.is_sqlite:
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 30}}
        if settings.is_in_memory:
            kwargs["poolclass"] = StaticPool
        else:
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            kwargs["pool_use_lifo"] = True  # see below
        engine = create_engine(url, echo=settings.echo, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        echo=settings.echo,
        # JSON columns (a workload's profiling sums, ~9,000 read at every poll of a 10,000-GPU fleet)
        # decoded by msgspec: a third of the stdlib's time; PostgreSQL stores only valid JSON
        json_deserializer=msgspec.json.decode,
        pool_size=settings.pool_size,
        max_overflow=settings.pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        # the most recently used connection first: a 10,000-GPU poll leaves each connection it used
        # with megabytes of driver buffers and page cache, so rotating through the pool kept several
        # such connections resident (~7 MB of a worker's peak)
        pool_use_lifo=True,
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A unit of work: committed on success, rolled back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config  # noqa: PLC0415  (see upgrade_apart)

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (an id renamed in issue 15 is accepted too); safe to run at every start."""
    from alembic import command  # noqa: PLC0415  (see upgrade_apart)

    command.upgrade(alembic_config(engine), current_id(revision))


def upgrade_apart(settings: DatabaseSettings) -> None:
    """:func:`upgrade` to the head in a short-lived child process, for the servers (worker, site, demo):
    they migrate once at start, and Alembic with its migration scripts would otherwise stay in their
    memory for good (~14 MB of a worker's resident set). Not for an in-memory SQLite database: a
    child cannot see it."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as child:
        child.submit(_upgrade_in_child, settings).result()


def _upgrade_in_child(settings: DatabaseSettings) -> None:
    engine = create_db_engine(settings)
    try:
        upgrade(engine)
    except OperationalError as exc:  # the driver's error may not cross processes; its reason does
        reason = str(exc.orig or exc).strip()
        raise OperationalError("upgrade", None, Exception(reason)) from None
    finally:
        engine.dispose()


def ping(engine: Engine) -> bool:
    """True when the database answers; used by /readyz."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:  # any driver error means "not ready", never a crash
        return False
    return True
