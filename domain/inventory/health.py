"""A GPU's health badge from one reading (shown on the inventory pages, rolled up per node)."""

from __future__ import annotations

from domain.settings import PipelineSettings
from domain.statuses import Health
from domain.telemetry.readings import GpuReading

DEGRADED_TEMPERATURE_C = float(PipelineSettings.model_fields["thermal_threshold_c"].default)
"""The hot threshold when none is configured: the default of the pipeline's ``thermal_threshold_c``, the
one setting for "hot" (the badge and the thermal findings read the configured value)."""


def gpu_health(reading: GpuReading, hot_threshold_c: float) -> Health:
    """FAILING on a nonzero XID, DEGRADED at ``hot_threshold_c`` and above, HEALTHY otherwise."""
    if reading.xid:
        return Health.FAILING
    if reading.temperature_c is not None and reading.temperature_c >= hot_threshold_c:
        return Health.DEGRADED
    return Health.HEALTHY
