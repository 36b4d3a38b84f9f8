"""The deployment manifests (deploy/), the image recipe (Containerfile) and their documentation.

- Every YAML file parses; every Kustomize path exists and every patch hits an object (static).
- Every environment variable a manifest sets, or a ConfigMap feeds in, is a setting of the app, read
  from the settings classes; each container's environment makes valid settings for its command.
- Rendered overlays (``kubectl kustomize``, when installed): restricted-v2 security, probes on
  declared ports, resources, selectors that select, the replicas the issue asks for.
- The Containerfile, checked statically (no container engine here: it is never built by the tests).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest

from domain.settings import PREFIX, PROJECT_ROOT, KeycloakSettings, ReceiverSettings, load_sources
from tests.deploy_support import (
    DEPLOY,
    OVERLAYS,
    build,
    containers,
    documents,
    env_file,
    env_lists,
    kustomization_file,
    matches,
    pod_spec,
    setting_names,
    static_objects,
    yaml_files,
)

DOCS = PROJECT_ROOT / "docs" / "deployment.md"
REALM = PROJECT_ROOT / "keycloak" / "realm-ai-telemetry.json"
CONTAINERFILE = PROJECT_ROOT / "Containerfile"
CONTAINERIGNORE = PROJECT_ROOT / ".containerignore"
KUSTOMIZE_KINDS = {"Kustomization", "Component"}
TMP = "/tmp"  # noqa: S108  (a mount path in the manifests, not a file this test writes)
ALL_INTERFACES = "0.0.0.0"  # noqa: S104  (what the pods listen on, checked here)


def overlay_id(path: Path) -> str:
    return path.name


# --- every manifest parses --------------------------------------------------------------------------


def test_there_are_manifests_and_overlays() -> None:
    assert {p.name for p in OVERLAYS} >= {"demo", "production"}
    assert len(yaml_files()) >= 15


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_manifest_parses_as_kubernetes_objects(path: Path) -> None:
    docs = documents(path)
    assert docs, f"{path} is empty"
    if isinstance(docs[0], list):  # a JSON 6902 patch: a list of operations
        assert all({"op", "path"} <= set(op) for op in docs[0]), f"{path}: not a JSON patch"
        return
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
        assert doc.get("apiVersion") and doc.get("kind"), f"{path}: a document has no apiVersion/kind"
        if doc["kind"] not in KUSTOMIZE_KINDS:
            assert doc.get("metadata", {}).get("name"), f"{path}: a {doc['kind']} has no metadata.name"


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.toml")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_sources_file_is_valid(path: Path) -> None:
    sources = load_sources(path)
    assert sources, f"{path} names no source"


# --- Kustomize, statically --------------------------------------------------------------------------

KUSTOMIZATIONS = sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_kustomization_paths_exist_and_patches_hit_objects(directory: Path) -> None:
    resolved = static_objects(directory)
    assert resolved.problems == []
    assert resolved.objects


def test_static_resolution_catches_a_bad_patch_and_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [svc.yaml, missing.yaml]\npatches:\n  - path: patch.yaml\n"
        "  - target: {kind: Deployment, name: ghost}\n    patch: '[]'\n",
        encoding="utf-8",
    )
    (tmp_path / "svc.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n", encoding="utf-8")
    (tmp_path / "patch.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: b}\n", encoding="utf-8")
    problems = " ".join(static_objects(tmp_path).problems)
    assert "missing.yaml does not exist" in problems
    assert "Service/b" in problems
    assert "Deployment/ghost" in problems


def test_overlays_include_the_base_and_the_production_components() -> None:
    production = documents(DEPLOY / "overlays" / "production" / "kustomization.yaml")[0]
    assert "../../base" in production["resources"]
    assert {"../../components/monitoring", "../../components/openshift"} <= set(production["components"])
    demo = documents(DEPLOY / "overlays" / "demo" / "kustomization.yaml")[0]
    assert "../../base" in demo["resources"]


# --- environment variables --------------------------------------------------------------------------


def test_setting_names_come_from_the_settings_classes() -> None:
    names = setting_names()
    assert {
        "AI_TELEMETRY_DATABASE_URL",
        "AI_TELEMETRY_SITE_SESSION_SECRET",
        "AI_TELEMETRY_RECEIVER_PORT",
        "AI_TELEMETRY_KEYCLOAK_CLIENT_SECRET",
        "AI_TELEMETRY_CONFIG",
    } <= names
    assert "AI_TELEMETRY_SITE_NO_SUCH_THING" not in names
    assert all(name.startswith(PREFIX) and name == name.upper() for name in names)


def manifest_environment() -> dict[str, list[str]]:
    """Every variable name set anywhere under deploy/ → where it is set."""
    found: dict[str, list[str]] = {}
    for path in yaml_files():
        for doc in documents(path):
            for env in env_lists(doc):
                for entry in env:
                    found.setdefault(entry["name"], []).append(str(path.relative_to(PROJECT_ROOT)))
    for path in sorted(DEPLOY.rglob("*.env")):
        for name in env_file(path):
            found.setdefault(name, []).append(str(path.relative_to(PROJECT_ROOT)))
    return found


def test_every_environment_variable_in_the_manifests_is_a_setting() -> None:
    found = manifest_environment()
    assert "AI_TELEMETRY_DATABASE_URL" in found and "AI_TELEMETRY_AUTH_MODE" in found
    unknown = {name: where for name, where in found.items() if name not in setting_names()}
    assert unknown == {}, "not settings of the app (see domain/settings/)"


def test_the_environment_check_would_catch_a_misspelt_variable(tmp_path: Path) -> None:
    doc = {"spec": {"template": {"spec": {"containers": [{"env": [{"name": "AI_TELEMETRY_SITE_PROT"}]}]}}}}
    names = [entry["name"] for env in env_lists(doc) for entry in env]
    assert names == ["AI_TELEMETRY_SITE_PROT"]
    assert set(names) - setting_names() == {"AI_TELEMETRY_SITE_PROT"}


# --- rendered overlays ------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=OVERLAYS, ids=overlay_id)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param.name, build(request.param)


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def test_rendered_overlay_has_one_namespace(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"}
    assert len(namespaces) == 1 and None not in namespaces


def test_pods_meet_the_restricted_security_profile(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """OpenShift's restricted-v2 (and Kubernetes' restricted Pod Security Standard)."""
    _, objects = rendered
    specs = [s for s in map(pod_spec, objects) if s is not None]
    assert specs
    for spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert "runAsUser" not in spec["securityContext"], "restricted-v2 assigns the UID"
        assert spec.get("automountServiceAccountToken") is False
        tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for container in containers(spec):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["capabilities"]["drop"] == ["ALL"], container["name"]
            assert "runAsUser" not in context and not context.get("privileged")
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get(TMP) in tmp_volumes, f"{container['name']}: /tmp is not an emptyDir"


def test_containers_have_resources_probes_and_one_pinned_image(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    images = set()
    for spec in filter(None, map(pod_spec, objects)):
        for container in containers(spec):
            images.add(container["image"])
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), container["name"]
            assert container["args"][0] in {"site", "worker", "demo", "db"}
        for container in spec["containers"]:
            ports = {p["name"] for p in container["ports"]}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                get = container[probe]["httpGet"]
                assert get["port"] in ports, f"{container['name']} {probe} on an undeclared port"
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert len(images) == 1
    (image,) = images
    assert not image.endswith(":latest") and ":" in image.rsplit("/", 1)[-1]


def test_selectors_select(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """Services, budgets, policies and the ServiceMonitor all find what they are meant for."""
    _, objects = rendered
    pods = [
        (
            o["spec"]["template"]["metadata"]["labels"],
            [p for c in o["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])],
        )
        for o in by_kind(objects, "Deployment")
    ]
    for deployment in by_kind(objects, "Deployment"):
        template_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert matches(deployment["spec"]["selector"]["matchLabels"], template_labels)
    services = by_kind(objects, "Service")
    for service in services:
        selected = [ports for labels, ports in pods if matches(service["spec"]["selector"], labels)]
        assert selected, f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            assert any(port["targetPort"] in {p["name"] for p in ports} for ports in selected)
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for obj in by_kind(objects, kind):
            selector = obj["spec"]["selector" if kind == "PodDisruptionBudget" else "podSelector"]["matchLabels"]
            selected = [ports for labels, ports in pods if matches(selector, labels)]
            assert selected, f"{kind} {obj['metadata']['name']} selects no pod"
            for rule in obj["spec"].get("ingress", []):
                for port in rule["ports"]:
                    assert any(port["port"] in {p["name"] for p in ports} for ports in selected)
    for monitor in by_kind(objects, "ServiceMonitor"):
        chosen = [s for s in services if matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        for endpoint in monitor["spec"]["endpoints"]:
            assert any(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in chosen)
            assert endpoint["path"] == "/metrics"
    for route in by_kind(objects, "Route"):
        (service,) = [s for s in services if s["metadata"]["name"] == route["spec"]["to"]["name"]]
        assert route["spec"]["port"]["targetPort"] in {p["name"] for p in service["spec"]["ports"]}
        assert route["spec"]["tls"]["insecureEdgeTerminationPolicy"] == "Redirect"


def test_referenced_config_maps_are_rendered(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    config_maps = {o["metadata"]["name"] for o in by_kind(objects, "ConfigMap")}
    for spec in filter(None, map(pod_spec, objects)):
        for volume in spec["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
        for container in containers(spec):
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps


def test_production_alerting_matches_keycloak_and_the_realm() -> None:
    """Alertmanager asks this installation's Keycloak for tokens the worker accepts, as a client the realm has."""
    objects = build(DEPLOY / "overlays" / "production")
    config_maps = {o["metadata"]["name"]: o.get("data", {}) for o in by_kind(objects, "ConfigMap")}
    (settings,) = [data for name, data in config_maps.items() if name.startswith("ai-telemetry-settings")]
    keycloak = KeycloakSettings(
        url=settings["AI_TELEMETRY_KEYCLOAK_URL"], realm=settings["AI_TELEMETRY_KEYCLOAK_REALM"]
    )
    (resource,) = by_kind(objects, "AlertmanagerConfig")
    client_id = config_maps["ai-telemetry-alertmanager-client"]["client-id"]
    namespace = resource["metadata"]["namespace"]
    for webhook in resource["spec"]["receivers"][0]["webhookConfigs"]:
        assert webhook["httpConfig"]["oauth2"]["tokenUrl"] == keycloak.token_url
        assert webhook["url"] == f"http://ai-telemetry-worker.{namespace}.svc:8001/webhooks/alertmanager"
    audience = settings.get("AI_TELEMETRY_RECEIVER_JWT_AUDIENCE", ReceiverSettings().jwt_audience)
    realm = json.loads(REALM.read_text(encoding="utf-8"))
    (realm_client,) = [c for c in realm["clients"] if c["clientId"] == client_id]
    assert realm_client["serviceAccountsEnabled"] is True
    audiences = {m.get("config", {}).get("included.custom.audience") for m in realm_client.get("protocolMappers", [])}
    assert audience in audiences, "the realm's Alertmanager client must put the receiver's audience in its tokens"


def test_production_runs_two_sites_two_workers_and_migrates_first() -> None:
    objects = build(DEPLOY / "overlays" / "production")
    deployments = {d["metadata"]["name"]: d for d in by_kind(objects, "Deployment")}
    assert set(deployments) == {"ai-telemetry-site", "ai-telemetry-worker"}
    for name, command in (("ai-telemetry-site", "site"), ("ai-telemetry-worker", "worker")):
        spec = deployments[name]["spec"]
        assert spec["replicas"] == 2
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        pod = spec["template"]["spec"]
        assert [c["args"] for c in pod["initContainers"]] == [["db", "upgrade"]]
        assert [c["args"][0] for c in pod["containers"]] == [command]
    assert {o["kind"] for o in objects} >= {
        "Service",
        "Route",
        "ServiceMonitor",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ConfigMap",
        "ServiceAccount",
        "PrometheusRule",
        "AlertmanagerConfig",
    }


def test_demo_is_one_pod_serving_both_ports() -> None:
    objects = build(DEPLOY / "overlays" / "demo")
    (deployment,) = by_kind(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    (container,) = spec["template"]["spec"]["containers"]
    assert container["args"][:3] == ["demo", "--host", ALL_INTERFACES]
    assert {p["containerPort"] for p in container["ports"]} == {8000, 8001}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/opt/app-root/src/var" in mounts, "the demo's SQLite file needs a writable var/"


SETTINGS_CHILD = textwrap.dedent(
    """
    import json, sys
    from domain.settings import load_settings, require_session_secret
    command = sys.argv[1]
    settings = load_settings(demo=command == "demo")
    if command == "site":
        require_session_secret(settings)
    print(json.dumps({
        "database": settings.database.url.split(":", 1)[0],
        "auth": settings.auth.mode,
        "sources": [s.kind for s in settings.sources],
        "site_host": settings.site.host,
        "receiver_host": settings.receiver.host,
    }))
    """
)


def container_environment(
    container: dict[str, Any], spec: dict[str, Any], objects: list[dict[str, Any]], mounts_root: Path
) -> dict[str, str]:
    """What the container would see: ConfigMap values, literal values, stand-ins for Secrets."""
    config_maps = {o["metadata"]["name"]: o.get("data", {}) for o in by_kind(objects, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["secretKeyRef"]
            if ref.get("optional"):
                continue
            env[entry["name"]] = "postgresql://ai:pw@db.example:5432/ai" if ref["key"] == "uri" else "s" * 40
    # ConfigMap volumes are written out, and paths under their mount points point there instead.
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            local = mounts_root / container["name"] / mount["name"]
            local.mkdir(parents=True, exist_ok=True)
            for key, content in config_maps[volume["configMap"]["name"]].items():
                (local / key).write_text(content, encoding="utf-8")
            env = {k: v.replace(mount["mountPath"], str(local)) for k, v in env.items()}
    return env


def test_each_container_environment_makes_valid_settings(
    rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    overlay, objects = rendered
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith(PREFIX)}
    for spec in filter(None, map(pod_spec, objects)):
        for container in containers(spec):
            env = container_environment(container, spec, objects, tmp_path)
            command = container["args"][0]
            result = subprocess.run(
                [sys.executable, "-c", SETTINGS_CHILD, command],
                env={**base, **env},
                cwd=PROJECT_ROOT,
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            assert result.returncode == 0, f"{overlay}/{container['name']}: {result.stderr[-1500:]}"
            seen = json.loads(result.stdout.strip().splitlines()[-1])
            assert seen["sources"], f"{overlay}/{container['name']}: no source"
            if overlay == "production":
                assert seen["database"].startswith("postgresql"), container["name"]
                assert seen["auth"] == "keycloak"
                assert seen["sources"] == ["prometheus"]
                if command == "site":
                    assert seen["site_host"] == ALL_INTERFACES
                if command == "worker":
                    assert seen["receiver_host"] == ALL_INTERFACES


# --- Secrets and documentation ----------------------------------------------------------------------


def referenced_secrets() -> set[str]:
    names: set[str] = set()
    for path in yaml_files():
        text = path.read_text(encoding="utf-8")
        names |= set(re.findall(r"secretKeyRef:\s*\{name:\s*([a-z0-9-]+)", text))
        names |= set(re.findall(r"secretName:\s*([a-z0-9-]+)", text))
    return names


def test_no_secret_is_committed() -> None:
    for path in yaml_files():
        for doc in documents(path):
            assert not isinstance(doc, dict) or doc["kind"] != "Secret", f"{path} holds a Secret: create it instead"
        assert "BEGIN" not in path.read_text(encoding="utf-8"), f"{path} seems to hold a key or certificate"
    for path in DEPLOY.rglob("*.env"):
        for name, value in env_file(path).items():
            if any(word in name for word in ("SECRET", "PASSWORD", "TOKEN")):
                pytest.fail(f"{path}: {name}={value} belongs in a Secret")


def test_deployment_guide_covers_every_secret_and_overlay() -> None:
    text = DOCS.read_text(encoding="utf-8")
    secrets = referenced_secrets()
    assert {"ai-telemetry-db", "ai-telemetry-site", "ai-telemetry-keycloak", "ai-telemetry-observatorium"} <= secrets
    for name in secrets:
        assert "create secret" in text and name in text, f"docs/deployment.md does not say how to create {name}"
    for overlay in OVERLAYS:
        assert f"deploy/overlays/{overlay.name}" in text
    for needed in ("oc new-project", "realm", "GitHub", "Observatorium", "promtool", "AlertmanagerConfig"):
        assert needed in text, f"docs/deployment.md does not mention {needed}"
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/deployment.md" in readme


def test_every_kustomization_is_reachable_from_an_overlay() -> None:
    """No dead component: each one is used by some overlay (the alerting one once generated)."""
    used: set[Path] = set()

    def walk(directory: Path) -> None:
        used.add(directory.resolve())
        kustomization = documents(kustomization_file(directory))[0]  # type: ignore[arg-type]
        for entry in [*(kustomization.get("resources") or []), *(kustomization.get("components") or [])]:
            target = (directory / entry).resolve()
            if target.is_dir():
                walk(target)

    for overlay in OVERLAYS:
        walk(overlay)
    assert {d.resolve() for d in KUSTOMIZATIONS} - used == set()


# --- Containerfile ----------------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Containerfile, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", CONTAINERFILE.read_text(encoding="utf-8"))
    result = []
    for raw in joined.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def test_containerfile_base_user_and_entrypoint() -> None:
    steps = instructions()
    bases = [args for keyword, args in steps if keyword == "FROM"]
    assert bases and all(
        re.search(r"(^|/)ubi9/python-311(:|$)", base.split()[0]) or base.split()[0].startswith("python:3.11-slim")
        for base in bases
    ), bases
    users = [args for keyword, args in steps if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    assert users[-1].isdigit() and int(users[-1]) > 0, "the final USER must be a numeric non-root id"
    (entrypoint,) = [json.loads(args) for keyword, args in steps if keyword == "ENTRYPOINT"]
    assert entrypoint == ["ai-telemetry"]
    exposed = {port for keyword, args in steps if keyword == "EXPOSE" for port in args.split()}
    assert exposed == {"8000", "8001"}


def test_containerfile_holds_no_secret() -> None:
    for keyword, args in instructions():
        if keyword in {"ENV", "ARG", "LABEL"}:
            assert not re.search(r"(?i)(password|secret|token|api_?key)\s*=", args), args
    text = CONTAINERFILE.read_text(encoding="utf-8")
    assert "AI_TELEMETRY_" not in text, "settings belong to the deployment, not the image"


def ignore_patterns() -> list[str]:
    lines = CONTAINERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    return any(
        fnmatch.fnmatch(relative, p)
        or fnmatch.fnmatch(relative, p.removeprefix("**/"))
        or any(fnmatch.fnmatch(part, p.removeprefix("**/")) for part in relative.split("/"))
        for p in patterns
    )


def test_containerignore_keeps_out_local_state_and_keeps_in_the_app() -> None:
    patterns = ignore_patterns()
    for unwanted in (
        ".venv",
        "var",
        ".git",
        "tests",
        "tests/artifacts",
        "domain/__pycache__",
        "x.pyc",
        ".pytest_cache",
        "benchmarks/results",
        "var/ai-telemetry.db",
        ".env",
    ):
        assert ignored(unwanted, patterns), f".containerignore lets {unwanted} into the build"
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    needed = [
        *pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"],
        "templates",
        "static",
        "pyproject.toml",
        "README.md",
        "domain/migrations/versions",
    ]
    for path in needed:
        assert (PROJECT_ROOT / path).exists()
        assert not ignored(path, patterns), f".containerignore would drop {path}, which the app needs"
    for keyword, args in instructions():
        if keyword == "COPY":
            for source in [a for a in args.split()[:-1] if not a.startswith("--")]:
                assert (PROJECT_ROOT / source).exists(), f"COPY {source}: no such file"
                assert source == "." or not ignored(source, patterns), f"COPY {source} is ignored"
