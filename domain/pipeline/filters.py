"""Cheap filters: most raw signals stop here, in a few dictionary operations each.

Each stage is a small named object with its own counters; :class:`FilterChain` runs them in order
on one signal at a time::

    drop_healthy   OK signals carry no problem: dropped (their subject is fine this poll)
    dedupe         a condition already reported in an open finding passes again once per window
    persistence    a non-critical condition must hold for N polls (or a duration) before it counts
    flap_damping   a condition that keeps starting again is reported once as flapping, then muted
    rate_limit     each subject passes at most so many signals per window (token bucket)

Before the stages decide, the chain *observes* the signal into the state of its (kind, subject)
key: when the condition's current run (episode) started, how many polls it has held, when it was
last seen. Readings further apart than ``gap_tolerance_polls`` intervals break the run, which is how
a condition clearing is noticed without OK signals for every kind.

Safety rules, each counted (``safety.*``):

* a critical signal (XID error, lost GPU) is only ever deduplicated against its *own* key
  (kind, subject), never across subjects, and it is exempt from persistence, flap damping and the
  rate limit. ``critical_exempted`` counts the critical signals a stage would have held;
  ``critical_distinct_subjects`` counts critical signals kept although another subject of the same
  kind on the same node was kept within the dedupe window (a coarser dedupe would have merged
  them); ``critical_suppressed`` counts critical signals dropped for any reason but their own
  duplicate: it must stay 0.
* the first signal of a kind never seen before passes every stage (``unseen_kind_passed``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from domain.pipeline.signals import BUILT_IN_KINDS, CRITICAL, HEALTH, OK, Signal
from domain.settings import PipelineSettings

if TYPE_CHECKING:
    from domain.pipeline.correlation import FindingState


class KeyState:
    """What the pipeline remembers about one (kind, subject) key."""

    __slots__ = (
        "cleared",
        "episode_start",
        "episodes",
        "finding",
        "flapping",
        "gap",
        "kind",
        "labels",
        "last_bad",
        "last_kept",
        "severity",
        "streak",
        "subject",
        "value",
        "weight",
    )

    def __init__(self, signal: Signal) -> None:
        self.kind = signal.kind
        self.subject = signal.subject
        self.labels = signal.labels
        self.severity = signal.severity
        self.value = signal.value
        self.episode_start = signal.time
        self.last_bad = signal.time
        self.gap = 0.0
        """Seconds since the key's previous non-OK signal (0 for the first)."""
        self.streak = 1
        self.last_kept: float | None = None
        self.episodes: list[float] = [signal.time]
        """Start times of the recent episodes (within the flap window)."""
        self.flapping = False
        self.cleared = False
        """An explicit OK of this very kind and subject arrived (a resolved alert) and nothing since."""
        self.finding: FindingState | None = None
        """The open finding this key belongs to, if any."""
        gpus = signal.labels.get("gpus")
        self.weight = float(gpus) if gpus else 1.0
        """GPUs the subject stands for (a MIG slice is a fraction), for GPU-hour figures."""


class Stage:
    """A named filter stage; ``dropped`` counts the signals it stopped."""

    name = "stage"
    description = ""

    def __init__(self) -> None:
        self.dropped = 0

    def counters(self) -> dict[str, int]:
        return {f"{self.name}.dropped": self.dropped}


class DropHealthy(Stage):
    name = "drop_healthy"
    description = "Healthy (OK) signals: nothing to report."


class Dedupe(Stage):
    name = "dedupe"
    description = "Already in an open finding and passed within the dedupe window."

    def __init__(self, window: float) -> None:
        super().__init__()
        self.window = window
        self.critical_same_subject = 0

    def is_duplicate(self, key: KeyState, t: float) -> bool:
        finding = key.finding
        return finding is not None and finding.is_open and key.last_kept is not None and t - key.last_kept < self.window

    def counters(self) -> dict[str, int]:
        return {**super().counters(), f"{self.name}.critical_same_subject": self.critical_same_subject}


class Persistence(Stage):
    name = "persistence"
    description = "Not yet held for the required polls or duration (transient)."

    def __init__(self, polls: int, seconds: float | None) -> None:
        super().__init__()
        self.polls = polls
        self.seconds = seconds

    def is_transient(self, key: KeyState, t: float) -> bool:
        if key.streak >= self.polls:
            return False
        return self.seconds is None or t - key.episode_start < self.seconds


class FlapDamping(Stage):
    name = "flap_damping"
    description = "Flapping: reported once as such, then muted until it settles."

    def __init__(self, threshold: int, window: float) -> None:
        super().__init__()
        self.threshold = threshold
        self.window = window
        self.notices = 0

    def new_episode(self, key: KeyState, t: float) -> None:
        """The condition started again: remember it, and decide whether the key is flapping now."""
        horizon = t - self.window
        episodes = [e for e in key.episodes if e > horizon]
        episodes.append(t)
        key.episodes = episodes
        key.flapping = len(episodes) > self.threshold

    def counters(self) -> dict[str, int]:
        return {**super().counters(), f"{self.name}.notices": self.notices}


class RateLimit(Stage):
    name = "rate_limit"
    description = "Over the subject's budget of signals per window."

    def __init__(self, per_subject: int, window: float) -> None:
        super().__init__()
        self.capacity = float(per_subject)
        self.refill_per_second = per_subject / window
        self.window = window
        self.buckets: dict[str, list[float]] = {}
        """subject -> [tokens, time of last update]"""

    def take(self, subject: str, t: float) -> bool:
        bucket = self.buckets.get(subject)
        if bucket is None:
            self.buckets[subject] = [self.capacity - 1.0, t]
            return True
        tokens = min(self.capacity, bucket[0] + (t - bucket[1]) * self.refill_per_second)
        bucket[1] = t
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        return False

    def would_take(self, subject: str, t: float) -> bool:
        bucket = self.buckets.get(subject)
        if bucket is None:
            return True
        return min(self.capacity, bucket[0] + (t - bucket[1]) * self.refill_per_second) >= 1.0

    def forget_full(self, now: float) -> int:
        """Drop buckets that have refilled completely (they behave like a new one)."""
        rate, capacity = self.refill_per_second, self.capacity
        full = [s for s, (tokens, at) in self.buckets.items() if tokens + (now - at) * rate >= capacity]
        for subject in full:
            del self.buckets[subject]
        return len(full)


STAGES: tuple[tuple[str, str], ...] = tuple(
    (stage.name, stage.description) for stage in (DropHealthy, Dedupe, Persistence, FlapDamping, RateLimit)
)
"""(name, description) of the stages in order, for pages that explain the counters."""


class FilterChain:
    """The stages in order, the per-key state they share, and the safety counters."""

    def __init__(self, settings: PipelineSettings) -> None:
        self.settings = settings
        self.drop_healthy = DropHealthy()
        self.dedupe = Dedupe(settings.dedupe_window_seconds)
        self.persistence = Persistence(settings.persistence_polls, settings.persistence_seconds)
        self.flap = FlapDamping(settings.flap_threshold, settings.flap_window_seconds)
        self.rate_limit = RateLimit(settings.rate_limit_per_subject, settings.rate_limit_window_seconds)
        self.stages: tuple[Stage, ...] = (self.drop_healthy, self.dedupe, self.persistence, self.flap, self.rate_limit)
        self.states: dict[tuple[str, str], KeyState] = {}
        self.known_kinds: set[str] = set(BUILT_IN_KINDS)
        self.interval = 30.0
        self.gap_tolerance = settings.gap_tolerance_polls * self.interval
        self.raw = 0
        self.kept = 0
        self.unseen_kind_passed = 0
        self.critical_exempted = 0
        self.critical_distinct_subjects = 0
        self.critical_suppressed = 0
        self._critical_kept: dict[tuple[str, str], tuple[float, str]] = {}
        self.cleared: list[KeyState] = []
        """Keys cleared by an explicit OK since the pipeline last looked (their findings may resolve)."""
        """(kind, node) -> (time, subject) of the last critical signal kept there."""

    def set_interval(self, seconds: float) -> None:
        """The poll interval the following signals come at (gap tolerance is relative to it)."""
        if seconds > 0 and seconds != self.interval:
            self.interval = seconds
            self.gap_tolerance = self.settings.gap_tolerance_polls * seconds

    def observe(self, signal: Signal) -> KeyState | None:
        """Count the signal and fold it into its key's state; None for a healthy signal (dropped)."""
        self.raw += 1
        if signal.severity == OK:
            self.drop_healthy.dropped += 1
            if signal.kind is not HEALTH and signal.kind != HEALTH:  # an explicit all-clear, e.g. a resolved alert
                cleared = self.states.get((signal.kind, signal.subject))
                if cleared is not None and not cleared.cleared:
                    cleared.cleared = True
                    self.cleared.append(cleared)
            return None
        key = (signal.kind, signal.subject)
        state = self.states.get(key)
        t = signal.time
        if state is None:
            state = KeyState(signal)
            self.states[key] = state
            return state
        gap = t - state.last_bad
        state.gap = gap
        state.cleared = False
        if gap > self.gap_tolerance:
            state.episode_start = t
            state.streak = 1
            self.flap.new_episode(state, t)
        elif gap > 0:
            state.streak += 1
        if gap >= 0:
            state.last_bad = t
        state.value = signal.value
        state.severity = signal.severity
        state.labels = signal.labels
        return state

    def admit(self, signal: Signal, state: KeyState) -> bool:  # noqa: PLR0911  (one exit per stage, in order)
        """Whether an observed (non-OK) signal is kept; the stage that stops it counts it."""
        t = signal.time
        if signal.kind not in self.known_kinds:
            self.known_kinds.add(signal.kind)
            self.unseen_kind_passed += 1
            return self._keep(signal, state, t)
        if self.dedupe.is_duplicate(state, t):
            self.dedupe.dropped += 1
            if signal.severity == CRITICAL:
                self.dedupe.critical_same_subject += 1
            return False
        if signal.severity == CRITICAL:
            return self._keep_critical(signal, state, t)
        if state.flapping:
            if state.finding is None or not state.finding.is_open:
                if state.last_kept is not None and state.last_kept >= state.episodes[0]:
                    self.flap.dropped += 1
                    return False
                self.flap.notices += 1  # the one signal that reports the flapping
                return self._keep(signal, state, t)
        elif self.persistence.is_transient(state, t):
            self.persistence.dropped += 1
            return False
        if not self.rate_limit.take(signal.subject, t):
            self.rate_limit.dropped += 1
            return False
        return self._keep(signal, state, t)

    def _keep_critical(self, signal: Signal, state: KeyState, t: float) -> bool:
        """Critical: exempt from persistence, flap damping and the rate limit; counted when that mattered."""
        held = state.flapping or self.persistence.is_transient(state, t)
        if held or not self.rate_limit.would_take(signal.subject, t):
            self.critical_exempted += 1
        self.rate_limit.take(signal.subject, t)  # still spends the subject's budget
        node = signal.labels.get("node")
        if node is not None:
            where = (signal.kind, signal.labels.get("cluster", "") + "/" + node)
            last = self._critical_kept.get(where)
            if last is not None and last[1] != signal.subject and t - last[0] < self.dedupe.window:
                self.critical_distinct_subjects += 1
            self._critical_kept[where] = (t, signal.subject)
        return self._keep(signal, state, t)

    def _keep(self, signal: Signal, state: KeyState, t: float) -> bool:
        state.last_kept = t
        self.kept += 1
        return True

    def suppressed(self, signal: Signal) -> None:
        """Called by the pipeline for a signal that was not kept: guards the critical rule."""
        state = self.states[(signal.kind, signal.subject)]
        if signal.severity == CRITICAL and not self.dedupe.is_duplicate(state, signal.time):
            self.critical_suppressed += 1

    def forget(self, now: float) -> int:
        """Drop the state of keys quiet for longer than any stage looks back; returns how many."""
        lookback = max(self.flap.window, self.dedupe.window, self.persistence.seconds or 0.0, 4 * self.gap_tolerance)
        horizon = now - lookback
        stale = [
            k for k, s in self.states.items() if s.last_bad < horizon and (s.finding is None or not s.finding.is_open)
        ]
        for key in stale:
            del self.states[key]
        self.rate_limit.forget_full(now)
        cutoff = now - self.dedupe.window
        for where in [w for w, (at, _) in self._critical_kept.items() if at < cutoff]:
            del self._critical_kept[where]
        return len(stale)

    def counters(self) -> dict[str, int]:
        out = {"raw": self.raw, "kept": self.kept}
        for stage in self.stages:
            out.update(stage.counters())
        out.update(
            {
                "safety.critical_suppressed": self.critical_suppressed,
                "safety.critical_exempted": self.critical_exempted,
                "safety.critical_distinct_subjects": self.critical_distinct_subjects,
                "safety.unseen_kind_passed": self.unseen_kind_passed,
            }
        )
        return out

    def __iter__(self) -> Iterator[Stage]:
        return iter(self.stages)
