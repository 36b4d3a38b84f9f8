"""The in-process simulated source: the demo's fleet, read without any network or Prometheus.

It turns the simulator's per-step state into a :class:`Snapshot` the way a Prometheus source would
after querying ``avg_over_time``/``max_over_time`` for utilisation and the latest sample for other
gauges, so the rest of the worker cannot tell the two apart. MIG GPUs carry usage on their slices
only, as dcgm-exporter reports them, and utilisation follows the same rule
(:func:`~domain.telemetry.dcgm.utilization_percent`) over what the fleet's exporter reports: a
cluster with ``mig_gpu_util = "zero"`` or without profiling metrics reads exactly as it would
through Prometheus (a slice without engine activity is unknown, not idle).
"""

from __future__ import annotations

from datetime import datetime

from domain.settings import SourceSettings
from domain.telemetry.dcgm import utilization_percent
from domain.telemetry.readings import GpuReading, ProfilingReading, ProjectQuota, SliceReading, Snapshot
from simulator import Fleet, FleetState, GpuState, Simulation, SliceState, load_fleet

MAX_WINDOW_STEPS = 240
"""Longer windows are sampled at this many evenly spaced steps, bounding the cost of one poll."""


class SimulatedSource:
    """A :class:`~worker.sources.Source` backed by :class:`simulator.Simulation`."""

    def __init__(self, name: str, fleet: Fleet, *, seed: int = 42) -> None:
        self.name = name
        self.kind = "simulated"
        self.url: str | None = None
        self.fleet = fleet
        self.simulation = Simulation(fleet, seed)

    @classmethod
    def from_settings(cls, source: SourceSettings) -> SimulatedSource:
        """Build from a ``[[sources]]`` entry; raises :class:`simulator.FleetError` for a bad fleet file."""
        return cls(source.name, load_fleet(source.fleet), seed=source.seed)

    def poll(self, now: datetime, window_seconds: float) -> Snapshot:
        steps = list(self.simulation.steps_in_window(now, window_seconds))
        if len(steps) > MAX_WINDOW_STEPS:
            stride = len(steps) / MAX_WINDOW_STEPS
            steps = sorted({steps[int(i * stride)] for i in range(MAX_WINDOW_STEPS)} | {steps[-1]})
        states = [self.simulation.state_at_step(step) for step in steps]
        latest = states[-1]
        history = _utilization_history(states)
        gpus = tuple(_reading(gpu, history) for gpu in latest.gpus)
        quotas = tuple(ProjectQuota(q.cluster, q.namespace, q.hard) for q in latest.quotas)
        return Snapshot(
            source=self.name,
            taken_at=now,
            window_seconds=window_seconds,
            clusters=self.fleet.cluster_names,
            gpus=gpus,
            quotas=quotas,
        )


def _utilization_history(states: list[FleetState]) -> dict[tuple[str, int | None], list[float]]:
    """Utilisation samples per GPU (instance None) or slice over the window, oldest first."""
    history: dict[tuple[str, int | None], list[float]] = {}
    for state in states:
        for gpu in state.gpus:
            whole = utilization_percent(_float(gpu.utilization), gpu.engine_active, mig=gpu.mig_mode)
            if whole is not None:
                history.setdefault((gpu.uuid, None), []).append(whole)
            for part in gpu.slices:
                known = utilization_percent(part.gpu_util, part.engine_active, mig=True)
                if known is not None:
                    history.setdefault((gpu.uuid, part.instance_id), []).append(known)
    return history


def _stats(samples: list[float] | None) -> tuple[float | None, float | None]:
    if not samples:
        return None, None
    return round(sum(samples) / len(samples), 3), max(samples)


def _reading(gpu: GpuState, history: dict[tuple[str, int | None], list[float]]) -> GpuReading:
    average, peak = _stats(history.get((gpu.uuid, None)))
    return GpuReading(
        cluster=gpu.cluster,
        node=gpu.node,
        uuid=gpu.uuid,
        index=gpu.index,
        model=gpu.model,
        pci_bus_id=gpu.pci_bus_id,
        driver_version=gpu.driver_version,
        utilization=average,
        utilization_max=peak,
        memory_used_mib=_float(gpu.memory_used_mib),
        memory_free_mib=_float(gpu.memory_free_mib),
        memory_reserved_mib=_float(gpu.memory_reserved_mib),
        power_watts=gpu.power_watts,
        temperature_c=float(gpu.temperature_c),
        xid=gpu.xid,
        workloads=gpu.pods,
        slices=tuple(_slice(gpu.uuid, part, history) for part in gpu.slices),
        profiling=ProfilingReading.of(gpu.profiling) if gpu.profiling else None,
    )


def _slice(uuid: str, part: SliceState, history: dict[tuple[str, int | None], list[float]]) -> SliceReading:
    average, peak = _stats(history.get((uuid, part.instance_id)))
    return SliceReading(
        mig_instance_id=part.instance_id,
        profile=part.profile,
        utilization=average,
        utilization_max=peak,
        memory_used_mib=float(part.memory_used_mib),
        memory_total_mib=float(part.memory_total_mib),
        workloads=part.pods,
        profiling=ProfilingReading.of(part.profiling) if part.profiling else None,
    )


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)
