"""A simulated GPU fleet: the demo's data source and a synthetic dcgm-exporter.

One fleet model (clusters > nodes > GPUs and MIG slices, namespaces with quotas, workloads with
behaviours such as idle-but-allocated, straggler, XID errors and thermal trouble) is read from a
TOML file by :func:`load_fleet` and stepped deterministically by :class:`Simulation`. The same
state feeds the worker's in-process source and :func:`render`/:func:`serve`, which speak
dcgm-exporter and kube-state-metrics in Prometheus text format, so both always agree.
"""

from simulator.engine import (
    DEFAULT_STEP_SECONDS,
    FleetState,
    GpuState,
    PodState,
    QuotaState,
    Simulation,
    SliceState,
)
from simulator.exposition import CONTENT_TYPE, render
from simulator.fleet import (
    GPU_MODELS,
    Cluster,
    Device,
    Fleet,
    FleetError,
    Gpu,
    GpuModel,
    MigSlice,
    Namespace,
    Node,
    Workload,
    load_fleet,
    parse_fleet,
)
from simulator.server import DEFAULT_PORT, MetricsServer, make_server, serve

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_PORT",
    "DEFAULT_STEP_SECONDS",
    "GPU_MODELS",
    "Cluster",
    "Device",
    "Fleet",
    "FleetError",
    "FleetState",
    "Gpu",
    "GpuModel",
    "GpuState",
    "MetricsServer",
    "MigSlice",
    "Namespace",
    "Node",
    "PodState",
    "QuotaState",
    "Simulation",
    "SliceState",
    "Workload",
    "load_fleet",
    "make_server",
    "parse_fleet",
    "render",
    "serve",
]
