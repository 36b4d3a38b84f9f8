"""deploy/generate.py: the PrometheusRule and AlertmanagerConfig come from alertmanager/ and nowhere else.

The translation is tested on small rule and Alertmanager files written to a temporary directory
(the real ones live in alertmanager/); the committed manifests are checked against alertmanager/
itself: regenerating gives the same bytes, the rules are exactly those files' rules, the receiver
translates back into exactly the receiver there. promtool and amtool (Debian's prometheus and
prometheus-alertmanager packages, installed by scripts/install-test-services) check what they can.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from domain.settings import PROJECT_ROOT
from tests.deploy_support import DEPLOY, build, documents, tool_or_skip

INSTALL_HINT = "run scripts/install-test-services (Debian: apt-get install {package})"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_generate", DEPLOY / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


generate = load_generator()

RULES = """\
groups:
  - name: example-gpu-usage
    rules:
      - alert: ExampleGpuWorkloadStarted
        expr: max by (cluster, Hostname, UUID, exported_namespace, exported_pod) (DCGM_FI_DEV_GPU_UTIL) > 0
        for: 1m
        labels:
          severity: info
        annotations:
          summary: "GPU {{ $labels.UUID }} is in use"
"""

ALERTMANAGER = """\
route:
  receiver: "null"
  group_by: [alertname]
  group_wait: 30s
  routes:
    - receiver: ai-telemetry
      matchers: ['alertname=~"ExampleGpu.*"', severity="info"]
      group_by: [alertname, UUID]
      group_interval: 1m
      repeat_interval: 4h
receivers:
  - name: "null"
  - name: ai-telemetry
    webhook_configs:
      - url: https://ai-telemetry.example.org/webhooks/alertmanager
        send_resolved: true
        max_alerts: 50
        http_config:
          oauth2:
            client_id: ai-telemetry-alertmanager
            client_secret_file: /etc/alertmanager/secrets/client-secret
            token_url: https://sso.example.org/realms/ai-telemetry/protocol/openid-connect/token
            scopes: [openid]
"""

BEARER_VARIANT = """\
route:
  receiver: ai-telemetry
receivers:
  - name: ai-telemetry
    webhook_configs:
      - url: https://ai-telemetry.example.org/webhooks/alertmanager
        http_config:
          authorization:
            credentials_file: /etc/alertmanager/secrets/webhook-token
"""


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A stand-in alertmanager/ directory: a rule file, the OAuth2 config and a bearer-token variant."""
    directory = tmp_path / "alertmanager"
    directory.mkdir()
    (directory / "gpu-usage.rules.yml").write_text(RULES, encoding="utf-8")
    (directory / "alertmanager.yml").write_text(ALERTMANAGER, encoding="utf-8")
    (directory / "alertmanager-bearer-token.yml").write_text(BEARER_VARIANT, encoding="utf-8")
    return directory


def rendered(source: Path) -> dict[str, list[dict[str, Any]]]:
    return {name: [d for d in yaml.safe_load_all(text) if d] for name, text in generate.render(source).items()}


# --- translating back, for comparison and for amtool ------------------------------------------------


def plain_receiver(resource: dict[str, Any], client_id: str) -> dict[str, Any]:
    """The AlertmanagerConfig's receiver in alertmanager.yml terms (secrets as files)."""
    (receiver,) = resource["spec"]["receivers"]
    webhooks = []
    for webhook in receiver["webhookConfigs"]:
        oauth2 = webhook["httpConfig"]["oauth2"]
        plain_oauth2: dict[str, Any] = {
            "client_id": client_id,
            "client_secret_file": "/etc/alertmanager/secrets/client-secret",
            "token_url": oauth2["tokenUrl"],
        }
        if "scopes" in oauth2:
            plain_oauth2["scopes"] = oauth2["scopes"]
        if "endpointParams" in oauth2:
            plain_oauth2["endpoint_params"] = oauth2["endpointParams"]
        plain: dict[str, Any] = {"url": webhook["url"], "http_config": {"oauth2": plain_oauth2}}
        for camel, snake in (("sendResolved", "send_resolved"), ("maxAlerts", "max_alerts"), ("timeout", "timeout")):
            if camel in webhook:
                plain[snake] = webhook[camel]
        webhooks.append(plain)
    return {"name": receiver["name"], "webhook_configs": webhooks}


def plain_route(resource: dict[str, Any]) -> dict[str, Any]:
    route = resource["spec"]["route"]
    plain: dict[str, Any] = {"receiver": route["receiver"]}
    for camel, snake in (
        ("groupBy", "group_by"),
        ("groupWait", "group_wait"),
        ("groupInterval", "group_interval"),
        ("repeatInterval", "repeat_interval"),
    ):
        if camel in route:
            plain[snake] = route[camel]
    if route.get("matchers"):
        plain["matchers"] = [f"{m['name']}{m['matchType']}{json.dumps(m['value'])}" for m in route["matchers"]]
    return plain


def comparable_receiver(receiver: dict[str, Any]) -> dict[str, Any]:
    """A receiver with what legitimately differs in the cluster taken out: URL host, secret's location."""
    result = json.loads(json.dumps(receiver))
    for webhook in result["webhook_configs"]:
        url = urlsplit(webhook["url"])
        webhook["url"] = url.path + (f"?{url.query}" if url.query else "")
        oauth2 = webhook["http_config"]["oauth2"]
        oauth2.pop("client_secret", None)
        oauth2.pop("client_secret_file", None)
    return result


def amtool_check(config: dict[str, Any], tmp_path: Path, name: str = "alertmanager.yml") -> None:
    amtool = tool_or_skip("amtool", INSTALL_HINT.format(package="prometheus-alertmanager"))
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    result = subprocess.run(
        [amtool, "check-config", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def promtool_check(groups: list[dict[str, Any]], tmp_path: Path) -> str:
    promtool = tool_or_skip("promtool", INSTALL_HINT.format(package="prometheus"))
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def check_translation(source: Path, manifests: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    """The manifests hold exactly alertmanager/'s rules and OAuth2 receiver, and both tools accept them."""
    sources = generate.find_sources(source)
    (rule,) = manifests[generate.RULES_FILE]
    assert rule["kind"] == "PrometheusRule"
    expected_groups = [g for path in sources.rule_files for g in yaml.safe_load(path.read_text())["groups"]]
    assert rule["spec"]["groups"] == expected_groups
    promtool_check(rule["spec"]["groups"], tmp_path)

    resource, config_map = manifests[generate.ALERTMANAGER_CONFIG_FILE]
    assert resource["kind"] == "AlertmanagerConfig" and config_map["kind"] == "ConfigMap"
    client_id = config_map["data"][generate.CLIENT_ID_KEY]
    _, original_receiver, original_route = generate.oauth2_receiver(sources.config_files)
    receiver = plain_receiver(resource, client_id)
    assert comparable_receiver(receiver) == comparable_receiver(original_receiver)
    route = plain_route(resource)
    for key in ("receiver", *generate.GROUPING_KEYS):
        assert route.get(key) == original_route.get(key), key
    assert [generate.parse_matcher(m) for m in route.get("matchers", [])] == generate._matchers(original_route)
    for webhook in resource["spec"]["receivers"][0]["webhookConfigs"]:
        assert webhook["url"].startswith("http://ai-telemetry-worker.NAMESPACE.svc:8001/")
        assert webhook["httpConfig"]["oauth2"]["clientSecret"] == {
            "name": generate.CLIENT_OBJECT_NAME,
            "key": generate.CLIENT_SECRET_KEY,
        }
    amtool_check({"route": {"receiver": route["receiver"], "routes": [route]}, "receivers": [receiver]}, tmp_path)


# --- the translation, on stand-in files -------------------------------------------------------------


def test_sources_are_told_apart(source: Path) -> None:
    found = generate.find_sources(source)
    assert [p.name for p in found.rule_files] == ["gpu-usage.rules.yml"]
    assert [p.name for p in found.config_files] == ["alertmanager-bearer-token.yml", "alertmanager.yml"]


def test_stand_in_files_are_valid_for_the_tools(source: Path, tmp_path: Path) -> None:
    promtool_check(yaml.safe_load(RULES)["groups"], tmp_path)
    for path in generate.find_sources(source).config_files:
        amtool_check(yaml.safe_load(path.read_text()), tmp_path, path.name)


def test_manifests_hold_exactly_the_rules_and_the_oauth2_receiver(source: Path, tmp_path: Path) -> None:
    manifests = rendered(source)
    check_translation(source, manifests, tmp_path)
    resource, config_map = manifests[generate.ALERTMANAGER_CONFIG_FILE]
    route = resource["spec"]["route"]
    assert route == {
        "receiver": "ai-telemetry",
        "groupBy": ["alertname", "UUID"],
        "groupWait": "30s",  # inherited from the top-level route, as Alertmanager does
        "groupInterval": "1m",
        "repeatInterval": "4h",
        "matchers": [
            {"name": "alertname", "value": "ExampleGpu.*", "matchType": "=~"},
            {"name": "severity", "value": "info", "matchType": "="},
        ],
    }
    (webhook,) = resource["spec"]["receivers"][0]["webhookConfigs"]
    assert webhook["url"] == "http://ai-telemetry-worker.NAMESPACE.svc:8001/webhooks/alertmanager"
    assert webhook["sendResolved"] is True and webhook["maxAlerts"] == 50
    assert config_map["data"] == {"client-id": "ai-telemetry-alertmanager"}
    kustomization = manifests[generate.KUSTOMIZATION_FILE][0]
    assert kustomization["resources"] == [generate.RULES_FILE, generate.ALERTMANAGER_CONFIG_FILE]


def test_the_comparison_would_notice_a_changed_receiver(source: Path) -> None:
    manifests = rendered(source)
    resource, _ = manifests[generate.ALERTMANAGER_CONFIG_FILE]
    resource["spec"]["receivers"][0]["webhookConfigs"][0]["httpConfig"]["oauth2"]["scopes"] = ["profile"]
    _, original, _ = generate.oauth2_receiver(generate.find_sources(source).config_files)
    assert comparable_receiver(plain_receiver(resource, "ai-telemetry-alertmanager")) != comparable_receiver(original)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.replace("max_alerts: 50", "max_alerts: 50\n        url_file: /x"), "url_file"),
        (
            lambda t: t.replace("scopes: [openid]", "scopes: [openid]\n            proxy_url: http://p:3128"),
            "proxy_url",
        ),
        (lambda t: t.replace("oauth2:", "oauth:"), "no Alertmanager receiver"),
        (lambda t: t.replace("- receiver: ai-telemetry", '- receiver: "null"'), "not used by any route"),
    ],
    ids=["unknown-webhook-field", "unknown-oauth2-field", "no-oauth2-receiver", "unrouted-receiver"],
)
def test_what_cannot_be_translated_stops_the_generator(
    source: Path, change: Callable[[str], str], message: str
) -> None:
    path = source / "alertmanager.yml"
    path.write_text(change(path.read_text()), encoding="utf-8")
    with pytest.raises(generate.GenerateError, match=message):
        generate.render(source)


def test_duplicate_rule_groups_stop_the_generator(source: Path) -> None:
    (source / "more.rules.yml").write_text(RULES, encoding="utf-8")
    with pytest.raises(generate.GenerateError, match="example-gpu-usage"):
        generate.render(source)


def test_check_mode_notices_stale_and_missing_files(source: Path, tmp_path: Path) -> None:
    output = tmp_path / "alerting"
    assert generate.main(["--source", str(source), "--output", str(output), "--check"]) == 1
    assert generate.main(["--source", str(source), "--output", str(output)]) == 0
    assert generate.main(["--source", str(source), "--output", str(output), "--check"]) == 0
    (source / "gpu-usage.rules.yml").write_text(RULES.replace("for: 1m", "for: 2m"), encoding="utf-8")
    assert generate.main(["--source", str(source), "--output", str(output), "--check"]) == 1


def test_an_overlay_with_the_component_fills_in_the_namespace(source: Path, tmp_path: Path) -> None:
    """The generated component composes with the production overlay (a copy, in a temporary tree)."""
    tree = tmp_path / "deploy"
    subprocess.run(["cp", "-r", str(DEPLOY), str(tree)], check=True, timeout=60)
    generate.write(tree / "components" / "alerting", source)
    overlay = tree / "overlays" / "production"
    kustomization = documents(overlay / "kustomization.yaml")[0]
    if "../../components/alerting" not in kustomization["components"]:
        kustomization["components"].append("../../components/alerting")
        kustomization.setdefault("replacements", []).append(NAMESPACE_REPLACEMENT)
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization), encoding="utf-8")
    objects = build(overlay)
    (resource,) = [o for o in objects if o["kind"] == "AlertmanagerConfig"]
    namespace = resource["metadata"]["namespace"]
    for webhook in resource["spec"]["receivers"][0]["webhookConfigs"]:
        assert webhook["url"].startswith(f"http://ai-telemetry-worker.{namespace}.svc:8001/")
    assert [o["kind"] for o in objects].count("PrometheusRule") == 1


NAMESPACE_REPLACEMENT = yaml.safe_load(
    textwrap.dedent("""
    source: {kind: Service, name: ai-telemetry-worker, fieldPath: metadata.namespace}
    targets:
      - select: {kind: AlertmanagerConfig, name: ai-telemetry}
        fieldPaths: [spec.receivers.*.webhookConfigs.*.url]
        options: {delimiter: ".", index: 1}
""")
)


# --- the committed manifests ------------------------------------------------------------------------

ALERTMANAGER_DIR = PROJECT_ROOT / "alertmanager"
ALERTING_COMPONENT = DEPLOY / "components" / "alerting"


def has_rules() -> bool:
    return bool(generate.find_sources(ALERTMANAGER_DIR).rule_files) if ALERTMANAGER_DIR.is_dir() else False


def test_alerting_component_exists_exactly_when_alertmanager_has_rules() -> None:
    assert ALERTING_COMPONENT.exists() == has_rules()


@pytest.mark.skipif(not has_rules(), reason="alertmanager/ holds no rules yet: NO ALERTING MANIFESTS TO CHECK")
def test_committed_manifests_are_what_alertmanager_generates(tmp_path: Path) -> None:
    assert generate.stale(ALERTING_COMPONENT, ALERTMANAGER_DIR) == [], "run `make deploy-manifests`"
    manifests = {
        name: documents(ALERTING_COMPONENT / name)
        for name in (generate.RULES_FILE, generate.ALERTMANAGER_CONFIG_FILE, generate.KUSTOMIZATION_FILE)
    }
    check_translation(ALERTMANAGER_DIR, manifests, tmp_path)
    for path in generate.find_sources(ALERTMANAGER_DIR).config_files:
        amtool_check(yaml.safe_load(path.read_text()), tmp_path, path.name)
