"""What every command shares: settings from flags over the environment, a migrated engine, the common flags."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from domain.database import create_db_engine, upgrade
from domain.settings import Settings, load_settings


def settings_from(args: argparse.Namespace, *, demo: bool = False, **sections: dict[str, Any]) -> Settings:
    overrides: dict[str, dict[str, Any]] = {"database": {"url": getattr(args, "database_url", None)}}
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_settings(overrides, config_path=getattr(args, "config", None), demo=demo)


def migrated_engine(settings: Settings) -> Engine:
    engine = create_db_engine(settings.database)
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
