"""The fleet a simulation runs: clusters > nodes > GPUs (with MIG slices), namespaces and workloads.

A fleet file (TOML) is first parsed into a strict schema, then *resolved* into frozen dataclasses:
GPU identities (UUID, PCI bus id, MIG ``GPU_I_ID``) are derived and every workload is pinned to
concrete devices. Resolution happens once, at load time, so the engine only steps values in time
and never makes placement decisions, and two processes loading the same file see the same fleet.
Every problem raises :class:`FleetError` naming the file and the key (``clusters[0].nodes[1].model``).

File format (see ``default_fleet.toml`` for a full example)::

    name = "my-fleet"            # optional
    step_seconds = 15            # values change once per step
    epoch = 2025-01-01T00:00:00Z # optional: schedule times count from here ...
    cycle_seconds = 3600         # ... and/or repeat with this period (from the Unix epoch if no epoch)

    [[clusters]]
    name = "prod"
    pod_labels = "plain"         # plain | exported (OpenShift) | legacy
    exporter_namespace = "nvidia-gpu-operator"
    exporter_hostname = "node"   # node | pod: Hostname is the exporter pod's name (kube_pod_info maps it)
    xid_errors_count = false     # also serve DCGM_EXP_XID_ERRORS_COUNT
    dcgm = true                  # false: no dcgm-exporter series, only kube-state-metrics and GPU Operator
    profiling = true             # DCGM_FI_PROF_* (GR_ENGINE_ACTIVE, ...); false as without DCGM profiling
    mig_gpu_util = "absent"      # DCGM_FI_DEV_GPU_UTIL on MIG GPUs and slices: absent | zero (exporter versions differ)
    counters = "minimal"         # minimal: the families the product reads | default: dcgm-exporter's default set

    [[clusters.nodes]]
    hostname = "gpu-01"
    model = "NVIDIA A100-SXM4-80GB"   # or an alias: a100, a100-40gb, h100, l40s
    gpus = 4
    driver_version = "550.54.15"
    mig = [{ gpu = 0, profiles = ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"] }]  # instance_ids optional

    [[clusters.namespaces]]
    name = "team-a"
    gpu_quota = 8                # kube_resourcequota requests.nvidia.com/gpu

    [[clusters.workloads]]
    namespace = "team-a"
    pod = "train-0"
    container = "trainer"
    utilization = 85             # percent, the level "normal" GPUs hover around
    behaviour = "normal"         # normal | idle | steady (exactly `utilization`, no noise) | straggler | xid | thermal
    kind = "balanced"            # profiling shape: balanced | compute-bound | tensor-heavy | memory-hoarding |
                                 #   data-loader-bound | over-requested (only device 0 works) | idle-notebook
    devices = [{ node = "gpu-01", gpu = 1 }, { node = "gpu-01", gpu = 0, profile = "1g.10gb" }]
    # or: count = 2 (+ optional node, model, profile) placed on the first node with room
    # optional: starts_after_seconds, stops_after_seconds, memory_fraction,
    #           xid_code (79), xid_after_seconds, xid_device, straggler_device
    # shared = true: time-sliced; shared workloads may hold the same devices at once (dcgm-exporter
    #           then reports one series per pod, and the device's activity is their sum, at most 100 %)
"""

from __future__ import annotations

import re
import tomllib
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from simulator.profiles import Kind

PodLabelStyle = Literal["plain", "exported", "legacy"]
"""How a cluster's Prometheus names pod labels on dcgm-exporter series.

``plain``: namespace/pod/container; ``exported``: OpenShift monitoring renames them to
exported_namespace/exported_pod/exported_container and ``namespace``/``pod``/``container`` name the
exporter itself; ``legacy``: old dcgm-exporter releases, pod_namespace/pod_name/container_name.
"""

Behaviour = Literal["normal", "idle", "steady", "straggler", "xid", "thermal"]
"""``steady`` holds exactly ``utilization`` at every step (no wave, no noise): exact figures for tests."""

MigGpuUtil = Literal["absent", "zero"]
"""What dcgm-exporter reports as ``DCGM_FI_DEV_GPU_UTIL`` on a MIG GPU and its instances: DCGM does not
support the field there, and exporter versions either leave the series out or report it as 0."""

Counters = Literal["minimal", "default"]
"""The dcgm-exporter families served: ``minimal``, those AI Telemetry reads; ``default``, every family of
dcgm-exporter's default counter set as the GPU Operator ships it (``dcp-metrics-included.csv``: clocks,
energy, PCIe, NVLink, remapped rows, profiling metrics, ...), for scale tests with realistic volume."""

ExporterHostname = Literal["node", "pod"]
"""What dcgm-exporter's ``Hostname`` label holds: the node's name (host networking or NODE_NAME set),
or, as without host networking, the exporter pod's own name, which ``kube_pod_info`` maps to its node."""

DEFAULT_FLEET_FILE = "default_fleet.toml"
DEFAULT_DRIVER_VERSION = "550.54.15"
DEFAULT_EXPORTER_NAMESPACE = "nvidia-gpu-operator"
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/ai-telemetry/simulator")
_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
_PROFILE = re.compile(r"^(?P<compute>[1-7])g\.(?P<memory>\d+)gb$")
_COMPUTE_SIZES = (1, 2, 3, 4, 7)
# The PCI bus ids of an 8-GPU HGX/DGX baseboard, in nvidia-smi index order.
_PCI_BUSES = (0x07, 0x0F, 0x47, 0x4E, 0x87, 0x90, 0xB7, 0xBD)
# GPU instance ids the driver hands out per compute size (A100/H100 placement tables, simplified).
_INSTANCE_ID_POOLS: dict[int, tuple[int, ...]] = {
    7: (0,),
    4: (1,),
    3: (1, 2),
    2: (3, 4, 5),
    1: (7, 8, 9, 10, 11, 12, 13, 14),
}
# Framebuffer a MIG instance reports (MiB), as seen on 80 GB parts; others are derived from the name.
_PROFILE_MEMORY_MIB = {
    "1g.10gb": 9728,
    "1g.20gb": 19968,
    "2g.20gb": 19968,
    "3g.40gb": 40192,
    "4g.40gb": 40192,
    "7g.80gb": 80896,
}

XID_MESSAGES: dict[int, str] = {
    13: "Graphics Engine Exception",
    31: "GPU memory page fault",
    43: "GPU stopped processing",
    45: "Preemptive cleanup, due to previous errors",
    48: "Double Bit ECC Error",
    63: "ECC page retirement or row remapping recording event",
    64: "ECC page retirement or row remapper recording failure",
    74: "NVLINK Error",
    79: "GPU has fallen off the bus",
    92: "High single-bit ECC error rate",
    94: "Contained ECC error",
    95: "Uncontained ECC error",
    119: "GSP RPC Timeout",
}
"""The ``err_msg`` dcgm-exporter attaches to ``DCGM_FI_DEV_XID_ERRORS`` for common XID codes."""


class FleetError(ValueError):
    """A fleet file is missing or invalid; the message names the file and the key."""


# --- The resolved fleet -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpuModel:
    """Hardware facts the engine needs to produce plausible values for one GPU model."""

    name: str
    memory_mib: int
    reserved_mib: int
    idle_watts: float
    max_watts: float
    mig_capable: bool
    aliases: tuple[str, ...] = ()

    @property
    def memory_gb(self) -> int:
        return round(self.memory_mib / 1024)


GPU_MODELS: tuple[GpuModel, ...] = (
    GpuModel("NVIDIA A100-SXM4-80GB", 81920, 567, 55.0, 400.0, True, ("a100", "a100-80gb")),
    GpuModel("NVIDIA A100-SXM4-40GB", 40960, 491, 50.0, 400.0, True, ("a100-40gb",)),
    GpuModel("NVIDIA H100 80GB HBM3", 81559, 519, 70.0, 700.0, True, ("h100", "h100-80gb")),
    GpuModel("NVIDIA L40S", 46068, 483, 35.0, 350.0, False, ("l40s",)),
)


def gpu_model(name: str) -> GpuModel:
    """Look a model up by its full ``modelName`` or a short alias (case-insensitive)."""
    wanted = name.strip().lower()
    for model in GPU_MODELS:
        if wanted == model.name.lower() or wanted in model.aliases:
            return model
    known = ", ".join(f'"{m.name}"' for m in GPU_MODELS)
    raise ValueError(f"unknown GPU model {name!r}; known: {known} (or aliases a100, h100, l40s)")


@dataclass(frozen=True, slots=True)
class MigSlice:
    """One MIG GPU instance: what dcgm-exporter reports as ``GPU_I_ID`` / ``GPU_I_PROFILE``."""

    instance_id: int
    profile: str
    compute_slices: int
    memory_mib: int


@dataclass(frozen=True, slots=True)
class Gpu:
    cluster: str
    node: str
    index: int
    uuid: str
    pci_bus_id: str
    model: GpuModel
    driver_version: str
    slices: tuple[MigSlice, ...] = ()

    @property
    def mig_mode(self) -> bool:
        return bool(self.slices)

    def slice(self, instance_id: int) -> MigSlice:
        for candidate in self.slices:
            if candidate.instance_id == instance_id:
                return candidate
        raise KeyError(instance_id)


@dataclass(frozen=True, slots=True)
class Node:
    cluster: str
    hostname: str
    model: GpuModel
    driver_version: str
    gpus: tuple[Gpu, ...]


@dataclass(frozen=True, slots=True)
class Device:
    """A whole GPU (``instance_id`` None) or one MIG slice held by a workload."""

    node: str
    gpu: int
    instance_id: int | None = None
    profile: str | None = None

    @property
    def resource(self) -> str:
        """The extended resource the pod requests, as kube-state-metrics names it (mixed MIG strategy)."""
        if self.profile is None:
            return "nvidia_com_gpu"
        return "nvidia_com_mig_" + self.profile.replace(".", "_")


@dataclass(frozen=True, slots=True)
class Workload:
    """One pod (one GPU container) holding whole GPUs or MIG slices on one node."""

    cluster: str
    namespace: str
    pod: str
    container: str
    node: str
    devices: tuple[Device, ...]
    utilization: float
    behaviour: Behaviour
    memory_fraction: float
    starts_after_seconds: float | None = None
    stops_after_seconds: float | None = None
    xid_code: int | None = None
    xid_after_seconds: float = 0.0
    xid_device: int = 0
    straggler_device: int | None = None
    kind: str = "balanced"
    """What its profiling metrics look like (:data:`simulator.profiles.KINDS`)."""
    shared: bool = False
    """Time-sliced: may hold its devices together with other shared workloads (the device plugin's
    ``sharing.timeSlicing`` replicas); dcgm-exporter then reports one series per pod."""

    def active_at(self, elapsed_seconds: float) -> bool:
        """Whether the pod exists ``elapsed_seconds`` into the fleet's schedule."""
        if self.starts_after_seconds is not None and elapsed_seconds < self.starts_after_seconds:
            return False
        return self.stops_after_seconds is None or elapsed_seconds < self.stops_after_seconds

    def xid_at(self, elapsed_seconds: float) -> int:
        """The XID code the workload's ``xid_device`` reports at that point of the schedule, else 0."""
        if self.xid_code is None or not self.active_at(elapsed_seconds):
            return 0
        since = (self.starts_after_seconds or 0.0) + self.xid_after_seconds
        return self.xid_code if elapsed_seconds >= since else 0


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    gpu_quota: float | None = None


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str
    pod_labels: PodLabelStyle
    exporter_namespace: str
    nodes: tuple[Node, ...]
    namespaces: tuple[Namespace, ...]
    workloads: tuple[Workload, ...]
    exporter_hostname: ExporterHostname = "node"
    xid_errors_count: bool = False
    dcgm: bool = True
    profiling: bool = True
    """DCGM profiling metrics (``DCGM_FI_PROF_*``) exported; without them a MIG slice's activity is unknown."""
    mig_gpu_util: MigGpuUtil = "absent"
    counters: Counters = "minimal"

    def gpus(self) -> Iterator[Gpu]:
        for node in self.nodes:
            yield from node.gpus

    def node(self, hostname: str) -> Node:
        for node in self.nodes:
            if node.hostname == hostname:
                return node
        raise KeyError(hostname)


@dataclass(frozen=True, slots=True)
class Fleet:
    name: str
    step_seconds: float
    epoch: datetime | None
    cycle_seconds: float | None
    clusters: tuple[Cluster, ...]
    source: str = "<built-in>"
    """Where the fleet came from (a file path or ``<built-in>``), for messages."""

    @property
    def cluster_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.clusters)

    def cluster(self, name: str) -> Cluster:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise KeyError(name)

    def gpus(self) -> Iterator[Gpu]:
        for cluster in self.clusters:
            yield from cluster.gpus()

    def workloads(self) -> Iterator[Workload]:
        for cluster in self.clusters:
            yield from cluster.workloads


# --- The file schema ----------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _MigFile(_Strict):
    gpu: int = Field(ge=0)
    profiles: list[str] = Field(min_length=1, max_length=7)
    instance_ids: list[int] | None = None

    @model_validator(mode="after")
    def _ids_match(self) -> _MigFile:
        if self.instance_ids is not None:
            if len(self.instance_ids) != len(self.profiles):
                raise ValueError("instance_ids needs one id per profile")
            if len(set(self.instance_ids)) != len(self.instance_ids):
                raise ValueError("instance_ids must be distinct")
        return self


class _NodeFile(_Strict):
    hostname: str = Field(pattern=_NAME)
    model: str
    gpus: int = Field(ge=1, le=16)
    driver_version: str = DEFAULT_DRIVER_VERSION
    mig: list[_MigFile] = Field(default_factory=list)

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        return gpu_model(value).name


class _NamespaceFile(_Strict):
    name: str = Field(pattern=_NAME)
    gpu_quota: float | None = Field(default=None, ge=0)


class _DeviceFile(_Strict):
    node: str
    gpu: int = Field(ge=0)
    instance: int | None = Field(default=None, ge=0, description="GPU_I_ID of a MIG slice.")
    profile: str | None = Field(default=None, description="Any free MIG slice of this profile.")


class _WorkloadFile(_Strict):
    namespace: str = Field(pattern=_NAME)
    pod: str = Field(pattern=_NAME)
    container: str = "main"
    utilization: float = Field(default=80, ge=0, le=100)
    behaviour: Behaviour = "normal"
    kind: Kind = "balanced"
    memory_fraction: float | None = Field(default=None, ge=0, le=1)
    devices: list[_DeviceFile] | None = Field(default=None, min_length=1)
    count: int | None = Field(default=None, ge=1)
    node: str | None = None
    model: str | None = None
    profile: str | None = None
    starts_after_seconds: float | None = Field(default=None, ge=0)
    stops_after_seconds: float | None = Field(default=None, gt=0)
    xid_code: int | None = Field(default=None, ge=1)
    xid_after_seconds: float = Field(default=0, ge=0)
    xid_device: int = Field(default=0, ge=0)
    straggler_device: int | None = Field(default=None, ge=0)
    shared: bool = False

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str | None) -> str | None:
        return None if value is None else gpu_model(value).name

    @model_validator(mode="after")
    def _coherent(self) -> _WorkloadFile:
        if (self.devices is None) == (self.count is None):
            raise ValueError("give exactly one of devices (explicit placement) or count")
        if self.devices is not None and any(v is not None for v in (self.node, self.model, self.profile)):
            raise ValueError("node, model and profile only go with count; devices name their own")
        if (
            self.starts_after_seconds is not None
            and self.stops_after_seconds is not None
            and self.stops_after_seconds <= self.starts_after_seconds
        ):
            raise ValueError("stops_after_seconds must be later than starts_after_seconds")
        if self.xid_code is not None and self.behaviour != "xid":
            raise ValueError('xid_code only applies to behaviour = "xid"')
        if self.straggler_device is not None and self.behaviour != "straggler":
            raise ValueError('straggler_device only applies to behaviour = "straggler"')
        return self


class _ClusterFile(_Strict):
    name: str = Field(pattern=_NAME)
    pod_labels: PodLabelStyle = "plain"
    exporter_namespace: str = Field(default=DEFAULT_EXPORTER_NAMESPACE, pattern=_NAME)
    exporter_hostname: ExporterHostname = "node"
    xid_errors_count: bool = False
    dcgm: bool = True
    profiling: bool = True
    mig_gpu_util: MigGpuUtil = "absent"
    counters: Counters = "minimal"
    nodes: list[_NodeFile] = Field(min_length=1)
    namespaces: list[_NamespaceFile] = Field(default_factory=list)
    workloads: list[_WorkloadFile] = Field(default_factory=list)


class _FleetFile(_Strict):
    name: str = "simulated-fleet"
    step_seconds: float = Field(default=15, ge=1)
    epoch: datetime | None = None
    cycle_seconds: float | None = Field(default=None, gt=0)
    clusters: list[_ClusterFile] = Field(min_length=1)


# --- Loading ------------------------------------------------------------------------------------


class _Problem(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")


def load_fleet(path: str | Path | None = None) -> Fleet:
    """Read and resolve a fleet file; ``None`` loads the built-in default fleet."""
    if path is None:
        text = resources.files("simulator").joinpath(DEFAULT_FLEET_FILE).read_text(encoding="utf-8")
        source = "<built-in>"
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FleetError(f"fleet file not found: {source}") from None
        except OSError as exc:
            raise FleetError(f"fleet file {source} cannot be read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FleetError(f"fleet file {source} is not valid TOML: {exc}") from None
    return parse_fleet(data, source=source)


def parse_fleet(data: Mapping[str, Any], *, source: str = "<data>") -> Fleet:
    """Validate and resolve an already-parsed fleet document (what :func:`load_fleet` reads)."""
    try:
        raw = _FleetFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for item in exc.errors():
            where = _location(item["loc"])
            message = str(item["msg"]).removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        raise FleetError(f"fleet file {source}: " + "; ".join(problems)) from None
    try:
        return _resolve(raw, source)
    except _Problem as exc:
        raise FleetError(f"fleet file {source}: {exc}") from None


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _resolve(raw: _FleetFile, source: str) -> Fleet:
    _unique([c.name for c in raw.clusters], "clusters", "cluster name")
    epoch = raw.epoch
    if epoch is not None and epoch.tzinfo is None:
        epoch = epoch.replace(tzinfo=UTC)
    clusters = tuple(
        _resolve_cluster(cluster, f"clusters[{i}]", raw.cycle_seconds, scheduled=bool(epoch or raw.cycle_seconds))
        for i, cluster in enumerate(raw.clusters)
    )
    return Fleet(
        name=raw.name,
        step_seconds=raw.step_seconds,
        epoch=epoch,
        cycle_seconds=raw.cycle_seconds,
        clusters=clusters,
        source=source,
    )


def _unique(names: list[str], where: str, what: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise _Problem(f"{where}[{i}]", f"duplicate {what} {name!r}")
        seen.add(name)


def gpu_uuid(cluster: str, node: str, index: int) -> str:
    """A stable, realistic-looking GPU UUID: the same cluster/node/index always gives the same one."""
    return f"GPU-{uuid.uuid5(_UUID_NAMESPACE, f'{cluster}/{node}/{index}')}"


def pci_bus_id(index: int) -> str:
    """The PCI bus id of GPU ``index`` on an HGX-style baseboard (``00000000:07:00.0``)."""
    bus = _PCI_BUSES[index] if index < len(_PCI_BUSES) else 0xC0 + index
    return f"00000000:{bus:02X}:00.0"


def _resolve_cluster(raw: _ClusterFile, where: str, cycle: float | None, *, scheduled: bool) -> Cluster:
    _unique([n.hostname for n in raw.nodes], f"{where}.nodes", "hostname")
    _unique([n.name for n in raw.namespaces], f"{where}.namespaces", "namespace")
    _unique([f"{w.namespace}/{w.pod}" for w in raw.workloads], f"{where}.workloads", "pod")
    nodes = tuple(_resolve_node(raw.name, node, f"{where}.nodes[{i}]") for i, node in enumerate(raw.nodes))
    placer = _Placer(nodes)
    for i, workload in enumerate(raw.workloads):
        _check_schedule(workload, f"{where}.workloads[{i}]", cycle, scheduled=scheduled)
    placed: dict[int, tuple[Device, ...]] = {}
    # Explicit placements first, so counted workloads fill what is left over.
    for i, workload in enumerate(raw.workloads):
        if workload.devices is not None:
            placed[i] = placer.explicit(workload, f"{where}.workloads[{i}]")
    for i, workload in enumerate(raw.workloads):
        if workload.count is not None:
            placed[i] = placer.counted(workload, f"{where}.workloads[{i}]")
    workloads = tuple(
        _resolve_workload(raw.name, workload, placed[i], f"{where}.workloads[{i}]")
        for i, workload in enumerate(raw.workloads)
    )
    return Cluster(
        name=raw.name,
        pod_labels=raw.pod_labels,
        exporter_namespace=raw.exporter_namespace,
        exporter_hostname=raw.exporter_hostname,
        xid_errors_count=raw.xid_errors_count,
        dcgm=raw.dcgm,
        profiling=raw.profiling,
        mig_gpu_util=raw.mig_gpu_util,
        counters=raw.counters,
        nodes=nodes,
        namespaces=tuple(Namespace(n.name, n.gpu_quota) for n in raw.namespaces),
        workloads=workloads,
    )


def _resolve_node(cluster: str, raw: _NodeFile, where: str) -> Node:
    model = gpu_model(raw.model)
    mig: dict[int, tuple[MigSlice, ...]] = {}
    for j, entry in enumerate(raw.mig):
        at = f"{where}.mig[{j}]"
        if entry.gpu >= raw.gpus:
            raise _Problem(f"{at}.gpu", f"node has {raw.gpus} GPUs (index 0..{raw.gpus - 1})")
        if entry.gpu in mig:
            raise _Problem(f"{at}.gpu", f"GPU {entry.gpu} is partitioned twice")
        if not model.mig_capable:
            raise _Problem(at, f"{model.name} does not support MIG")
        mig[entry.gpu] = _mig_slices(model, entry, at)
    gpus = tuple(
        Gpu(
            cluster=cluster,
            node=raw.hostname,
            index=index,
            uuid=gpu_uuid(cluster, raw.hostname, index),
            pci_bus_id=pci_bus_id(index),
            model=model,
            driver_version=raw.driver_version,
            slices=mig.get(index, ()),
        )
        for index in range(raw.gpus)
    )
    return Node(cluster, raw.hostname, model, raw.driver_version, gpus)


def _mig_slices(model: GpuModel, entry: _MigFile, where: str) -> tuple[MigSlice, ...]:
    sizes: list[tuple[int, int]] = []
    for k, profile in enumerate(entry.profiles):
        match = _PROFILE.match(profile)
        if not match or int(match["compute"]) not in _COMPUTE_SIZES:
            raise _Problem(f"{where}.profiles[{k}]", f"{profile!r} is not a MIG profile like '1g.10gb'")
        memory_gb = int(match["memory"])
        if memory_gb > model.memory_gb:
            raise _Problem(f"{where}.profiles[{k}]", f"{profile} needs more memory than a {model.name}")
        sizes.append((int(match["compute"]), memory_gb))
    if sum(c for c, _ in sizes) > 7:
        raise _Problem(f"{where}.profiles", "more than 7 compute slices on one GPU")
    if sum(m for _, m in sizes) > model.memory_gb:
        raise _Problem(f"{where}.profiles", f"more memory than the {model.memory_gb} GB of a {model.name}")
    ids = entry.instance_ids or _assign_instance_ids([c for c, _ in sizes])
    return tuple(
        MigSlice(
            instance_id=ids[k],
            profile=profile,
            compute_slices=compute,
            memory_mib=_PROFILE_MEMORY_MIB.get(profile, memory_gb * 1024 - 512),
        )
        for k, (profile, (compute, memory_gb)) in enumerate(zip(entry.profiles, sizes, strict=True))
    )


def _assign_instance_ids(compute_sizes: list[int]) -> list[int]:
    """Hand out GPU instance ids roughly as the driver does: each size has its own id range."""
    used: set[int] = set()
    ids = []
    for compute in compute_sizes:
        free = [i for i in _INSTANCE_ID_POOLS[compute] if i not in used]
        chosen = free[0] if free else next(i for i in range(15, 64) if i not in used)
        used.add(chosen)
        ids.append(chosen)
    return ids


def _check_schedule(raw: _WorkloadFile, where: str, cycle: float | None, *, scheduled: bool) -> None:
    timed = raw.starts_after_seconds is not None or raw.stops_after_seconds is not None
    if raw.behaviour == "xid" and raw.xid_after_seconds:
        timed = True
    if timed and not scheduled:
        raise _Problem(where, "starts/stops/xid_after times need the fleet's epoch or cycle_seconds")
    if cycle is not None:
        for key in ("starts_after_seconds", "stops_after_seconds"):
            value = getattr(raw, key)
            if value is not None and value > cycle:
                raise _Problem(f"{where}.{key}", f"{value:g} is beyond cycle_seconds ({cycle:g})")


def _window(raw: _WorkloadFile) -> tuple[float, float]:
    start = raw.starts_after_seconds if raw.starts_after_seconds is not None else float("-inf")
    stop = raw.stops_after_seconds if raw.stops_after_seconds is not None else float("inf")
    return start, stop


class _Placer:
    """Pins workloads to devices, refusing two workloads on one device at overlapping times unless
    both are ``shared`` (time-sliced)."""

    def __init__(self, nodes: tuple[Node, ...]) -> None:
        self._nodes = nodes
        self._taken: dict[tuple[str, int, int | None], list[tuple[float, float, str, bool]]] = {}
        self._shared = False
        """Whether the workload being placed is time-sliced."""

    def _node(self, hostname: str, where: str) -> Node:
        for node in self._nodes:
            if node.hostname == hostname:
                return node
        raise _Problem(where, f"no node {hostname!r} in this cluster")

    def _free(self, key: tuple[str, int, int | None], window: tuple[float, float]) -> str | None:
        for start, stop, owner, shared in self._taken.get(key, []):
            if start < window[1] and window[0] < stop and not (shared and self._shared):
                return owner
        return None

    def _take(self, device: Device, window: tuple[float, float], owner: str) -> None:
        self._taken.setdefault((device.node, device.gpu, device.instance_id), []).append((*window, owner, self._shared))

    def explicit(self, raw: _WorkloadFile, where: str) -> tuple[Device, ...]:
        assert raw.devices is not None
        self._shared = raw.shared
        window, owner = _window(raw), f"{raw.namespace}/{raw.pod}"
        devices: list[Device] = []
        for d, entry in enumerate(raw.devices):
            at = f"{where}.devices[{d}]"
            node = self._node(entry.node, f"{at}.node")
            if entry.gpu >= len(node.gpus):
                raise _Problem(f"{at}.gpu", f"{node.hostname} has {len(node.gpus)} GPUs")
            gpu = node.gpus[entry.gpu]
            device = self._explicit_device(gpu, entry, window, at)
            holder = self._free((device.node, device.gpu, device.instance_id), window)
            if holder is not None:
                raise _Problem(at, f"device is already held by {holder} at the same time")
            self._take(device, window, owner)
            devices.append(device)
        if len({d.node for d in devices}) > 1:
            raise _Problem(f"{where}.devices", "a pod runs on one node; the devices name several")
        return tuple(devices)

    def _explicit_device(self, gpu: Gpu, entry: _DeviceFile, window: tuple[float, float], at: str) -> Device:
        if not gpu.mig_mode:
            if entry.instance is not None or entry.profile is not None:
                raise _Problem(at, f"GPU {gpu.index} of {gpu.node} is not MIG-partitioned")
            return Device(gpu.node, gpu.index)
        ids = [s.instance_id for s in gpu.slices]
        if entry.instance is not None:
            if entry.instance not in ids:
                raise _Problem(f"{at}.instance", f"GPU {gpu.index} of {gpu.node} has GPU_I_IDs {ids}")
            chosen = gpu.slice(entry.instance)
            if entry.profile is not None and entry.profile != chosen.profile:
                raise _Problem(f"{at}.profile", f"GPU_I_ID {chosen.instance_id} is a {chosen.profile}")
            return Device(gpu.node, gpu.index, chosen.instance_id, chosen.profile)
        if entry.profile is None:
            raise _Problem(at, f"GPU {gpu.index} of {gpu.node} is MIG-partitioned; give instance or profile")
        for candidate in gpu.slices:
            key = (gpu.node, gpu.index, candidate.instance_id)
            if candidate.profile == entry.profile and self._free(key, window) is None:
                return Device(gpu.node, gpu.index, candidate.instance_id, candidate.profile)
        raise _Problem(f"{at}.profile", f"no free {entry.profile} slice on GPU {gpu.index} of {gpu.node}")

    def counted(self, raw: _WorkloadFile, where: str) -> tuple[Device, ...]:
        assert raw.count is not None
        self._shared = raw.shared
        window, owner = _window(raw), f"{raw.namespace}/{raw.pod}"
        nodes = [self._node(raw.node, f"{where}.node")] if raw.node else list(self._nodes)
        for node in nodes:
            if raw.model is not None and node.model.name != raw.model:
                continue
            candidates = [
                device
                for device in self._devices(node, raw.profile)
                if self._free((device.node, device.gpu, device.instance_id), window) is None
            ]
            if len(candidates) >= raw.count:
                chosen = tuple(candidates[: raw.count])
                for device in chosen:
                    self._take(device, window, owner)
                return chosen
        kind = f"{raw.profile} MIG slices" if raw.profile else "whole GPUs"
        raise _Problem(f"{where}.count", f"no node has {raw.count} free {kind} for {owner}")

    @staticmethod
    def _devices(node: Node, profile: str | None) -> Iterator[Device]:
        for gpu in node.gpus:
            if profile is None and not gpu.mig_mode:
                yield Device(node.hostname, gpu.index)
            elif profile is not None:
                for candidate in gpu.slices:
                    if candidate.profile == profile:
                        yield Device(node.hostname, gpu.index, candidate.instance_id, candidate.profile)


def _resolve_workload(cluster: str, raw: _WorkloadFile, devices: tuple[Device, ...], where: str) -> Workload:
    if raw.behaviour == "straggler" and len(devices) < 2:
        raise _Problem(f"{where}.behaviour", "a straggler needs a workload with two or more devices")
    straggler = None
    if raw.behaviour == "straggler":
        straggler = raw.straggler_device if raw.straggler_device is not None else len(devices) - 1
        if straggler >= len(devices):
            raise _Problem(f"{where}.straggler_device", f"the workload holds {len(devices)} devices")
    if raw.xid_device >= len(devices):
        raise _Problem(f"{where}.xid_device", f"the workload holds {len(devices)} devices")
    if raw.memory_fraction is not None:
        memory_fraction = raw.memory_fraction
    elif raw.behaviour == "idle":
        memory_fraction = 0.08
    else:
        memory_fraction = round(0.3 + 0.6 * raw.utilization / 100, 3)
    return Workload(
        cluster=cluster,
        namespace=raw.namespace,
        pod=raw.pod,
        container=raw.container,
        node=devices[0].node,
        devices=devices,
        utilization=raw.utilization,
        behaviour=raw.behaviour,
        memory_fraction=memory_fraction,
        starts_after_seconds=raw.starts_after_seconds,
        stops_after_seconds=raw.stops_after_seconds,
        xid_code=(raw.xid_code or 79) if raw.behaviour == "xid" else None,
        xid_after_seconds=raw.xid_after_seconds,
        xid_device=raw.xid_device,
        straggler_device=straggler,
        kind=raw.kind,
        shared=raw.shared,
    )
