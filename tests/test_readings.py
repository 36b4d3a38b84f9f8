"""What a reading means (domain/telemetry/dcgm.py), proved over the Prometheus snapshot builder.

* The utilisation rule: a MIG instance's utilisation comes from engine activity only, whatever
  ``DCGM_FI_DEV_GPU_UTIL`` says (absent or 0 by exporter version); a whole GPU's from GPU_UTIL, else
  engine activity; with neither it is unknown (None), never 0.
* Bad readings: NaN, ±Inf, negative or absurd values become None, are counted per family, logged once
  per family per poll (not once per series) and listed in ``Snapshot.warnings``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.telemetry.dcgm import (
    BOUNDS,
    ENGINE_ACTIVE,
    FB_FREE,
    FB_RESERVED,
    FB_USED,
    GPU_UTIL,
    POWER,
    TEMPERATURE,
    UTILIZATION_ROUNDING,
    XID,
    utilization_percent,
)
from domain.telemetry.labels import LabelReader
from worker.sources.prometheus import DcgmRow, QueryResult, SnapshotBuilder

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
LATEST = (FB_USED, FB_FREE, FB_RESERVED, POWER, TEMPERATURE, XID)

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)
reading = st.one_of(
    st.none(),
    finite,
    st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 100.4, 100.6, 201.0, 10_001.0, 1e12]),
)


@contextmanager
def captured_log(name: str) -> Iterator[list[logging.LogRecord]]:
    """The records one logger emits inside the block (caplog is per test, not per hypothesis example)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def acceptable(family: str, value: float | None) -> bool:
    if value is None:
        return True
    bounds = BOUNDS[family]
    return math.isfinite(value) and bounds.low <= value <= bounds.high


@given(gpu_util=st.one_of(st.none(), st.just(0.0), finite), engine=st.one_of(st.none(), st.floats(0, 1)))
def test_a_mig_instance_never_takes_gpu_util(gpu_util: float | None, engine: float | None) -> None:
    mig = utilization_percent(gpu_util, engine, mig=True)
    assert mig == (None if engine is None else round(engine * 100, 3))
    whole = utilization_percent(gpu_util, engine, mig=False)
    if gpu_util is not None:
        assert whole == gpu_util
    else:
        assert whole == mig


def dcgm_row(family: str, uuid: str, instance: str = "", *, tag: str = "") -> DcgmRow:
    return DcgmRow(tag=tag, family="" if tag else family, uuid=uuid, instance=instance)


def identity(uuid: str, instance: int | None = None) -> dict[str, str]:
    labels = {"UUID": uuid, "gpu": "0", "Hostname": "node-1", "modelName": "NVIDIA A100-SXM4-80GB"}
    if instance is not None:
        labels |= {"GPU_I_ID": str(instance), "GPU_I_PROFILE": "1g.10gb", "modelName": ""}
    return labels


def build(series: dict[str, list[tuple[object, float]]]) -> tuple[SnapshotBuilder, object]:
    builder = SnapshotBuilder("prom", LabelReader(cluster="prod"), "prod")
    results = {name: QueryResult(name, rows) for name, rows in series.items()}
    return builder, builder.build(NOW, 30, results)


device = st.fixed_dictionaries(
    {
        "mig": st.booleans(),
        "latest": st.fixed_dictionaries({family: reading for family in LATEST}),
        "avg": st.one_of(st.none(), st.tuples(st.sampled_from(["util", "engine"]), reading)),
    }
)


@settings(max_examples=200, deadline=None)
@given(devices=st.lists(device, min_size=1, max_size=8))
def test_bad_readings_become_unknown_and_are_reported_once_per_family(devices: list[dict[str, object]]) -> None:
    identities: list[tuple[object, float]] = []
    values: list[tuple[object, float]] = []
    utilization: list[tuple[object, float]] = []
    expected: Counter[str] = Counter()
    for n, spec in enumerate(devices):
        uuid, instance = f"GPU-{n}", 1 if spec["mig"] else None
        identities.append((identity(uuid, instance), 1.0))
        slot = "" if instance is None else str(instance)
        for family, value in spec["latest"].items():  # type: ignore[attr-defined]
            if value is None:
                continue
            values.append((dcgm_row(family, uuid, slot, tag=family if family == XID else ""), value))
            expected[family] += not acceptable(family, value)
        if spec["avg"] is not None:
            source, value = spec["avg"]  # type: ignore[misc]
            if value is not None:
                utilization.append((dcgm_row("", uuid, slot, tag=f"avg:{source}"), value))
                family = GPU_UTIL if source == "util" else ENGINE_ACTIVE
                expected[family] += not acceptable(family, value)
    with captured_log("worker.sources.prometheus") as records:
        _, snapshot = build({"identity": identities, "values-1": values, "utilization": utilization})

    for gpu in snapshot.gpus:  # type: ignore[attr-defined]
        figures = [(TEMPERATURE, gpu.temperature_c), (POWER, gpu.power_watts)]
        figures += [(FB_USED, gpu.memory_used_mib), (FB_FREE, gpu.memory_free_mib)]
        figures += [(GPU_UTIL, gpu.utilization)] + [(GPU_UTIL, s.utilization) for s in gpu.slices]
        for family, figure in figures:
            assert figure is None or (math.isfinite(figure) and BOUNDS[family].low <= figure), (family, figure)
        for percent in [gpu.utilization, *(s.utilization for s in gpu.slices)]:
            assert percent is None or percent <= 100
        if gpu.slices:  # a GPU in MIG mode: utilisation lives on the slice, from engine activity only
            assert gpu.utilization is None
    bad = {family: count for family, count in expected.items() if count}
    # one sentence per family with broken readings, naming the family and the count
    assert len(snapshot.warnings) == len(bad)  # type: ignore[attr-defined]
    for family, count in bad.items():
        (sentence,) = [w for w in snapshot.warnings if f" {family} " in w]  # type: ignore[attr-defined]
        assert sentence.startswith(f"{count} {family} reading")
    logged = [r.getMessage() for r in records if "taken as unknown" in r.getMessage()]
    assert len(logged) == len(bad)


def test_mig_slices_read_engine_activity_whether_gpu_util_is_absent_or_zero() -> None:
    identities = [(identity("GPU-m", 7), 1.0), (identity("GPU-m", 8), 1.0), (identity("GPU-m", 9), 1.0)]
    rows = [
        # a slice whose exporter reports GPU_UTIL as 0 (as the PromQL GPU_I_ID="" filter would not let through)
        (dcgm_row("", "GPU-m", "7", tag="avg:util"), 0.0),
        (dcgm_row("", "GPU-m", "8", tag="avg:engine"), 0.52),
        (dcgm_row("", "GPU-m", "8", tag="max:engine"), 0.61),
        (dcgm_row("", "GPU-m", "9", tag="last:engine"), 0.28),
    ]
    _, snapshot = build({"identity": identities, "values-1": [], "utilization": rows})
    (gpu,) = snapshot.gpus  # type: ignore[attr-defined]
    by_id = {s.mig_instance_id: (s.utilization, s.utilization_max) for s in gpu.slices}
    assert by_id == {7: (None, None), 8: (52.0, 61.0), 9: (28.0, 28.0)}
    assert gpu.utilization is None


def test_utilisation_just_above_100_is_rounding_and_further_is_broken() -> None:
    rows = [
        (dcgm_row("", "GPU-a", tag="avg:util"), 100 + UTILIZATION_ROUNDING / 2),
        (dcgm_row("", "GPU-b", tag="avg:util"), 100 + UTILIZATION_ROUNDING * 2),
    ]
    _, snapshot = build(
        {"identity": [(identity("GPU-a"), 1), (identity("GPU-b"), 1)], "values-1": [], "utilization": rows}
    )
    assert {g.uuid: g.utilization for g in snapshot.gpus} == {"GPU-a": 100.0, "GPU-b": None}  # type: ignore[attr-defined]
    assert snapshot.warnings == (  # type: ignore[attr-defined]
        f"1 {GPU_UTIL} reading NaN, infinite or outside 0..{100 + UTILIZATION_ROUNDING:g} taken as unknown",
    )
