"""Commands that read what was recorded: ledger, report-card, replay."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import simulator
from ai_telemetry.commands.common import add_common, migrated_engine, settings_from
from domain.access import ReadScope
from domain.access.accounts import AccountError, project_ref
from domain.database import session_scope
from domain.inventory.queries import NotFound
from domain.ledger.statement_formats import statement_csv, statement_dict, statement_table
from domain.ledger.statements import StatementError, month_bounds, monthly_statement
from domain.models import utcnow
from domain.pipeline.records import iter_inputs
from domain.pipeline.replay import ReplayError, format_report, replay
from domain.report_cards.queries import latest_workload_id, run_card_of
from domain.report_cards.text import card_text
from domain.settings import SettingsError
from worker.pipeline.jobs import simulated_inputs
from worker.sources.simulated import SimulatedSource


def cmd_ledger(args: argparse.Namespace) -> int:
    """The monthly statement, read straight from the database: an operator's view of every project."""
    settings = settings_from(args, statements={"rate_card": args.rate_card})
    month = args.month or utcnow().strftime("%Y-%m")
    try:
        month_bounds(month)
    except StatementError as exc:
        raise SettingsError(f"--{exc}") from None
    engine = migrated_engine(settings)
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
    settings = settings_from(args)
    engine = migrated_engine(settings)
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
    settings = settings_from(args)
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
            engine = migrated_engine(settings)
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


def _ledger_parser(commands: Any) -> None:
    ledger = commands.add_parser(
        "ledger",
        help="print a month's GPU statement: GPU-hours, idle, energy and cost per project, and its reconciliation",
        description="The monthly statement from the ledger, for every project (or one), with the fleet's "
        "reconciliation: projects + unallocated + unaccounted = capacity. Reads the database directly, as an "
        "operator; researchers get theirs from the site or the API.",
    )
    add_common(ledger)
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
    add_common(card)
    card.add_argument("workload", metavar="NAMESPACE/POD", help="the pod, e.g. ml-team-a/llm-pretrain-0")
    card.add_argument("--cluster", help="the cluster, when the same pod name runs on several")
    card.add_argument("--workload-id", type=int, help="the run of this workload id instead of the latest")
    card.add_argument("--json", action="store_true", help="print the card as JSON")
    card.set_defaults(handler=cmd_report_card)


def _replay_parser(commands: Any) -> None:
    replay_cmd = commands.add_parser(
        "replay",
        help="run recorded polls (or a simulator run) through changed pipeline settings; print what changes",
        description="Replays the pipeline's record (or a simulator run) through the settings in force and through "
        "the ones given, side by side, and prints what would change. Live findings are never touched.",
    )
    add_common(replay_cmd)
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


def add_commands(commands: Any) -> None:
    _ledger_parser(commands)
    _report_card_parser(commands)
    _replay_parser(commands)
