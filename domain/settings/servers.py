"""The processes' own settings: database, site, receiver, HTTP, authorization mode and Keycloak."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings
from sqlalchemy.engine import make_url

from domain.settings.base import PROJECT_ROOT, Port, section_config


class DatabaseSettings(BaseSettings):
    model_config = section_config("DATABASE_")

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
    def is_in_memory(self) -> bool:
        """An in-memory SQLite database: one per process, seen by no other."""
        return self.url in ("sqlite://", "sqlite:///:memory:")

    @property
    def display_url(self) -> str:
        """The URL with its password masked (``***``), for messages and logs."""
        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:  # an unparseable URL is shown without anything after the scheme
            return self.url.split("://", 1)[0] + "://…"


class SiteSettings(BaseSettings):
    model_config = section_config("SITE_")

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
    model_config = section_config("RECEIVER_")

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
        "external_labels); when unset such alerts are stored but open no workload.",
    )


class HttpSettings(BaseSettings):
    """Limits of the HTTP servers (site and receiver) that protect them from slow or oversized clients."""

    model_config = section_config("HTTP_")

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
    model_config = section_config("AUTH_")

    mode: Literal["local", "keycloak"] = Field(
        default="local", description="local: users and grants in the database; keycloak: OIDC + UMA."
    )


class KeycloakSettings(BaseSettings):
    model_config = section_config("KEYCLOAK_")

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
