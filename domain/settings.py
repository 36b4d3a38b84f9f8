"""Typed settings: environment variables prefixed ``AI_TELEMETRY_``, a TOML file for sources, CLI overrides.

Each concern has its own section with its own prefix, so every variable has a flat, greppable name
(``AI_TELEMETRY_DATABASE_URL``, ``AI_TELEMETRY_SITE_PORT``, ...). Settings are built once by
:func:`load_settings` at start-up and passed in; nothing reads the environment at import time.
A missing or invalid value raises :class:`SettingsError` whose message names the variable or key.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

from domain.ledger.rate_card import RateCard, RateCardError, load_rate_card

PREFIX = "AI_TELEMETRY_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
Port = Annotated[int, Field(ge=1, le=65535)]


class SettingsError(Exception):
    """A setting is missing or invalid; the message names it."""


def _section(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=f"{PREFIX}{prefix}", extra="ignore", frozen=True)


class DatabaseSettings(BaseSettings):
    model_config = _section("DATABASE_")

    url: str = Field(
        default=f"sqlite:///{PROJECT_ROOT / 'var' / 'ai-telemetry.db'}",
        description="SQLAlchemy URL: sqlite:///path (embedded default) or postgresql+psycopg://user:pw@host/db.",
    )
    pool_size: int = Field(
        default=10,
        ge=1,
        le=200,
        description="Connections per process (PostgreSQL); also the most webhooks the receiver persists at once.",
    )
    echo: bool = Field(default=False, description="Log every SQL statement (debugging only).")

    @field_validator("url")
    @classmethod
    def _known_dialect(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("must start with sqlite:/// or postgresql+psycopg://")
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value.removeprefix("postgresql://")
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def display_url(self) -> str:
        """The URL with its password masked (``***``), for messages and logs."""
        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:  # an unparseable URL is shown without anything after the scheme
            return self.url.split("://", 1)[0] + "://…"


class SiteSettings(BaseSettings):
    model_config = _section("SITE_")

    host: str = Field(default="127.0.0.1", description="Address the site listens on.")
    port: Port = Field(default=8000, description="Port the site listens on.")
    session_secret: SecretStr | None = Field(
        default=None,
        description="Key for the session cookie (32+ characters). Required outside the demo; "
        "every site replica must share it.",
    )
    secure_cookies: bool = Field(default=False, description="Mark cookies Secure (set behind TLS).")
    trusted_proxies: str = Field(
        default="127.0.0.1",
        description="Addresses (comma-separated, or *) of the TLS-terminating proxy whose X-Forwarded-Proto and "
        "X-Forwarded-For the site believes; HSTS is sent exactly when the request came over TLS.",
    )
    page_size: int = Field(default=50, ge=1, le=1000, description="Default rows per table page.")
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest request body (forms, API calls) accepted; larger gets 413."
    )

    @field_validator("session_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value


class ReceiverSettings(BaseSettings):
    model_config = _section("RECEIVER_")

    host: str = Field(default="127.0.0.1", description="Address the worker's receiver listens on.")
    port: Port = Field(default=8001, description="Port of the worker's receiver (webhooks, health, metrics).")
    webhook_token: SecretStr | None = Field(
        default=None, description="Static bearer token Alertmanager may present instead of a Keycloak JWT."
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Largest webhook body accepted.")
    jwt_audience: str = Field(
        default="ai-telemetry-receiver",
        min_length=1,
        description="Audience (aud) a Keycloak access token must carry to post webhooks; Keycloak tokens are "
        "accepted when AI_TELEMETRY_KEYCLOAK_URL is set (give Alertmanager's client an audience mapper).",
    )
    default_cluster: str | None = Field(
        default=None,
        max_length=128,
        description="Cluster of alerts that carry no cluster label (one Prometheus per cluster without "
        "external_labels); when unset such alerts are stored but open no workload session.",
    )


class HttpSettings(BaseSettings):
    """Limits of the HTTP servers (site and receiver) that protect them from slow or oversized clients."""

    model_config = _section("HTTP_")

    request_timeout_seconds: float = Field(
        default=30,
        gt=0,
        le=3600,
        description="Time a client has to send a whole request (line, headers and body) once it starts one; "
        "slower clients get 408 and are disconnected (slowloris, stalled uploads).",
    )
    write_timeout_seconds: float = Field(
        default=60,
        gt=0,
        le=3600,
        description="Time a response may wait for a client that does not read it; then the connection is closed.",
    )
    keep_alive_seconds: float = Field(
        default=5, gt=0, le=3600, description="An idle keep-alive connection is closed after this long."
    )
    max_header_bytes: int = Field(
        default=65_536,
        ge=1024,
        le=16_777_216,
        description="Largest request line plus headers; larger requests get 414 (URL) or 431 (headers).",
    )


class AuthSettings(BaseSettings):
    model_config = _section("AUTH_")

    mode: Literal["local", "keycloak"] = Field(
        default="local", description="local: users and grants in the database; keycloak: OIDC + UMA."
    )


class KeycloakSettings(BaseSettings):
    model_config = _section("KEYCLOAK_")

    url: str | None = Field(
        default=None,
        description="Keycloak base URL (http:// or https://, without /realms/...), e.g. https://sso.example.org.",
    )
    realm: str = Field(default="ai-telemetry", description="Realm holding the clients and resources.")
    client_id: str = Field(default="ai-telemetry-site", description="The site's confidential client.")
    client_secret: SecretStr | None = Field(default=None, description="The site client's secret.")
    audience: str | None = Field(
        default=None,
        description="Audience an API bearer token must carry (aud); defaults to client_id. The realm's "
        "audience mapper adds it to the tokens of every client allowed to call the API.",
    )
    issuer: str | None = Field(
        default=None,
        description="Expected token issuer (iss); defaults to {url}/realms/{realm}. Set it when Keycloak's "
        "public hostname differs from url.",
    )
    admin_client_id: str | None = Field(
        default=None,
        description="Client whose service account calls the admin REST API (grants, API clients, project "
        "sync); defaults to client_id.",
    )
    admin_client_secret: SecretStr | None = Field(
        default=None, description="Secret of admin_client_id; defaults to client_secret."
    )
    permission_cache_seconds: float = Field(
        default=30,
        ge=0,
        le=3600,
        description="How long the project permissions Keycloak grants a token are cached (0: ask every request).",
    )
    site_url: str | None = Field(
        default=None,
        description="The site's public base URL (e.g. https://telemetry.example.org), used for the login "
        "redirect URI; defaults to the URL of the request.",
    )
    timeout_seconds: float = Field(default=5, gt=0, le=120, description="Timeout of each call to Keycloak.")
    ca_file: Path | None = Field(default=None, description="CA bundle to verify Keycloak's TLS certificate.")
    sync_interval_seconds: float = Field(
        default=300, gt=0, description="Interval of the worker's job creating Keycloak resources for new projects."
    )

    jwks_cache_seconds: float = Field(
        default=300,
        ge=0,
        description="How long the realm's signing keys (JWKS) are cached; an unknown key id refreshes them sooner.",
    )

    @field_validator("url", "site_url")
    @classmethod
    def _http_base_url(cls, value: str | None) -> str | None:
        """An http(s) URL with a host: ``127.0.0.1:8080`` would otherwise pass and fail only at login."""
        if value is None:
            return value
        printable = all(c.isprintable() and not c.isspace() for c in value)  # urlsplit drops them silently
        parsed = urlsplit(value)
        if not printable or parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, e.g. https://sso.example.org")
        parsed.port  # noqa: B018  (raises ValueError for a port that is not a number in range)
        if parsed.query or parsed.fragment or "/realms/" in f"{parsed.path}/":
            raise ValueError("must be the base URL alone, without /realms/..., ?query or #fragment")
        return value.rstrip("/")

    @property
    def realm_url(self) -> str:
        """``{url}/realms/{realm}``: the realm's base URL (and the default issuer)."""
        return f"{self.url}/realms/{self.realm}"

    @property
    def expected_issuer(self) -> str:
        return self.issuer or self.realm_url

    @property
    def expected_audience(self) -> str:
        return self.audience or self.client_id

    @property
    def token_url(self) -> str:
        return f"{self.realm_url}/protocol/openid-connect/token"


class SchedulerSettings(BaseSettings):
    model_config = _section("SCHEDULER_")

    poll_interval_seconds: float = Field(default=30, gt=0, description="Default interval between polls.")
    rollup_bucket_seconds: int = Field(default=300, ge=60, description="Width of one usage rollup bucket.")
    idle_threshold_percent: float = Field(
        default=5, ge=0, le=100, description="Utilisation below which an allocated GPU counts as idle."
    )
    missing_after_seconds: float = Field(
        default=300, gt=0, description="Grace period before a silent GPU, slice or node is marked missing."
    )
    retention_days: int = Field(
        default=7,
        ge=2,
        description="How long the fine tier (5-minute rollups) and the accounted windows are kept, in days.",
    )
    hourly_retention_days: int = Field(
        default=395, ge=2, description="How long the hourly tier is kept, in days (395: 13 months)."
    )
    daily_retention_days: int = Field(
        default=0,
        ge=0,
        description="How long the daily tier (what statements of whole days read) is kept, in days; 0 keeps it.",
    )
    backfill_horizon_seconds: float = Field(
        default=21_600,
        ge=0,
        le=31 * 86_400,
        description="How far back a gap in a source's accounting (source down, worker stopped) is filled from "
        "the source's history; older time is recorded as unaccounted (0: never back-fill).",
    )
    backfill_chunk_seconds: float = Field(
        default=300,
        ge=15,
        le=86_400,
        description="Longest span read from a source in one query when back-filling; each chunk is attributed "
        "to what held the GPUs at its end.",
    )
    replica: str = Field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}",
        min_length=1,
        max_length=128,
        description="Name of this worker replica, recorded with each poll (default host:pid). Replicas sharing "
        "a PostgreSQL database poll each source one at a time.",
    )

    @model_validator(mode="after")
    def _tiers_coarsen_in_order(self) -> SchedulerSettings:
        named = f"{PREFIX}SCHEDULER_"  # a model-level error has no field: the message names the variables
        if self.hourly_retention_days < self.retention_days:
            raise ValueError(
                f"{named}HOURLY_RETENTION_DAYS must be at least {named}RETENTION_DAYS: the hourly tier outlives "
                "the fine one"
            )
        if self.daily_retention_days and self.daily_retention_days < max(self.hourly_retention_days, 62):
            raise ValueError(
                f"{named}DAILY_RETENTION_DAYS must be 0 (keep) or at least {named}HOURLY_RETENTION_DAYS and 62: "
                "statements of last month read the daily tier"
            )
        return self

    @field_validator("rollup_bucket_seconds")
    @classmethod
    def _divides_a_day(cls, value: int) -> int:
        if 3_600 % value:
            raise ValueError(
                "must divide an hour (3600 seconds) evenly, so no bucket straddles two hours, days or months "
                "and the hourly and daily tiers are exact sums of buckets"
            )
        return value


class OtelSettings(BaseSettings):
    model_config = _section("OTLP_")

    endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP traces endpoint; workload sessions are exported as spans if set. A URL without "
        "a path gets /v1/traces appended (http://collector:4318 -> http://collector:4318/v1/traces).",
    )
    trace_url_template: str | None = Field(
        default=None, description="Link to a trace in a tracing UI; {trace_id} is replaced."
    )

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("trace_url_template")
    @classmethod
    def _has_placeholder(cls, value: str | None) -> str | None:
        if value is not None and "{trace_id}" not in value:
            raise ValueError("must contain {trace_id}")
        return value


class PipelineSettings(BaseSettings):
    """The signal pipeline: filters, correlation, inference and findings (``AI_TELEMETRY_PIPELINE_*``)."""

    model_config = _section("PIPELINE_")

    enabled: bool = Field(default=True, description="Run polls through the signal pipeline and keep findings.")
    persistence_polls: int = Field(
        default=3, ge=1, le=100, description="A non-critical condition counts once it held this many polls in a row."
    )
    persistence_seconds: float | None = Field(
        default=None, gt=0, description="... or once it held this long, whichever comes first (unset: polls only)."
    )
    dedupe_window_seconds: float = Field(
        default=300, ge=0, description="A signal already in an open finding passes again at most once per window."
    )
    flap_threshold: int = Field(
        default=3,
        ge=1,
        le=100,
        description="A condition that starts again more than this many times within "
        "flap_window_seconds is flapping: one finding says so and the rest is suppressed.",
    )
    flap_window_seconds: float = Field(default=1800, gt=0, description="Window of the flap count.")
    rate_limit_per_subject: int = Field(
        default=12, ge=1, description="Signals one subject may pass per rate_limit_window_seconds (critical exempt)."
    )
    rate_limit_window_seconds: float = Field(default=3600, gt=0, description="Window of the per-subject rate limit.")
    resolve_after_polls: int = Field(
        default=3, ge=1, le=1000, description="A finding resolves after this many poll intervals without its condition."
    )
    alert_resolve_after_seconds: float = Field(
        default=86400,
        gt=0,
        description="A finding raised by alerts resolves when they resolve, or after this long "
        "without Alertmanager repeating them (it repeats a firing alert every repeat_interval, 4 h by default).",
    )
    gap_tolerance_polls: float = Field(
        default=1.5, ge=1, le=10, description="Readings further apart than this many intervals break a condition's run."
    )
    node_min_gpus: int = Field(default=2, ge=2, description="GPUs of one node with the same fault make a node finding.")
    workload_min_gpus: int = Field(
        default=2, ge=2, description="GPUs of one workload with the same condition make a workload finding."
    )
    cluster_min_nodes: int = Field(
        default=3, ge=2, description="Nodes of one cluster hit by one fault at about the same time: a cluster finding."
    )
    escalate_severity: Literal["info", "warning", "critical"] = Field(
        default="warning", description="Findings at or above this severity are escalated (counted, sent to the LLM)."
    )
    idle_threshold_percent: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Utilisation below which an allocated GPU is idle; unset: the scheduler's idle_threshold_percent.",
    )
    thermal_threshold_c: float = Field(default=90, gt=0, description="Temperature at which a GPU counts as hot.")
    memory_full_fraction: float = Field(default=0.95, gt=0, le=1, description="Framebuffer share that counts as full.")
    missing_after_seconds: float = Field(
        default=90, gt=0, description="A GPU its cluster stops reporting for this long is lost (critical)."
    )
    missing_forget_seconds: float = Field(
        default=86400, gt=0, description="A lost GPU is reported for this long, then forgotten (decommissioned)."
    )
    straggler_k: float = Field(
        default=2.0, ge=1, le=4, description="Straggler threshold: median - k * 1.4826 * MAD of the cohort's scores."
    )
    straggler_alpha: float = Field(default=0.2, gt=0, le=1, description="EMA smoothing of each GPU's health score.")
    straggler_quorum: int = Field(default=5, ge=3, description="Fewest fresh peers in a cohort for any verdict.")
    straggler_hysteresis: float = Field(
        default=0.02, ge=0, le=0.5, description="A straggler recovers only this far above the threshold."
    )
    straggler_expiry_polls: int = Field(
        default=5, ge=1, description="Peers without data for this many polls leave the cohort."
    )
    straggler_min_gap: float = Field(
        default=0.15, ge=0, le=1, description="A straggler is at least this far (0-1 score) below the cohort median."
    )
    input_retention_hours: float = Field(
        default=24, ge=0, description="Poll readings and alert signals kept for replay (0: keep none)."
    )


class LlmSettings(BaseSettings):
    """Optional root-cause analysis of escalated findings by an OpenAI-compatible endpoint (``AI_TELEMETRY_LLM_*``)."""

    model_config = _section("LLM_")

    base_url: str | None = Field(
        default=None, description="Base URL of an OpenAI-compatible API, e.g. https://llm.example.org/v1; unset: off."
    )
    api_key: SecretStr | None = Field(default=None, description="Bearer key for the endpoint, if it needs one.")
    model: str | None = Field(default=None, description="Model name sent with each request (required with base_url).")
    timeout_seconds: float = Field(default=30, gt=0, le=600, description="Timeout of one request.")
    requests_per_minute: int = Field(default=6, ge=1, description="Most requests per minute.")
    requests_per_day: int = Field(default=200, ge=1, description="Most requests per rolling 24 hours (the budget).")
    tokens_per_day: int = Field(default=200_000, ge=1, description="Most tokens per rolling 24 hours (the budget).")
    max_answer_tokens: int = Field(default=400, ge=16, le=8192, description="max_tokens of one answer.")
    min_severity: Literal["info", "warning", "critical"] = Field(
        default="warning", description="Escalated findings at or above this severity are analysed."
    )
    interval_seconds: float = Field(default=15, gt=0, description="How often the worker looks for findings to analyse.")

    @property
    def enabled(self) -> bool:
        return bool(self.base_url and self.model)


class StatementSettings(BaseSettings):
    """Monthly statements (``AI_TELEMETRY_STATEMENTS_*``)."""

    model_config = _section("STATEMENTS_")

    rate_card: Path | None = Field(
        default=None,
        description="TOML rate card (currency, price per GPU-hour per GPU model and MIG profile, optional "
        "service unit; see domain/ledger/rate_card.py); unset: statements show GPU-hours without cost.",
    )


_LABEL_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_MATCHER_OPERATORS = ("=~", "!~", "!=", "=")


SMTP_ROUND_TRIPS = 8
"""Connect, EHLO, STARTTLS, EHLO, AUTH, MAIL, RCPT, DATA: each bounded by the SMTP timeout."""


DEFAULT_SITE_URL = "http://127.0.0.1:8000"
"""The site URL when none is set: right on a laptop, wrong in any e-mail sent from a deployment."""


class NotificationSettings(BaseSettings):
    """Notices about idle GPUs: channels and delivery (``AI_TELEMETRY_NOTIFY_*``); policies live in the TOML file."""

    model_config = _section("NOTIFY_")

    enabled: bool = Field(default=False, description="Decide and send notices about idle GPUs.")
    interval_seconds: float = Field(default=60, gt=0, description="How often notices are decided and sent.")
    site_url: str = Field(default=DEFAULT_SITE_URL, description="Base URL of the site, for the links in messages.")
    stale_after_seconds: float = Field(
        default=900, gt=0, description="A finding not refreshed for this long has unknown utilisation: no notice."
    )
    smtp_host: str | None = Field(default=None, description="SMTP server; e-mail is off unless set.")
    smtp_port: Port = Field(default=587, description="SMTP port (587 submission with STARTTLS, 25 relay).")
    smtp_starttls: bool = Field(default=True, description="Upgrade the SMTP connection with STARTTLS.")
    smtp_username: str | None = Field(default=None, description="SMTP login, if the server wants one.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password (or use the _FILE variant).")
    smtp_password_file: Path | None = Field(default=None, description="File holding the SMTP password.")
    smtp_from: str = Field(default="ai-telemetry@localhost", description="From address of the e-mails.")
    smtp_timeout_seconds: float = Field(default=15, gt=0, description="A stalled SMTP server fails after this.")
    webhook_url: str | None = Field(
        default=None, description="Slack/Mattermost-compatible incoming webhook; off unless set."
    )
    alertmanager_url: str | None = Field(
        default=None, description="Alertmanager base URL; GPUAllocatedIdle alerts are POSTed to /api/v2/alerts."
    )
    alert_ttl_seconds: float = Field(
        default=900, gt=0, description="endsAt of an outgoing alert; refreshed while idle, so it resolves itself."
    )
    admin_emails: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Who escalations also go to (comma-separated)."
    )
    digests: Annotated[tuple[Literal["weekly", "monthly"], ...], NoDecode] = Field(
        default=("weekly", "monthly"),
        description="Statement e-mails per project (comma-separated: weekly, monthly; empty: none).",
    )
    fallback_emails: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Where a project's notices go when none of its members has an e-mail address."
    )
    max_attempts: int = Field(default=12, ge=1, description="Delivery attempts before a message is marked failed.")
    backoff_seconds: float = Field(default=30, gt=0, description="First retry delay; doubles per failure.")
    backoff_max_seconds: float = Field(default=3600, gt=0, description="Longest retry delay.")
    lease_seconds: float = Field(
        default=120, gt=0, description="A replica sending a message holds it this long; then another may."
    )
    batch_size: int = Field(default=200, ge=1, description="Messages claimed per send run.")

    @field_validator("admin_emails", "fallback_emails", "digests", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("site_url", "webhook_url", "alertmanager_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _lease_outlasts_send(self) -> NotificationSettings:
        # A send must end before its lease does, or another replica could send the same message again.
        if self.lease_seconds < SMTP_ROUND_TRIPS * self.smtp_timeout_seconds:
            named = f"{PREFIX}NOTIFY_"  # a model-level error has no field: the message names the variables
            raise ValueError(
                f"{named}LEASE_SECONDS (lease_seconds, {self.lease_seconds:g}) must be at least {SMTP_ROUND_TRIPS} x "
                f"{named}SMTP_TIMEOUT_SECONDS (smtp_timeout_seconds, {self.smtp_timeout_seconds:g}): an SMTP "
                f"conversation has up to {SMTP_ROUND_TRIPS} round trips"
            )
        return self

    def smtp_secret(self) -> str | None:
        """The SMTP password from the setting or its file (a missing file is a clear error)."""
        if self.smtp_password is not None:
            return self.smtp_password.get_secret_value()
        if self.smtp_password_file is None:
            return None
        try:
            return self.smtp_password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(
                f"{PREFIX}NOTIFY_SMTP_PASSWORD_FILE: cannot read {self.smtp_password_file}: {exc}"
            ) from None


class PolicySettings(BaseModel):
    """One notice policy in the TOML file; in ``[[notifications.projects]]`` unset fields inherit the default."""

    model_config = {"extra": "forbid", "frozen": True}

    enabled: bool | None = None
    idle_threshold_percent: float | None = Field(default=None, ge=0, le=100)
    grace_minutes: float | None = Field(default=None, ge=0)
    reminder_interval_minutes: float | None = Field(default=None, gt=0)
    escalate_after_minutes: float | None = Field(default=None, ge=0, description="0 turns escalation off.")
    quiet_hours: str | None = Field(default=None, description='Daily window, e.g. "22:00-07:00".')
    timezone: str | None = None
    max_exemption_days: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _valid_quiet_hours(self) -> PolicySettings:
        if self.quiet_hours is not None or self.timezone is not None:
            from domain.notifications.rules import QuietHours  # noqa: PLC0415 - settings load before the domain

            try:
                QuietHours.parse(self.quiet_hours or "00:00-00:00", self.timezone or "UTC")
            except ValueError as exc:
                raise ValueError(f"quiet_hours: {exc}") from None
            except KeyError:
                raise ValueError(f"timezone: unknown time zone {self.timezone!r}") from None
        return self


class ProjectPolicySettings(PolicySettings):
    cluster: str = Field(min_length=1)
    namespace: str = Field(min_length=1)


class NotificationPolicies(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}

    default: PolicySettings = Field(default_factory=PolicySettings)
    projects: tuple[ProjectPolicySettings, ...] = ()


class SourceSettings(BaseModel):
    """One ``[[sources]]`` entry of the TOML file.

    A Prometheus-compatible source is a Prometheus, a Thanos Query or an ACM Observatorium metrics
    API base URL (the part before ``/api/v1/query``). It covers one cluster (``cluster``) or many
    (``cluster_label``: the label that names each series' cluster, ``cluster`` on ACM and Thanos).
    """

    model_config = {"extra": "forbid", "frozen": True}

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    kind: Literal["prometheus", "simulated"] = "prometheus"
    url: str | None = Field(default=None, description="Base URL of the Prometheus HTTP API (no /api/v1 suffix).")
    cluster: str | None = Field(default=None, description="Fixed cluster name (one Prometheus per cluster).")
    cluster_label: str | None = Field(
        default=None, pattern=_LABEL_NAME, description="Label carrying the cluster (ACM/Thanos)."
    )
    fleet: str | None = Field(default=None, description="Fleet file for kind=simulated; built-in if unset.")
    seed: int = 42
    bearer_token_env: str | None = Field(
        default=None, description="Environment variable holding a bearer token sent with every query."
    )
    bearer_token_file: Path | None = Field(
        default=None, description="File holding a bearer token, re-read at every poll (rotated tokens)."
    )
    tls_cert_file: Path | None = Field(default=None, description="Client certificate (PEM) for mTLS.")
    tls_key_file: Path | None = Field(default=None, description="Key of the client certificate (PEM).")
    tls_ca_file: Path | None = Field(
        default=None, description="CA bundle (PEM) the server's certificate must chain to."
    )
    timeout_seconds: float = Field(default=10, gt=0, description="Timeout of one HTTP request to the source.")
    poll_interval_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Interval between polls (default: AI_TELEMETRY_SCHEDULER_POLL_INTERVAL_SECONDS).",
    )
    matchers: dict[str, str] = Field(
        default_factory=dict,
        description='Extra label matchers added to every query: {job = "dcgm"} or an operator prefix, '
        '{cluster = "=~prod-.*"} (=, !=, =~, !~).',
    )
    query_window_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Span of avg/max/last_over_time (default: the poll interval). ACM Observability forwards one "
        "sample per series every 300 s: set 300 or more there.",
    )
    utilization_avg_rule: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_:][A-Za-z0-9_:]*$",
        description="Recording rule with the windowed average utilisation, e.g. nerc:dcgm_gpu_util:avg5m.",
    )
    utilization_max_rule: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_:][A-Za-z0-9_:]*$",
        description="Recording rule with the windowed peak utilisation, e.g. nerc:dcgm_gpu_util:max5m.",
    )
    exporter_pod_pattern: str = Field(
        default=".*dcgm-exporter.*",
        description="Regular expression matching dcgm-exporter pod names: pod labels naming such a pod are "
        "the exporter's own (not a workload), and a Hostname naming one is mapped to its node via kube_pod_info.",
    )
    kube_state_metrics: bool = Field(
        default=True,
        description="Also read kube-state-metrics (quotas, GPU requests, pod-to-node, node labels) and GPU "
        "Operator series.",
    )

    @field_validator("matchers")
    @classmethod
    def _valid_matchers(cls, matchers: dict[str, str]) -> dict[str, str]:
        for key in matchers:
            if not re.match(_LABEL_NAME, key) or key == "__name__":
                raise ValueError(f"{key!r} is not a label name")
        return matchers

    @field_validator("exporter_pod_pattern")
    @classmethod
    def _valid_pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _coherent(self) -> SourceSettings:
        if self.kind == "prometheus":
            if not self.url:
                raise ValueError("a prometheus source needs url")
            if not self.url.startswith(("http://", "https://")):
                raise ValueError("url must start with http:// or https://")
            if bool(self.cluster) == bool(self.cluster_label):
                raise ValueError("set exactly one of cluster or cluster_label")
            if self.bearer_token_env and self.bearer_token_file:
                raise ValueError("set at most one of bearer_token_env and bearer_token_file")
            if bool(self.tls_cert_file) != bool(self.tls_key_file):
                raise ValueError("tls_cert_file and tls_key_file go together")
        return self

    def matcher_list(self) -> list[tuple[str, str, str]]:
        """The extra matchers as (label, operator, value)."""
        out = []
        for key, raw in sorted(self.matchers.items()):
            operator, value = "=", raw
            for candidate in _MATCHER_OPERATORS[:3]:
                if raw.startswith(candidate):
                    operator, value = candidate, raw[len(candidate) :]
                    break
            out.append((key, operator, value))
        return out


def read_bearer_token(source: SourceSettings, environ: Mapping[str, str] | None = None) -> str | None:
    """The source's bearer token, from its environment variable or file; None when it has none.

    Called at start-up (a missing token stops it with a sentence naming it) and at every poll for a
    token file, so a rotated token is picked up. Raises :class:`SettingsError`.
    """
    if source.bearer_token_env:
        value = (os.environ if environ is None else environ).get(source.bearer_token_env, "").strip()
        if not value:
            raise SettingsError(f"source {source.name}: environment variable {source.bearer_token_env} is not set")
        return value
    if source.bearer_token_file:
        try:
            value = source.bearer_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(
                f"source {source.name}: bearer_token_file {source.bearer_token_file}: {exc.strerror or exc}"
            ) from None
        if not value:
            raise SettingsError(f"source {source.name}: bearer_token_file {source.bearer_token_file} is empty")
        return value
    return None


class SourcesFile(BaseModel):
    model_config = {"extra": "forbid"}

    sources: list[SourceSettings] = Field(default_factory=list)
    notifications: NotificationPolicies = Field(default_factory=NotificationPolicies)

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[SourceSettings]) -> list[SourceSettings]:
        names = [s.name for s in sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate source name(s): {', '.join(duplicates)}")
        return sources


DEMO_SOURCE = SourceSettings(name="demo", kind="simulated")
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
