"""Poll readings become signals: per GPU, MIG slice and (through correlation) node.

Each poll's snapshot becomes a :class:`PollObservation` (its readings with the time as Unix seconds,
the form replay records) and :class:`SignalExtractor` derives the signals from it:

=================  ==========================================================  ========
kind               when                                                        severity
=================  ==========================================================  ========
``xid_error``      the GPU reports a nonzero XID code                          critical
``gpu_missing``    its cluster answered but the GPU has been absent for a      critical
                   while (the scheduler's ``missing_after_seconds``): a lost GPU
``thermal``        temperature at or above ``thermal_threshold_c``             warning
``stale``          the GPU is listed without a single gauge value              warning
``idle_allocated`` held by a pod, known utilisation below the idle threshold   warning
``straggler``      far below its workload's other GPUs (see inference)         warning
``memory_full``    framebuffer use at or above ``memory_full_fraction``        info
``health``         none of the above (one per device)                          ok
=================  ==========================================================  ========

Utilisation is None where it is unknown (a MIG slice without ``DCGM_FI_PROF_GR_ENGINE_ACTIVE``: the
sources never take its ``DCGM_FI_DEV_GPU_UTIL``, absent or 0 on MIG): such a device is never idle and
never a straggler, and feeds no score to its cohort in that poll.

The extractor is stateful (which GPUs it has seen, the straggler EMA), so one instance follows
one stream of polls; replay builds a fresh one.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from domain.ledger.mig import slice_fraction
from domain.pipeline.correlation import XID_MESSAGES
from domain.pipeline.inference import StragglerDetector
from domain.pipeline.signals import (
    CRITICAL,
    HEALTH,
    IDLE_ALLOCATED,
    INFO,
    MEMORY_FULL,
    MISSING,
    OK,
    STALE,
    STRAGGLER,
    THERMAL,
    WARNING,
    XID,
    Signal,
    gpu_subject,
    slice_subject,
)
from domain.settings import PipelineSettings
from domain.telemetry.readings import GpuReading, PodRef, SliceReading, Snapshot


@dataclass(frozen=True, slots=True)
class PollObservation:
    """One successful poll of one source, as the pipeline needs it."""

    source: str
    taken_at: float
    """Unix seconds."""
    window_seconds: float
    clusters: tuple[str, ...]
    gpus: tuple[GpuReading, ...]
    """The snapshot's readings themselves (a recorded poll keeps only what the signals read)."""

    @classmethod
    def of(cls, snapshot: Snapshot) -> PollObservation:
        return cls(
            source=snapshot.source,
            taken_at=snapshot.taken_at.timestamp(),
            window_seconds=snapshot.window_seconds,
            clusters=tuple(dict.fromkeys(snapshot.clusters)),
            gpus=snapshot.gpus,
        )


# --- compact storage (replay) ---------------------------------------------------------------------

_GPU_FIELDS = (
    "cluster",
    "node",
    "uuid",
    "index",
    "model",
    "utilization",
    "utilization_max",
    "memory_used_mib",
    "memory_free_mib",
    "memory_reserved_mib",
    "temperature_c",
    "power_watts",
    "xid",
)
_SLICE_FIELDS = ("mig_instance_id", "profile", "utilization", "memory_used_mib", "memory_total_mib")
_FORMAT = 2
"""1 stored a GPU's memory total and one pod per device; 2 stores the readings' own fields and every pod."""


def _pods(pods: tuple[PodRef, ...]) -> list[list[str | None]]:
    return [[p.namespace, p.pod, p.container] for p in pods]


def encode_poll(poll: PollObservation) -> bytes:
    """zlib-compressed JSON with one positional row per GPU, holding what the signals read: a 40-GPU
    poll takes about a kilobyte."""
    rows = []
    for gpu in poll.gpus:
        row: list[Any] = [getattr(gpu, name) for name in _GPU_FIELDS]
        row.append(_pods(gpu.workloads))
        row.append([[*(getattr(s, name) for name in _SLICE_FIELDS), _pods(s.workloads)] for s in gpu.slices])
        rows.append(row)
    body = {
        "v": _FORMAT,
        "source": poll.source,
        "t": poll.taken_at,
        "w": poll.window_seconds,
        "clusters": list(poll.clusters),
        "gpus": rows,
    }
    return zlib.compress(json.dumps(body, separators=(",", ":")).encode(), 6)


def decode_poll(blob: bytes) -> PollObservation:
    body = json.loads(zlib.decompress(blob))
    decode = _decode_gpu if body.get("v", 1) == _FORMAT else _decode_gpu_v1
    gpus = tuple(decode(row) for row in body["gpus"])
    return PollObservation(body["source"], float(body["t"]), float(body["w"]), tuple(body["clusters"]), gpus)


def _decode_pods(rows: list[list[str | None]]) -> tuple[PodRef, ...]:
    return tuple(PodRef(str(namespace), str(pod), container) for namespace, pod, container in rows)


def _decode_gpu(row: list[Any]) -> GpuReading:
    *values, pods, slices = row
    parts = tuple(
        SliceReading(**dict(zip(_SLICE_FIELDS, rest, strict=True)), workloads=_decode_pods(slice_pods))
        for *rest, slice_pods in slices
    )
    return GpuReading(**dict(zip(_GPU_FIELDS, values, strict=True)), workloads=_decode_pods(pods), slices=parts)


def _decode_gpu_v1(row: list[Any]) -> GpuReading:
    """A poll recorded before format 2: (..., memory_total_mib, ..., namespace, pod) and slices alike."""
    (cluster, node, uuid, index, model, util, util_max, used, total, temp, power, xid, ns, pod, slices) = row
    parts = tuple(
        SliceReading(i, profile, s_util, s_used, s_total, workloads=((PodRef(s_ns, s_pod),) if s_ns and s_pod else ()))
        for i, profile, s_util, s_used, s_total, s_ns, s_pod in slices
    )
    free = None if used is None or total is None else total - used
    return GpuReading(
        cluster,
        node,
        uuid,
        index,
        model,
        utilization=util,
        utilization_max=util_max,
        memory_used_mib=used,
        memory_free_mib=free,
        temperature_c=temp,
        power_watts=power,
        xid=xid,
        workloads=(PodRef(ns, pod),) if ns and pod else (),
        slices=parts,
    )


def encode_signals(signals: Iterable[Signal]) -> bytes:
    return zlib.compress(json.dumps([s.as_tuple() for s in signals], separators=(",", ":")).encode(), 6)


def decode_signals(blob: bytes) -> list[Signal]:
    return [Signal.from_tuple(row) for row in json.loads(zlib.decompress(blob))]


# --- extraction -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Known:
    cluster: str
    labels: Mapping[str, str]
    last_seen: float


class SignalExtractor:
    """Derives one poll's signals; remembers GPUs (for lost ones) and the straggler detector's state."""

    def __init__(
        self,
        settings: PipelineSettings,
        *,
        idle_threshold_percent: float = 5.0,
        missing_after_seconds: float = 300.0,
    ) -> None:
        self.settings = settings
        self.idle_threshold = idle_threshold_percent
        """The scheduler's (one idle threshold for the ledger, workloads and findings)."""
        self.missing_after_seconds = missing_after_seconds
        """The scheduler's: a GPU the inventory marks missing is lost here at the same moment."""
        self.stragglers = StragglerDetector(
            k=settings.straggler_k,
            alpha=settings.straggler_alpha,
            quorum=settings.straggler_quorum,
            hysteresis=settings.straggler_hysteresis,
            expiry_polls=settings.straggler_expiry_polls,
            min_gap=settings.straggler_min_gap,
        )
        self.known: dict[str, _Known] = {}
        self.polls = 0

    def remember(self, cluster: str, node: str, uuid: str, index: int, model: str, last_seen: float) -> None:
        """Seed a GPU known from before (the inventory, after a restart), so its loss is noticed."""
        if uuid not in self.known:
            labels = {"cluster": cluster, "node": node, "gpu": uuid, "index": str(index), "model": model}
            self.known[uuid] = _Known(cluster, labels, last_seen)

    def extract(self, poll: PollObservation) -> list[Signal]:
        self.polls += 1
        t = poll.taken_at
        out: list[Signal] = []
        healthy: dict[str, Mapping[str, str]] = {}
        """Devices with no problem so far (a straggler verdict may still come)."""
        for gpu in poll.gpus:
            self._gpu(gpu, t, out, healthy)
        self._missing(poll, t, out)
        for verdict in self.stragglers.evaluate(t, poll.window_seconds):
            if not verdict.straggler:
                continue
            labels = healthy.pop(verdict.subject, None)
            if labels is None:  # the device already has another problem this poll (or left)
                continue
            labels = {
                **labels,
                "median": f"{verdict.median:.4f}",
                "threshold": f"{verdict.threshold:.4f}",
                "cohort": "/".join(verdict.cohort),
            }
            out.append(Signal(STRAGGLER, verdict.subject, WARNING, round(verdict.score, 4), t, labels))
        out.extend(Signal(HEALTH, subject, OK, None, t, labels) for subject, labels in healthy.items())
        return out

    def _gpu(self, gpu: GpuReading, t: float, out: list[Signal], healthy: dict[str, Mapping[str, str]]) -> None:
        settings = self.settings
        subject = gpu_subject(gpu.uuid)
        labels: dict[str, str] = {
            "cluster": gpu.cluster,
            "node": gpu.node,
            "gpu": gpu.uuid,
            "index": str(gpu.index),
            "model": gpu.model,
        }
        self.known[gpu.uuid] = _Known(gpu.cluster, labels, t)
        whole = not gpu.slices
        # signals judge the device: a time-sliced GPU names the first of its pods
        workload = gpu.workloads[0] if gpu.workloads else None
        if whole and workload is not None:
            labels.update(namespace=workload.namespace, pod=workload.pod, gpus="1")
        before = len(out)
        if gpu.xid:
            xid_labels = {**labels, "xid_message": XID_MESSAGES.get(gpu.xid, "unknown XID")}
            out.append(Signal(XID, subject, CRITICAL, float(gpu.xid), t, xid_labels))
        if gpu.temperature_c is not None and gpu.temperature_c >= settings.thermal_threshold_c:
            out.append(Signal(THERMAL, subject, WARNING, gpu.temperature_c, t, labels))
        gauges = (gpu.utilization, gpu.memory_used_mib, gpu.temperature_c, gpu.power_watts)
        if all(v is None for v in gauges) and not gpu.slices:
            out.append(Signal(STALE, subject, WARNING, None, t, labels))
        if whole:
            self._usage(
                subject,
                labels,
                gpu.utilization,
                gpu.memory_used_mib,
                gpu.memory_total_mib,
                (gpu.cluster, gpu.model, *((workload.namespace, workload.pod) if workload else ("", ""))),
                t,
                out,
            )
        if len(out) == before:
            healthy[subject] = labels
        for part in gpu.slices:
            self._slice(gpu, part, labels, t, out, healthy)

    def _slice(
        self,
        gpu: GpuReading,
        part: SliceReading,
        gpu_labels: Mapping[str, str],
        t: float,
        out: list[Signal],
        healthy: dict[str, Mapping[str, str]],
    ) -> None:
        subject = slice_subject(gpu.uuid, part.mig_instance_id)
        labels = {**gpu_labels, "instance": str(part.mig_instance_id), "profile": part.profile}
        workload = part.workloads[0] if part.workloads else None
        if workload is not None:
            labels.update(
                namespace=workload.namespace, pod=workload.pod, gpus=f"{slice_fraction(part.profile, gpu.model):.4f}"
            )
        before = len(out)
        pod = (workload.namespace, workload.pod) if workload else ("", "")
        cohort = (gpu.cluster, f"{gpu.model} {part.profile}", *pod)
        self._usage(subject, labels, part.utilization, part.memory_used_mib, part.memory_total_mib, cohort, t, out)
        if len(out) == before:
            healthy[subject] = labels

    def _usage(
        self,
        subject: str,
        labels: Mapping[str, str],
        utilization: float | None,
        used: float | None,
        total: float | None,
        cohort: tuple[str, ...],
        t: float,
        out: list[Signal],
    ) -> None:
        allocated = "pod" in labels
        if used is not None and total and used / total >= self.settings.memory_full_fraction:
            out.append(Signal(MEMORY_FULL, subject, INFO, round(used / total, 4), t, labels))
        if not allocated or utilization is None:
            return
        if utilization < self.idle_threshold:
            out.append(Signal(IDLE_ALLOCATED, subject, WARNING, utilization, t, labels))
        self.stragglers.observe(cohort, subject, utilization / 100, t)

    def _missing(self, poll: PollObservation, t: float, out: list[Signal]) -> None:
        answered = set(poll.clusters)
        settings = self.settings
        gone = []
        for uuid, known in self.known.items():
            if known.cluster not in answered or known.last_seen >= t:
                continue
            absent = t - known.last_seen
            if absent > settings.missing_forget_seconds:
                gone.append(uuid)
            elif absent >= self.missing_after_seconds:
                out.append(Signal(MISSING, gpu_subject(uuid), CRITICAL, round(absent, 1), t, known.labels))
        for uuid in gone:
            del self.known[uuid]

    def counters(self) -> dict[str, int]:
        return self.stragglers.counters()
