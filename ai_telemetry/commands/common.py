"""What every command shares: settings from flags over the environment, a migrated engine, the common flags."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from domain.database import create_db_engine, upgrade, upgrade_apart
from domain.settings import Settings, load_settings


def settings_from(args: argparse.Namespace, *, demo: bool = False, **sections: dict[str, Any]) -> Settings:
    overrides: dict[str, dict[str, Any]] = {"database": {"url": getattr(args, "database_url", None)}}
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_settings(overrides, config_path=getattr(args, "config", None), demo=demo)


def migrated_engine(settings: Settings, *, apart: bool = False) -> Engine:
    """An engine on the migrated schema; ``apart``: migrated in a child process (servers, see
    :func:`~domain.database.upgrade_apart`), for an in-memory SQLite database still in this one."""
    engine = create_db_engine(settings.database)
    if apart and not settings.database.is_in_memory:
        upgrade_apart(settings.database)
    else:
        upgrade(engine)
    return engine


def port_number(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be between 1 and 65535")
    return value


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file with [[sources]] (default: $AI_TELEMETRY_CONFIG)")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: $AI_TELEMETRY_DATABASE_URL or var/)")
