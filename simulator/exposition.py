"""Render a :class:`FleetState` as Prometheus text exposition format 0.0.4, as a scrape would see it.

Series use dcgm-exporter's metric names and labels (per-GPU rows; per-slice rows with
``GPU_I_PROFILE``/``GPU_I_ID`` and empty ``modelName``/``pci_bus_id`` for MIG) and
kube-state-metrics' quota and request series. Pod labels are named the way each cluster's
Prometheus names them (``plain``, OpenShift's ``exported_*``, or ``legacy``), so a collector reading
this output meets the same variety it meets in real deployments. The same goes for what each
cluster's exporter reports: ``DCGM_FI_DEV_GPU_UTIL`` on MIG absent or 0 (``mig_gpu_util``), no
profiling metrics (``profiling = false``), and the families the product reads or dcgm-exporter's
whole default set (``counters``).
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterable

from domain.telemetry.readings import PodRef
from simulator.engine import FleetState, GpuState, SliceState
from simulator.fleet import XID_MESSAGES, Cluster
from simulator.profiles import FAMILY_NAMES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
QUOTA_RESOURCE = "requests.nvidia.com/gpu"
QUOTA_NAME = "gpu-quota"
XID_COUNT_WINDOW_MS = "300000"

Labels = list[tuple[str, str]]

FAMILIES: dict[str, str] = {
    "DCGM_FI_DEV_GPU_UTIL": "GPU utilization (in %).",
    "DCGM_FI_DEV_FB_FREE": "Framebuffer memory free (in MiB).",
    "DCGM_FI_DEV_FB_USED": "Framebuffer memory used (in MiB).",
    "DCGM_FI_DEV_FB_RESERVED": "Framebuffer memory reserved (in MiB).",
    "DCGM_FI_DEV_POWER_USAGE": "Power draw (in W).",
    "DCGM_FI_DEV_GPU_TEMP": "GPU temperature (in C).",
    "DCGM_FI_DEV_XID_ERRORS": "Value of the last XID error encountered.",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": "Ratio of time the graphics engine is active.",
    "DCGM_FI_PROF_SM_ACTIVE": "The ratio of cycles an SM has at least 1 warp assigned.",
    "DCGM_FI_PROF_SM_OCCUPANCY": "The ratio of number of warps resident on an SM.",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": "Ratio of cycles the tensor (HMMA) pipe is active.",
    "DCGM_FI_PROF_DRAM_ACTIVE": "Ratio of cycles the device memory interface is active sending or receiving data.",
    "DCGM_FI_PROF_PIPE_FP64_ACTIVE": "Ratio of cycles the fp64 pipes are active.",
    "DCGM_FI_PROF_PIPE_FP32_ACTIVE": "Ratio of cycles the fp32 pipes are active.",
    "DCGM_FI_PROF_PIPE_FP16_ACTIVE": "Ratio of cycles the fp16 pipes are active.",
    "DCGM_FI_PROF_PCIE_TX_BYTES": "The rate of data transmitted over the PCIe bus in bytes per second.",
    "DCGM_FI_PROF_PCIE_RX_BYTES": "The rate of data received over the PCIe bus in bytes per second.",
    "DCGM_FI_PROF_NVLINK_TX_BYTES": "The rate of data transmitted over NVLink in bytes per second.",
    "DCGM_FI_PROF_NVLINK_RX_BYTES": "The rate of data received over NVLink in bytes per second.",
    "DCGM_EXP_XID_ERRORS_COUNT": "Count of XID Errors within user-specified time window "
    "(see xid-count-window-size param).",
    "kube_resourcequota": "Information about resource quota.",
    "kube_pod_container_resource_requests": "The number of requested request resource by a container.",
    "kube_pod_info": "Information about pod.",
    "kube_node_labels": "Kubernetes labels converted to Prometheus labels.",
    "gpu_operator_gpu_nodes_total": "Number of nodes with GPUs",
    "gpu_operator_nvidia_pci_devices_total": "number of NVIDIA devices found in the node. -1 if failing to count",
}
"""Every family rendered, in output order, with its HELP text (all are gauges)."""

DEFAULT_COUNTERS: dict[str, tuple[str, str]] = {
    "DCGM_FI_DEV_SM_CLOCK": ("gauge", "SM clock frequency (in MHz)."),
    "DCGM_FI_DEV_MEM_CLOCK": ("gauge", "Memory clock frequency (in MHz)."),
    "DCGM_FI_DEV_MEMORY_TEMP": ("gauge", "Memory temperature (in C)."),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": ("counter", "Total energy consumption since boot (in mJ)."),
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": ("counter", "Total number of PCIe retries."),
    "DCGM_FI_DEV_MEM_COPY_UTIL": ("gauge", "Memory utilization (in %)."),
    "DCGM_FI_DEV_ENC_UTIL": ("gauge", "Encoder utilization (in %)."),
    "DCGM_FI_DEV_DEC_UTIL": ("gauge", "Decoder utilization (in %)."),
    "DCGM_FI_DEV_RETIRED_SBE": ("counter", "Total number of retired pages due to single-bit errors."),
    "DCGM_FI_DEV_RETIRED_DBE": ("counter", "Total number of retired pages due to double-bit errors."),
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL": ("counter", "Total number of NVLink bandwidth counters for all lanes."),
    "DCGM_FI_DEV_VGPU_LICENSE_STATUS": ("gauge", "vGPU License status"),
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": ("counter", "Number of remapped rows for uncorrectable errors"),
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": ("counter", "Number of remapped rows for correctable errors"),
    "DCGM_FI_DEV_ROW_REMAP_FAILURE": ("gauge", "Whether remapping of rows has failed"),
}
"""The rest of dcgm-exporter's default counter set (``dcp-metrics-included.csv``, as the GPU Operator
ships it), served by clusters with ``counters = "default"``: (type, HELP). The product reads none of
them; they give a scale test the volume a real exporter puts in Prometheus."""

_POD_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes uses for generated names


def render(state: FleetState, *, cluster: str | None = None) -> str:
    """The exposition text for one cluster (no ``cluster`` label) or all (each series labelled)."""
    fleet = state.fleet
    if cluster is not None and cluster not in fleet.cluster_names:
        raise ValueError(f"unknown cluster {cluster!r}; the fleet has {', '.join(fleet.cluster_names)}")
    rows: dict[str, list[str]] = {name: [] for name in (*FAMILIES, *DEFAULT_COUNTERS)}
    for spec in fleet.clusters:
        if cluster is not None and spec.name != cluster:
            continue
        extra: Labels = [] if cluster is not None else [("cluster", spec.name)]
        if spec.dcgm:
            uptime = state.step * fleet.step_seconds
            for gpu in state.gpus:
                if gpu.cluster == spec.name:
                    _gpu_rows(rows, spec, gpu, extra)
                    if spec.counters == "default":
                        _default_counter_rows(rows, spec, gpu, extra, hostname_of(spec, gpu.node), uptime)
        _node_rows(rows, spec, extra)
        _kube_rows(rows, spec, state, extra)
    out: list[str] = []
    for name, help_text in FAMILIES.items():
        out.append(f"# HELP {name} {_escape_help(help_text)}")
        out.append(f"# TYPE {name} gauge")
        out.extend(rows[name])
    for name, (kind, help_text) in DEFAULT_COUNTERS.items():
        if rows[name]:
            out.append(f"# HELP {name} {_escape_help(help_text)}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(rows[name])
    return "\n".join(out) + "\n"


def _kube_rows(rows: dict[str, list[str]], spec: Cluster, state: FleetState, extra: Labels) -> None:
    """kube-state-metrics quota, request and pod series of one cluster."""
    for quota in state.quotas:
        if quota.cluster == spec.name:
            for kind, value in (("hard", quota.hard), ("used", quota.used)):
                labels = [
                    ("namespace", quota.namespace),
                    ("resourcequota", QUOTA_NAME),
                    ("resource", QUOTA_RESOURCE),
                    ("type", kind),
                ]
                _add(rows, "kube_resourcequota", labels + extra, value)
    for pod in state.pods:
        if pod.cluster != spec.name:
            continue
        uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"pod/{pod.cluster}/{pod.namespace}/{pod.pod}"))
        for resource, count in pod.requests:
            labels = [
                ("namespace", pod.namespace),
                ("pod", pod.pod),
                ("uid", uid),
                ("container", pod.container),
                ("node", pod.node),
                ("resource", resource),
                ("unit", "integer"),
            ]
            _add(rows, "kube_pod_container_resource_requests", labels + extra, count)
        info = _pod_info(pod.namespace, pod.pod, uid, pod.node, "ReplicaSet")
        _add(rows, "kube_pod_info", info + extra, 1)


def _pod_info(namespace: str, pod: str, uid: str, node: str, owner_kind: str) -> Labels:
    return [
        ("namespace", namespace),
        ("pod", pod),
        ("uid", uid),
        ("node", node),
        ("created_by_kind", owner_kind),
        ("host_network", "false"),
    ]


def gpu_product_label(model: str) -> str:
    """GPU feature discovery's ``nvidia.com/gpu.product`` value: the model name with dashes for spaces."""
    return model.replace(" ", "-")


def _node_rows(rows: dict[str, list[str]], cluster: Cluster, extra: Labels) -> None:
    """Per-node kube-state-metrics and GPU Operator series (and the exporter pods, where DCGM runs)."""
    for node in cluster.nodes:
        labels = [
            ("node", node.hostname),
            ("label_kubernetes_io_hostname", node.hostname),
            ("label_nvidia_com_gpu_count", str(len(node.gpus))),
            ("label_nvidia_com_gpu_product", gpu_product_label(node.model.name)),
        ]
        _add(rows, "kube_node_labels", labels + extra, 1)
        _add(rows, "gpu_operator_nvidia_pci_devices_total", [("node", node.hostname), *extra], len(node.gpus))
        if cluster.dcgm:
            pod = exporter_pod_name(cluster.name, node.hostname)
            uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"pod/{cluster.name}/{cluster.exporter_namespace}/{pod}"))
            info = _pod_info(cluster.exporter_namespace, pod, uid, node.hostname, "DaemonSet")
            _add(rows, "kube_pod_info", info + extra, 1)
    _add(rows, "gpu_operator_gpu_nodes_total", extra, len(cluster.nodes))


def exporter_pod_name(cluster: str, node: str) -> str:
    """The dcgm-exporter DaemonSet pod on ``node``, e.g. ``nvidia-dcgm-exporter-x7k2p``."""
    n = zlib.crc32(f"{cluster}/{node}".encode())
    suffix = ""
    for _ in range(5):
        n, digit = divmod(n, len(_POD_SUFFIX_ALPHABET))
        suffix += _POD_SUFFIX_ALPHABET[digit]
    return f"nvidia-dcgm-exporter-{suffix}"


def pod_labels(cluster: Cluster, node: str, pod: PodRef | None) -> Labels:
    """The pod labels of one dcgm-exporter series, named per the cluster's ``pod_labels`` style."""
    if cluster.pod_labels == "exported":
        # OpenShift monitoring keeps the target's own labels and renames the exporter's to exported_*.
        own = [
            ("container", "nvidia-dcgm-exporter"),
            ("namespace", cluster.exporter_namespace),
            ("pod", exporter_pod_name(cluster.name, node)),
        ]
        if pod is None:
            return own
        return [
            ("exported_container", pod.container or ""),
            ("exported_namespace", pod.namespace),
            ("exported_pod", pod.pod),
            *own,
        ]
    if pod is None:
        return []
    if cluster.pod_labels == "legacy":
        return [("container_name", pod.container or ""), ("pod_name", pod.pod), ("pod_namespace", pod.namespace)]
    return [("container", pod.container or ""), ("namespace", pod.namespace), ("pod", pod.pod)]


def hostname_of(cluster: Cluster, node: str) -> str:
    """dcgm-exporter's ``Hostname`` label: the node, or the exporter pod's name (``exporter_hostname``)."""
    return node if cluster.exporter_hostname == "node" else exporter_pod_name(cluster.name, node)


def _identity(gpu: GpuState, hostname: str, mig: SliceState | None = None) -> Labels:
    labels = [
        ("gpu", str(gpu.index)),
        ("UUID", gpu.uuid),
        ("pci_bus_id", "" if mig else gpu.pci_bus_id),
        ("device", f"nvidia{gpu.index}"),
        ("modelName", "" if mig else gpu.model),
    ]
    if mig is not None:
        labels += [("GPU_I_PROFILE", mig.profile), ("GPU_I_ID", str(mig.instance_id))]
    return [*labels, ("Hostname", hostname), ("DCGM_FI_DRIVER_VERSION", gpu.driver_version)]


def _default_counter_rows(
    rows: dict[str, list[str]], cluster: Cluster, gpu: GpuState, extra: Labels, hostname: str, uptime: float
) -> None:
    """The default families the product does not read, with plausible values (per GPU; profiling per slice)."""
    busy = (gpu.utilization or 0) / 100 if not gpu.mig_mode else 0.0
    if gpu.mig_mode:
        busy = sum(s.utilization for s in gpu.slices) / 100 / max(1, len(gpu.slices))
    identity = _identity(gpu, hostname)
    owners = [None] if gpu.mig_mode else _owners(gpu.pods)
    every = [identity + pod_labels(cluster, gpu.node, pod) + extra for pod in owners]
    values: dict[str, float] = {
        "DCGM_FI_DEV_SM_CLOCK": round(210 + 1200 * busy),
        "DCGM_FI_DEV_MEM_CLOCK": 1593,
        "DCGM_FI_DEV_MEMORY_TEMP": gpu.temperature_c + 4,
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": round(gpu.power_watts * uptime * 1000),
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": 0,
        "DCGM_FI_DEV_MEM_COPY_UTIL": round(40 * busy),
        "DCGM_FI_DEV_ENC_UTIL": 0,
        "DCGM_FI_DEV_DEC_UTIL": 0,
        "DCGM_FI_DEV_RETIRED_SBE": 0,
        "DCGM_FI_DEV_RETIRED_DBE": 0,
        "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL": round(uptime * busy * 1000),
        "DCGM_FI_DEV_VGPU_LICENSE_STATUS": 0,
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": 0,
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": 0,
        "DCGM_FI_DEV_ROW_REMAP_FAILURE": 0,
    }
    for name, value in values.items():
        for series in every:
            _add(rows, name, series, value)


def _gpu_rows(rows: dict[str, list[str]], cluster: Cluster, gpu: GpuState, extra: Labels) -> None:
    def identity(*, mig: SliceState | None = None) -> Labels:
        return _identity(gpu, hostname, mig)

    hostname = hostname_of(cluster, gpu.node)

    parent = identity()
    xid_labels: Labels = []
    if gpu.xid:
        xid_labels = [("err_code", str(gpu.xid)), ("err_msg", XID_MESSAGES.get(gpu.xid, "Unknown Error"))]
        if cluster.xid_errors_count:
            count_labels = [*parent, ("window_size_in_ms", XID_COUNT_WINDOW_MS), ("xid", str(gpu.xid))]
            for pod in [None] if gpu.mig_mode else _owners(gpu.pods):
                owner = pod_labels(cluster, gpu.node, pod)
                _add(rows, "DCGM_EXP_XID_ERRORS_COUNT", count_labels + owner + extra, 1)
    if gpu.mig_mode:
        # A MIG GPU has no device-wide usage series; its pods live on the slices.
        owner = pod_labels(cluster, gpu.node, None)
        _add(rows, "DCGM_FI_DEV_POWER_USAGE", parent + owner + extra, gpu.power_watts)
        _add(rows, "DCGM_FI_DEV_GPU_TEMP", parent + owner + extra, gpu.temperature_c)
        _add(rows, "DCGM_FI_DEV_XID_ERRORS", parent + xid_labels + owner + extra, gpu.xid)
        if gpu.utilization is not None:  # mig_gpu_util = "zero": the exporter reports the field as 0
            _add(rows, "DCGM_FI_DEV_GPU_UTIL", parent + owner + extra, gpu.utilization)
        for mig in gpu.slices:
            for pod in _owners(mig.pods):
                labels = identity(mig=mig) + pod_labels(cluster, gpu.node, pod) + extra
                if mig.engine_active is not None:
                    _add(rows, "DCGM_FI_PROF_GR_ENGINE_ACTIVE", labels, mig.engine_active)
                if mig.gpu_util is not None:
                    _add(rows, "DCGM_FI_DEV_GPU_UTIL", labels, mig.gpu_util)
                _profiling_rows(rows, mig.profiling, labels)
                _add(rows, "DCGM_FI_DEV_FB_USED", labels, mig.memory_used_mib)
                _add(rows, "DCGM_FI_DEV_FB_FREE", labels, mig.memory_free_mib)
        return
    for pod in _owners(gpu.pods):
        _whole_gpu_rows(rows, gpu, parent, xid_labels, pod_labels(cluster, gpu.node, pod) + extra)


def _owners(pods: tuple[PodRef, ...]) -> list[PodRef | None]:
    """One series per pod using a device, as dcgm-exporter reports a time-sliced GPU; one without pod
    labels for an idle device."""
    return list(pods) or [None]


def _whole_gpu_rows(
    rows: dict[str, list[str]], gpu: GpuState, parent: Labels, xid_labels: Labels, owner: Labels
) -> None:
    """The series of a whole GPU with one pod's labels (the device's values are the same on each)."""
    labels = parent + owner
    values = {
        "DCGM_FI_DEV_GPU_UTIL": gpu.utilization,
        "DCGM_FI_DEV_FB_USED": gpu.memory_used_mib,
        "DCGM_FI_DEV_FB_FREE": gpu.memory_free_mib,
        "DCGM_FI_DEV_FB_RESERVED": gpu.memory_reserved_mib,
        "DCGM_FI_DEV_POWER_USAGE": gpu.power_watts,
        "DCGM_FI_DEV_GPU_TEMP": gpu.temperature_c,
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE": gpu.engine_active,
    }
    for name, value in values.items():
        if value is not None:
            _add(rows, name, labels, value)
    _add(rows, "DCGM_FI_DEV_XID_ERRORS", parent + xid_labels + owner, gpu.xid)
    _profiling_rows(rows, gpu.profiling, labels)


def _profiling_rows(rows: dict[str, list[str]], values: dict[str, float] | None, labels: Labels) -> None:
    """The DCGM profiling families of one device (none where the cluster has profiling disabled)."""
    for key, value in (values or {}).items():
        _add(rows, FAMILY_NAMES[key], labels, value)


def _add(rows: dict[str, list[str]], name: str, labels: Iterable[tuple[str, str]], value: float) -> None:
    rendered = ",".join(f'{key}="{_escape_value(val)}"' for key, val in labels)
    rows[name].append(f"{name}{{{rendered}}} {_number(value)}")


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")
