"""Monthly statements: they reconcile, their totals are the sums of the ledger's rows, they are scoped.

- A simulated ledger (hypothesis): windows of random lengths that tile time across a month boundary,
  of every kind, GPUs held by one project, shared by two, unallocated or silent, written as the
  contract says (docs/ledger.md: rows cut at bucket boundaries, unaccounted seconds on the window).
  Whatever the period, the statement's totals are the sums of the rows, and its reconciliation
  balances per hub and for the fleet; a researcher's statement holds their projects only.
- The demo: a few hours of the built-in fleet replayed through the real poll path, then live polls;
  the statement of the month reconciles and its CSV, JSON and the ``ai-telemetry ledger`` command
  agree with it.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, func, select
from sqlmodel import Session

from ai_telemetry import cli
from ai_telemetry.demo import backfill
from domain.access import ReadScope
from domain.database import session_scope
from domain.ledger.rate_card import parse_rate_card
from domain.ledger.statement_formats import statement_csv, statement_dict, statement_table
from domain.ledger.statements import StatementError, build_statement, month_bounds, monthly_statement
from domain.ledger.tiers import rebuild_tiers
from domain.models import (
    AccountedPeriod,
    AccountedWindow,
    Cluster,
    ClusterRollup,
    Gpu,
    Hub,
    Node,
    ResearchProject,
    UsageRollup,
    UsageRollupDaily,
    UsageRollupHourly,
)
from tests.conftest import settings_for
from worker.polling import SourcePoller
from worker.sources.registry import build_sources

BUCKET = 300
BOUNDARY = datetime(2026, 11, 1, tzinfo=UTC)
"""Month boundary the simulated windows cross (October | November)."""
CARD = parse_rate_card(
    'currency = "EUR"\n[[rates]]\nmodel = "A100"\nprice_per_gpu_hour = 2.5\n', origin="test rate card"
)


# --- a simulated ledger -------------------------------------------------------------------------------


@dataclass
class Fleet:
    hubs: dict[str, int]
    gpus: dict[int, tuple[int, str]]
    """gpu id -> (hub id, model)"""
    projects: dict[int, int]
    """project id -> hub id"""


def build_fleet(session: Session) -> Fleet:
    """Two hubs: hub-a (3 GPUs, two models; projects alpha and beta), hub-b (2 GPUs; project gamma)."""
    now = BOUNDARY
    fleet = Fleet({}, {}, {})
    for hub_name, models, namespaces in (
        ("hub-a", ["A100", "A100", "L40S"], ["alpha", "beta"]),
        ("hub-b", ["A100", "H100"], ["gamma"]),
    ):
        hub = Hub(name=hub_name, kind="simulated")
        session.add(hub)
        session.flush()
        cluster = Cluster(hub_id=hub.id, name=f"{hub_name}-c", status="ok")
        session.add(cluster)
        session.flush()
        node = Node(cluster_id=cluster.id, hostname=f"{hub_name}-n", first_seen=now, last_seen=now)
        session.add(node)
        session.flush()
        fleet.hubs[hub_name] = hub.id  # type: ignore[assignment]
        for i, model in enumerate(models):
            gpu = Gpu(uuid=f"{hub_name}-{i}", index=i, model=model, node_id=node.id, first_seen=now, last_seen=now)
            session.add(gpu)
            session.flush()
            fleet.gpus[gpu.id] = (hub.id, model)  # type: ignore[index,assignment]
        for ns in namespaces:
            project = ResearchProject(
                cluster_id=cluster.id, namespace=ns, display_name=ns, first_seen=now, last_seen=now
            )
            session.add(project)
            session.flush()
            fleet.projects[project.id] = hub.id  # type: ignore[index,assignment]
    return fleet


def bucket_pieces(start: datetime, end: datetime) -> list[tuple[datetime, float]]:
    """``[start, end)`` cut at bucket boundaries (aligned to the epoch, as the writer cuts)."""
    out = []
    at = start
    while at < end:
        bucket = datetime.fromtimestamp(int(at.timestamp()) // BUCKET * BUCKET, UTC)
        stop = min(end, bucket + timedelta(seconds=BUCKET))
        out.append((bucket, (stop - at).total_seconds()))
        at = stop
    return out


@st.composite
def ledgers(draw: st.DrawFn) -> dict:
    """Per hub: a start before the month boundary and windows (length, kind, per-GPU holder choices)."""
    plan = {}
    for hub in ("hub-a", "hub-b"):
        lengths = draw(
            st.lists(
                st.integers(min_value=1_000, max_value=1_500_000_000).map(lambda us: us / 1_000_000),
                min_size=1,
                max_size=12,
            )
        )
        before = draw(st.floats(min_value=0, max_value=1, allow_nan=False))
        kinds = draw(st.lists(st.sampled_from(["polled", "backfilled", "unaccounted"]), min_size=len(lengths)))
        plan[hub] = {"lengths": lengths, "before": before, "kinds": kinds, "seed": draw(st.integers(0, 2**32))}
    return plan


def write_ledger(session: Session, fleet: Fleet, plan: dict) -> list[AccountedWindow]:
    """Write the windows and their rollup rows as the contract says; return the windows."""
    rows: dict[tuple[int, int, int, datetime], list[float]] = defaultdict(lambda: [0.0] * 5)
    windows = []
    for hub_name, hub_plan in plan.items():
        hub_id = fleet.hubs[hub_name]
        rng = random.Random(hub_plan["seed"])
        total = sum(hub_plan["lengths"])
        at = BOUNDARY - timedelta(seconds=round(total * hub_plan["before"], 6))
        gpus = [g for g, (h, _) in fleet.gpus.items() if h == hub_id]
        projects = [p for p, h in fleet.projects.items() if h == hub_id]
        for length, kind in zip(hub_plan["lengths"], hub_plan["kinds"], strict=False):
            end = at + timedelta(seconds=length)
            seconds = (end - at).total_seconds()
            unaccounted = 0.0
            if kind == "unaccounted":
                unaccounted = len(gpus) * seconds
            else:
                for gpu in gpus:
                    choice = rng.choice(["silent", "free", "one", "shared"])
                    if choice == "silent":
                        unaccounted += seconds
                        continue
                    holders = {"free": [0], "one": [rng.choice(projects)], "shared": [*projects, 0][:2]}[choice]
                    known = rng.random()
                    for bucket, piece in bucket_pieces(at, end):
                        for project in holders:
                            row = rows[(gpu, 0, project, bucket)]
                            held = piece / len(holders)
                            row[0] += held
                            row[1] += held * known * rng.random()  # idle, within the known part
                            row[2] += held * known  # utilisation known
                            row[3] += held * known * 50  # util x seconds
                            row[4] += held * 0.1  # energy
            window = AccountedWindow(
                hub_id=hub_id,
                start=at,
                end=end,
                kind=kind,
                gpu_count=len(gpus),
                gpu_seconds_unaccounted=unaccounted,
                replica="test",
            )
            session.add(window)
            windows.append(window)
            at = end
        session.execute(Hub.__table__.update().where(Hub.id == hub_id).values(accounted_until=at))  # type: ignore[attr-defined]
    for (gpu, slice_id, project, bucket), (held, idle, known, util, energy) in rows.items():
        session.add(
            UsageRollup(
                gpu_id=gpu,
                slice_id=slice_id,
                project_id=project,
                bucket_start=bucket,
                seconds=held,
                seconds_idle=idle,
                seconds_util_known=known,
                util_seconds=util,
                energy_wh=energy,
                power_seconds_known=held,
            )
        )
    session.flush()
    rebuild_tiers(session.connection())  # the tiers the writer keeps, from these rows and windows
    return windows


def clear(session: Session) -> None:
    """Forget the ledger (the fleet stays)."""
    for model in (UsageRollup, AccountedWindow, UsageRollupHourly, UsageRollupDaily, ClusterRollup, AccountedPeriod):
        session.execute(delete(model))
    session.flush()


def expected_capacity(windows: list[AccountedWindow], hub_id: int, start: datetime, end: datetime) -> float:
    total = 0.0
    for w in windows:
        overlap = (min(w.end, end) - max(w.start, start)).total_seconds()
        if w.hub_id == hub_id and overlap > 0:
            total += w.gpu_count * overlap
    return total


@st.composite
def periods(draw: st.DrawFn) -> tuple[datetime, datetime]:
    """A bucket-aligned period around the month boundary (the ledger's rows are per bucket)."""
    first = draw(st.integers(min_value=-40, max_value=40))
    count = draw(st.integers(min_value=1, max_value=60))
    start = BOUNDARY + timedelta(seconds=first * BUCKET * 12)
    return start, start + timedelta(seconds=count * BUCKET * 12)


def totals_of_rows(session: Session, start: datetime, end: datetime, projects: set[int]) -> tuple[float, float]:
    held, energy = session.execute(
        select(
            func.coalesce(func.sum(UsageRollup.seconds), 0), func.coalesce(func.sum(UsageRollup.energy_wh), 0)
        ).where(
            UsageRollup.bucket_start >= start,
            UsageRollup.bucket_start < end,
            UsageRollup.project_id.in_(projects),  # type: ignore[attr-defined]
        )
    ).one()
    return float(held), float(energy)


@pytest.mark.parametrize("db", ["sqlite_engine", "pg_engine"])
def test_statements_reconcile_and_total_their_rows_whatever_the_period(db: str, request: pytest.FixtureRequest) -> None:
    engine: Engine = request.getfixturevalue(db)
    with Session(engine) as session:
        fleet = build_fleet(session)
        session.commit()

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(plan=ledgers(), period=periods(), month=st.sampled_from(["2026-10", "2026-11"]))
    def check(plan: dict, period: tuple[datetime, datetime], month: str) -> None:
        with Session(engine) as session:
            clear(session)
            windows = write_ledger(session, fleet, plan)
            for start, end in (period, month_bounds(month)):
                statement = build_statement(session, ReadScope.all(), start=start, end=end, rate_card=CARD)
                # totals are the sums of the rows, and of the lines
                held, energy = totals_of_rows(session, start, end, set(fleet.projects))
                assert statement.totals.gpu_hours == pytest.approx(held / 3600, abs=1e-9)
                assert statement.totals.energy_kwh == pytest.approx(energy / 1000, abs=1e-9)
                for project in statement.projects:
                    assert project.totals.gpu_hours == pytest.approx(sum(x.gpu_hours for x in project.lines))
                    costs = [x.cost for x in project.lines if x.cost is not None]
                    assert project.totals.cost == (sum(costs, Decimal(0)) if costs else None)
                    for line in project.lines:
                        priced = line.model == "A100"
                        assert (line.cost is not None) == priced
                        assert line.unknown_util_gpu_hours >= -1e-9 and line.idle_gpu_hours <= line.gpu_hours + 1e-9
                # the reconciliation balances, per hub and for the fleet, and capacity is the windows'
                for line in statement.reconciliation:
                    assert line.balanced, line.line
                for line in statement.reconciliation[:-1]:
                    hub_id = fleet.hubs[line.hub]  # type: ignore[index]
                    capacity = expected_capacity(windows, hub_id, start, end)
                    assert line.capacity_gpu_hours == pytest.approx(capacity / 3600, abs=1e-6)
                assert statement.fleet.capacity_gpu_hours == pytest.approx(
                    sum(r.capacity_gpu_hours for r in statement.reconciliation[:-1])
                )
            session.rollback()

    check()


def test_a_researchers_statement_holds_only_their_projects(sqlite_engine: Engine) -> None:
    plan = {
        hub: {"lengths": [3600.0] * 6, "before": 0.5, "kinds": ["polled"] * 6, "seed": 7} for hub in ("hub-a", "hub-b")
    }
    with Session(sqlite_engine) as session:
        fleet = build_fleet(session)
        write_ledger(session, fleet, plan)
        session.commit()
        alpha = next(p for p, h in fleet.projects.items() if h == fleet.hubs["hub-a"])
        scope = ReadScope(project_ids=frozenset({alpha}))
        everyone = monthly_statement(session, ReadScope.all(), "2026-11", rate_card=CARD)
        mine = monthly_statement(session, scope, "2026-11", rate_card=CARD)
        assert {p.project_id for p in everyone.projects} == set(fleet.projects)  # the seed holds every project
        assert [p.project_id for p in mine.projects] == [alpha]
        assert [r.hub for r in mine.reconciliation] == ["hub-a", None]  # the fleet line of alpha's hub only
        assert mine.fleet.balanced
        # scoped: "projects" is alpha alone, the other projects on hub-a are folded into one figure
        ours, theirs = mine.reconciliation[0], everyone.reconciliation[0]
        assert ours.scoped and not theirs.scoped and theirs.hub == "hub-a"
        assert ours.projects_gpu_hours == pytest.approx(mine.projects[0].totals.gpu_hours)
        assert theirs.projects_gpu_hours > ours.projects_gpu_hours + 1  # beta's hours are not shown apart
        assert ours.projects_gpu_hours + ours.unallocated_gpu_hours == pytest.approx(
            theirs.projects_gpu_hours + theirs.unallocated_gpu_hours
        )
        text = json.dumps(statement_dict(mine)) + statement_csv(mine) + statement_table(mine)
        for other in ("beta", "gamma", "hub-b"):
            assert other not in text
        # naming someone else's project is a filter that matches nothing: an empty statement
        gamma = next(p for p, h in fleet.projects.items() if h == fleet.hubs["hub-b"])
        none = monthly_statement(session, scope, "2026-11", project_id=gamma)
        assert none.projects == [] and [r.hub for r in none.reconciliation] == [None]
        assert none.fleet.capacity_gpu_hours == 0


def test_a_statement_without_a_rate_card_has_no_cost_and_bad_months_are_refused(sqlite_engine: Engine) -> None:
    with Session(sqlite_engine) as session:
        statement = monthly_statement(session, ReadScope.all(), "2026-11")
        assert statement.currency is None and statement.totals.cost is None
        with pytest.raises(StatementError, match="2026-13"):
            monthly_statement(session, ReadScope.all(), "2026-13")
        with pytest.raises(StatementError):
            build_statement(session, ReadScope.all(), start=BOUNDARY, end=BOUNDARY)


# --- the demo, through the real poll path ----------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_ledger(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A demo database: three hours replayed by the demo's back-fill, then two live polls. (url, month)"""
    directory = tmp_path_factory.mktemp("statement-demo")
    url = f"sqlite:///{directory / 'demo.db'}"
    settings = settings_for(url, demo=True)
    from domain.database import create_db_engine, upgrade

    engine = create_db_engine(settings.database)
    upgrade(engine)
    sources = build_sources(settings)
    backfill(settings, engine, sources, 3)
    start = datetime.now(UTC)
    for source in sources:
        poller = SourcePoller(source, engine, settings.scheduler)
        for step in (30, 60):
            poller.poll_once(now=start + timedelta(seconds=step), force=True)
    engine.dispose()
    return url, start.strftime("%Y-%m")


def test_the_demo_statement_reconciles_and_its_outputs_agree(demo_ledger: tuple[str, str], capsys) -> None:  # type: ignore[no-untyped-def]
    url, month = demo_ledger
    settings = settings_for(url, demo=True)
    from domain.database import create_db_engine

    engine = create_db_engine(settings.database)
    try:
        with session_scope(engine) as session:
            statement = monthly_statement(session, ReadScope.all(), month, rate_card=settings.rate_card)
            capacity = session.execute(select(func.count()).select_from(AccountedWindow)).scalar_one()
    finally:
        engine.dispose()
    assert capacity > 1  # the history and the live polls wrote windows
    fleet = statement.fleet
    assert fleet.balanced, fleet.line
    assert fleet.capacity_gpu_hours > 0 and fleet.projects_gpu_hours > 0
    assert statement.totals.gpu_hours == pytest.approx(fleet.projects_gpu_hours)  # an admin sees every project
    assert statement.totals.cost is not None and statement.totals.unpriced_gpu_hours == 0  # the demo card prices all

    data = statement_dict(statement)
    rows = list(csv.DictReader(io.StringIO(statement_csv(statement))))
    lines = [r for r in rows if r["row"] == "line"]
    assert len(lines) == sum(len(p["lines"]) for p in data["projects"])
    assert sum(float(r["gpu_hours"]) for r in lines) == pytest.approx(data["totals"]["gpu_hours"], abs=1e-3)
    assert Decimal(next(r for r in rows if r["row"] == "total")["cost"]) == statement.totals.cost
    assert sum(Decimal(r["cost"]) for r in lines) == statement.totals.cost

    for fmt in ("json", "csv", "table"):
        assert cli.main(["ledger", "--database-url", url, "--month", month, "--format", fmt]) == 0
        out = capsys.readouterr().out
        if fmt == "json":
            printed = json.loads(out)
            assert printed["reconciliation"]["fleet"]["balanced"] is True
            assert [p["namespace"] for p in printed["projects"]] == [p["namespace"] for p in data["projects"]]
        elif fmt == "csv":
            assert out.splitlines()[0].startswith("row,month,hub")
        else:
            assert "Reconciliation (fleet, all projects)" in out and "balanced" in out
    project = data["projects"][0]
    assert cli.main(["ledger", "--database-url", url, "--month", month, "--format", "json", "--project",
                     f"{project['cluster']}/{project['namespace']}"]) == 0  # fmt: skip
    only = json.loads(capsys.readouterr().out)
    assert [p["namespace"] for p in only["projects"]] == [project["namespace"]]
    assert cli.main(["ledger", "--database-url", url, "--month", "2026-13"]) == 2
    assert "--month" in capsys.readouterr().err
    assert cli.main(["ledger", "--database-url", url, "--project", "nowhere/none"]) == 2
    assert "--project" in capsys.readouterr().err


def test_the_cli_names_a_bad_rate_card(demo_ledger: tuple[str, str], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    url, month = demo_ledger
    card = tmp_path / "card.toml"
    card.write_text('currency = "EUR"\n[[rates]]\nmodel = "X"\nprice_per_gpu_hour = -2\n', encoding="utf-8")
    assert cli.main(["ledger", "--database-url", url, "--month", month, "--rate-card", str(card)]) == 2
    err = capsys.readouterr().err
    assert "AI_TELEMETRY_STATEMENTS_RATE_CARD" in err and str(card) in err and "price_per_gpu_hour" in err


def test_a_simulated_month_reconciles_and_the_months_around_it_add_up(db_engine: Engine) -> None:
    """A month of windows (10 min to 3 h, every kind) from October 31 to December 1 on both hubs: each
    month's statement balances, and the capacity of the three months is the windows' capacity, to the
    second: the windows crossing both boundaries are pro-rated exactly."""
    rng = random.Random(14)
    plan = {}
    for hub in ("hub-a", "hub-b"):
        lengths: list[float] = []
        while sum(lengths) < 31.3 * 86400:
            lengths.append(rng.randint(600_000_000, 10_800_000_000) / 1_000_000)  # microsecond ends
        kinds = [rng.choice(["polled", "polled", "backfilled", "unaccounted"]) for _ in lengths]
        plan[hub] = {"lengths": lengths, "before": 2 * 3600 / sum(lengths), "kinds": kinds, "seed": rng.randint(0, 999)}
    with Session(db_engine) as session:
        fleet = build_fleet(session)
        written = write_ledger(session, fleet, plan)
        windows = [(w.start, w.end, w.gpu_count, w.gpu_seconds_unaccounted) for w in written]
        session.commit()
        months = ("2026-10", "2026-11", "2026-12")
        statements = [monthly_statement(session, ReadScope.all(), m, rate_card=CARD) for m in months]
    assert min(w[0] for w in windows) < BOUNDARY and max(w[1] for w in windows) > datetime(2026, 12, 1, tzinfo=UTC)
    for statement in statements:
        assert all(line.balanced for line in statement.reconciliation), [r.line for r in statement.reconciliation]
    november = statements[1]
    assert november.fleet.capacity_gpu_hours > 0.8 * 30 * 24 * len(fleet.gpus)  # most of the month, all GPUs
    assert november.fleet.unaccounted_gpu_hours > 0 and november.totals.gpu_hours > 0
    capacity = sum(count * (end - start).total_seconds() for start, end, count, _ in windows) / 3600
    assert sum(s.fleet.capacity_gpu_hours for s in statements) == pytest.approx(capacity, rel=1e-12)
    unaccounted = sum(w[3] for w in windows) / 3600
    assert sum(s.fleet.unaccounted_gpu_hours for s in statements) == pytest.approx(unaccounted, rel=1e-9)
