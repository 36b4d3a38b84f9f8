"""Correlation: kept signals become findings, grouped GPU > node > workload > cluster.

The signals kept in one poll (one *tick*) are correlated together, so a fault that hits several
GPUs at once opens one finding, not one per GPU:

* hardware kinds (XID errors, lost GPUs, heat, stale readings) and alerts group by **node**:
  ``node_min_gpus`` GPUs of one node with the same kind make one node finding; ``cluster_min_nodes``
  nodes of one cluster with the same kind make one **cluster** finding, which absorbs theirs;
* workload kinds (idle while allocated, stragglers, full memory) group by **workload**:
  ``workload_min_gpus`` GPUs (or slices) of one pod with the same condition make one finding.

A signal whose subject already belongs to an open finding updates it; one that fits an open group
finding (its node's, its cluster's, its workload's) joins it. When a group forms around GPUs that
already had findings of their own, those are absorbed (resolved, ``merged_into`` the group).

A finding is *escalated* when it opens at or above the escalation severity, or its severity rises
past the level it was last escalated at. A finding resolves when none of its members' conditions
was seen for ``resolve_after_polls`` intervals (a flapping one waits a whole flap window).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from domain.pipeline.filters import KeyState
from domain.pipeline.signals import (
    IDLE_ALLOCATED,
    MISSING,
    SEVERITY_NAMES,
    STALE,
    STRAGGLER,
    THERMAL,
    WORKLOAD_KINDS,
    XID,
    cluster_subject,
    kind_label,
    node_subject,
    subject_level,
    workload_subject,
)
from domain.settings import PipelineSettings

OPEN = "open"
RESOLVED = "resolved"
MAX_EVIDENCE_MEMBERS = 50
XID_MESSAGES = {
    13: "Graphics Engine Exception",
    31: "GPU memory page fault",
    43: "GPU stopped processing",
    45: "Preemptive cleanup, due to previous errors",
    48: "Double Bit ECC Error",
    63: "ECC page retirement or row remapping recording event",
    64: "ECC page retirement or row remapper failure",
    74: "NVLINK Error",
    79: "GPU has fallen off the bus",
    92: "High single-bit ECC error rate",
    94: "Contained ECC error",
    95: "Uncontained ECC error",
    119: "GSP RPC Timeout",
}


class FindingState:
    """A finding as the pipeline holds it in memory; :mod:`domain.pipeline.findings` stores it."""

    __slots__ = (
        "cluster",
        "count",
        "escalated_severity",
        "escalations",
        "first_seen",
        "flapping",
        "groups",
        "id",
        "kind",
        "labels",
        "last_seen",
        "level",
        "members",
        "merged_into",
        "node",
        "resolved_at",
        "severity",
        "status",
        "subject",
        "waste_gpu_seconds",
    )

    def __init__(
        self,
        kind: str,
        subject: str,
        level: str,
        first: KeyState | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        severity: int = 0,
        first_seen: float = 0.0,
        last_seen: float = 0.0,
    ) -> None:
        self.kind = kind
        self.subject = subject
        self.level = level
        if first is not None:
            severity, first_seen, last_seen, labels = first.severity, first.episode_start, first.last_bad, first.labels
        self.severity = severity
        self.first_seen = first_seen
        self.last_seen = last_seen
        self.count = 0
        self.members: dict[str, KeyState] = {}
        labels = labels or {}
        self.labels = {k: labels[k] for k in ("cluster", "node", "namespace", "pod", "model", "source") if k in labels}
        if level in ("workload", "cluster"):
            self.labels.pop("node", None)
        if level == "cluster":
            self.labels.pop("namespace", None)
            self.labels.pop("pod", None)
        self.cluster = self.labels.get("cluster")
        self.node: str | None = self.labels.get("node")
        self.groups = groups_for(kind, level, self.labels)
        """The groups it registers in while open, so a larger group can absorb it."""
        self.status = OPEN
        self.id: int | None = None
        """The database row, once stored."""
        self.escalated_severity = -1
        self.escalations = 0
        self.flapping = False
        self.waste_gpu_seconds = 0.0
        self.resolved_at: float | None = None
        self.merged_into: FindingState | None = None

    @property
    def is_open(self) -> bool:
        return self.status == OPEN

    @property
    def escalated(self) -> bool:
        """Escalated itself, or formed from findings that were (a group inherits their escalation)."""
        return self.escalated_severity >= 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.subject)

    def __repr__(self) -> str:
        return f"FindingState({self.kind!r}, {self.subject!r}, {SEVERITY_NAMES[self.severity]}, {self.status})"

    # --- words ---------------------------------------------------------------------------------

    def summary(self) -> str:
        """One sentence for a person: what, where, how bad."""
        where = _where(self)
        members = list(self.members.values())
        n = len(members)
        values = [m.value for m in members if m.value is not None]
        what = kind_label(self.kind)
        detail = ""
        if self.kind == XID and values:
            codes = sorted({int(v) for v in values})
            what = "XID " + ", ".join(str(c) for c in codes)
            if len(codes) == 1 and codes[0] in XID_MESSAGES:
                what += f" ({XID_MESSAGES[codes[0]]})"
        elif self.kind == THERMAL and values:
            detail = f", up to {max(values):.0f} °C"
        elif self.kind == IDLE_ALLOCATED and values:
            detail = f", {sum(values) / len(values):.1f} % average utilisation"
        elif self.kind == STRAGGLER and members:
            first = members[0]
            median = first.labels.get("median")
            if median and first.value is not None:
                detail = f", health {first.value:.2f} against a cohort median of {float(median):.2f}"
        elif self.kind == MISSING:
            detail = ", no readings"
        elif self.kind == STALE:
            detail = ", reported without values"
        if self.level in ("gpu", "slice"):
            count = ""
        elif self.level == "node":
            count = f" on {n} GPU{'s' if n != 1 else ''}"
        elif self.level == "workload":
            count = f" on {n} device{'s' if n != 1 else ''}"
        else:
            nodes = {m.labels.get("node") for m in members}
            count = f" on {n} GPU{'s' if n != 1 else ''} across {len(nodes)} node{'s' if len(nodes) != 1 else ''}"
        flapping = " (flapping)" if self.flapping else ""
        return f"{what}{count} {where}{detail}{flapping}"[:1024]

    def evidence(self) -> dict[str, Any]:
        """JSON for the database: the level, the members (bounded) and what they reported."""
        members = sorted(self.members.values(), key=lambda m: m.subject)
        shown = []
        for member in members[:MAX_EVIDENCE_MEMBERS]:
            item: dict[str, Any] = {
                "subject": member.subject,
                "severity": SEVERITY_NAMES[member.severity],
                "value": member.value,
                "since": member.episode_start,
                "last": member.last_bad,
            }
            for label in (
                "node",
                "gpu",
                "index",
                "instance",
                "profile",
                "namespace",
                "pod",
                "model",
                "median",
                "threshold",
                "cohort",
                "xid_message",
                "alertname",
                "summary",
            ):
                if label in member.labels:
                    item[label] = member.labels[label]
            if member.flapping:
                item["flapping"] = True
            shown.append(item)
        out: dict[str, Any] = {
            "level": self.level,
            "labels": dict(self.labels),
            "member_count": len(members),
            "members": shown,
            "flapping": self.flapping,
        }
        if self.merged_into is not None:
            out["merged_into"] = {
                "kind": self.merged_into.kind,
                "subject": self.merged_into.subject,
                "id": self.merged_into.id,
            }
        if self.waste_gpu_seconds:
            out["idle_gpu_hours"] = round(self.waste_gpu_seconds / 3600, 4)
        return out


def _where(finding: FindingState) -> str:
    labels = finding.labels
    cluster = labels.get("cluster", "?")
    if finding.level == "cluster":
        return f"in cluster {cluster}"
    if finding.level == "workload":
        return f"of workload {labels.get('namespace', '?')}/{labels.get('pod', '?')} ({cluster})"
    if finding.level == "node":
        return f"of node {labels.get('node', finding.subject.rpartition('/')[2])} ({cluster})"
    if finding.level in ("gpu", "slice") and "node" in labels:
        first = next(iter(finding.members.values()), None)
        index = first.labels.get("index") if first else None
        gpu = f"GPU {index}" if index is not None else finding.subject
        if finding.level == "slice" and first is not None:
            gpu += f" slice {first.labels.get('profile') or first.labels.get('instance', '')}".rstrip()
        return f"on {gpu} of {labels['node']} ({cluster})"
    return f"on {finding.subject}"


def groups_for(kind: str, level: str, labels: Mapping[str, str]) -> list[tuple[str, str]]:
    """(kind, group subject) pairs a finding of this level belongs to: its node, workload, cluster."""
    cluster, node = labels.get("cluster"), labels.get("node")
    if level == "cluster" or not cluster:
        return []
    if kind in WORKLOAD_KINDS:
        namespace, pod = labels.get("namespace"), labels.get("pod")
        if level in ("gpu", "slice") and namespace and pod:
            return [(kind, workload_subject(cluster, namespace, pod))]
        return []
    out = []
    if level in ("gpu", "slice") and node:
        out.append((kind, node_subject(cluster, node)))
    out.append((kind, cluster_subject(cluster)))
    return out


def node_group(state: KeyState) -> str | None:
    level = subject_level(state.subject)
    if level == "node":
        return state.subject
    cluster, node = state.labels.get("cluster"), state.labels.get("node")
    if level in ("gpu", "slice") and cluster and node:
        return node_subject(cluster, node)
    return None


def workload_group(state: KeyState) -> str | None:
    level = subject_level(state.subject)
    if level == "workload":
        return state.subject
    labels = state.labels
    cluster, namespace, pod = labels.get("cluster"), labels.get("namespace"), labels.get("pod")
    if level in ("gpu", "slice") and cluster and namespace and pod:
        return workload_subject(cluster, namespace, pod)
    return None


def cluster_group(state: KeyState) -> str | None:
    cluster = state.labels.get("cluster")
    if cluster and subject_level(state.subject) != "cluster":
        return cluster_subject(cluster)
    return None


class Correlator:
    """Open findings, their groups, and the counters of correlation and findings."""

    def __init__(self, settings: PipelineSettings) -> None:
        self.settings = settings
        self.escalate_level = ("info", "warning", "critical").index(settings.escalate_severity) + 1
        self.open: dict[tuple[str, str], FindingState] = {}
        self.groups: dict[tuple[str, str], dict[int, FindingState]] = {}
        """(kind, group subject) -> open finer findings registered in that group, by id()."""
        self.changed: dict[int, FindingState] = {}
        """Findings opened, updated or resolved since the last :meth:`drain`, by id()."""
        self._touched: dict[int, FindingState] = {}
        """Findings opened or changed in the tick being correlated (escalation is decided once per tick)."""
        self.interval = 30.0
        self.opened = 0
        self.resolved = 0
        self.escalations = 0
        self.absorbed = 0
        self.grouped = {"node": 0, "workload": 0, "cluster": 0}

    # --- the tick ------------------------------------------------------------------------------

    def set_interval(self, seconds: float) -> None:
        self.interval = seconds

    @property
    def recent_window(self) -> float:
        """Conditions that started within this window of each other count as one event (cluster roll-up)."""
        return self.interval * (self.settings.persistence_polls + 1)

    def flush(self, pending: Iterable[KeyState], now: float) -> None:
        """Correlate the keys kept in one tick; escalate what the tick opened or worsened."""
        fresh: dict[str, dict[str, KeyState]] = {}
        for state in pending:
            finding = state.finding
            if finding is not None and finding.is_open:
                self._update(finding, state)
                continue
            finding = self._open_group_for(state)
            if finding is not None:
                self._attach(finding, state)
                continue
            fresh.setdefault(state.kind, {})[state.subject] = state
        for kind, states in fresh.items():
            if kind in WORKLOAD_KINDS:
                self._group(kind, list(states.values()), "workload", now)
            else:
                self._group_hardware(kind, list(states.values()), now)
        for finding in self._touched.values():
            if (
                finding.is_open
                and finding.severity >= self.escalate_level
                and (finding.severity > finding.escalated_severity)
            ):
                finding.escalated_severity = finding.severity
                finding.escalations += 1
                self.escalations += 1
        self._touched.clear()

    def _group_hardware(self, kind: str, states: list[KeyState], now: float) -> None:
        by_cluster: dict[str, list[KeyState]] = {}
        for state in states:
            by_cluster.setdefault(state.labels.get("cluster", ""), []).append(state)
        for cluster, members in by_cluster.items():
            if cluster and self._cluster_wide(kind, cluster, members, now):
                continue
            self._group(kind, members, "node", now)

    def _cluster_wide(self, kind: str, cluster: str, states: list[KeyState], now: float) -> bool:
        """Enough nodes of the cluster hit at about the same time: one cluster finding for all of it."""
        subject = cluster_subject(cluster)
        horizon = now - self.recent_window
        recent = [c for c in self.groups.get((kind, subject), {}).values() if c.first_seen >= horizon]
        nodes = {s.labels.get("node") or s.subject for s in states} | {c.node or c.subject for c in recent}
        if len(nodes) < self.settings.cluster_min_nodes:
            return False
        finding = self._create(kind, subject, "cluster", states[0])
        for child in recent:
            self._absorb(child, finding, now)
        for state in states:
            self._attach(finding, state)
        self.grouped["cluster"] += 1
        return True

    def _group(self, kind: str, states: list[KeyState], level: str, now: float) -> None:
        grouping = workload_group if level == "workload" else node_group
        minimum = self.settings.workload_min_gpus if level == "workload" else self.settings.node_min_gpus
        groups: dict[str | None, list[KeyState]] = {}
        for state in states:
            groups.setdefault(grouping(state), []).append(state)
        for group, members in groups.items():
            if group is None or group in {m.subject for m in members}:
                for state in members:  # a signal about the group itself, or nothing to group by
                    if state.finding is None or not state.finding.is_open:
                        self._attach(self._create(kind, state.subject, subject_level(state.subject), state), state)
                continue
            children = list(self.groups.get((kind, group), {}).values())
            subjects = {m.subject for m in members}
            for child in children:
                subjects.update(child.members)
            if len(subjects) >= minimum:
                finding = self._create(kind, group, level, members[0])
                for child in children:
                    self._absorb(child, finding, now)
                for state in members:
                    self._attach(finding, state)
                self.grouped[level] += 1
            else:
                for state in members:
                    self._attach(self._create(kind, state.subject, subject_level(state.subject), state), state)

    # --- building blocks -----------------------------------------------------------------------

    def _open_group_for(self, state: KeyState) -> FindingState | None:
        open_ = self.open
        kind = state.kind
        own = open_.get((kind, state.subject))
        if own is not None:
            return own
        if kind in WORKLOAD_KINDS:
            group = workload_group(state)
            return open_.get((kind, group)) if group else None
        for group in (cluster_group(state), node_group(state)):
            if group is not None:
                found = open_.get((kind, group))
                if found is not None:
                    return found
        return None

    def _create(self, kind: str, subject: str, level: str, first: KeyState) -> FindingState:
        finding = FindingState(kind, subject, level, first)
        self.open[finding.key] = finding
        for group in finding.groups:
            self.groups.setdefault(group, {})[id(finding)] = finding
        self.opened += 1
        self.changed[id(finding)] = finding
        self._touched[id(finding)] = finding
        return finding

    def _attach(self, finding: FindingState, state: KeyState) -> None:
        new_member = state.subject not in finding.members
        finding.members[state.subject] = state
        state.finding = finding
        if new_member:
            finding.count += state.streak
            finding.first_seen = min(finding.first_seen, state.episode_start)
            if state.kind == IDLE_ALLOCATED:  # the idle time before the condition was confirmed counts too
                finding.waste_gpu_seconds += (state.last_bad - state.episode_start) * state.weight
        self._update(finding, state)

    def _update(self, finding: FindingState, state: KeyState) -> None:
        finding.last_seen = max(finding.last_seen, state.last_bad)
        finding.severity = max(finding.severity, state.severity)
        if state.flapping:
            finding.flapping = True
        self.changed[id(finding)] = finding
        self._touched[id(finding)] = finding

    def _absorb(self, child: FindingState, parent: FindingState, now: float) -> None:
        if child is parent or not child.is_open:
            return
        for subject, state in child.members.items():
            if subject not in parent.members:
                parent.members[subject] = state
            state.finding = parent
            parent.last_seen = max(parent.last_seen, state.last_bad)
            parent.severity = max(parent.severity, state.severity)
        parent.count += child.count
        parent.first_seen = min(parent.first_seen, child.first_seen)
        parent.waste_gpu_seconds += child.waste_gpu_seconds
        parent.flapping = parent.flapping or child.flapping
        # the group inherits what its parts were already escalated for: absorbing is not a new alarm
        parent.escalated_severity = max(parent.escalated_severity, child.escalated_severity)
        self._close(child, now)
        child.merged_into = parent
        self.absorbed += 1
        self.changed[id(parent)] = parent
        self._touched[id(parent)] = parent

    def _close(self, finding: FindingState, now: float) -> None:
        finding.status = RESOLVED
        finding.resolved_at = now
        self.open.pop(finding.key, None)
        for group in finding.groups:
            registered = self.groups.get(group)
            if registered is not None:
                registered.pop(id(finding), None)
                if not registered:
                    del self.groups[group]
        for state in finding.members.values():
            if state.finding is finding:
                state.finding = None
        self.changed[id(finding)] = finding

    # --- resolution ----------------------------------------------------------------------------

    def resolve_cleared(self, states: Iterable[KeyState], now: float) -> int:
        """Resolve the findings all of whose members were explicitly cleared (their alerts resolved)."""
        resolved = 0
        for state in states:
            finding = state.finding
            if finding is not None and finding.is_open and all(m.cleared for m in finding.members.values()):
                self._close(finding, now)
                self.resolved += 1
                resolved += 1
        return resolved

    def resolve_silent(
        self,
        now: float,
        clusters: Collection[str] | None,
        silence: float,
        flap_silence: float,
        alert_silence: float | None = None,
    ) -> int:
        """Resolve the open findings (of ``clusters``, or all) whose conditions were not seen for a while.

        A finding raised by alerts waits ``alert_silence``: Alertmanager repeats a firing alert only
        every repeat interval (hours), and says so when it resolves.
        """
        resolved = 0
        for finding in list(self.open.values()):
            if clusters is not None and finding.cluster not in clusters:
                continue
            limit = flap_silence if finding.flapping else silence
            if alert_silence is not None and finding.labels.get("source") == "alert":
                limit = max(limit, alert_silence)
            if now - finding.last_seen > limit:
                self._close(finding, now)
                self.resolved += 1
                resolved += 1
        return resolved

    def close_externally(self, finding: FindingState) -> None:
        """A person resolved the finding (or it vanished from the database): forget it without a new change."""
        if finding.is_open:
            self._close(finding, finding.last_seen)
            self.changed.pop(id(finding), None)

    def adopt(self, finding: FindingState) -> None:
        """Take over an open finding loaded from the database (after a restart)."""
        self.open[finding.key] = finding
        for group in finding.groups:
            self.groups.setdefault(group, {})[id(finding)] = finding

    def drain(self) -> list[FindingState]:
        """The findings changed since the last call (opened, updated, escalated, resolved)."""
        changed = list(self.changed.values())
        self.changed.clear()
        return changed

    def counters(self) -> dict[str, int]:
        return {
            "findings": self.opened,
            "escalations": self.escalations,
            "findings.resolved": self.resolved,
            "findings.open": len(self.open),
            "correlation.absorbed": self.absorbed,
            **{f"correlation.{level}": n for level, n in self.grouped.items()},
        }
