"""Usage series and charts from the ledger's rows: unknown stays unknown, partial buckets say so.

Rows are written as the ledger writes them (sums only, NULL peaks when nothing was read); hypothesis
varies which readings are known, how much of each bucket is covered and who holds what. Every point
must be the ratio of the sums it stands for, never 0 where nothing was known, and the SVG must leave a
gap (no vertex) wherever a value is unknown.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete
from sqlmodel import Session

from domain.access import ReadScope
from domain.inventory.usage import usage_series
from domain.models import UsageRollup
from tests.test_statements import BOUNDARY, build_fleet
from web.charts import Series, line_chart, segments, usage_charts

BUCKET = 300
UNTIL = BOUNDARY + timedelta(seconds=BUCKET * 4)  # the buckets the rows fall in: a range the fine tier draws

row_strategy = st.fixed_dictionaries(
    {
        "gpu": st.integers(0, 4),
        "bucket": st.integers(0, 3),
        "holder": st.integers(0, 2),  # 0: unallocated, else the n-th project of the GPU's hub
        "seconds": st.sampled_from([30.0, 75.0, 150.0, 300.0]),
        "util_known": st.sampled_from([0.0, 0.5, 1.0]),
        "util": st.floats(0, 100),
        "temperature": st.none() | st.floats(20, 95),
        "memory": st.none() | st.floats(0, 80_000),
        "power": st.none() | st.floats(50, 700),
    }
)


def write(session: Session, fleet, rows: list[dict]) -> list[UsageRollup]:  # type: ignore[no-untyped-def]
    gpus = sorted(fleet.gpus)
    written: dict[tuple[int, int, object], UsageRollup] = {}
    for r in rows:
        gpu = gpus[r["gpu"]]
        hub = fleet.gpus[gpu][0]
        projects = sorted(p for p, h in fleet.projects.items() if h == hub)
        project = 0 if r["holder"] == 0 else projects[(r["holder"] - 1) % len(projects)]
        bucket = BOUNDARY + timedelta(seconds=BUCKET * r["bucket"])
        key = (gpu, project, bucket)
        if key in written:
            continue  # one row per identity; the writer adds into it
        known = r["seconds"] * r["util_known"]
        written[key] = UsageRollup(
            gpu_id=gpu,
            slice_id=0,
            project_id=project,
            bucket_start=bucket,
            seconds=r["seconds"],
            seconds_util_known=known,
            util_seconds=known * r["util"],
            seconds_idle=known if r["util"] < 5 else 0.0,
            util_max=r["util"] if known else None,
            memory_mib_seconds=(r["memory"] or 0.0) * r["seconds"],
            memory_max_mib=r["memory"],
            energy_wh=(r["power"] or 0.0) * r["seconds"] / 3600,
            power_seconds_known=r["seconds"] if r["power"] is not None else 0.0,
            temperature_max_c=r["temperature"],
        )
    session.add_all(written.values())
    session.flush()
    return list(written.values())


@pytest.fixture
def fleet_engine(sqlite_engine: Engine):  # type: ignore[no-untyped-def]
    with Session(sqlite_engine) as session:
        fleet = build_fleet(session)
        session.commit()
    return sqlite_engine, fleet


def test_points_are_ratios_of_sums_and_unknown_is_never_zero(fleet_engine) -> None:  # type: ignore[no-untyped-def]
    engine, fleet = fleet_engine

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(rows=st.lists(row_strategy, min_size=1, max_size=30), researcher=st.booleans())
    def check(rows: list[dict], researcher: bool) -> None:
        with Session(engine) as session:
            session.execute(delete(UsageRollup))
            written = write(session, fleet, rows)
            project = min(fleet.projects)
            scope = ReadScope(project_ids=frozenset({project})) if researcher else ReadScope.all()
            points = usage_series(session, scope, since=BOUNDARY, until=UNTIL, bucket_seconds=BUCKET)
            session.rollback()
        counted = [r for r in written if not researcher or r.project_id == project]
        assert [p.bucket_start for p in points] == sorted({r.bucket_start for r in counted})
        for p in points:
            mine = [r for r in counted if r.bucket_start == p.bucket_start]
            gpus = {r.gpu_id for r in mine}
            covered = {
                g: sum(r.seconds for r in written if r.gpu_id == g and r.bucket_start == p.bucket_start) for g in gpus
            }
            known = sum(r.seconds_util_known for r in mine)
            if known:
                assert p.util_avg == pytest.approx(sum(r.util_seconds for r in mine) / known)
            else:
                assert p.util_avg is None and p.gpus_in_use is None
            temperatures = [r.temperature_max_c for r in mine if r.temperature_max_c is not None]
            assert p.temperature_max_c == (max(temperatures) if temperatures else None)
            memories = [r.memory_max_mib for r in mine if r.memory_max_mib is not None]
            assert (p.memory_mib is None) == (not memories)
            if not any(r.power_seconds_known for r in mine):
                assert p.power_watts is None
            held = [r for r in mine if r.project_id != 0]
            assert p.gpu_seconds_allocated == pytest.approx(sum(r.seconds for r in held))
            assert p.gpus_allocated == pytest.approx(
                sum(sum(r.seconds for r in held if r.gpu_id == g) / covered[g] for g in gpus)
            )
            assert p.covered_seconds == pytest.approx(max(covered.values()))
            assert p.partial == (max(covered.values()) < BUCKET - 0.5)
        charts = usage_charts(points)  # unknown values and partial points draw without error
        assert set(charts) == {"utilisation", "memory", "power", "temperature"}

    check()


def test_a_researcher_on_a_shared_gpu_sees_unknown_where_the_gpu_reading_is_not_theirs(fleet_engine) -> None:  # type: ignore[no-untyped-def]
    """The GPU's temperature sits on a row the researcher cannot read: unknown to them, never 0 °C."""
    engine, fleet = fleet_engine
    gpu = min(fleet.gpus)
    project = min(p for p, h in fleet.projects.items() if h == fleet.gpus[gpu][0])
    common = {"gpu_id": gpu, "slice_id": 0, "bucket_start": BOUNDARY}
    with Session(engine) as session:
        session.add(UsageRollup(project_id=project, seconds=128.57, **common))  # a slice's share, no reading of its own
        session.add(UsageRollup(project_id=0, seconds=171.43, temperature_max_c=35.0, **common))
        session.flush()
        admin = usage_series(session, ReadScope.all(), since=BOUNDARY, until=UNTIL, bucket_seconds=BUCKET)
        mine = usage_series(
            session, ReadScope(project_ids=frozenset({project})), since=BOUNDARY, until=UNTIL, bucket_seconds=BUCKET
        )
    assert admin[0].temperature_max_c == 35.0
    assert mine[0].temperature_max_c is None and mine[0].util_avg is None and mine[0].power_watts is None
    assert mine[0].gpus_allocated == pytest.approx(128.57 / 300) and not mine[0].partial


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.none() | st.floats(0, 1000), min_size=2, max_size=40))
def test_a_line_leaves_a_gap_wherever_the_value_is_unknown(values: list[float | None]) -> None:
    times = [BOUNDARY + timedelta(seconds=BUCKET * i) for i in range(len(values))]
    runs = segments(values)
    assert [i for run in runs for i, _ in run] == [i for i, v in enumerate(values) if v is not None]
    svg = str(line_chart(times, [Series("s", values, "s-avg")], title="t", y_max=1000))
    polylines = re.findall(r'<polyline class="s-avg" fill="none" points="([^"]*)"', svg)
    dots = re.findall(r'<circle class="s-avg"', svg)
    assert len(polylines) == sum(1 for run in runs if len(run) > 1)
    assert len(dots) == sum(1 for run in runs if len(run) == 1)
    vertices = sum(len(p.split()) for p in polylines) + len(dots)
    assert vertices == sum(v is not None for v in values)  # no point drawn for an unknown value


def test_partial_buckets_are_marked_with_their_covered_seconds() -> None:
    times = [BOUNDARY + timedelta(seconds=BUCKET * i) for i in range(3)]
    svg = str(
        line_chart(times, [Series("s", [1.0, 2.0, 3.0], "s-avg")], title="t", partial=[None, None, "partial: 120 s"])
    )
    assert svg.count('class="partial"') == 1 and "partial: 120 s" in svg
    assert "partial bucket" in svg  # the legend says what the dashed line means
