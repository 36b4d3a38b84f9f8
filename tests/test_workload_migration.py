"""Migration 0014_workload_names renames ``workload_session`` to ``workload`` and back without losing or
changing a row: whatever rows the table holds, the rows after equal the rows before, ids included."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, MetaData, Table, delete, func, insert, inspect, select

from domain.database import alembic_config, upgrade

BEFORE = "0013_history_tiers"
AFTER = "0014_workload_names"

_TEXT = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")


def _text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(_TEXT, min_size=1, max_size=max_size)


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


_figure = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)
_moment = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31))
_event = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["gpu.xid_error", "gpu.thermal_throttling"]),
        "time": _moment.map(datetime.isoformat),
        "attributes": st.dictionaries(_text(20), st.integers(-(2**31), 2**31) | _text(40), max_size=3),
    }
)


def _row(project_id: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "trace_id": st.uuids().map(lambda u: u.hex),
            "cluster": _text(128),
            "namespace": _text(253),
            "pod": _text(253),
            "container": _optional(_text(253)),
            "node": _optional(_text(253)),
            "gpu_uuid": _optional(_text(64)),
            "mig_instance_id": _optional(st.integers(0, 14)),
            "started_at": _moment,
            "ended_at": _optional(_moment),
            "source": st.sampled_from(["alert", "poll"]),
            "summary": _optional(_text(1024)),
            "samples": st.integers(0, 2**31 - 1),
            "util_avg": _figure,
            "util_max": _figure,
            "memory_max_mib": _figure,
            "energy_wh": _figure,
            "project_id": st.sampled_from([None, project_id]),
            "gpu_model": _optional(_text(128)),
            "alert_fingerprint": _optional(_text(64)),
            "events": st.lists(_event, max_size=3),
            "last_xid": _optional(st.integers(0, 255)),
            "throttled": st.booleans(),
            "seconds": _figure,
            "gpu_seconds": _figure,
            "idle_gpu_seconds": _figure,
            "util_seconds": _figure,
            "util_known_seconds": _figure,
            "memory_total_mib": _optional(_figure),
            "profiling": st.dictionaries(
                st.sampled_from(["sm_active", "tensor_active", "dram_active"]),
                st.lists(_figure, min_size=3, max_size=3),
            ),
            "profiling_missing": st.sampled_from([None, "cluster", "device"]),
        }
    )


def _table(engine: Engine, name: str) -> Table:
    return Table(name, MetaData(), autoload_with=engine)


def _add(engine: Engine, table_name: str, **values: Any) -> int:
    """A row with ``values``; other required columns get a plain value of their type."""
    table = _table(engine, table_name)
    for column in table.columns:
        if column.nullable or column.primary_key or column.server_default is not None or column.name in values:
            continue
        kind = column.type.python_type
        values[column.name] = {bool: False, int: 0, float: 0.0, datetime: datetime(2026, 12, 6)}.get(kind, "x")
    with engine.begin() as connection:
        return connection.execute(insert(table).values(values).returning(table.c.id)).scalar_one()


def _rows(engine: Engine, name: str) -> list[dict[str, Any]]:
    table = _table(engine, name)
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(select(table).order_by(table.c.id))]


def test_rows_are_the_same_after_the_rename_and_after_its_downgrade(empty_db_engine: Engine) -> None:
    engine = empty_db_engine
    config = alembic_config(engine)
    upgrade(engine, BEFORE)
    hub = _add(engine, "hub", name="h", kind="simulated")
    cluster = _add(engine, "cluster", name="c", hub_id=hub)
    project = _add(engine, "research_project", cluster_id=cluster, namespace="ns", display_name="ns")

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    @given(rows=st.lists(_row(project), max_size=6, unique_by=lambda r: r["trace_id"]))
    def check(rows: list[dict[str, Any]]) -> None:
        for row in rows:  # one workload key per row: the one-open-row index holds whatever the ends
            row["workload_key"] = row["trace_id"] + "00000000"
        old = _table(engine, "workload_session")
        with engine.begin() as connection:
            connection.execute(delete(old))
            if rows:
                connection.execute(insert(old), rows)
        before = _rows(engine, "workload_session")
        assert len(before) == len(rows)

        upgrade(engine, AFTER)
        assert "workload_session" not in inspect(engine).get_table_names()
        assert _rows(engine, "workload") == before
        new = _table(engine, "workload")
        with engine.begin() as connection:  # new ids continue after the kept ones (the sequence was renamed)
            added = connection.execute(insert(new).values(_fresh()).returning(new.c.id)).scalar_one()
            assert added > max((r["id"] for r in before), default=0)
            assert connection.execute(select(func.count()).select_from(new)).scalar_one() == len(before) + 1
            connection.execute(delete(new).where(new.c.id == added))

        command.downgrade(config, BEFORE)
        assert "workload" not in inspect(engine).get_table_names()
        assert _rows(engine, "workload_session") == before

    check()


def _fresh() -> dict[str, Any]:
    """A workload written after the migration, with no id of its own."""
    figures = ("util_avg", "util_max", "memory_max_mib", "energy_wh", "seconds", "gpu_seconds", "idle_gpu_seconds")
    return {
        "trace_id": "f" * 32,
        "workload_key": "f" * 40,
        "cluster": "c",
        "namespace": "ns",
        "pod": "p",
        "started_at": datetime(2026, 12, 6),
        "source": "poll",
        "samples": 0,
        "events": [],
        "throttled": False,
        "util_seconds": 0.0,
        "util_known_seconds": 0.0,
        "profiling": {},
        **dict.fromkeys(figures, 0.0),
    }
