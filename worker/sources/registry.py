"""Turn the configured ``[[sources]]`` into Source objects; the one place that knows every kind."""

from __future__ import annotations

from domain.settings import Settings, SettingsError, SourceSettings
from worker.sources import Source
from worker.sources.prometheus import PrometheusSource
from worker.sources.simulated import SimulatedSource


def build_source(source: SourceSettings) -> Source:
    """One source from its settings; a kind this version cannot poll stops start-up with its name."""
    if source.kind == "simulated":
        return SimulatedSource.from_settings(source)
    if source.kind == "prometheus":
        return PrometheusSource.from_settings(source)
    raise SettingsError(f"source {source.name}: kind {source.kind!r} is not available in this version")


def build_sources(settings: Settings) -> list[Source]:
    """Every configured source, in configuration order."""
    return [build_source(source) for source in settings.sources]
