"""Commands that run the product: demo, site, worker, simulate, db upgrade."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import simulator
from ai_telemetry import demo as embedded
from ai_telemetry.commands.common import add_common, migrated_engine, port_number, settings_from
from ai_telemetry.serving import Listener, serve
from domain.access.keycloak_clients import check_clients
from domain.settings import SettingsError
from worker.memory import limit_malloc_arenas
from worker.receiver import create_receiver_app
from worker.scheduler import create_scheduler
from worker.sources.registry import build_sources

if TYPE_CHECKING:
    from litestar import Litestar
    from sqlalchemy import Engine

    from domain.settings import Settings


def _site_app(settings: Settings, engine: Engine) -> Litestar:
    """The site's application, imported only by the commands that serve it: the worker process
    need not hold the site's routes and templates (~3 MB)."""
    from web.app import create_app  # noqa: PLC0415

    return create_app(settings, engine)


def cmd_demo(args: argparse.Namespace) -> int:
    secret = embedded.demo_secret()
    settings = settings_from(
        args,
        demo=True,
        site={"host": args.host, "port": args.port, "session_secret": secret},
        receiver={
            "host": args.host,
            "port": args.receiver_port,
            "webhook_token": embedded.demo_secret(embedded.WEBHOOK_TOKEN_FILE),
        },
        scheduler={"poll_interval_seconds": args.poll_interval},
    )
    engine = migrated_engine(settings, apart=True)
    sources = build_sources(settings)
    scheduler = create_scheduler(settings, engine, sources)
    print(f"Replaying the last {args.history_hours:g} h of the simulated fleet…", flush=True)
    embedded.backfill(
        settings, engine, sources, args.history_hours, signals=scheduler.signals, metrics=scheduler.metrics
    )
    embedded.seed(engine)
    scheduler.start()
    print(embedded.banner(settings), flush=True)
    try:
        serve(
            Listener(
                _site_app(settings, engine),
                settings.site.host,
                settings.site.port,
                forwarded_allow_ips=settings.site.trusted_proxies,
            ),
            Listener(
                create_receiver_app(settings, engine, scheduler),
                settings.receiver.host,
                settings.receiver.port,
                retry_cut_bodies=True,
            ),
            log_level="warning",
            limits=settings.http,
        )
    finally:
        scheduler.shutdown(wait=True)
        engine.dispose()
    print("AI Telemetry demo stopped.")
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    settings = settings_from(args, site={"host": args.host, "port": args.port})
    if settings.auth.mode == "keycloak":
        check_clients(settings.keycloak)  # a wrong secret stops start-up here, not at someone's login
    engine = migrated_engine(settings, apart=True)
    site = Listener(
        _site_app(settings, engine),
        settings.site.host,
        settings.site.port,
        forwarded_allow_ips=settings.site.trusted_proxies,
    )
    serve(site, limits=settings.http)
    engine.dispose()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = settings_from(args, receiver={"host": args.host, "port": args.port})
    if not settings.sources:
        raise SettingsError(
            "no sources configured: set AI_TELEMETRY_CONFIG (or --config) to a TOML file with [[sources]]"
        )
    limit_malloc_arenas()  # large answers are decoded on pool threads; see worker/memory.py
    engine = migrated_engine(settings, apart=True)
    scheduler = create_scheduler(settings, engine, build_sources(settings))
    scheduler.start()
    try:
        app = create_receiver_app(settings, engine, scheduler)
        serve(
            Listener(app, settings.receiver.host, settings.receiver.port, retry_cut_bodies=True), limits=settings.http
        )
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
    settings = settings_from(args)
    migrated_engine(settings).dispose()
    print(f"Database at {settings.database.display_url} is up to date.")
    return 0


def add_commands(commands: Any) -> None:
    demo = commands.add_parser("demo", help="worker + site on SQLite with a simulated fleet and demo logins")
    add_common(demo)
    demo.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    demo.add_argument("--port", type=port_number, default=8000, help="site port (default 8000)")
    demo.add_argument("--receiver-port", type=port_number, default=8001, help="worker receiver port (default 8001)")
    demo.add_argument("--poll-interval", type=float, default=15, help="seconds between polls (default 15)")
    demo.add_argument("--history-hours", type=float, default=6, help="hours of history to replay at start")
    demo.set_defaults(handler=cmd_demo)

    site = commands.add_parser("site", help="the web site and API (needs AI_TELEMETRY_SITE_SESSION_SECRET)")
    add_common(site)
    site.add_argument("--host", help="listen address (default $AI_TELEMETRY_SITE_HOST or 127.0.0.1)")
    site.add_argument("--port", type=port_number, help="listen port (default $AI_TELEMETRY_SITE_PORT or 8000)")
    site.set_defaults(handler=cmd_site)

    worker = commands.add_parser("worker", help="poll the configured sources and serve the receiver")
    add_common(worker)
    worker.add_argument("--host", help="receiver address (default $AI_TELEMETRY_RECEIVER_HOST or 127.0.0.1)")
    worker.add_argument("--port", type=port_number, help="receiver port (default $AI_TELEMETRY_RECEIVER_PORT or 8001)")
    worker.set_defaults(handler=cmd_worker)

    simulate = commands.add_parser("simulate", help="serve a synthetic dcgm-exporter for Prometheus to scrape")
    simulate.add_argument("--fleet", type=Path, help="fleet TOML file (default: the built-in fleet)")
    simulate.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    simulate.add_argument("--port", type=port_number, default=9400, help="listen port (default 9400, dcgm-exporter's)")
    simulate.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    simulate.add_argument("--cluster", help="serve one cluster's series only (default: all, with a cluster label)")
    simulate.set_defaults(handler=cmd_simulate)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(title="db commands", required=True, metavar="COMMAND")
    upgrade = db_commands.add_parser("upgrade", help="migrate the schema to the latest version")
    add_common(upgrade)
    upgrade.set_defaults(handler=cmd_db_upgrade)
