"""Inference: stragglers among peers, and where a new job would fit best.

**Stragglers.** Every poll, each GPU (or MIG slice) that belongs to a workload contributes a health
score, its utilisation as a fraction, to its *cohort*: the devices of one workload on one cluster
with one GPU model (cluster x model x workload). Scores are EMA-smoothed per device
(``alpha``, 0.2 by default) so one noisy poll decides nothing. Then, per cohort::

    threshold = median - k * 1.4826 * MAD          (k = 2 by default, 1 to 4)

1.4826 * MAD estimates the standard deviation of normally distributed scores, robustly: the
straggler itself does not drag the threshold down the way it would drag a mean and a standard
deviation. Guards, each counted:

* **quorum**: fewer than ``quorum`` (5) fresh peers give no verdict at all;
* **expiry**: a peer without data for ``expiry_polls`` (5) poll intervals leaves the cohort;
* **MAD = 0** (identical peers) and every tight cohort: the threshold is never closer to the
  median than ``min_gap`` (0.15, i.e. 15 utilisation points), so noise is never a straggler;
* **implausible thresholds**: a threshold at or below 0 (a cohort too dispersed to call), or a
  median below 5 % (an idle cohort, which is the idle check's business), gives no verdict;
* **hysteresis**: a straggler recovers only once its score is ``hysteresis`` (0.02) above the
  threshold, so a device on the edge does not flap.
* **known utilisation only**: a device is observed only in polls where its utilisation is known
  (unknown, e.g. a MIG slice without engine activity, is not 0), and gets a verdict only in a poll
  that observed it; between, its last score still counts for its peers until it expires.

**Placement.** :func:`rank_nodes` orders candidate nodes for ``count`` GPUs of one model by whether
they fit (free whole GPUs), then by a score of health (healthy GPUs, open findings), contention
(how busy the neighbours are) and free capacity, with the reasons spelt out.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

MAD_SCALE = 1.4826
"""MAD to standard deviation for normally distributed data."""
IDLE_COHORT_MEDIAN = 0.05


@dataclass(slots=True)
class _Peer:
    score: float
    last_seen: float
    straggler: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    """The detector's view of one device of a cohort that had a verdict this poll."""

    subject: str
    cohort: tuple[str, ...]
    score: float
    median: float
    threshold: float
    straggler: bool


class StragglerDetector:
    """Per-cohort robust outlier detection with EMA smoothing, quorum, expiry and hysteresis."""

    def __init__(
        self,
        *,
        k: float = 2.0,
        alpha: float = 0.2,
        quorum: int = 5,
        hysteresis: float = 0.02,
        expiry_polls: int = 5,
        min_gap: float = 0.15,
    ) -> None:
        self.k = k
        self.alpha = alpha
        self.quorum = quorum
        self.hysteresis = hysteresis
        self.expiry_polls = expiry_polls
        self.min_gap = min_gap
        self.cohorts: dict[tuple[str, ...], dict[str, _Peer]] = {}
        self.verdicts = 0
        self.no_quorum = 0
        self.mad_zero = 0
        self.implausible = 0
        self.flagged = 0
        self.recovered = 0
        self.expired = 0

    def observe(self, cohort: tuple[str, ...], subject: str, score: float, t: float) -> None:
        """Fold one reading (0..1) into the device's smoothed score."""
        peers = self.cohorts.setdefault(cohort, {})
        peer = peers.get(subject)
        if peer is None:
            peers[subject] = _Peer(score, t)
            return
        if t > peer.last_seen:
            peer.score = self.alpha * score + (1 - self.alpha) * peer.score
            peer.last_seen = t

    def threshold(self, scores: Sequence[float]) -> tuple[float, float, float | None]:
        """(median, MAD, threshold or None when implausible) of one cohort's scores, guards applied."""
        median = statistics.median(scores)
        mad = statistics.median(abs(s - median) for s in scores)
        if mad == 0:
            self.mad_zero += 1
        threshold = min(median - self.k * MAD_SCALE * mad, median - self.min_gap)
        if threshold <= 0 or median < IDLE_COHORT_MEDIAN:
            self.implausible += 1
            return median, mad, None
        return median, mad, threshold

    def evaluate(self, now: float, interval: float) -> list[Verdict]:
        """Expire silent peers, then judge every cohort with a quorum of fresh ones."""
        horizon = now - self.expiry_polls * interval
        out: list[Verdict] = []
        for cohort in list(self.cohorts):
            peers = self.cohorts[cohort]
            for subject in [s for s, p in peers.items() if p.last_seen <= horizon]:
                del peers[subject]
                self.expired += 1
            if not peers:
                del self.cohorts[cohort]
                continue
            if len(peers) < self.quorum:
                self.no_quorum += 1
                continue
            median, _, threshold = self.threshold([p.score for p in peers.values()])
            if threshold is None:
                continue
            self.verdicts += 1
            for subject, peer in peers.items():
                if peer.last_seen < now:  # unknown this poll: counts for its peers, judged only when read again
                    continue
                if peer.straggler and peer.score > threshold + self.hysteresis:
                    peer.straggler = False
                    self.recovered += 1
                elif not peer.straggler and peer.score < threshold:
                    peer.straggler = True
                    self.flagged += 1
                out.append(Verdict(subject, cohort, peer.score, median, threshold, peer.straggler))
        return out

    def counters(self) -> dict[str, int]:
        return {
            "straggler.verdicts": self.verdicts,
            "straggler.no_quorum": self.no_quorum,
            "straggler.mad_zero": self.mad_zero,
            "straggler.implausible": self.implausible,
            "straggler.flagged": self.flagged,
            "straggler.recovered": self.recovered,
            "straggler.expired": self.expired,
        }


# --- placement ------------------------------------------------------------------------------------

HEALTH_WEIGHT = 0.5
CONTENTION_WEIGHT = 0.3
CAPACITY_WEIGHT = 0.2


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    """What placement needs to know about one node (gathered by :mod:`domain.pipeline.queries`)."""

    node_id: int
    hostname: str
    cluster_id: int
    cluster: str
    model: str
    gpus_total: int
    gpus_free: int
    """Whole GPUs that are healthy, not MIG-partitioned and held by nobody."""
    gpus_healthy: int
    gpus_allocated: float
    utilization_allocated: float | None
    """Average utilisation of the node's allocated GPUs, percent."""
    warning_findings: int = 0
    critical_findings: int = 0


@dataclass(frozen=True, slots=True)
class Placement:
    node: NodeCapacity
    fits: bool
    score: float
    health: float
    contention: float
    capacity: float
    reasons: tuple[str, ...] = field(default_factory=tuple)


def model_matches(wanted: str, model: str) -> bool:
    """``a100``, ``A100-SXM4-80GB`` or the full ``modelName`` all match ``NVIDIA A100-SXM4-80GB``."""
    wanted = wanted.strip().lower()
    return bool(wanted) and (wanted == model.lower() or wanted in model.lower())


def place(node: NodeCapacity, count: int) -> Placement:
    total = max(node.gpus_total, 1)
    health = node.gpus_healthy / total
    reasons = []
    if node.critical_findings:
        health = 0.0
        reasons.append(f"{node.critical_findings} critical finding(s) open")
    elif node.warning_findings:
        health *= 0.5
        reasons.append(f"{node.warning_findings} warning finding(s) open")
    if node.gpus_healthy < node.gpus_total:
        reasons.append(f"{node.gpus_total - node.gpus_healthy} of {node.gpus_total} GPUs not healthy")
    busy = (node.utilization_allocated or 0.0) / 100
    contention = min(1.0, node.gpus_allocated / total) * (0.5 + 0.5 * busy)
    capacity = node.gpus_free / total
    fits = node.gpus_free >= count and health > 0
    if node.gpus_free < count:
        reasons.append(f"only {node.gpus_free} free GPU(s), {count} wanted")
    else:
        reasons.append(f"{node.gpus_free} free GPU(s)")
    if node.gpus_allocated:
        util = f", {node.utilization_allocated:.0f} % busy" if node.utilization_allocated is not None else ""
        reasons.append(f"{node.gpus_allocated:g} GPU(s) in use by others{util}")
    score = HEALTH_WEIGHT * health + CONTENTION_WEIGHT * (1 - contention) + CAPACITY_WEIGHT * capacity
    return Placement(
        node, fits, round(score, 4), round(health, 4), round(contention, 4), round(capacity, 4), tuple(reasons)
    )


def rank_nodes(nodes: Iterable[NodeCapacity], model: str, count: int) -> list[Placement]:
    """Nodes with ``model`` GPUs, best first: those that fit, by score, then the rest by score."""
    ranked = [place(node, count) for node in nodes if model_matches(model, node.model)]
    ranked.sort(key=lambda p: (not p.fits, -p.score, p.node.cluster, p.node.hostname))
    return ranked
