"""Notices about idle GPUs: channels and delivery (environment) and the policies (TOML file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode

from domain.settings.base import PREFIX, Port, SettingsError, section_config

SMTP_ROUND_TRIPS = 8
"""Connect, EHLO, STARTTLS, EHLO, AUTH, MAIL, RCPT, DATA: each bounded by the SMTP timeout."""


DEFAULT_SITE_URL = "http://127.0.0.1:8000"
"""The site URL when none is set: right on a laptop, wrong in any e-mail sent from a deployment."""


class NotificationSettings(BaseSettings):
    """Notices about idle GPUs: channels and delivery (``AI_TELEMETRY_NOTIFY_*``); policies live in the TOML file."""

    model_config = section_config("NOTIFY_")

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
