"""Typed settings: environment variables prefixed ``AI_TELEMETRY_``, a TOML file for sources, CLI overrides.

Each concern has its own section with its own prefix, so every variable has a flat, greppable name
(``AI_TELEMETRY_DATABASE_URL``, ``AI_TELEMETRY_SITE_PORT``, ...). Settings are built once by
:func:`load_settings` at start-up and passed in; nothing reads the environment at import time.
A missing or invalid value raises :class:`SettingsError` whose message names the variable or key.
Each fact is one setting: a threshold two parts read (idle, hot, missing) lives in one section.

Modules: :mod:`~domain.settings.base` (prefix, error), :mod:`~domain.settings.servers` (database,
site, receiver, HTTP, auth, Keycloak), :mod:`~domain.settings.processing` (scheduler, traces,
pipeline, LLM, statements), :mod:`~domain.settings.notifications`, :mod:`~domain.settings.sources`
(the TOML file) and :mod:`~domain.settings.loading` (:func:`load_settings`). Import from here.
"""

from domain.settings.base import PREFIX, PROJECT_ROOT, Port, SettingsError, section_config
from domain.settings.loading import (
    DEMO_RATE_CARD,
    Settings,
    load_config_file,
    load_settings,
    load_sources,
    require_session_secret,
)
from domain.settings.notifications import (
    DEFAULT_SITE_URL,
    SMTP_ROUND_TRIPS,
    NotificationPolicies,
    NotificationSettings,
    PolicySettings,
    ProjectPolicySettings,
)
from domain.settings.processing import (
    DEFAULT_HOT_TEMPERATURE_C,
    LlmSettings,
    OtelSettings,
    PipelineSettings,
    SchedulerSettings,
    StatementSettings,
)
from domain.settings.servers import (
    AuthSettings,
    DatabaseSettings,
    HttpSettings,
    KeycloakSettings,
    ReceiverSettings,
    SiteSettings,
)
from domain.settings.sources import DEMO_SOURCE, SourceSettings, SourcesFile, read_bearer_token

__all__ = [
    "DEFAULT_HOT_TEMPERATURE_C",
    "DEFAULT_SITE_URL",
    "DEMO_RATE_CARD",
    "DEMO_SOURCE",
    "PREFIX",
    "PROJECT_ROOT",
    "SMTP_ROUND_TRIPS",
    "AuthSettings",
    "DatabaseSettings",
    "HttpSettings",
    "KeycloakSettings",
    "LlmSettings",
    "NotificationPolicies",
    "NotificationSettings",
    "OtelSettings",
    "PipelineSettings",
    "PolicySettings",
    "Port",
    "ProjectPolicySettings",
    "ReceiverSettings",
    "SchedulerSettings",
    "Settings",
    "SettingsError",
    "SiteSettings",
    "SourceSettings",
    "SourcesFile",
    "StatementSettings",
    "load_config_file",
    "load_settings",
    "load_sources",
    "read_bearer_token",
    "require_session_secret",
    "section_config",
]
