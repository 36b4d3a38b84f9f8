"""Generate large fleet files: many clusters of 8-GPU nodes, some MIG-partitioned, most GPUs busy.

Used by the collector benchmark (10,000 GPUs: 20 clusters, 1,250 nodes) and handy for load tests:

    python -m simulator.generate --clusters 20 --nodes 1250 --out fleet.toml
    python -m simulator.generate --clusters 20 --nodes 1250 --split 4 --out fleet.toml  # fleet-1.toml ...

Placement is explicit (every workload names its devices) and deterministic for a given seed, so
two runs produce the same file and loading it needs no placement search. Each node of ``gpus``
GPUs (8 by default) carries: a 4-GPU training pod, a 1-GPU pod, an idle notebook holding one GPU,
and free GPUs; every ``mig_every``-th node has GPU 0 cut into seven ``1g.10gb`` slices, three of
them held by single-slice pods. Clusters rotate through the pod label styles (plain, OpenShift's
exported, legacy). ``step_seconds`` defaults to a day, so values stay the same during a benchmark
and a second poll sees an unchanged fleet.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STYLES = ("plain", "exported", "legacy")
MODELS = ("a100", "h100", "l40s")
MIG_CAPABLE = {"a100", "h100"}
PROJECTS_PER_CLUSTER = 10


def generate_fleet(
    *,
    clusters: int = 20,
    nodes: int = 1250,
    gpus_per_node: int = 8,
    mig_every: int = 10,
    seed: int = 7,
    step_seconds: float = 86400.0,
    name: str = "generated-fleet",
    counters: str = "minimal",
) -> dict[str, Any]:
    """A fleet document (what :func:`simulator.parse_fleet` reads) with ``nodes`` spread over ``clusters``.

    ``counters``: ``default`` serves dcgm-exporter's whole default counter set, profiling included.
    Clusters alternate the two ways exporters report ``DCGM_FI_DEV_GPU_UTIL`` on MIG (absent, 0).
    """
    if clusters < 1 or nodes < clusters or gpus_per_node < 8:
        raise ValueError("need at least one cluster, one node per cluster and 8 GPUs per node")
    rng = random.Random(seed)
    document: dict[str, Any] = {"name": name, "step_seconds": step_seconds, "clusters": []}
    for c in range(clusters):
        count = nodes // clusters + (1 if c < nodes % clusters else 0)
        cluster = _cluster(c, count, gpus_per_node, mig_every, rng)
        cluster["mig_gpu_util"] = ("absent", "zero")[c % 2]
        if counters != "minimal":
            cluster["counters"] = counters
        document["clusters"].append(cluster)
    return document


def _cluster(c: int, count: int, gpus: int, mig_every: int, rng: random.Random) -> dict[str, Any]:
    cluster_name = f"cluster-{c:02d}"
    node_list: list[dict[str, Any]] = []
    workloads: list[dict[str, Any]] = []
    projects = [f"proj-{c:02d}-{p}" for p in range(PROJECTS_PER_CLUSTER)]
    for n in range(count):
        hostname = f"c{c:02d}-gpu-{n:03d}"
        model = MODELS[(c + n) % len(MODELS)]
        node: dict[str, Any] = {"hostname": hostname, "model": model, "gpus": gpus}
        mig = model in MIG_CAPABLE and mig_every > 0 and n % mig_every == 0
        if mig:
            node["mig"] = [{"gpu": 0, "profiles": ["1g.10gb"] * 7}]
        node_list.append(node)

        def pod(kind: str, devices: list[dict[str, Any]], behaviour: str = "normal", n: int = n) -> None:
            workload = {
                "namespace": rng.choice(projects),
                "pod": f"{kind}-{n:03d}",
                "container": kind,
                "utilization": float(rng.randint(30, 95)),
                "behaviour": behaviour,
                "devices": devices,
            }
            workloads.append(workload)

        pod("train", [{"node": hostname, "gpu": g} for g in range(1, 5)])
        pod("infer", [{"node": hostname, "gpu": 5}])
        pod("notebook", [{"node": hostname, "gpu": 6}], behaviour="idle")
        if mig:
            for s in range(3):
                pod(f"student{s}", [{"node": hostname, "gpu": 0, "profile": "1g.10gb"}])
        else:
            pod("batch", [{"node": hostname, "gpu": 0}])
    namespaces = [{"name": p, "gpu_quota": float(rng.randint(8, 64))} for p in projects]
    return {
        "name": cluster_name,
        "pod_labels": STYLES[c % len(STYLES)],
        "nodes": node_list,
        "namespaces": namespaces,
        "workloads": workloads,
    }


def split(document: dict[str, Any], parts: int) -> list[dict[str, Any]]:
    """The fleet cut into ``parts`` documents of whole clusters (one per exporter process)."""
    clusters = document["clusters"]
    size = -(-len(clusters) // parts)
    return [
        {**document, "name": f"{document['name']}-{i + 1}", "clusters": clusters[i * size : (i + 1) * size]}
        for i in range(parts)
        if clusters[i * size : (i + 1) * size]
    ]


# --- TOML ---------------------------------------------------------------------------------------


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for the ASCII names generated here
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def to_toml(document: dict[str, Any]) -> str:
    """The fleet document as a fleet file: top-level keys, then one ``[[clusters]]`` table each."""
    lines = [f"{key} = {_value(value)}" for key, value in document.items() if key != "clusters"]
    for cluster in document["clusters"]:
        lines += ["", "[[clusters]]"]
        for key, value in cluster.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                lines.append(f"{key} = [")
                lines += [f"    {_value(item)}," for item in value]
                lines.append("]")
            else:
                lines.append(f"{key} = {_value(value)}")
    return "\n".join(lines) + "\n"


def write_fleet(document: dict[str, Any], path: Path) -> Path:
    path.write_text(to_toml(document), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=1250)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--mig-every", type=int, default=10, help="every Nth A100/H100 node has a MIG GPU (0: none)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--counters", choices=("minimal", "default"), default="minimal", help="dcgm-exporter families")
    parser.add_argument("--split", type=int, default=1, help="write N files of whole clusters (fleet-1.toml, ...)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    document = generate_fleet(
        clusters=args.clusters,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        mig_every=args.mig_every,
        seed=args.seed,
        counters=args.counters,
    )
    if args.split <= 1:
        print(write_fleet(document, args.out))
        return 0
    for i, part in enumerate(split(document, args.split), start=1):
        print(write_fleet(part, args.out.with_name(f"{args.out.stem}-{i}{args.out.suffix}")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
