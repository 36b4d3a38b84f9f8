"""Reading the manifests under deploy/: YAML documents, Kustomize trees, built overlays, tools.

The Kustomize checks come in two strengths. :func:`static_objects` resolves a kustomization's
resources, components, generators and patches by reading files only (no binary needed), so a
missing path or a patch aimed at an object that does not exist is always caught. When ``kubectl``
is installed, :func:`build` renders an overlay for real (``kubectl kustomize``) and the tests check
the rendered objects.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from domain.settings import PREFIX, PROJECT_ROOT, Settings
from tests.services import in_ci

DEPLOY = PROJECT_ROOT / "deploy"
OVERLAYS = sorted(p.parent for p in (DEPLOY / "overlays").glob("*/kustomization.yaml"))
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


class KubeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading a bare ``=`` as the string it is in YAML 1.2 (``matchType: =``)."""


KubeLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


def yaml_files(root: Path = DEPLOY) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in {".yaml", ".yml"} and p.is_file())


def documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def setting_names() -> set[str]:
    """Every environment variable the app reads, from the settings classes themselves.

    Each section of :class:`Settings` is a pydantic-settings class whose ``env_prefix`` plus a field
    name (or the field's alias) is the variable; ``AI_TELEMETRY_CONFIG`` names the sources file.
    """
    names = {f"{PREFIX}CONFIG"}
    for section in Settings.model_fields.values():
        settings_class = section.annotation
        config = getattr(settings_class, "model_config", None)
        if not isinstance(config, dict) or "env_prefix" not in config:
            continue  # not an environment section (sources, flags)
        prefix = config["env_prefix"]
        for name, info in settings_class.model_fields.items():  # type: ignore[union-attr]
            alias = info.validation_alias or info.alias
            names.add((alias if isinstance(alias, str) else f"{prefix}{name}").upper())
    return names


# --- workloads --------------------------------------------------------------------------------------


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj.get("kind") not in WORKLOAD_KINDS:
        return None
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def env_lists(node: Any) -> Iterator[list[dict[str, Any]]]:
    """Every container ``env`` list anywhere in a document (manifests and patches alike)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for container in value:
                    if isinstance(container, dict) and isinstance(container.get("env"), list):
                        yield container["env"]
            yield from env_lists(value)
    elif isinstance(node, list):
        for item in node:
            yield from env_lists(item)


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value
    return values


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- static Kustomize resolution ---------------------------------------------------------------------


@dataclass
class Resolved:
    """What a kustomization produces, as (kind, name) pairs, and the problems found on the way."""

    objects: set[tuple[str, str]] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


def kustomization_file(directory: Path) -> Path | None:
    for name in KUSTOMIZATION_NAMES:
        if (directory / name).is_file():
            return directory / name
    return None


def static_objects(directory: Path, context: set[tuple[str, str]] | None = None) -> Resolved:
    """Resolve a kustomization by reading files: every path exists, every patch hits an object.

    A Component patches what the kustomization including it has gathered (``context``); resolved on
    its own (no context) only its paths are checked, its patches when an overlay includes it.
    """
    resolved = Resolved()
    path = kustomization_file(directory)
    if path is None:
        resolved.problems.append(f"{directory}: no kustomization.yaml")
        return resolved
    kustomization = documents(path)[0]
    where = str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)
    if context is not None:
        resolved.objects |= context
    for entry in kustomization.get("resources") or []:
        _include(directory, entry, resolved, where, component=False)
    for entry in kustomization.get("components") or []:
        _include(directory, entry, resolved, where, component=True)
    _generators(directory, kustomization, resolved, where)
    standalone_component = kustomization.get("kind") == "Component" and context is None
    _patches(directory, kustomization, resolved, where, check_targets=not standalone_component)
    return resolved


def _include(directory: Path, entry: str, resolved: Resolved, where: str, *, component: bool) -> None:
    target = (directory / entry).resolve()
    if target.is_dir():
        inner_file = kustomization_file(target)
        kind = documents(inner_file)[0].get("kind", "Kustomization") if inner_file else "?"
        if inner_file and component != (kind == "Component"):
            resolved.problems.append(f"{where}: {entry} is a {kind}, listed under the wrong key")
        inner = static_objects(target, set(resolved.objects) if component else None)
        resolved.objects |= inner.objects
        resolved.problems += inner.problems
    elif target.is_file() and not component:
        for doc in documents(target):
            resolved.objects.add((doc["kind"], doc["metadata"]["name"]))
    else:
        resolved.problems.append(f"{where}: {entry} does not exist")


def _generators(directory: Path, kustomization: dict[str, Any], resolved: Resolved, where: str) -> None:
    for generator in kustomization.get("configMapGenerator") or []:
        for entry in [*(generator.get("files") or []), *(generator.get("envs") or [])]:
            source = entry.partition("=")[2] or entry
            if not (directory / source).is_file():
                resolved.problems.append(f"{where}: configMapGenerator {generator['name']}: {source} does not exist")
        exists = ("ConfigMap", generator["name"]) in resolved.objects
        if generator.get("behavior") in ("merge", "replace") and not exists:
            resolved.problems.append(
                f"{where}: configMapGenerator {generator['name']} {generator['behavior']}s a ConfigMap "
                "no base generates"
            )
        resolved.objects.add(("ConfigMap", generator["name"]))


def _patches(
    directory: Path, kustomization: dict[str, Any], resolved: Resolved, where: str, *, check_targets: bool
) -> None:
    wanted: list[tuple[str, str, str]] = []
    for patch in kustomization.get("patches") or []:
        if "path" in patch and not (directory / patch["path"]).is_file():
            resolved.problems.append(f"{where}: patch {patch['path']} does not exist")
            continue
        if "target" in patch:
            wanted.append(("patch", patch["target"].get("kind"), patch["target"].get("name")))
        elif "path" in patch:
            wanted += [("patch", d["kind"], d["metadata"]["name"]) for d in documents(directory / patch["path"])]
    for replacement in kustomization.get("replacements") or []:
        source = replacement["source"]
        wanted.append(("replacement source", source["kind"], source["name"]))
        wanted += [("replacement target", t["select"]["kind"], t["select"]["name"]) for t in replacement["targets"]]
    if check_targets:
        for what, kind, name in wanted:
            if (kind, name) not in resolved.objects:
                resolved.problems.append(f"{where}: {what} {kind}/{name} is not there")


# --- tools ------------------------------------------------------------------------------------------


def tool_or_skip(name: str, hint: str) -> str:
    """The path of a command-line tool; skipped loudly without it, failed in CI when installable."""
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} NOT FOUND: {hint}"
    if in_ci() and "install-test-services" in hint:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
    raise AssertionError("unreachable")


def build(overlay: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of an overlay, parsed (skipped loudly without kubectl)."""
    kubectl = tool_or_skip("kubectl", "kubectl is not a Debian package here; the static Kustomize checks still ran")
    result = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return [d for d in yaml.load_all(result.stdout, Loader=KubeLoader) if d is not None]
