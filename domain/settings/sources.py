"""The ``[[sources]]`` of the TOML file, their bearer tokens, and the file itself."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from domain.settings.base import SettingsError
from domain.settings.notifications import NotificationPolicies

_LABEL_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_MATCHER_OPERATORS = ("=~", "!~", "!=", "=")


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
