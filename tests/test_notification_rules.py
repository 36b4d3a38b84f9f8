"""The notice decision rule, proved with hypothesis over arbitrary allocations, policies, histories and times."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.notifications.rules import (
    History,
    IdleAllocation,
    Policy,
    QuietHours,
    backoff,
    decide,
    exemption_expiry,
)

T0 = datetime(2026, 12, 1, tzinfo=UTC)
minutes = st.integers(min_value=0, max_value=60 * 24 * 10).map(lambda m: timedelta(minutes=m))
moments = minutes.map(lambda d: T0 + d)
utilisations = st.one_of(st.none(), st.floats(min_value=0, max_value=100, allow_nan=False))
quiet = st.one_of(
    st.none(),
    st.builds(
        QuietHours,
        st.times().map(lambda t: t.replace(second=0, microsecond=0)),
        st.times().map(lambda t: t.replace(second=0, microsecond=0)),
    ),
)
policies = st.builds(
    Policy,
    enabled=st.booleans(),
    idle_threshold_percent=st.floats(min_value=0, max_value=100, allow_nan=False),
    grace=minutes,
    reminder_interval=minutes.map(lambda d: d + timedelta(minutes=1)),
    escalate_after=st.one_of(st.none(), minutes),
    quiet_hours=quiet,
)


def allocation(idle_since: datetime, utilisation: float | None) -> IdleAllocation:
    return IdleAllocation("workload:c/ns/pod", 1, "c", "ns", "pod", idle_since, utilisation)


@given(policies, moments, moments, utilisations, st.integers(0, 5), st.one_of(st.none(), moments))
def test_never_before_grace_never_unknown_never_disabled(policy, since, now, util, notices, last):
    history = History(notices, last if notices else None)
    decision = decide(allocation(since, util), policy, history, now)
    if decision is None:
        return
    assert policy.enabled
    assert util is not None and util < policy.idle_threshold_percent
    assert now - since >= policy.grace
    assert policy.quiet_hours is None or not policy.quiet_hours.contains(now)


@given(policies, moments, moments, st.floats(0, 100, allow_nan=False), moments)
def test_no_notice_while_exempted(policy, since, now, util, until):
    decision = decide(allocation(since, util), policy, History(), now, exempt_until=until)
    assert decision is None or now >= until


@settings(max_examples=200)
@given(policies, moments, st.floats(0, 100, allow_nan=False), st.integers(5, 60 * 24 * 3))
def test_simulated_run_spaces_reminders(policy, since, util, steps):
    """Run the rule every 5 minutes and keep its history: one first notice, reminders at least an interval apart."""
    history = History()
    sent: list[tuple[datetime, str]] = []
    now = since
    for _ in range(min(steps, 600)):
        now += timedelta(minutes=5)
        decision = decide(allocation(since, util), policy, history, now)
        if decision is None:
            continue
        sent.append((now, decision.kind))
        history = History(history.notices + 1, now, history.escalated or decision.kind == "escalation")
    kinds = [k for _t, k in sent]
    assert kinds.count("notice") <= 1
    assert kinds.count("escalation") <= 1
    assert not sent or sent[0][1] == "notice"
    for (a, _ka), (b, kb) in itertools.pairwise(sent):
        if kb == "reminder":
            assert b - a >= policy.reminder_interval
    keys = set()
    history = History()
    for when, _kind in sent:
        decision = decide(allocation(since, util), policy, history, when)
        assert decision is not None
        assert decision.key not in keys  # each decided notice has its own key
        keys.add(decision.key)
        history = History(history.notices + 1, when, history.escalated or decision.kind == "escalation")


@given(policies, moments, moments, st.floats(0, 100, allow_nan=False), st.integers(0, 5), st.one_of(st.none(), moments))
def test_same_state_same_key(policy, since, now, util, notices, last):
    """Deciding twice from the same state (a restart) gives the same key, so the second insert is a no-op."""
    history = History(notices, last if notices else None)
    first = decide(allocation(since, util), policy, history, now)
    again = decide(allocation(since, util), policy, history, now)
    assert (first is None) == (again is None)
    if first is not None and again is not None:
        assert first.key == again.key


@given(minutes, minutes, moments)
def test_exemption_is_capped(requested, cap, now):
    expiry = exemption_expiry(requested, Policy(max_exemption=cap), now)
    assert now <= expiry <= now + cap


@given(st.integers(0, 100), st.integers(1, 600), st.integers(1, 10_000))
def test_backoff_grows_and_is_capped(attempts, base_s, cap_s):
    base, cap = timedelta(seconds=base_s), timedelta(seconds=cap_s)
    wait = backoff(attempts, base, cap)
    assert timedelta(0) <= wait <= max(cap, timedelta(0))
    assert backoff(attempts + 1, base, cap) >= wait


@given(st.times(), st.times(), st.datetimes(timezones=st.just(UTC)))
def test_quiet_hours_window(start, end, moment):
    window = QuietHours(start.replace(microsecond=0), end.replace(microsecond=0))
    t = moment.time().replace(tzinfo=None)
    inside = window.contains(moment)
    if window.start < window.end:
        assert inside == (window.start <= t < window.end)
    elif window.start > window.end:
        assert inside == (t >= window.start or t < window.end)
    else:
        assert not inside


def test_quiet_hours_parse_rejects_nonsense():
    import pytest

    with pytest.raises(ValueError, match="22:00-07:00"):
        QuietHours.parse("late")
    assert QuietHours.parse("22:00-07:00").contains(datetime(2026, 1, 1, 23, tzinfo=UTC))
    assert not QuietHours.parse("22:00-07:00").contains(datetime(2026, 1, 1, 12, tzinfo=UTC))
    assert QuietHours.parse("22:00-07:00", "Europe/Berlin").start == time(22)
