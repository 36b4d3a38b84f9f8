"""``ai-telemetry``: demo, site, worker, simulate, db upgrade, token create.

Flags override environment variables (``AI_TELEMETRY_*``), which override defaults; the sources
come from the TOML file named by ``--config`` or ``AI_TELEMETRY_CONFIG``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

import simulator
from ai_telemetry import demo as embedded
from ai_telemetry.serving import Listener, serve
from domain.access.accounts import AccountError, create_token
from domain.database import create_db_engine, session_scope, upgrade
from domain.settings import Settings, SettingsError, load_settings
from web.app import create_app
from worker.memory import limit_malloc_arenas
from worker.receiver import create_receiver_app
from worker.scheduler import create_scheduler
from worker.sources.registry import build_sources

log = logging.getLogger("ai_telemetry")
Handler = Callable[[argparse.Namespace], int]


def _settings(args: argparse.Namespace, *, demo: bool = False, **sections: dict[str, Any]) -> Settings:
    overrides: dict[str, dict[str, Any]] = {"database": {"url": getattr(args, "database_url", None)}}
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_settings(overrides, config_path=getattr(args, "config", None), demo=demo)


def _engine(settings: Settings) -> Engine:

    engine = create_db_engine(settings.database)
    upgrade(engine)
    return engine


# --- commands ---------------------------------------------------------------------------------------

def cmd_demo(args: argparse.Namespace) -> int:
    secret = embedded.demo_session_secret()
    settings = _settings(
        args, demo=True,
        site={"host": args.host, "port": args.port, "session_secret": secret},
        receiver={"host": args.host, "port": args.receiver_port},
        scheduler={"poll_interval_seconds": args.poll_interval},
    )
    engine = _engine(settings)
    sources = build_sources(settings)
    print(f"Replaying the last {args.history_hours:g} h of the simulated fleet…", flush=True)
    embedded.backfill(settings, engine, sources, args.history_hours)
    embedded.seed(engine)
    scheduler = create_scheduler(settings, engine, sources)
    scheduler.start()
    print(embedded.banner(settings), flush=True)
    try:
        serve(
            Listener(create_app(settings, engine), settings.site.host, settings.site.port),
            Listener(create_receiver_app(settings, engine, scheduler), settings.receiver.host, settings.receiver.port),
            log_level="warning",
        )
    finally:
        scheduler.shutdown(wait=True)
        engine.dispose()
    print("AI Telemetry demo stopped.")
    return 0


def cmd_site(args: argparse.Namespace) -> int:

    settings = _settings(args, site={"host": args.host, "port": args.port})
    engine = _engine(settings)
    serve(Listener(create_app(settings, engine), settings.site.host, settings.site.port))
    engine.dispose()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:

    settings = _settings(args, receiver={"host": args.host, "port": args.port})
    if not settings.sources:
        raise SettingsError("no sources configured: set AI_TELEMETRY_CONFIG (or --config) to a TOML file "
                            "with [[sources]]")
    limit_malloc_arenas()  # large answers are decoded on pool threads; see worker/memory.py
    engine = _engine(settings)
    scheduler = create_scheduler(settings, engine, build_sources(settings))
    scheduler.start()
    try:
        app = create_receiver_app(settings, engine, scheduler)
        serve(Listener(app, settings.receiver.host, settings.receiver.port))
    finally:
        scheduler.shutdown(wait=True)
        engine.dispose()
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:

    try:
        fleet = simulator.load_fleet(args.fleet)
    except simulator.FleetError as exc:
        raise SettingsError(f"--fleet: {exc}") from None
    if args.cluster and args.cluster not in fleet.cluster_names:
        raise SettingsError(f"--cluster: {args.cluster!r} is not in the fleet ({', '.join(fleet.cluster_names)})")
    print(f"Serving a synthetic dcgm-exporter on http://{args.host}:{args.port}/metrics", flush=True)
    simulator.serve(fleet, host=args.host, port=args.port, seed=args.seed, cluster=args.cluster)
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _engine(settings).dispose()
    print(f"Database at {settings.database.url} is up to date.")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:

    settings = _settings(args)
    engine = _engine(settings)
    expires = timedelta(days=args.expires_days) if args.expires_days else None
    try:
        with session_scope(engine) as session:
            token = create_token(session, args.user, name=args.name, expires_in=expires)
    except AccountError as exc:
        raise SettingsError(f"--user: {exc}") from None
    finally:
        engine.dispose()
    print(token)
    return 0


# --- parser -----------------------------------------------------------------------------------------

def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be between 1 and 65535")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file with [[sources]] (default: $AI_TELEMETRY_CONFIG)")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: $AI_TELEMETRY_DATABASE_URL or var/)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ai-telemetry", description="GPU telemetry for research clouds.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="worker + site on SQLite with a simulated fleet and demo logins")
    _common(demo)
    demo.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    demo.add_argument("--port", type=_port, default=8000, help="site port (default 8000)")
    demo.add_argument("--receiver-port", type=_port, default=8001, help="worker receiver port (default 8001)")
    demo.add_argument("--poll-interval", type=float, default=15, help="seconds between polls (default 15)")
    demo.add_argument("--history-hours", type=float, default=6, help="hours of history to replay at start")
    demo.set_defaults(handler=cmd_demo)

    site = commands.add_parser("site", help="the web site and API (needs AI_TELEMETRY_SITE_SESSION_SECRET)")
    _common(site)
    site.add_argument("--host", help="listen address (default $AI_TELEMETRY_SITE_HOST or 127.0.0.1)")
    site.add_argument("--port", type=_port, help="listen port (default $AI_TELEMETRY_SITE_PORT or 8000)")
    site.set_defaults(handler=cmd_site)

    worker = commands.add_parser("worker", help="poll the configured sources and serve the receiver")
    _common(worker)
    worker.add_argument("--host", help="receiver address (default $AI_TELEMETRY_RECEIVER_HOST or 127.0.0.1)")
    worker.add_argument("--port", type=_port, help="receiver port (default $AI_TELEMETRY_RECEIVER_PORT or 8001)")
    worker.set_defaults(handler=cmd_worker)

    simulate = commands.add_parser("simulate", help="serve a synthetic dcgm-exporter for Prometheus to scrape")
    simulate.add_argument("--fleet", type=Path, help="fleet TOML file (default: the built-in fleet)")
    simulate.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    simulate.add_argument("--port", type=_port, default=9400, help="listen port (default 9400, dcgm-exporter's)")
    simulate.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    simulate.add_argument("--cluster", help="serve one cluster's series only (default: all, with a cluster label)")
    simulate.set_defaults(handler=cmd_simulate)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(title="db commands", required=True, metavar="COMMAND")
    upgrade = db_commands.add_parser("upgrade", help="migrate the schema to the latest version")
    _common(upgrade)
    upgrade.set_defaults(handler=cmd_db_upgrade)

    token = commands.add_parser("token", help="personal access tokens (local authorization mode)")
    token_commands = token.add_subparsers(title="token commands", required=True, metavar="COMMAND")
    create = token_commands.add_parser("create", help="print a new API token for a user")
    _common(create)
    create.add_argument("--user", required=True, help="user name, e.g. alice")
    create.add_argument("--name", default="cli", help="a label for the token")
    create.add_argument("--expires-days", type=int, help="days until it expires (default: never)")
    create.set_defaults(handler=cmd_token_create)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per job run is noise
    handler: Handler = args.handler
    try:
        return handler(args)
    except SettingsError as exc:
        print(f"ai-telemetry: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
