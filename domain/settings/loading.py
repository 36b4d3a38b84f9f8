"""Building the settings once at start-up: environment, then the TOML file, then command-line overrides."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings

from domain.ledger.rate_card import RateCard, RateCardError, load_rate_card
from domain.settings.base import PREFIX, PROJECT_ROOT, SettingsError
from domain.settings.notifications import NotificationPolicies, NotificationSettings
from domain.settings.processing import LlmSettings, OtelSettings, PipelineSettings, SchedulerSettings, StatementSettings
from domain.settings.servers import (
    AuthSettings,
    DatabaseSettings,
    HttpSettings,
    KeycloakSettings,
    ReceiverSettings,
    SiteSettings,
)
from domain.settings.sources import DEMO_SOURCE, SourceSettings, SourcesFile

DEMO_RATE_CARD = PROJECT_ROOT / "domain" / "ledger" / "demo-rate-card.toml"
"""The demo's rate card, unless AI_TELEMETRY_STATEMENTS_RATE_CARD names another."""


class Settings(BaseModel):
    """Everything the worker and the site need, one section per concern."""

    model_config = {"frozen": True}

    database: DatabaseSettings
    site: SiteSettings
    receiver: ReceiverSettings
    auth: AuthSettings
    keycloak: KeycloakSettings
    scheduler: SchedulerSettings
    otel: OtelSettings
    sources: tuple[SourceSettings, ...]
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    notify: NotificationSettings = Field(default_factory=NotificationSettings)
    policies: NotificationPolicies = Field(default_factory=NotificationPolicies)
    statements: StatementSettings = Field(default_factory=StatementSettings)
    rate_card: RateCard | None = None
    """The rate card named by ``statements.rate_card``, read and validated at start-up."""
    config_path: Path | None = None
    demo: bool = False

    @property
    def templates_dir(self) -> Path:
        return PROJECT_ROOT / "templates"

    @property
    def static_dir(self) -> Path:
        return PROJECT_ROOT / "static"


_SECTIONS: dict[str, type[BaseSettings]] = {
    "database": DatabaseSettings,
    "site": SiteSettings,
    "receiver": ReceiverSettings,
    "auth": AuthSettings,
    "keycloak": KeycloakSettings,
    "scheduler": SchedulerSettings,
    "otel": OtelSettings,
    "pipeline": PipelineSettings,
    "llm": LlmSettings,
    "http": HttpSettings,
    "notify": NotificationSettings,
    "statements": StatementSettings,
}


def _describe(section: type[BaseSettings], error: ValidationError) -> str:
    prefix = section.model_config.get("env_prefix", PREFIX)
    parts = []
    for item in error.errors():
        if item["loc"]:
            parts.append(f"{prefix}{str(item['loc'][0]).upper()}: {item['msg']}")
        else:  # a check across fields names its variables itself
            parts.append(str(item["msg"]).removeprefix("Value error, "))
    return "invalid setting " + "; ".join(parts)


def load_sources(path: Path) -> tuple[SourceSettings, ...]:
    """Read ``[[sources]]`` from a TOML file, naming the file and key on any error."""
    return tuple(load_config_file(path).sources)


def load_config_file(path: Path) -> SourcesFile:
    """Read the TOML file (``[[sources]]``, ``[notifications]``), naming the file and key on any error."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"{PREFIX}CONFIG: file not found: {path}") from None
    except OSError as exc:  # a directory, no permission, ...
        raise SettingsError(f"{PREFIX}CONFIG: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{PREFIX}CONFIG: {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{PREFIX}CONFIG: {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise SettingsError(f"{PREFIX}CONFIG: {path} is nested too deeply to be a sources file") from None
    try:
        return SourcesFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for item in exc.errors():
            where = ".".join(str(p) for p in item["loc"])
            problems.append(f"{where}: {item['msg']}")
        raise SettingsError(f"{PREFIX}CONFIG: {path}: " + "; ".join(problems)) from None


def load_settings(
    overrides: dict[str, dict[str, Any]] | None = None,
    *,
    config_path: Path | None = None,
    demo: bool = False,
) -> Settings:
    """Build the settings once: environment, then the TOML file, then command-line ``overrides``.

    ``overrides`` maps a section name to field values (e.g. ``{"site": {"port": 9000}}``); ``None``
    values are ignored so that unset flags do not mask the environment.
    """
    overrides = overrides or {}
    unknown = set(overrides) - set(_SECTIONS)
    if unknown:
        raise SettingsError(f"unknown settings section(s): {', '.join(sorted(unknown))}")
    sections: dict[str, Any] = {}
    for name, section in _SECTIONS.items():
        given = {k: v for k, v in overrides.get(name, {}).items() if v is not None}
        misspelt = set(given) - set(section.model_fields)
        if misspelt:
            raise SettingsError(f"unknown setting(s) in {name}: {', '.join(sorted(misspelt))}")
        try:
            sections[name] = section(**given)
        except ValidationError as exc:
            raise SettingsError(_describe(section, exc)) from None

    from_env = os.environ.get(f"{PREFIX}CONFIG")
    path = config_path or (Path(from_env) if from_env else None)
    config = load_config_file(path) if path else SourcesFile()
    sources = tuple(config.sources)
    if not sources and demo:
        sources = (DEMO_SOURCE,)

    rate_card = None
    rate_card_path = sections["statements"].rate_card or (DEMO_RATE_CARD if demo else None)
    if rate_card_path is not None:
        try:
            rate_card = load_rate_card(rate_card_path)
        except RateCardError as exc:
            raise SettingsError(f"{PREFIX}STATEMENTS_RATE_CARD: {exc}") from None

    settings = Settings(
        **sections, sources=sources, policies=config.notifications, rate_card=rate_card, config_path=path, demo=demo
    )
    _check_required(settings)
    return settings


def require_session_secret(settings: Settings) -> None:
    """The site signs sessions; outside the demo the key must be given (and shared by replicas)."""
    if settings.site.session_secret is None and not settings.demo:
        raise SettingsError(f"{PREFIX}SITE_SESSION_SECRET is required (32+ characters) to run the site")


def _check_required(settings: Settings) -> None:
    if settings.auth.mode == "keycloak":
        if not settings.keycloak.url:
            raise SettingsError(f"{PREFIX}KEYCLOAK_URL is required when {PREFIX}AUTH_MODE=keycloak")
        if settings.keycloak.client_secret is None:
            raise SettingsError(f"{PREFIX}KEYCLOAK_CLIENT_SECRET is required when {PREFIX}AUTH_MODE=keycloak")
    if settings.llm.base_url and not settings.llm.model:
        raise SettingsError(f"{PREFIX}LLM_MODEL is required when {PREFIX}LLM_BASE_URL is set")
