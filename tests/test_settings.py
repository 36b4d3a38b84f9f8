"""Settings: environment (``AI_TELEMETRY_*``), the TOML sources file, command-line overrides.

Environment cases run ``load_settings`` in a child interpreter with a controlled environment, so
this process's environment is never modified.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine

from domain.settings import (
    DEFAULT_HOT_TEMPERATURE_C,
    DEMO_SOURCE,
    PROJECT_ROOT,
    PipelineSettings,
    SchedulerSettings,
    Settings,
    SettingsError,
    load_settings,
    load_sources,
)

CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from domain.settings import SettingsError, load_settings

    args = json.loads(sys.argv[1])
    try:
        s = load_settings(args["overrides"], demo=args["demo"])
    except SettingsError as exc:
        print(json.dumps({"error": str(exc)}))
        raise SystemExit(0)
    print(json.dumps({
        "database_url": s.database.url,
        "pool_size": s.database.pool_size,
        "site_port": s.site.port,
        "site_host": s.site.host,
        "session_secret": s.site.session_secret.get_secret_value() if s.site.session_secret else None,
        "auth_mode": s.auth.mode,
        "poll_interval": s.scheduler.poll_interval_seconds,
        "otlp_endpoint": s.otel.endpoint,
        "sources": [src.model_dump(mode="json") for src in s.sources],
        "config_path": str(s.config_path) if s.config_path else None,
    }))
    """
)


def load_in_child(
    env: dict[str, str], overrides: dict[str, dict[str, Any]] | None = None, *, demo: bool = False
) -> dict[str, Any]:
    """``load_settings`` in a fresh interpreter whose only AI_TELEMETRY_ variables are ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("AI_TELEMETRY_")}
    args = json.dumps({"overrides": overrides or {}, "demo": demo})
    result = subprocess.run(
        [sys.executable, "-c", CHILD, args],
        env={**base, **env},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def write(path: Path, content: str) -> Path:
    path.write_text(textwrap.dedent(content), encoding="utf-8")
    return path


SOURCES_TOML = """
    [[sources]]
    name = "hub-east"
    kind = "prometheus"
    url = "https://thanos.east.example.org"
    cluster_label = "cluster"
    timeout_seconds = 5

    [sources.matchers]
    job = "dcgm-exporter"

    [[sources]]
    name = "lab-a100"
    url = "http://prometheus.lab:9090"
    cluster = "lab"

    [[sources]]
    name = "sim"
    kind = "simulated"
    seed = 7
"""


# --- environment -------------------------------------------------------------------------------


def test_environment_variables_are_read() -> None:
    got = load_in_child(
        {
            "AI_TELEMETRY_DATABASE_URL": "postgresql://telemetry@db.example.org/telemetry",
            "AI_TELEMETRY_DATABASE_POOL_SIZE": "4",
            "AI_TELEMETRY_SITE_PORT": "9100",
            "AI_TELEMETRY_SITE_HOST": "10.1.2.3",
            "AI_TELEMETRY_SITE_SESSION_SECRET": "s" * 32,
            "AI_TELEMETRY_SCHEDULER_POLL_INTERVAL_SECONDS": "12.5",
            "AI_TELEMETRY_OTLP_ENDPOINT": "http://collector:4318/v1/traces",
        }
    )
    assert got["database_url"] == "postgresql+psycopg://telemetry@db.example.org/telemetry"
    assert got["pool_size"] == 4
    assert got["site_port"] == 9100
    assert got["site_host"] == "10.1.2.3"
    assert got["session_secret"] == "s" * 32
    assert got["poll_interval"] == 12.5
    assert got["otlp_endpoint"] == "http://collector:4318/v1/traces"
    assert got["sources"] == []


def test_defaults_without_environment() -> None:
    got = load_in_child({})
    assert got["database_url"].startswith("sqlite:///")
    assert got["site_port"] == 8000
    assert got["auth_mode"] == "local"
    assert got["session_secret"] is None


def test_overrides_win_over_environment_and_none_does_not_mask_it() -> None:
    env = {"AI_TELEMETRY_SITE_PORT": "9100", "AI_TELEMETRY_SITE_HOST": "10.0.0.1"}
    got = load_in_child(env, {"site": {"port": 9200, "host": None}})
    assert got["site_port"] == 9200
    assert got["site_host"] == "10.0.0.1"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AI_TELEMETRY_SITE_PORT", "abc"),
        ("AI_TELEMETRY_SITE_PORT", "70000"),
        ("AI_TELEMETRY_DATABASE_URL", "mysql://x"),
        ("AI_TELEMETRY_AUTH_MODE", "ldap"),
        ("AI_TELEMETRY_SCHEDULER_IDLE_THRESHOLD_PERCENT", "150"),
        ("AI_TELEMETRY_RECEIVER_PORT", "0"),
    ],
)
def test_invalid_environment_value_names_the_variable(variable: str, value: str) -> None:
    got = load_in_child({variable: value})
    assert "error" in got, got
    assert variable in got["error"]


def test_secret_is_not_echoed_in_errors() -> None:
    got = load_in_child({"AI_TELEMETRY_SITE_SESSION_SECRET": "tooshort-hunter2"})
    assert "AI_TELEMETRY_SITE_SESSION_SECRET" in got["error"]
    assert "hunter2" not in got["error"]


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path / "sources.toml", SOURCES_TOML)
    got = load_in_child({"AI_TELEMETRY_CONFIG": str(path)})
    assert got["config_path"] == str(path)
    assert [s["name"] for s in got["sources"]] == ["hub-east", "lab-a100", "sim"]


def test_demo_in_child_without_config_gets_the_simulated_source() -> None:
    got = load_in_child({}, demo=True)
    assert [(s["name"], s["kind"]) for s in got["sources"]] == [("demo", "simulated")]


# --- overrides (in-process; no environment involved) ------------------------------------------


def test_invalid_override_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="AI_TELEMETRY_SITE_PORT"):
        load_settings({"site": {"port": "abc"}})
    with pytest.raises(SettingsError, match="AI_TELEMETRY_DATABASE_URL"):
        load_settings({"database": {"url": "mysql://x"}})


def test_unknown_section_rejected() -> None:
    with pytest.raises(SettingsError, match="unknown settings section"):
        load_settings({"sight": {"port": 1}})


def test_keycloak_mode_needs_url_and_secret() -> None:
    with pytest.raises(SettingsError, match="AI_TELEMETRY_KEYCLOAK_URL"):
        load_settings({"auth": {"mode": "keycloak"}, "keycloak": {"client_secret": "c"}})
    with pytest.raises(SettingsError, match="AI_TELEMETRY_KEYCLOAK_CLIENT_SECRET"):
        load_settings({"auth": {"mode": "keycloak"}, "keycloak": {"url": "https://sso.example.org"}})
    settings = load_settings(
        {"auth": {"mode": "keycloak"}, "keycloak": {"url": "https://sso.example.org", "client_secret": "c"}}
    )
    assert settings.auth.mode == "keycloak"
    assert settings.keycloak.url == "https://sso.example.org"


hosts = st.sampled_from(["sso.example.org", "127.0.0.1", "localhost", "[::1]", "keycloak.sso.svc"])
ports = st.none() | st.integers(min_value=1, max_value=65535)
prefixes = st.sampled_from(["", "/", "/auth", "/auth/", "/sso/keycloak"])


@given(scheme=st.sampled_from(["http", "https"]), host=hosts, port=ports, prefix=prefixes)
def test_keycloak_urls_with_a_scheme_and_host_load_without_a_trailing_slash(
    scheme: str, host: str, port: int | None, prefix: str
) -> None:
    url = f"{scheme}://{host}{f':{port}' if port else ''}{prefix}"
    settings = load_settings({"auth": {"mode": "keycloak"}, "keycloak": {"url": url, "client_secret": "c"}})
    assert settings.keycloak.url == url.rstrip("/")
    assert settings.keycloak.token_url == f"{url.rstrip('/')}/realms/ai-telemetry/protocol/openid-connect/token"


@given(
    url=st.one_of(
        st.builds(lambda h, p: f"{h}:{p}", hosts, st.integers(min_value=1, max_value=65535)),  # no scheme
        st.builds(lambda s, h: f"{s}://{h}", st.sampled_from(["ftp", "ws", "file", "htp", "sso"]), hosts),
        st.sampled_from(["http://", "https://", "sso.example.org", "//sso.example.org", "http:sso.example.org"]),
        st.builds(lambda h: f"https://{h}/realms/ai-telemetry", hosts),  # a realm URL, not the base URL
        st.text(max_size=30).filter(lambda t: not t.lower().startswith(("http://", "https://"))),
    ),
    field=st.sampled_from(["url", "site_url"]),
)
def test_a_keycloak_url_that_is_not_an_http_base_url_names_the_variable(url: str, field: str) -> None:
    keycloak = {"url": "https://sso.example.org", "client_secret": "c", field: url}
    with pytest.raises(SettingsError) as raised:
        load_settings({"auth": {"mode": "keycloak"}, "keycloak": keycloak})
    assert f"AI_TELEMETRY_KEYCLOAK_{field.upper()}" in str(raised.value)


# --- the TOML sources file --------------------------------------------------------------------


def test_sources_file_is_parsed(tmp_path: Path) -> None:
    path = write(tmp_path / "sources.toml", SOURCES_TOML)
    settings = load_settings(config_path=path)
    assert settings.config_path == path
    east, lab, sim = settings.sources
    assert (east.name, east.kind, east.url, east.cluster, east.cluster_label) == (
        "hub-east",
        "prometheus",
        "https://thanos.east.example.org",
        None,
        "cluster",
    )
    assert east.timeout_seconds == 5
    assert east.matchers == {"job": "dcgm-exporter"}
    assert (lab.name, lab.kind, lab.url, lab.cluster) == ("lab-a100", "prometheus", "http://prometheus.lab:9090", "lab")
    assert (sim.kind, sim.seed, sim.url) == ("simulated", 7, None)


def test_sources_file_replaces_demo_source(tmp_path: Path) -> None:
    path = write(tmp_path / "sources.toml", SOURCES_TOML)
    settings = load_settings(config_path=path, demo=True)
    assert "demo" not in [s.name for s in settings.sources]


@pytest.mark.parametrize(
    ("content", "key"),
    [
        (
            '[[sources]]\nname = "a"\nurl = "http://p"\ncluster = "c"\ntimeout_seconds = -1\n',
            "sources.0.timeout_seconds",
        ),
        ('[[sources]]\nname = "a"\nurl = "http://p"\ncluster = "c"\nurll = "x"\n', "sources.0.urll"),
        ('[[sources]]\nname = "ok"\nkind = "simulated"\n[[sources]]\nname = "a"\nkind = "kafka"\n', "sources.1.kind"),
        ('[[sources]]\nname = "a b"\nkind = "simulated"\n', "sources.0.name"),
        ('[[sources]]\nname = "a"\nkind = "prometheus"\ncluster = "c"\n', "sources.0"),
        ('[[sources]]\nname = "a"\nurl = "http://p"\n', "sources.0"),
        ('[[sources]]\nname = "a"\nurl = "http://p"\ncluster = "c"\ncluster_label = "cluster"\n', "sources.0"),
        ('[[source]]\nname = "a"\n', "source"),
    ],
    ids=["bad-value", "unknown-key", "unknown-kind", "bad-name", "no-url", "no-cluster", "both-clusters", "typo"],
)
def test_sources_file_errors_name_file_and_key(tmp_path: Path, content: str, key: str) -> None:
    path = write(tmp_path / "sources.toml", content)
    with pytest.raises(SettingsError) as caught:
        load_sources(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"{key}:" in message or f"{key}." in message


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.toml", "[[sources]\nname = \n")
    with pytest.raises(SettingsError, match="not valid TOML") as caught:
        load_settings(config_path=path)
    assert str(path) in str(caught.value)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(SettingsError, match="file not found") as caught:
        load_settings(config_path=path)
    assert str(path) in str(caught.value)


def test_duplicate_source_names_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path / "sources.toml",
        """
        [[sources]]
        name = "twin"
        kind = "simulated"

        [[sources]]
        name = "twin"
        kind = "simulated"
        seed = 2
        """,
    )
    with pytest.raises(SettingsError, match=r"duplicate source name.*twin") as caught:
        load_settings(config_path=path)
    assert str(path) in str(caught.value)


def test_demo_without_config_gets_the_simulated_demo_source() -> None:
    settings = load_settings(demo=True)
    assert settings.sources == (DEMO_SOURCE,)
    assert (settings.sources[0].name, settings.sources[0].kind) == ("demo", "simulated")
    assert settings.demo is True


def test_no_sources_outside_demo_without_config() -> None:
    assert load_settings().sources == ()


# --- the fixture other tests build settings with ------------------------------------------------


def test_make_settings_uses_the_engine(make_settings: Callable[..., Settings], sqlite_engine: Engine) -> None:
    settings = make_settings(sqlite_engine, site={"port": 9300})
    assert settings.database.url == sqlite_engine.url.render_as_string(hide_password=False)
    assert settings.site.port == 9300
    assert settings.site.session_secret is not None
    assert len(settings.site.session_secret.get_secret_value()) >= 32
    assert settings.sources == ()
    assert settings.demo is False


RATE_CARD = """
currency = "EUR"
default_price_per_gpu_hour = 1.0

[service_unit]
name = "GPU SU"
description = "1 GPU + its share of the node"
units_per_gpu_hour = 1.5

[[rates]]
model = "NVIDIA A100-SXM4-80GB"
price_per_gpu_hour = 2.4

[[rates]]
model = "NVIDIA A100-SXM4-80GB"
profile = "1g.10gb"
price_per_gpu_hour = 2.1
"""


def test_rate_card_is_read_and_prices_models_and_profiles(tmp_path: Path) -> None:
    path = tmp_path / "rates.toml"
    path.write_text(RATE_CARD, encoding="utf-8")
    card = load_settings({"statements": {"rate_card": path}}).rate_card
    assert card is not None and card.currency == "EUR"
    assert card.price("NVIDIA A100-SXM4-80GB", "1g.10gb") == 2.1
    assert card.price("NVIDIA A100-SXM4-80GB", "3g.40gb") == 2.4  # an unlisted profile: the model's price
    assert card.price("NVIDIA L40S", "whole") == 1.0  # an unlisted model: the default
    assert card.service_units(2.0) == 3.0
    assert load_settings().rate_card is None  # no rate card: statements without cost


def test_the_demo_has_a_rate_card_for_every_model_of_its_fleet() -> None:
    import simulator

    card = load_settings(demo=True).rate_card
    assert card is not None
    fleet = simulator.load_fleet(None)
    models = {node.model.name for cluster in fleet.clusters for node in cluster.nodes}
    assert models and all(card.price(model, "whole") is not None for model in models)


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ('currency = "euro"', "currency"),
        ('currency = "EUR"\n[[rates]]\nmodel = "A"\nprice_per_gpu_hour = -1', "rates.0.price_per_gpu_hour"),
        ('currency = "EUR"\n[[rates]]\nmodel = "A"\nprice_per_gpu_hour = nan', "rates.0.price_per_gpu_hour"),
        ('currency = "EUR"\n[[rates]]\nmodel = "A"\nprofile = "huge"\nprice_per_gpu_hour = 1', "rates.0.profile"),
        (
            'currency = "EUR"\n' + '[[rates]]\nmodel = "A"\nprice_per_gpu_hour = 1\n' * 2,
            "A whole",
        ),
        ('currency = "EUR"\n[service_unit]\nname = "SU"\nunits_per_gpu_hour = 0', "service_unit.units_per_gpu_hour"),
        ('currency = "EUR"\nprices = 3', "prices"),
        ("currency = [", "not valid TOML"),
    ],
)
def test_a_bad_rate_card_stops_start_up_naming_the_file_and_key(tmp_path: Path, content: str, named: str) -> None:
    path = tmp_path / "rates.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SettingsError) as caught:
        load_settings({"statements": {"rate_card": path}}, demo=True)
    message = str(caught.value)
    assert message.startswith("AI_TELEMETRY_STATEMENTS_RATE_CARD: ") and str(path) in message and named in message


def test_a_missing_rate_card_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"AI_TELEMETRY_STATEMENTS_RATE_CARD: file not found: .*nowhere\.toml"):
        load_settings({"statements": {"rate_card": tmp_path / "nowhere.toml"}})


# --- facts said once ---------------------------------------------------------------------------


def test_idle_and_missing_are_scheduler_settings_only() -> None:
    """The pipeline reads the scheduler's idle threshold and missing grace; it has no copy that could differ."""
    assert {"idle_threshold_percent", "missing_after_seconds"} <= set(SchedulerSettings.model_fields)
    assert {"idle_threshold_percent", "missing_after_seconds"} & set(PipelineSettings.model_fields) == set()
    assert "thermal_threshold_c" in PipelineSettings.model_fields
    assert PipelineSettings().thermal_threshold_c == DEFAULT_HOT_TEMPERATURE_C


@pytest.mark.parametrize(
    ("old", "field", "value"),
    [
        ("AI_TELEMETRY_PIPELINE_IDLE_THRESHOLD_PERCENT", "idle_threshold_percent", 12.5),
        ("AI_TELEMETRY_PIPELINE_MISSING_AFTER_SECONDS", "missing_after_seconds", 90.0),
    ],
)
def test_a_removed_pipeline_variable_is_read_for_one_release_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, old: str, field: str, value: float
) -> None:
    monkeypatch.setenv(old, str(value))
    new = f"AI_TELEMETRY_SCHEDULER_{field.upper()}"
    with pytest.warns(FutureWarning, match=f"{old} is deprecated: it is now {new}"):
        settings = load_settings()
    assert getattr(settings.scheduler, field) == value

    monkeypatch.setenv(new, str(value + 1))
    with pytest.warns(FutureWarning, match=f"{old} is deprecated and ignored: {new} is set"):
        settings = load_settings()
    assert getattr(settings.scheduler, field) == value + 1
