"""The Grafana dashboard in deploy/grafana references only metrics the product exposes.

Every PromQL expression of the dashboard (panel targets and template variables) is checked by a real
Prometheus (``/api/v1/format_query`` parses it), and every metric it selects must be one the worker's
or the site's ``/metrics`` declares: the names are read from those endpoints, built as the product
builds them, never from a list kept here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from domain.settings import PROJECT_ROOT, Settings
from tests.prometheus_service import PrometheusServer, running_prometheus
from web.app import create_app
from worker.receiver import create_receiver_app
from worker.scheduler import create_scheduler
from worker.sources.registry import build_sources

DASHBOARDS = sorted((PROJECT_ROOT / "deploy" / "grafana").glob("*.json"))
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
}
"""Grafana's built-in variables, replaced by a value of their kind before Prometheus parses the query."""
KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}


def expressions(dashboard: dict) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable (``label_values(selector, label)``)."""

    def panels(items: list[dict]) -> Iterator[dict]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} target {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        found = re.fullmatch(r"label_values\((.+),\s*\w+\)", query.strip())
        assert found, f"variable {variable['name']}: not a label_values(selector, label) query: {query}"
        yield f"variable {variable['name']}", found.group(1)


def concrete(expr: str) -> str:
    """The expression with Grafana's variables replaced: built-ins by a duration, ``$name`` by a regex."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def selected_metrics(expr: str) -> set[str]:
    """Metric names an (already parsed, valid) PromQL expression selects.

    Strings, label matchers and range/offset durations are removed first; what remains that is an
    identifier, not a function or aggregation (followed by ``(``), not a keyword and not inside a
    ``by``/``without``/``on``/``ignoring``/``group_*`` label list, is a metric name.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for found in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = found.group(1), found.group(2)
        if call or name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names


def exposed(metrics_text: str) -> set[str]:
    """Every sample name a /metrics body declares (HELP/TYPE of a family count even before its first sample)."""
    names = set()
    for family in text_string_to_metric_families(metrics_text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


@pytest.fixture(scope="module")
def product_metrics(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Names from the worker's /metrics (its scheduler's registry) and the site's /metrics, as the demo builds them."""
    from domain.database import create_db_engine, upgrade
    from tests.conftest import settings_for

    directory = tmp_path_factory.mktemp("grafana-metrics")
    engine: Engine = create_db_engine(settings_for(f"sqlite:///{directory / 'm.db'}").database)
    upgrade(engine)
    settings: Settings = settings_for(engine, demo=True)
    try:
        scheduler = create_scheduler(settings, engine, build_sources(settings))
        with TestClient(create_receiver_app(settings, engine, scheduler)) as worker:
            worker_text = worker.get("/metrics").text
        with TestClient(create_app(settings, engine)) as site:
            site_text = site.get("/metrics").text
    finally:
        engine.dispose()
    return exposed(worker_text) | exposed(site_text)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with running_prometheus(tmp_path_factory.mktemp("grafana-prometheus"), []) as server:
        yield server


def test_the_extractor_finds_metrics_and_nothing_else() -> None:
    expr = (
        'sum by (project, model) (rate(a_total{hub=~".*", project="x y"}[5m])) / on (hub) group_left (cluster) '
        "b_seconds offset 5m + histogram_quantile(0.9, sum by (le) (rate(c_bucket[1h]))) and time() - d:rule"
    )
    assert selected_metrics(expr) == {"a_total", "b_seconds", "c_bucket", "d:rule"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_parse_and_use_only_exposed_metrics(
    path: Path, prometheus: PrometheusServer, product_metrics: set[str]
) -> None:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    found = list(expressions(dashboard))
    assert found, f"{path.name}: no queries"
    used: set[str] = set()
    for where, expr in found:
        query = concrete(expr)
        answer = httpx.get(f"{prometheus.url}/api/v1/format_query", params={"query": query}, timeout=10)
        assert answer.status_code == 200, f"{path.name} {where}: Prometheus cannot parse {query!r}: {answer.text}"
        metrics = selected_metrics(query)
        assert metrics, f"{path.name} {where}: selects no metric: {query}"
        unknown = metrics - product_metrics
        assert not unknown, f"{path.name} {where}: metrics the product does not expose: {sorted(unknown)}"
        used |= metrics
    ledger = {
        name
        for name in product_metrics
        if name.startswith("ai_telemetry_ledger_") and name.endswith(("_total", "_timestamp_seconds"))
    }
    assert ledger, "the worker exposes no ledger counters (docs/ledger.md)"
    assert ledger <= used, f"{path.name}: ledger metrics the dashboard does not chart: {sorted(ledger - used)}"


def test_dashboard_is_importable_grafana_json() -> None:
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        variables = {v["name"] for v in dashboard["templating"]["list"]}
        for _, expr in expressions(dashboard):
            for name in re.findall(r"\$\{?(\w+)", expr):
                assert name.startswith("__") or name in variables, f"{path.name}: ${name} is not a variable"
