"""Replay: run recorded inputs through the current settings and through changed ones, and say what would change.

The input is the bounded record the worker keeps (:mod:`~domain.pipeline.records`: every poll's
readings and every alert's signals) or, from the command line, a simulator run. It is read once,
in time order, and fed to two fresh pipelines side by side: one with the settings in force, one
with the overrides. Neither touches the database; live findings stay as they are. The report
compares counters (raw > kept > findings > escalations, stage by stage) and the findings each run
would have opened, keyed by (kind, subject).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from domain.pipeline import PipelineError
from domain.pipeline.correlation import FindingState
from domain.pipeline.engine import Pipeline, compression
from domain.pipeline.extract import SignalExtractor
from domain.pipeline.records import ALERT, POLL, RecordedInput
from domain.pipeline.signals import SEVERITY_NAMES
from domain.settings import PipelineSettings

MAX_LISTED = 200


class ReplayError(PipelineError):
    """Nothing to replay, or an override that is not a pipeline setting (the message says which)."""


@dataclass(frozen=True)
class FindingSummary:
    kind: str
    subject: str
    level: str
    severity: str
    first_seen: float
    last_seen: float
    count: int
    escalated: bool
    summary: str

    @classmethod
    def of(cls, finding: FindingState) -> FindingSummary:
        return cls(
            finding.kind,
            finding.subject,
            finding.level,
            SEVERITY_NAMES[finding.severity],
            finding.first_seen,
            finding.last_seen,
            finding.count,
            finding.escalated,
            finding.summary(),
        )


@dataclass
class ReplayRun:
    """One pipeline's outcome over the replayed inputs."""

    settings: PipelineSettings
    counters: dict[str, int] = field(default_factory=dict)
    findings: list[FindingSummary] = field(default_factory=list)

    @property
    def compression(self) -> float | None:
        return compression(self.counters.get("raw", 0), self.counters.get("escalations", 0))

    def keys(self, *, escalated_only: bool = False) -> Counter[tuple[str, str]]:
        return Counter((f.kind, f.subject) for f in self.findings if f.escalated or not escalated_only)


@dataclass
class ReplayReport:
    overrides: dict[str, Any]
    polls: int
    alerts: int
    since: float | None
    until: float | None
    baseline: ReplayRun
    candidate: ReplayRun

    @property
    def added(self) -> list[FindingSummary]:
        """Findings the changed settings would open that the current ones do not."""
        return self._difference(self.candidate, self.baseline)

    @property
    def removed(self) -> list[FindingSummary]:
        """Findings the current settings open that the changed ones would not."""
        return self._difference(self.baseline, self.candidate)

    @staticmethod
    def _difference(first: ReplayRun, second: ReplayRun) -> list[FindingSummary]:
        spare = first.keys() - second.keys()
        out = []
        for finding in first.findings:
            key = (finding.kind, finding.subject)
            if spare[key] > 0:
                spare[key] -= 1
                out.append(finding)
        return out[:MAX_LISTED]

    @property
    def counter_changes(self) -> list[tuple[str, int, int]]:
        names = sorted(set(self.baseline.counters) | set(self.candidate.counters))
        return [
            (name, self.baseline.counters.get(name, 0), self.candidate.counters.get(name, 0))
            for name in names
            if self.baseline.counters.get(name, 0) != self.candidate.counters.get(name, 0)
        ]

    def as_dict(self) -> dict[str, Any]:
        def run(r: ReplayRun) -> dict[str, Any]:
            return {
                "counters": r.counters,
                "compression": r.compression,
                "findings": len(r.findings),
                "escalated": sum(f.escalated for f in r.findings),
            }

        return {
            "overrides": self.overrides,
            "polls": self.polls,
            "alerts": self.alerts,
            "since": self.since,
            "until": self.until,
            "current": run(self.baseline),
            "candidate": run(self.candidate),
            "added": [f.__dict__ for f in self.added],
            "removed": [f.__dict__ for f in self.removed],
            "counter_changes": [{"counter": n, "current": a, "candidate": b} for n, a, b in self.counter_changes],
        }


def with_overrides(settings: PipelineSettings, overrides: Mapping[str, Any]) -> PipelineSettings:
    """``settings`` with some fields changed, validated like the environment would be."""
    unknown = sorted(set(overrides) - set(PipelineSettings.model_fields))
    if unknown:
        known = ", ".join(sorted(PipelineSettings.model_fields))
        raise ReplayError(f"not a pipeline setting: {', '.join(unknown)} (known: {known})")
    try:
        return PipelineSettings(**{**settings.model_dump(), **overrides})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ReplayError(f"invalid override: {problems}") from None


class _Run:
    def __init__(
        self, settings: PipelineSettings, idle_threshold_percent: float, missing_after_seconds: float, interval: float
    ) -> None:
        self.result = ReplayRun(settings)
        self.pipeline = Pipeline(settings, interval_seconds=interval)
        self.extractors: dict[str, SignalExtractor] = {}
        self.idle = idle_threshold_percent
        self.missing_after = missing_after_seconds
        self.findings: dict[int, FindingState] = {}
        """By id(); holding the object keeps its id unique."""

    def feed(self, item: RecordedInput) -> None:
        if item.kind == POLL and item.poll is not None:
            extractor = self.extractors.get(item.source)
            if extractor is None:
                extractor = SignalExtractor(
                    self.result.settings, idle_threshold_percent=self.idle, missing_after_seconds=self.missing_after
                )
                self.extractors[item.source] = extractor
            poll = item.poll
            changed = self.pipeline.process(
                extractor.extract(poll),
                now=poll.taken_at,
                clusters=poll.clusters,
                interval_seconds=poll.window_seconds,
            ).changed
        else:
            clusters = {s.labels.get("cluster", "") for s in item.signals}
            changed = self.pipeline.process(item.signals, now=item.taken_at, clusters=clusters).changed
        for finding in changed:
            self.findings[id(finding)] = finding

    def finish(self) -> ReplayRun:
        counters = self.pipeline.counters()
        for extractor in self.extractors.values():
            for name, value in extractor.counters().items():
                counters[name] = counters.get(name, 0) + value
        self.result.counters = counters
        # a finding absorbed into a larger one is reported by the larger one
        self.result.findings = sorted(
            (FindingSummary.of(f) for f in self.findings.values() if f.merged_into is None),
            key=lambda f: (f.first_seen, f.kind, f.subject),
        )
        return self.result


def replay(
    inputs: Iterable[RecordedInput],
    settings: PipelineSettings,
    overrides: Mapping[str, Any],
    *,
    idle_threshold_percent: float = 5.0,
    missing_after_seconds: float = 300.0,
    interval_seconds: float = 30.0,
) -> ReplayReport:
    """Feed ``inputs`` (time-ordered) to a pipeline with ``settings`` and one with ``overrides`` applied."""
    candidate_settings = with_overrides(settings, overrides)
    baseline = _Run(settings, idle_threshold_percent, missing_after_seconds, interval_seconds)
    candidate = _Run(candidate_settings, idle_threshold_percent, missing_after_seconds, interval_seconds)
    polls = alerts = 0
    since: float | None = None
    until: float | None = None
    for item in inputs:
        polls += item.kind == POLL
        alerts += item.kind == ALERT
        since = item.taken_at if since is None else since
        until = item.taken_at
        baseline.feed(item)
        candidate.feed(item)
    if polls + alerts == 0:
        raise ReplayError("nothing to replay: no recorded polls or alerts in that period")
    return ReplayReport(dict(overrides), polls, alerts, since, until, baseline.finish(), candidate.finish())


def _utc(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def format_report(report: ReplayReport) -> str:
    """The report as text, for the command line."""
    changes = ", ".join(f"{k}={v}" for k, v in report.overrides.items()) or "no change of settings"
    lines = [
        f"Replayed {report.polls:,} polls and {report.alerts:,} alert batches, "
        f"{_utc(report.since)} to {_utc(report.until)}, with {changes}.",
        "",
        f"{'':<32}{'in force':>14}{'changed':>14}",
    ]
    base, cand = report.baseline, report.candidate
    for name in ("raw", "kept", "findings", "escalations"):
        lines.append(f"{name:<32}{base.counters.get(name, 0):>14,}{cand.counters.get(name, 0):>14,}")
    ratio = [f"{r.compression:,.0f}" if r.compression else "-" for r in (base, cand)]
    lines.append(f"{'compression (raw/escalations)':<32}{ratio[0]:>14}{ratio[1]:>14}")
    for name, a, b in report.counter_changes:
        if name not in ("raw", "kept", "findings", "escalations"):
            lines.append(f"  {name:<30}{a:>14,}{b:>14,}")
    lines.append("")
    added, removed = report.added, report.removed
    if not added and not removed:
        lines.append("The same findings either way.")
    for finding in added:
        lines.append(f"+ would open:  {finding.summary}  [{finding.kind} {finding.subject}, {finding.severity}]")
    for finding in removed:
        lines.append(f"- would not:   {finding.summary}  [{finding.kind} {finding.subject}, {finding.severity}]")
    return "\n".join(lines)
