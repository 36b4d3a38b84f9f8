"""Deterministic fleet state in time: the value of every gauge is a pure function of (fleet, seed, step).

Time is cut into steps of ``fleet.step_seconds`` (``step = floor(epoch seconds / step_seconds)``).
Nothing carries over from one step to the next and randomness comes only from ``random.Random``
instances seeded with ``(seed, device, step)``, so the in-process source and a separate exporter
process compute identical values for the same instant, and any step can be computed on its own.
"""

from __future__ import annotations

import math
import random
import threading
import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from domain.telemetry.readings import PodRef
from simulator.fleet import Cluster, Device, Fleet, Gpu, MigSlice, Workload
from simulator.profiles import profiling_values

DEFAULT_STEP_SECONDS = 15.0
_WAVE_STEPS = 40  # period of the slow utilisation wave, in steps (10 minutes at 15 s)
_STRAGGLER_FACTOR = 0.25
_THERMAL_POWER_FRACTION = 0.7  # a thermally throttled GPU is held at this fraction of its TDP
_CACHE_STEPS = 512

Holding = tuple[Workload, int]
"""A workload holding a device, with the device's position among its devices."""


@dataclass(frozen=True, slots=True)
class SliceState:
    instance_id: int
    profile: str
    utilization: float
    """Percent, the slice's true activity (what ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` x 100 reports)."""
    engine_active: float | None
    """``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` as exported: None where the cluster has no profiling metrics."""
    memory_used_mib: int
    memory_free_mib: int
    pods: tuple[PodRef, ...] = ()
    """Every pod using the slice (several when time-sliced), none when idle."""
    gpu_util: float | None = None
    """``DCGM_FI_DEV_GPU_UTIL`` as exported on the instance: absent (None) or 0, by the cluster's
    ``mig_gpu_util``; never the slice's activity (DCGM does not support the field on MIG)."""
    profiling: dict[str, float] | None = None
    """The profiling families (:mod:`simulator.profiles`), None where the cluster has none."""

    @property
    def memory_total_mib(self) -> int:
        return self.memory_used_mib + self.memory_free_mib


@dataclass(frozen=True, slots=True)
class GpuState:
    """One GPU at one step, as its exporter reports it (a None field is a series not exported).

    MIG GPUs carry usage on their slices; their own usage fields are None, except ``utilization``
    (``DCGM_FI_DEV_GPU_UTIL``), which is 0 where the cluster's ``mig_gpu_util`` is ``zero``.

    This is what an exporter *exports* at one instant, raw (both activity families, memory as
    integers, profiling by family), not a :class:`~domain.telemetry.readings.GpuReading`, which is
    what a source *reads* over a poll window after the utilisation rule and the sanity checks; the
    simulated source turns the one into the other as the Prometheus source does for real series.
    """

    cluster: str
    node: str
    index: int
    uuid: str
    pci_bus_id: str
    model: str
    driver_version: str
    power_watts: float
    temperature_c: int
    xid: int
    utilization: int | None = None
    engine_active: float | None = None
    memory_used_mib: int | None = None
    memory_free_mib: int | None = None
    memory_reserved_mib: int | None = None
    pods: tuple[PodRef, ...] = ()
    """Every pod using the whole GPU (several when time-sliced), none when idle."""
    slices: tuple[SliceState, ...] = ()
    profiling: dict[str, float] | None = None
    """The profiling families of a whole GPU (:mod:`simulator.profiles`), None where the cluster has none
    (MIG GPUs report them per instance)."""

    @property
    def mig_mode(self) -> bool:
        return bool(self.slices)


@dataclass(frozen=True, slots=True)
class PodState:
    """A running pod and its GPU requests (``kube_pod_container_resource_requests``)."""

    cluster: str
    namespace: str
    pod: str
    container: str
    node: str
    requests: tuple[tuple[str, int], ...]
    """(kube-state-metrics resource name, count), e.g. ("nvidia_com_gpu", 2)."""


@dataclass(frozen=True, slots=True)
class QuotaState:
    """``kube_resourcequota`` for ``requests.nvidia.com/gpu`` of one namespace."""

    cluster: str
    namespace: str
    hard: float
    used: float


@dataclass(frozen=True, slots=True)
class FleetState:
    step: int
    at: datetime
    """Start of the step."""
    gpus: tuple[GpuState, ...]
    pods: tuple[PodState, ...]
    quotas: tuple[QuotaState, ...]
    fleet: Fleet = field(compare=False, repr=False)

    @property
    def clusters(self) -> tuple[str, ...]:
        return self.fleet.cluster_names

    def gpu(self, uuid: str) -> GpuState:
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return gpu
        raise KeyError(uuid)


def as_utc(t: datetime) -> datetime:
    """Naive datetimes are taken to be UTC, so callers cannot shift steps by a local offset."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


class Simulation:
    """Steps a fleet in time. Thread-safe; recent steps are cached."""

    def __init__(self, fleet: Fleet, seed: int = 42) -> None:
        self.fleet = fleet
        self.seed = seed
        self.step_seconds = fleet.step_seconds or DEFAULT_STEP_SECONDS
        self._cache: OrderedDict[int, FleetState] = OrderedDict()
        self._lock = threading.Lock()

    def step_at(self, t: datetime) -> int:
        return math.floor(as_utc(t).timestamp() / self.step_seconds)

    def time_of(self, step: int) -> datetime:
        return datetime.fromtimestamp(step * self.step_seconds, UTC)

    def steps_in_window(self, now: datetime, window_seconds: float) -> range:
        """Steps whose start lies in ``(now - window, now]``; always at least the current step."""
        last = self.step_at(now)
        first = math.floor((as_utc(now).timestamp() - window_seconds) / self.step_seconds) + 1
        return range(min(first, last), last + 1)

    def schedule_seconds(self, step: int) -> float:
        """Where ``step`` falls on the fleet's schedule clock (since epoch, modulo cycle)."""
        elapsed = step * self.step_seconds
        if self.fleet.epoch is not None:
            elapsed -= self.fleet.epoch.timestamp()
        if self.fleet.cycle_seconds:
            elapsed %= self.fleet.cycle_seconds
        return elapsed

    def state_at(self, t: datetime) -> FleetState:
        return self.state_at_step(self.step_at(t))

    def state_at_step(self, step: int) -> FleetState:
        with self._lock:
            cached = self._cache.get(step)
            if cached is not None:
                self._cache.move_to_end(step)
                return cached
        state = self._compute(step)
        with self._lock:
            self._cache[step] = state
            while len(self._cache) > _CACHE_STEPS:
                self._cache.popitem(last=False)
        return state

    # --- one step ---------------------------------------------------------------------------

    def _compute(self, step: int) -> FleetState:
        elapsed = self.schedule_seconds(step)
        gpus: list[GpuState] = []
        pods: list[PodState] = []
        quotas: list[QuotaState] = []
        for cluster in self.fleet.clusters:
            active = [w for w in cluster.workloads if w.active_at(elapsed)]
            holders: dict[tuple[str, int, int | None], list[Holding]] = {}
            for workload in active:  # several only on a time-sliced (shared) device
                for position, device in enumerate(workload.devices):
                    holders.setdefault((device.node, device.gpu, device.instance_id), []).append((workload, position))
            xids = _xids(active, elapsed)
            for gpu in cluster.gpus():
                gpus.append(self._gpu(cluster, gpu, step, holders, xids.get((gpu.node, gpu.index), 0)))
            pods.extend(_pod(workload) for workload in active)
            quotas.extend(_quotas(cluster, active))
        return FleetState(step, self.time_of(step), tuple(gpus), tuple(pods), tuple(quotas), self.fleet)

    def _rng(self, key: str, step: int) -> random.Random:
        return random.Random(f"{self.seed}|{key}|{step}")

    def _utilization(self, key: str, step: int, holding: Sequence[Holding]) -> float:
        """The device's activity: its pod's, or the sum of its time-sliced pods' (at most 100 %)."""
        if len(holding) > 1:
            return min(100.0, sum(self._one_utilization(f"{key}#{w.pod}", step, (w, p)) for w, p in holding))
        return self._one_utilization(key, step, holding[0] if holding else None)

    def _one_utilization(self, key: str, step: int, holder: Holding | None) -> float:
        if holder is None:
            return 0.0
        workload, position = holder
        rng = self._rng(key + "#util", step)
        if _resting(workload, position):
            return rng.uniform(0.0, 2.0)
        if workload.behaviour == "steady":
            return workload.utilization
        phase = (zlib.crc32(f"{self.seed}|{key}".encode()) % 1000) / 1000 * 2 * math.pi
        wave = 5.0 * math.sin(2 * math.pi * step / _WAVE_STEPS + phase)
        level = workload.utilization
        if workload.straggler_device == position:
            level *= _STRAGGLER_FACTOR
            wave *= _STRAGGLER_FACTOR
        return min(100.0, max(0.0, level + wave + rng.gauss(0.0, 2.0)))

    def _memory_used(self, key: str, step: int, usable: int, holding: Sequence[Holding]) -> int:
        if not holding:
            return 0
        jitter = self._rng(key + "#mem", step).uniform(-0.02, 0.02)
        fraction = min(
            1.0,
            sum(
                _RESTING_MEMORY_FRACTION if w.kind == "over-requested" and p else w.memory_fraction for w, p in holding
            ),
        )
        return min(usable, max(0, round(usable * fraction * (1 + jitter))))

    def _profiling(
        self, cluster: Cluster, key: str, step: int, utilization: float, holder: tuple[Workload, int] | None
    ) -> dict[str, float] | None:
        if not cluster.profiling:
            return None
        kind = holder[0].kind if holder is not None else "balanced"
        nvlink = holder is not None and len(holder[0].devices) > 1 and holder[0].devices[0].instance_id is None
        return profiling_values(kind, utilization / 100, self._rng(key + "#prof", step), nvlink=nvlink)

    def _gpu(
        self,
        cluster: Cluster,
        gpu: Gpu,
        step: int,
        holders: Mapping[tuple[str, int, int | None], Sequence[Holding]],
        xid: int,
    ) -> GpuState:
        model = gpu.model
        if gpu.mig_mode:
            slices = tuple(
                self._slice(cluster, gpu, s, step, holders.get((gpu.node, gpu.index, s.instance_id), ()))
                for s in gpu.slices
            )
            busy = sum(s.utilization * m.compute_slices for s, m in zip(slices, gpu.slices, strict=True)) / 7
            thermal = any(
                w.behaviour == "thermal"
                for m in gpu.slices
                for w, _ in holders.get((gpu.node, gpu.index, m.instance_id), ())
            )
            power, temperature = self._power_temperature(gpu, step, busy, thermal=thermal)
            return GpuState(
                **_identity(gpu, model.name, power, temperature, xid),
                utilization=0 if cluster.mig_gpu_util == "zero" else None,
                slices=slices,
            )
        holding = holders.get((gpu.node, gpu.index, None), ())
        util = self._utilization(gpu.uuid, step, holding)
        usable = model.memory_mib - model.reserved_mib
        used = self._memory_used(gpu.uuid, step, usable, holding)
        engine = 0.0
        if holding and all(w.behaviour == "steady" for w, _ in holding):
            engine = util / 100
        elif util > 0:
            engine = max(0.0, util / 100 - self._rng(gpu.uuid + "#engine", step).uniform(0.0, 0.04))
        thermal = any(w.behaviour == "thermal" for w, _ in holding)
        power, temperature = self._power_temperature(gpu, step, util, thermal=thermal)
        return GpuState(
            **_identity(gpu, model.name, power, temperature, xid),
            utilization=round(util),
            engine_active=round(engine, 4) if cluster.profiling else None,
            memory_used_mib=used,
            memory_free_mib=usable - used,
            memory_reserved_mib=model.reserved_mib,
            pods=_labels(holding),
            profiling=self._profiling(cluster, gpu.uuid, step, util, holding[0] if holding else None),
        )

    def _slice(self, cluster: Cluster, gpu: Gpu, mig: MigSlice, step: int, holding: Sequence[Holding]) -> SliceState:
        key = f"{gpu.uuid}/{mig.instance_id}"
        engine = round(self._utilization(key, step, holding) / 100, 4)
        used = self._memory_used(key, step, mig.memory_mib, holding)
        return SliceState(
            instance_id=mig.instance_id,
            profile=mig.profile,
            utilization=round(engine * 100, 2),
            engine_active=engine if cluster.profiling else None,
            memory_used_mib=used,
            memory_free_mib=mig.memory_mib - used,
            pods=_labels(holding),
            gpu_util=0.0 if cluster.mig_gpu_util == "zero" else None,
            profiling=self._profiling(cluster, key, step, engine * 100, holding[0] if holding else None),
        )

    def _power_temperature(self, gpu: Gpu, step: int, util: float, *, thermal: bool) -> tuple[float, int]:
        model = gpu.model
        rng = self._rng(gpu.uuid + "#power", step)
        if thermal:
            power = model.max_watts * _THERMAL_POWER_FRACTION + rng.uniform(-1.5, 1.5)
            return round(power, 3), 91 + min(5, int(rng.uniform(0, 6)))
        span = model.max_watts - model.idle_watts
        power = model.idle_watts + span * 0.9 * (util / 100) ** 1.1 + rng.gauss(0.0, 2.0)
        power = min(model.max_watts, max(model.idle_watts * 0.9, power))
        temperature = 31 + 0.47 * util + rng.gauss(0.0, 1.0)
        return round(power, 3), round(min(85.0, max(28.0, temperature)))


_RESTING_MEMORY_FRACTION = 0.02
"""Framebuffer an over-requested workload's unused GPUs hold (a CUDA context)."""


def _resting(workload: Workload, position: int) -> bool:
    """Whether this device of the workload does (almost) nothing: idle workloads, idle notebooks, and
    every GPU but the first of an over-requested one."""
    if workload.behaviour == "idle" or workload.kind == "idle-notebook":
        return True
    return workload.kind == "over-requested" and position > 0


def _identity(gpu: Gpu, model: str, power: float, temperature: int, xid: int) -> dict[str, Any]:
    """What a GPU's state says of the device itself, whether whole or partitioned."""
    return {
        "cluster": gpu.cluster,
        "node": gpu.node,
        "index": gpu.index,
        "uuid": gpu.uuid,
        "pci_bus_id": gpu.pci_bus_id,
        "model": model,
        "driver_version": gpu.driver_version,
        "power_watts": power,
        "temperature_c": temperature,
        "xid": xid,
    }


def _labels(holding: Sequence[Holding]) -> tuple[PodRef, ...]:
    return tuple(PodRef(w.namespace, w.pod, w.container) for w, _ in holding)


def _xids(active: list[Workload], elapsed: float) -> dict[tuple[str, int], int]:
    """XID codes by (node, GPU index): an XID lands on the parent GPU even for a MIG slice."""
    out: dict[tuple[str, int], int] = {}
    for workload in active:
        code = workload.xid_at(elapsed)
        if code:
            device: Device = workload.devices[workload.xid_device]
            out[(device.node, device.gpu)] = code
    return out


def _pod(workload: Workload) -> PodState:
    counts: dict[str, int] = {}
    for device in workload.devices:
        counts[device.resource] = counts.get(device.resource, 0) + 1
    return PodState(
        cluster=workload.cluster,
        namespace=workload.namespace,
        pod=workload.pod,
        container=workload.container,
        node=workload.node,
        requests=tuple(sorted(counts.items())),
    )


def _quotas(cluster: Cluster, active: list[Workload]) -> list[QuotaState]:
    out = []
    for namespace in cluster.namespaces:
        if namespace.gpu_quota is None:
            continue
        used = sum(
            1 for w in active if w.namespace == namespace.name for d in w.devices if d.resource == "nvidia_com_gpu"
        )
        out.append(QuotaState(cluster.name, namespace.name, namespace.gpu_quota, float(used)))
    return out
