"""Migration 0009_ledger carries the old per-poll rollups forward and marks the rest unaccounted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Boolean, DateTime, Engine, Float, Integer, MetaData, String, Table, func, insert, select
from sqlmodel import Session

from domain.database import upgrade
from domain.models import AccountedWindow, Hub, UsageRollup

T0 = datetime(2026, 11, 30, 23, 50, tzinfo=UTC)
BUCKET = 300


def _filler(column: Any) -> Any:
    """A value for a required column the test does not care about."""
    kind = column.type
    if isinstance(kind, Boolean):
        return False
    if isinstance(kind, Integer):
        return 0
    if isinstance(kind, Float):
        return 0.0
    if isinstance(kind, DateTime) or "DateTime" in type(kind).__name__:
        return T0.replace(tzinfo=None)
    if isinstance(kind, String):
        return "x"
    return None


def _insert(engine: Engine, table: str, **values: Any) -> int:
    meta = MetaData()
    reflected = Table(table, meta, autoload_with=engine)
    row = {
        c.name: _filler(c)
        for c in reflected.columns
        if not c.nullable and c.server_default is None and not c.primary_key and c.name not in values
    }
    row.update(values)
    with engine.begin() as connection:
        return connection.execute(insert(reflected).values(row).returning(reflected.c.id)).scalar_one()


def _old_rollup(engine: Engine, gpu: int, bucket: datetime, project: int, **measures: float) -> None:
    row = dict.fromkeys(
        (
            "samples",
            "util_avg",
            "util_max",
            "memory_avg_mib",
            "memory_max_mib",
            "power_avg_watts",
            "temperature_max_c",
            "energy_wh",
            "gpu_seconds_allocated",
            "gpu_seconds_idle",
        ),
        0.0,
    )
    row.update(measures)
    _insert(
        engine,
        "usage_rollup",
        gpu_id=gpu,
        slice_id=0,
        project_id=project,
        bucket_start=bucket.replace(tzinfo=None),
        **row,
    )


def test_old_rollups_carry_forward_and_the_rest_is_unaccounted(empty_db_engine: Engine) -> None:
    engine = empty_db_engine
    upgrade(engine, "0007_receipt_signals_pending")
    hub = _insert(engine, "hub", name="h1", kind="simulated")
    cluster = _insert(engine, "cluster", name="c1", hub_id=hub)
    node = _insert(engine, "node", hostname="n1", cluster_id=cluster)
    busy = _insert(engine, "gpu", uuid="GPU-busy", node_id=node, mig_mode=False)
    spare = _insert(engine, "gpu", uuid="GPU-spare", node_id=node, mig_mode=False)
    later = T0 + timedelta(seconds=BUCKET)
    # bucket T0: the busy GPU held 240 s of 300 with a reading at 250 W on average, the spare never held
    _old_rollup(
        engine,
        busy,
        T0,
        7,
        samples=8,
        util_avg=40,
        util_max=90,
        memory_avg_mib=1000,
        memory_max_mib=2000,
        power_avg_watts=250,
        temperature_max_c=60,
        energy_wh=250 * 240 / 3600,
        gpu_seconds_allocated=240,
        gpu_seconds_idle=30,
    )
    _old_rollup(engine, spare, T0, 0, samples=10, energy_wh=5.0)
    # next bucket (crossing into December): a demo restart credited the busy GPU 450 s in a 300 s bucket
    _old_rollup(
        engine,
        busy,
        later,
        7,
        samples=15,
        power_avg_watts=100,
        energy_wh=100 * 450 / 3600,
        gpu_seconds_allocated=450,
        gpu_seconds_idle=0,
    )

    upgrade(engine)

    with Session(engine) as session:
        rows = {(r.gpu_id, r.bucket_start): r for r in session.exec(select(UsageRollup)).scalars()}
        windows = list(session.exec(select(AccountedWindow).order_by(AccountedWindow.start)).scalars())
        until = session.exec(select(Hub.accounted_until)).scalar_one()
    first = rows[(busy, T0)]
    assert (first.seconds, first.seconds_idle, first.seconds_util_known, first.util_seconds) == (240, 0, 0, 0)
    assert (first.util_max, first.memory_max_mib, first.temperature_max_c) == (None, 2000, 60)
    assert first.memory_mib_seconds == pytest.approx(1000 * 240)
    assert first.power_seconds_known == pytest.approx(240)
    assert rows[(spare, T0)].seconds == 0 and rows[(spare, T0)].temperature_max_c is None
    assert rows[(spare, T0)].energy_wh == 5.0
    scaled = rows[(busy, later)]
    assert scaled.seconds == pytest.approx(BUCKET)  # the double-counted excess is gone
    assert scaled.energy_wh == pytest.approx(100 * 300 / 3600)
    assert [(w.start, w.end, w.kind, w.gpu_count) for w in windows] == [
        (T0, later, "migrated", 2),
        (later, later + timedelta(seconds=BUCKET), "migrated", 1),
    ]
    assert windows[0].gpu_seconds_unaccounted == pytest.approx(2 * BUCKET - 240)
    assert windows[1].gpu_seconds_unaccounted == pytest.approx(0)
    assert until == later + timedelta(seconds=BUCKET)
    # reconciliation of the migrated history: held + unallocated + unaccounted = capacity
    with Session(engine) as session:
        held = session.exec(select(func.sum(UsageRollup.seconds))).scalar_one()
    capacity = sum(w.gpu_count * (w.end - w.start).total_seconds() for w in windows)
    assert held + sum(w.gpu_seconds_unaccounted for w in windows) == pytest.approx(capacity)
