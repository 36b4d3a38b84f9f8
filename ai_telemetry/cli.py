"""``ai-telemetry``: demo, site, worker, simulate, db upgrade, token create, user, grant, revoke, ledger,
report-card.

Flags override environment variables (``AI_TELEMETRY_*``), which override defaults; the sources
come from the TOML file named by ``--config`` or ``AI_TELEMETRY_CONFIG``.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

import simulator
from ai_telemetry import demo as embedded
from ai_telemetry.serving import Listener, serve
from domain.access import AuthorizationUnavailable, Grantee, GranteeKind, GrantError, ReadScope, users
from domain.access.accounts import AccountError, create_token, project_ref
from domain.access.factory import build_access_admin
from domain.access.keycloak_clients import check_clients
from domain.access.users import UserError
from domain.database import create_db_engine, session_scope, upgrade
from domain.inventory.queries import NotFound
from domain.ledger.statement_formats import statement_csv, statement_dict, statement_table
from domain.ledger.statements import StatementError, month_bounds, monthly_statement
from domain.models import utcnow
from domain.pipeline.records import iter_inputs
from domain.pipeline.replay import ReplayError, format_report, replay
from domain.report_cards.queries import latest_workload_id, run_card_of
from domain.report_cards.text import card_text
from domain.settings import Settings, SettingsError, load_settings
from web.app import create_app
from worker.memory import limit_malloc_arenas
from worker.pipeline.jobs import simulated_inputs
from worker.receiver import create_receiver_app
from worker.scheduler import create_scheduler
from worker.sources.registry import build_sources
from worker.sources.simulated import SimulatedSource

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
    secret = embedded.demo_secret()
    settings = _settings(
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
    engine = _engine(settings)
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
                create_app(settings, engine),
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

    settings = _settings(args, site={"host": args.host, "port": args.port})
    if settings.auth.mode == "keycloak":
        check_clients(settings.keycloak)  # a wrong secret stops start-up here, not at someone's login
    engine = _engine(settings)
    site = Listener(
        create_app(settings, engine),
        settings.site.host,
        settings.site.port,
        forwarded_allow_ips=settings.site.trusted_proxies,
    )
    serve(site, limits=settings.http)
    engine.dispose()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:

    settings = _settings(args, receiver={"host": args.host, "port": args.port})
    if not settings.sources:
        raise SettingsError(
            "no sources configured: set AI_TELEMETRY_CONFIG (or --config) to a TOML file with [[sources]]"
        )
    limit_malloc_arenas()  # large answers are decoded on pool threads; see worker/memory.py
    engine = _engine(settings)
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
    settings = _settings(args)
    _engine(settings).dispose()
    print(f"Database at {settings.database.display_url} is up to date.")
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


_REPLAY_SHORTCUTS = (
    "straggler_k",
    "straggler_quorum",
    "persistence_polls",
    "dedupe_window_seconds",
    "flap_threshold",
    "thermal_threshold_c",
)


def _since(text: str | None) -> datetime | None:
    """``6h``, ``90m``, ``2d`` (ago) or an ISO time; None for the whole record."""
    if not text:
        return None
    units = {"m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return utcnow() - timedelta(seconds=float(text[:-1]) * units[text[-1]])
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SettingsError(f"--since: {text!r} is neither a span like 6h/90m/2d nor an ISO time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cmd_replay(args: argparse.Namespace) -> int:
    settings = _settings(args)
    overrides: dict[str, Any] = {
        name: getattr(args, name) for name in _REPLAY_SHORTCUTS if getattr(args, name) is not None
    }
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise SettingsError(f"--set: {item!r} is not NAME=VALUE")
        overrides[name.strip().lower().removeprefix("ai_telemetry_pipeline_")] = value.strip()
    interval = settings.scheduler.poll_interval_seconds
    engine = None
    try:
        if args.simulate:
            try:
                fleet = simulator.load_fleet(args.fleet)
            except simulator.FleetError as exc:
                raise SettingsError(f"--fleet: {exc}") from None
            source = SimulatedSource("replay", fleet, seed=args.seed)
            interval = args.interval
            start = _since(args.since) or utcnow() - timedelta(hours=args.hours)
            inputs = simulated_inputs(source, start, args.hours, interval)
            report = replay(
                inputs,
                settings.pipeline,
                overrides,
                interval_seconds=interval,
                idle_threshold_percent=settings.scheduler.idle_threshold_percent,
                missing_after_seconds=settings.scheduler.missing_after_seconds,
            )
        else:
            engine = _engine(settings)
            with session_scope(engine) as session:
                report = replay(
                    iter_inputs(session, since=_since(args.since), until=_since(args.until)),
                    settings.pipeline,
                    overrides,
                    interval_seconds=interval,
                    idle_threshold_percent=settings.scheduler.idle_threshold_percent,
                    missing_after_seconds=settings.scheduler.missing_after_seconds,
                )
    except ReplayError as exc:
        raise SettingsError(str(exc)) from None
    finally:
        if engine is not None:
            engine.dispose()
    print(json.dumps(report.as_dict(), indent=2, default=str) if args.json else format_report(report))
    return 0


def _grant_or_revoke(args: argparse.Namespace, *, grant: bool) -> int:
    settings = _settings(args)
    engine = _engine(settings)
    try:
        with session_scope(engine) as session:
            project = project_ref(session, args.project)
        kinds: tuple[GranteeKind, ...] = ("group", "user", "client")
        kind, name = next((k, v) for k in kinds if (v := getattr(args, k)))
        grantee = Grantee(kind, name)
        admin = build_access_admin(settings, engine)
        if grant:
            changed = admin.grant(project, grantee, granted_by="cli")
            done, same = f"{grantee} can now read {project}.", f"{grantee} could already read {project}."
        else:
            changed = admin.revoke(project, grantee)
            done, same = f"{grantee} no longer reads {project} directly.", f"{grantee} had no grant on {project}."
        print(done if changed else same)
    except AccountError as exc:
        raise SettingsError(f"--project: {exc}") from None
    except (GrantError, AuthorizationUnavailable) as exc:
        print(f"ai-telemetry: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


# --- local users ----------------------------------------------------------------------------------------


def _read_password(args: argparse.Namespace) -> str:
    """From stdin (``--password-stdin``: one line) or typed twice at a prompt; never from the command line."""
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise SettingsError("--password-stdin: nothing on standard input")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise SettingsError("no terminal to ask for the password: pipe it in with --password-stdin")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password again: "):
        raise SettingsError("the two passwords differ")
    return first


def cmd_user(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.auth.mode != "local":
        raise SettingsError("AI_TELEMETRY_AUTH_MODE=keycloak: users are managed in Keycloak, not here")
    password = _read_password(args) if args.action in ("create", "set-password") else None
    engine = _engine(settings)
    try:
        with session_scope(engine) as session:
            message = _user_action(session, args, password)
    except UserError as exc:
        print(f"ai-telemetry: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(message)
    return 0


def _user_action(session: Any, args: argparse.Namespace, password: str | None) -> str:
    if args.action == "list":
        rows = [
            f"{u.username:<24} {'admin' if u.is_admin else 'user':<5} {'disabled' if u.disabled else 'enabled':<8} "
            f"{u.tokens:>3} tokens  {u.email or '-':<32} {u.display_name}"
            for u in users.list_users(session)
        ]
        return "\n".join(rows) if rows else "no local users (create one with: ai-telemetry user create NAME --admin)"
    if args.action == "create":
        assert password is not None
        user = users.create_user(
            session,
            args.username,
            password=password,
            display_name=args.display_name,
            email=args.email,
            is_admin=args.admin,
        )
        return f"created {'administrator' if user.is_admin else 'user'} {user.username}"
    if args.action == "set-password":
        assert password is not None
        users.set_password(session, args.username, password)
        return f"new password for {args.username}; their open logins ended"
    if args.action in ("disable", "enable"):
        changed = users.set_disabled(session, args.username, args.action == "disable")
        return f"{args.username} {args.action}d" if changed else f"{args.username} was already {args.action}d"
    users.delete_user(session, args.username)
    return f"deleted {args.username} with their tokens and grants"


def _token_parser(commands: Any) -> None:
    token = commands.add_parser("token", help="personal access tokens (local authorization mode)")
    token_commands = token.add_subparsers(title="token commands", required=True, metavar="COMMAND")
    create = token_commands.add_parser("create", help="print a new API token for a user")
    _common(create)
    create.add_argument("--user", required=True, help="user name, e.g. alice")
    create.add_argument("--name", default="cli", help="a label for the token")
    create.add_argument("--expires-days", type=int, help="days until it expires (default: never)")
    create.set_defaults(handler=cmd_token_create)


def _user_parser(commands: Any) -> None:
    user = commands.add_parser(
        "user",
        help="local users (local authorization mode): create, list, set-password, disable, enable, delete",
        description="Local users and administrators. Passwords are typed at a prompt or piped in with "
        "--password-stdin, never given as an argument.",
    )
    actions = user.add_subparsers(title="user commands", required=True, metavar="COMMAND", dest="action")
    texts = {
        "create": "create a user (--admin: an administrator)",
        "list": "list the users",
        "set-password": "give a user a new password (ends their open logins)",
        "disable": "stop a user from logging in or using their tokens",
        "enable": "let a disabled user in again",
        "delete": "delete a user with their tokens and grants",
    }
    for action, text in texts.items():
        command = actions.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        _common(command)
        if action != "list":
            command.add_argument("username", help="user name, e.g. alice")
        if action in ("create", "set-password"):
            command.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
        if action == "create":
            command.add_argument("--admin", action="store_true", help="an administrator (reads everything)")
            command.add_argument("--display-name", help="the name shown on the site (default: the user name)")
            command.add_argument("--email", help="where notices to the user go")
        command.set_defaults(handler=cmd_user)


def cmd_grant(args: argparse.Namespace) -> int:
    return _grant_or_revoke(args, grant=True)


def cmd_revoke(args: argparse.Namespace) -> int:
    return _grant_or_revoke(args, grant=False)


def cmd_ledger(args: argparse.Namespace) -> int:
    """The monthly statement, read straight from the database: an operator's view of every project."""
    settings = _settings(args, statements={"rate_card": args.rate_card})
    month = args.month or utcnow().strftime("%Y-%m")
    try:
        month_bounds(month)
    except StatementError as exc:
        raise SettingsError(f"--{exc}") from None
    engine = _engine(settings)
    try:
        with session_scope(engine) as session:
            project_id = project_ref(session, args.project).project_id if args.project else None
            statement = monthly_statement(
                session, ReadScope.all(), month, rate_card=settings.rate_card, project_id=project_id
            )
    except AccountError as exc:
        raise SettingsError(f"--project: {exc}") from None
    finally:
        engine.dispose()
    if args.format == "json":
        print(json.dumps(statement_dict(statement), indent=2))
    elif args.format == "csv":
        sys.stdout.write(statement_csv(statement))
    else:
        sys.stdout.write(statement_table(statement))
    return 0


def cmd_report_card(args: argparse.Namespace) -> int:
    """A workload's report card in the terminal, read straight from the database (an operator's view)."""
    namespace, slash, pod = args.workload.partition("/")
    if not slash or not namespace or not pod:
        raise SettingsError(f"NAMESPACE/POD expected, got {args.workload!r}")
    settings = _settings(args)
    engine = _engine(settings)
    try:
        with session_scope(engine) as session:
            scope = ReadScope.all()
            workload_id = args.workload_id or latest_workload_id(session, scope, namespace, pod, args.cluster)
            card = run_card_of(session, scope, workload_id)
    except NotFound as exc:
        print(f"ai-telemetry: no {exc} recorded", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(dataclasses.asdict(card), indent=2, default=str))
    else:
        sys.stdout.write(card_text(card))
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


def _replay_parser(commands: Any) -> None:
    replay_cmd = commands.add_parser(
        "replay",
        help="run recorded polls (or a simulator run) through changed pipeline settings; print what changes",
        description="Replays the pipeline's record (or a simulator run) through the settings in force and through "
        "the ones given, side by side, and prints what would change. Live findings are never touched.",
    )
    _common(replay_cmd)
    replay_cmd.add_argument("--since", help="start: a span ago (6h, 90m, 2d) or an ISO time (default: whole record)")
    replay_cmd.add_argument("--until", help="end: a span ago or an ISO time (default: now)")
    replay_cmd.add_argument("--simulate", action="store_true", help="replay a simulator run instead of the record")
    replay_cmd.add_argument("--fleet", type=Path, help="with --simulate: fleet TOML file (default: built-in)")
    replay_cmd.add_argument("--hours", type=float, default=6, help="with --simulate: hours to simulate (default 6)")
    replay_cmd.add_argument("--interval", type=float, default=30, help="with --simulate: seconds between polls")
    replay_cmd.add_argument("--seed", type=int, default=42, help="with --simulate: random seed (default 42)")
    replay_cmd.add_argument("--k", type=float, dest="straggler_k", help="straggler threshold k (1 to 4)")
    replay_cmd.add_argument("--quorum", type=int, dest="straggler_quorum", help="straggler cohort quorum")
    replay_cmd.add_argument("--persistence-polls", type=int, help="polls a condition must hold")
    replay_cmd.add_argument("--dedupe-window", type=float, dest="dedupe_window_seconds", help="dedupe window, s")
    replay_cmd.add_argument("--flap-threshold", type=int, help="re-starts within the flap window that mean flapping")
    replay_cmd.add_argument("--thermal-threshold", type=float, dest="thermal_threshold_c", help="hot at, °C")
    replay_cmd.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any pipeline setting by name, e.g. --set rate_limit_per_subject=6 (repeatable)",
    )
    replay_cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    replay_cmd.set_defaults(handler=cmd_replay)


def _db_parser(commands: Any) -> None:
    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(title="db commands", required=True, metavar="COMMAND")
    upgrade = db_commands.add_parser("upgrade", help="migrate the schema to the latest version")
    _common(upgrade)
    upgrade.set_defaults(handler=cmd_db_upgrade)


def _ledger_parser(commands: Any) -> None:
    ledger = commands.add_parser(
        "ledger",
        help="print a month's GPU statement: GPU-hours, idle, energy and cost per project, and its reconciliation",
        description="The monthly statement from the ledger, for every project (or one), with the fleet's "
        "reconciliation: projects + unallocated + unaccounted = capacity. Reads the database directly, as an "
        "operator; researchers get theirs from the site or the API.",
    )
    _common(ledger)
    ledger.add_argument("--month", help="YYYY-MM, UTC (default: the current month)")
    ledger.add_argument("--project", metavar="[HUB/]CLUSTER/NAMESPACE", help="one project only")
    ledger.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output (default table)")
    ledger.add_argument("--rate-card", type=Path, help="TOML rate card (default: $AI_TELEMETRY_STATEMENTS_RATE_CARD)")
    ledger.set_defaults(handler=cmd_ledger)


def _report_card_parser(commands: Any) -> None:
    card = commands.add_parser(
        "report-card",
        help="print a workload's report card: activity, memory, grade, advice and right-sizing",
        description="The report card of a pod's latest run (or of the run a workload id belongs to), from the "
        "database, as an operator; researchers get theirs from the site or the API.",
    )
    _common(card)
    card.add_argument("workload", metavar="NAMESPACE/POD", help="the pod, e.g. ml-team-a/llm-pretrain-0")
    card.add_argument("--cluster", help="the cluster, when the same pod name runs on several")
    card.add_argument("--workload-id", type=int, help="the run of this workload id instead of the latest")
    card.add_argument("--json", action="store_true", help="print the card as JSON")
    card.set_defaults(handler=cmd_report_card)


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

    _token_parser(commands)
    for add in (_db_parser, _replay_parser, _ledger_parser, _user_parser, _report_card_parser):
        add(commands)

    for verb, handler, text in (
        ("grant", cmd_grant, "let a group, user or API client read a research project"),
        ("revoke", cmd_revoke, "take a direct grant on a research project away"),
    ):
        command = commands.add_parser(
            verb,
            help=text,
            description=f"{text[0].upper()}{text[1:]}: local "
            "grants in the database, or Keycloak group membership (AI_TELEMETRY_AUTH_MODE).",
        )
        _common(command)
        command.add_argument("--project", required=True, metavar="[HUB/]CLUSTER/NAMESPACE", help="the project")
        who = command.add_mutually_exclusive_group(required=True)
        who.add_argument("--group", help="a Keycloak group (team), e.g. ml-team-a")
        who.add_argument("--user", help="a user name, e.g. alice")
        who.add_argument("--client", help="an API client id (its service account), e.g. ml-team-a-api")
        command.set_defaults(handler=handler)
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
    except OperationalError as exc:  # a wrong database URL or a database that is down: say so, no traceback
        reason = str(exc.orig or exc).strip().splitlines()[0]
        print(f"ai-telemetry: cannot use the database (AI_TELEMETRY_DATABASE_URL): {reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
