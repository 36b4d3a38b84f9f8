"""The ledger's pure rules: window planning, bucket cuts, MIG geometry and attribution (docs/ledger.md)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.ledger import (
    BACKFILLED,
    POLLED,
    UNACCOUNTED,
    GpuUse,
    Holder,
    MigProfileError,
    Part,
    Split,
    attribute,
    bucket_pieces,
    bucket_start,
    compute_slices,
    plan_windows,
    profile_share,
)
from domain.ledger.attribution import ENERGY_WH, IDLE, SECONDS, UTIL_KNOWN

BASE = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
BUCKET = 300


def moment(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


@given(
    cursor=st.one_of(st.none(), st.floats(-200_000, 3_600)),
    end=st.floats(0, 7_200),
    interval=st.floats(1, 600),
    horizon=st.floats(0, 100_000),
    chunk=st.floats(15, 7_200),
    lookback=st.one_of(st.none(), st.floats(0, 50_000)),
)
def test_planned_windows_tile_the_gap(
    cursor: float | None, end: float, interval: float, horizon: float, chunk: float, lookback: float | None
) -> None:
    at = moment(end)
    start = None if cursor is None else moment(cursor)
    windows = plan_windows(
        start,
        at,
        interval_seconds=interval,
        horizon_seconds=horizon,
        chunk_seconds=chunk,
        first_lookback_seconds=lookback,
    )
    if start is not None and at <= start:
        assert windows == []  # behind the cursor (skew, a replica behind): nothing
        return
    assert windows[-1].end == at and windows[-1].kind == POLLED
    if start is not None:
        assert windows[0].start == start  # from the cursor, whatever the gap
    else:
        assert UNACCOUNTED not in {w.kind for w in windows}  # a new hub has no gap
    for before, after in itertools.pairwise(windows):
        assert before.end == after.start  # contiguous, no overlap
    for window in windows:
        assert window.start < window.end
        if window.kind == BACKFILLED:
            assert window.seconds <= chunk + 1e-6
            assert window.start >= at - timedelta(seconds=horizon) - timedelta(microseconds=1)
    assert [w.kind for w in windows].count(UNACCOUNTED) <= 1
    assert windows[-1].seconds <= max(interval, min(chunk, horizon)) + 1e-6


def test_gap_is_backfilled_to_the_horizon_and_the_rest_unaccounted() -> None:
    windows = plan_windows(moment(0), moment(3 * 3600), interval_seconds=30, horizon_seconds=3600, chunk_seconds=900)
    assert [(w.kind, w.start, w.end) for w in windows] == [
        (UNACCOUNTED, moment(0), moment(2 * 3600)),
        (BACKFILLED, moment(2 * 3600), moment(2 * 3600 + 900)),
        (BACKFILLED, moment(2 * 3600 + 900), moment(2 * 3600 + 1800)),
        (BACKFILLED, moment(2 * 3600 + 1800), moment(2 * 3600 + 2700)),
        (POLLED, moment(2 * 3600 + 2700), moment(3 * 3600)),
    ]


def test_a_short_overrun_is_read_in_one_window() -> None:
    (window,) = plan_windows(moment(0), moment(75), interval_seconds=30, horizon_seconds=3600, chunk_seconds=300)
    assert (window.kind, window.start, window.end) == (POLLED, moment(0), moment(75))


@given(start=st.floats(-1e6, 1e6), length=st.floats(0.001, 5_000), bucket=st.sampled_from([60, 300, 900, 3600]))
def test_bucket_pieces_add_up_to_the_window(start: float, length: float, bucket: int) -> None:
    begin = moment(start)
    end = begin + timedelta(seconds=length)
    pieces = bucket_pieces(begin, end, bucket)
    assert sum(s for _, s in pieces) == pytest.approx((end - begin).total_seconds(), abs=1e-6)
    assert pieces[0][0] == bucket_start(begin, bucket)
    assert all(b.timestamp() % bucket == 0 for b, _ in pieces)
    assert all(0 < s <= bucket for _, s in pieces)


def test_a_window_crossing_a_month_boundary_is_cut_there() -> None:
    month = datetime(2026, 12, 1, tzinfo=UTC)
    pieces = bucket_pieces(month - timedelta(seconds=100), month + timedelta(seconds=50), BUCKET)
    assert pieces == [(month - timedelta(seconds=BUCKET), 100.0), (month, 50.0)]


@pytest.mark.parametrize(
    ("model", "profile", "share"),
    [
        ("NVIDIA A100-SXM4-80GB", "3g.40gb", 3 / 7),
        ("NVIDIA A100-PCIE-40GB", "1g.5gb", 1 / 7),
        ("NVIDIA A30", "1g.6gb", 1 / 4),
        ("NVIDIA A30", "2g.12gb", 2 / 4),
        ("NVIDIA A30", "4g.24gb", 1.0),
        ("NVIDIA H100 80GB HBM3", "1g.20gb", 1 / 7),
        ("NVIDIA H200", "4g.71gb", 4 / 7),
        ("NVIDIA B200", "7g.180gb", 1.0),
        ("NVIDIA H100 80GB HBM3", "1g.10gb+me", 1 / 7),
    ],
)
def test_mig_share_by_compute_slices_of_the_model(model: str, profile: str, share: float) -> None:
    assert profile_share(model, profile) == pytest.approx(share)


def test_bad_mig_profiles_are_refused() -> None:
    assert compute_slices("Tesla T4") == 7
    with pytest.raises(MigProfileError, match="not of the form"):
        profile_share("NVIDIA A100", "weird")
    with pytest.raises(MigProfileError, match="a NVIDIA A30 has 4"):
        profile_share("NVIDIA A30", "7g.80gb")


readings = st.one_of(st.none(), st.floats(0, 100))
holders = st.lists(st.builds(Holder, st.integers(0, 4), st.just("ns")), max_size=3).map(tuple)


@st.composite
def gpu_uses(draw: st.DrawFn) -> list[GpuUse]:
    uses: list[GpuUse] = []
    for gpu_id in range(1, draw(st.integers(1, 4)) + 1):
        if draw(st.booleans()):
            parts: tuple[Part, ...] = (Part(0, "whole", 1.0, draw(holders), draw(readings), None, draw(readings)),)
        else:
            shares = draw(st.lists(st.sampled_from([1, 2, 3, 4, 7]), max_size=4).filter(lambda s: sum(s) <= 7))
            sliced = tuple(
                Part(10 * gpu_id + i, f"{n}g.{10 * n}gb", n / 7, draw(holders), draw(readings))
                for i, n in enumerate(shares)
            )
            rest = 1 - sum(p.share for p in sliced)
            parts = sliced + ((Part(0, "unsliced", rest),) if rest > 1e-12 else ())
        uses.append(GpuUse(gpu_id, "c1", "NVIDIA A100", parts, draw(st.one_of(st.none(), st.floats(0, 700)))))
    return uses


@settings(max_examples=200)
@given(uses=gpu_uses(), start=st.floats(0, 10_000), length=st.floats(0.5, 2_000))
def test_attribution_adds_up_per_gpu_and_bucket(uses: list[GpuUse], start: float, length: float) -> None:
    begin = moment(start)
    end = begin + timedelta(seconds=length)
    split = Split()
    rows = attribute(uses, begin, end, bucket_seconds=BUCKET, idle_threshold_percent=5, split=split)
    pieces = dict(bucket_pieces(begin, end, BUCKET))
    for use in uses:
        for bucket, seconds in pieces.items():
            mine = [m for (gpu, _, _, b), m in rows.items() if gpu == use.gpu_id and b == bucket]
            assert sum(m[SECONDS] for m in mine) == pytest.approx(seconds)  # projects + unallocated = covered
            assert all(m[IDLE] <= m[UTIL_KNOWN] + 1e-9 <= m[SECONDS] + 2e-9 for m in mine)
            energy = sum(m[ENERGY_WH] for m in mine)
            assert energy == pytest.approx((use.power_watts or 0) * seconds / 3600)
    counted = sum(split.allocated.values()) + sum(split.unallocated.values())
    assert counted == pytest.approx(len(uses) * (end - begin).total_seconds())


def test_unknown_utilisation_is_neither_idle_nor_zero() -> None:
    use = GpuUse(1, "c1", "NVIDIA A100", (Part(0, "whole", 1.0, (Holder(3, "ns"),), None),), 100.0)
    split = Split()
    ((key, row),) = attribute([use], moment(0), moment(30), bucket_seconds=BUCKET, idle_threshold_percent=5,
                              split=split).items()  # fmt: skip
    assert key[:3] == (1, 0, 3)
    assert (row[SECONDS], row[UTIL_KNOWN], row[IDLE]) == (30.0, 0.0, 0.0)
    assert split.unknown_utilization == {("c1", "ns", "NVIDIA A100", "whole"): 30.0}
    assert dict(split.idle) == {}


def test_time_sliced_gpu_splits_evenly_among_its_pods() -> None:
    pods = (Holder(1, "a"), Holder(2, "b"), Holder(2, "b"))
    use = GpuUse(1, "c1", "NVIDIA A100", (Part(0, "whole", 1.0, pods, 3.0),), 300.0)
    rows = attribute([use], moment(0), moment(60), bucket_seconds=BUCKET, idle_threshold_percent=5)
    by_project = {key[2]: row[SECONDS] for key, row in rows.items()}
    assert by_project == {1: pytest.approx(20.0), 2: pytest.approx(40.0)}
