"""What the worker does with readings: the scheduler, traces, the signal pipeline, the LLM, statements."""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings

from domain.settings.base import PREFIX, section_config

DEFAULT_HOT_TEMPERATURE_C = 90.0
"""Default of ``pipeline.thermal_threshold_c``, the one hot-GPU threshold (findings and the health badge)."""

MOVED_TO_SCHEDULER = {
    "idle_threshold_percent": f"{PREFIX}PIPELINE_IDLE_THRESHOLD_PERCENT",
    "missing_after_seconds": f"{PREFIX}PIPELINE_MISSING_AFTER_SECONDS",
}
"""Scheduler fields the pipeline section also had until issue 15, by their old variable (deprecated)."""


class SchedulerSettings(BaseSettings):
    model_config = section_config("SCHEDULER_")

    poll_interval_seconds: float = Field(default=30, gt=0, description="Default interval between polls.")
    rollup_bucket_seconds: int = Field(default=300, ge=60, description="Width of one usage rollup bucket.")
    idle_threshold_percent: float = Field(
        default=5,
        ge=0,
        le=100,
        description="Utilisation below which an allocated GPU counts as idle: in the ledger, workloads and findings.",
    )
    missing_after_seconds: float = Field(
        default=300,
        gt=0,
        description="Grace period before a silent GPU, slice or node is marked missing, and a GPU is lost (a "
        "critical finding).",
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

    @model_validator(mode="before")
    @classmethod
    def _accept_moved_variables(cls, data: Any) -> Any:
        """The pipeline's copies of these two facts are gone; their variables are read here for one release."""
        if not isinstance(data, dict):
            return data
        for name, old in MOVED_TO_SCHEDULER.items():
            value = os.environ.get(old)
            if value is None:
                continue
            new = f"{PREFIX}SCHEDULER_{name.upper()}"
            if name in data:
                warnings.warn(f"{old} is deprecated and ignored: {new} is set", FutureWarning, stacklevel=2)
                continue
            warnings.warn(
                f"{old} is deprecated: it is now {new} (read for one more release)", FutureWarning, stacklevel=2
            )
            data = {**data, name: value}
        return data

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
    model_config = section_config("OTLP_")

    endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP traces endpoint; workloads are exported as spans if set. A URL without "
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

    model_config = section_config("PIPELINE_")

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
    thermal_threshold_c: float = Field(
        default=DEFAULT_HOT_TEMPERATURE_C,
        gt=0,
        description="Temperature at which a GPU counts as hot: a thermal finding, and the degraded health badge.",
    )
    memory_full_fraction: float = Field(default=0.95, gt=0, le=1, description="Framebuffer share that counts as full.")
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

    model_config = section_config("LLM_")

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

    model_config = section_config("STATEMENTS_")

    rate_card: Path | None = Field(
        default=None,
        description="TOML rate card (currency, price per GPU-hour per GPU model and MIG profile, optional "
        "service unit; see domain/ledger/rate_card.py); unset: statements show GPU-hours without cost.",
    )
