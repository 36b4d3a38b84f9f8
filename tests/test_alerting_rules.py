"""The shipped rules and Alertmanager configurations, checked by Prometheus's and Alertmanager's own tools:
``promtool test rules`` evaluates the rules over dcgm-exporter series in all three pod-label styles."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.alertmanager_service import ALERTMANAGER_DIR, RULES_FILE, tool_or_skip

GPU = {"Hostname": "gpu-01", "UUID": "GPU-aaaa", "gpu": "0", "modelName": "NVIDIA A100-SXM4-80GB", "cluster": "c1"}
EXPORTER = {
    "namespace": "nvidia-gpu-operator",
    "pod": "nvidia-dcgm-exporter-x7k2p",
    "container": "nvidia-dcgm-exporter",
}


def series(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def gpu(n: int, **labels: str) -> dict[str, str]:
    return {**GPU, "UUID": f"GPU-{n:04d}", "gpu": str(n), **labels}


def started(
    n: int, namespace: str, pod: str, container: str, activity: str, model: str = GPU["modelName"], **extra: str
) -> dict[str, object]:
    """The alert expected for a workload; an empty label (a MIG slice's modelName) is no label at all."""
    labels = {
        **gpu(n, namespace=namespace, pod=pod, container=container, modelName=model, **extra),
        "event": "gpu-usage",
        "severity": "info",
    }
    return {
        "exp_labels": {k: v for k, v in labels.items() if v},
        "exp_annotations": {
            "summary": f"GPU in use by {namespace}/{pod} on c1/gpu-01",
            "description": f"GPU {n} (GPU-{n:04d}, {model}) activity {activity}",
        },
    }


def mig_started() -> dict[str, object]:
    return started(2, "nlp", "bert-2", "c", "25%", model="", GPU_I_ID="7", GPU_I_PROFILE="1g.10gb")


def mig_labels(n: int, pod: str) -> dict[str, str]:
    """Slice 7 of GPU ``n`` (a MIG slice's modelName is empty: no label), held by ``lab/<pod>``."""
    labels = gpu(n, namespace="lab", pod=pod, container="c", GPU_I_ID="7", GPU_I_PROFILE="1g.10gb")
    return {k: v for k, v in labels.items() if k != "modelName"}


def mig_slice_series(n: int, pod: str, *, engine: str | None) -> list[dict[str, str]]:
    """A MIG GPU exported by a dcgm-exporter that reports GPU_UTIL as 0 on the slice and its parent."""
    out = [
        {"series": series("DCGM_FI_DEV_GPU_UTIL", mig_labels(n, pod)), "values": "0 0 0"},
        {"series": series("DCGM_FI_DEV_FB_USED", mig_labels(n, pod)), "values": "900 900 900"},
        {"series": series("DCGM_FI_DEV_GPU_UTIL", gpu(n)), "values": "0 0 0"},
    ]
    if engine is not None:
        out.append({"series": series("DCGM_FI_PROF_GR_ENGINE_ACTIVE", mig_labels(n, pod)), "values": f"{engine} " * 3})
    return out


def mig_zero_started(n: int, pod: str, activity: str) -> dict[str, object]:
    return started(n, "lab", pod, "c", activity, model="", GPU_I_ID="7", GPU_I_PROFILE="1g.10gb")


def run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool, *args], capture_output=True, text=True, check=False, timeout=60)


def test_rules_normalise_all_three_pod_label_styles(tmp_path: Path) -> None:
    promtool = tool_or_skip("promtool")
    activity = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
    scenario = {
        "rule_files": [str(RULES_FILE)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # OpenShift: the workload in exported_*, the exporter in namespace/pod/container
                    {
                        "series": series(
                            activity,
                            gpu(
                                0,
                                exported_namespace="ml-team-a",
                                exported_pod="train-0",
                                exported_container="trainer",
                                **EXPORTER,
                            ),
                        ),
                        "values": "0.75 0.75 stale",
                    },
                    # legacy dcgm-exporter labels
                    {
                        "series": series(
                            activity, gpu(1, pod_namespace="vision-lab", pod_name="seg-1", container_name="main")
                        ),
                        "values": "0.5 0.5 0.5",
                    },
                    # plain labels, a MIG slice
                    {
                        "series": series(
                            activity,
                            {
                                k: v
                                for k, v in gpu(
                                    2,
                                    namespace="nlp",
                                    pod="bert-2",
                                    container="c",
                                    GPU_I_ID="7",
                                    GPU_I_PROFILE="1g.10gb",
                                ).items()
                                if k != "modelName"
                            },
                        ),
                        "values": "0.25 0.25 0.25",
                    },
                    # a GPU with no workload under OpenShift: only the exporter's own labels
                    {"series": series(activity, gpu(3, **EXPORTER)), "values": "0 0 0"},
                    # a GPU without profiling metrics: the utilisation counter stands in
                    {
                        "series": series("DCGM_FI_DEV_GPU_UTIL", gpu(4, namespace="stats", pod="r-4", container="r")),
                        "values": "40 40 40",
                    },
                    # allocated but idle: no alert
                    {
                        "series": series(activity, gpu(5, namespace="idle", pod="nb-5", container="nb")),
                        "values": "0 0 0",
                    },
                    # a whole GPU with both: the utilisation counter wins
                    {
                        "series": series("DCGM_FI_DEV_GPU_UTIL", gpu(6, namespace="both", pod="b-6", container="b")),
                        "values": "60 60 60",
                    },
                    {
                        "series": series(activity, gpu(6, namespace="both", pod="b-6", container="b")),
                        "values": "0.55 0.55 0.55",
                    },
                    # MIG slices whose exporter reports GPU_UTIL as 0: engine activity counts, GPU_UTIL never;
                    # a slice without engine activity is unknown (no series, no alert), not idle
                    *mig_slice_series(8, "52", engine="0.52"),
                    *mig_slice_series(9, "28", engine="0.28"),
                    *mig_slice_series(10, "unknown", engine=None),
                    {
                        "series": series(
                            "DCGM_FI_DEV_XID_ERRORS", gpu(1, err_code="79", err_msg="GPU has fallen off the bus")
                        ),
                        "values": "0 79 79",
                    },
                ],
                "promql_expr_test": [
                    {  # MIG GPUs: their slices' engine activity only; no 0 from GPU_UTIL, nothing when unknown
                        "expr": 'gpu:activity:ratio{UUID=~"GPU-00(08|09|10)"}',
                        "eval_time": "1m",
                        "exp_samples": [
                            {"labels": series("gpu:activity:ratio", mig_labels(8, "52")), "value": 0.52},
                            {"labels": series("gpu:activity:ratio", mig_labels(9, "28")), "value": 0.28},
                        ],
                    }
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "1m",
                        "alertname": "GPUWorkloadStarted",
                        "exp_alerts": [
                            started(0, "ml-team-a", "train-0", "trainer", "75%"),
                            started(1, "vision-lab", "seg-1", "main", "50%"),
                            mig_started(),
                            started(4, "stats", "r-4", "r", "40%"),
                            started(6, "both", "b-6", "b", "60%"),
                            mig_zero_started(8, "52", "52%"),
                            mig_zero_started(9, "28", "28%"),
                        ],
                    },
                    {  # the OpenShift workload's series went stale: its alert resolved
                        "eval_time": "2m",
                        "alertname": "GPUWorkloadStarted",
                        "exp_alerts": [
                            started(1, "vision-lab", "seg-1", "main", "50%"),
                            mig_started(),
                            started(4, "stats", "r-4", "r", "40%"),
                            started(6, "both", "b-6", "b", "60%"),
                            mig_zero_started(8, "52", "52%"),
                            mig_zero_started(9, "28", "28%"),
                        ],
                    },
                    {
                        "eval_time": "1m",
                        "alertname": "GPUXidError",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    **gpu(1, err_code="79", err_msg="GPU has fallen off the bus"),
                                    "event": "gpu-xid",
                                    "severity": "critical",
                                },
                                "exp_annotations": {
                                    "summary": "XID 79 on GPU 1 of c1/gpu-01",
                                    "description": "GPU has fallen off the bus (GPU-0001, NVIDIA A100-SXM4-80GB)",
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "gpu-rules.test.yml"
    test_file.write_text(yaml.safe_dump(scenario, sort_keys=False))

    result = run(promtool, "test", "rules", str(test_file))

    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_rules() -> None:
    result = run(tool_or_skip("promtool"), "check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


@pytest.mark.parametrize("name", ["alertmanager.yml", "alertmanager-token.yml"])
def test_amtool_accepts_both_alertmanager_variants(name: str) -> None:
    path = ALERTMANAGER_DIR / name
    result = run(tool_or_skip("amtool"), "check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(path.read_text())
    [route] = config["route"]["routes"]
    webhook = next(r for r in config["receivers"] if r["name"] == route["receiver"])["webhook_configs"][0]
    assert webhook["send_resolved"] is True and webhook["max_alerts"] == 0
    assert route["group_wait"] in ("1s", "5s") and route["group_interval"] == "10s"
    auth = webhook["http_config"]
    assert ("oauth2" in auth) == (name == "alertmanager.yml")
    assert ("authorization" in auth) == (name == "alertmanager-token.yml")
