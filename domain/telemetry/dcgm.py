"""What a dcgm-exporter reading means, for every source: which metric is a device's utilisation, and
which values are impossible.

Both rules live here once; the Prometheus source (in PromQL first, then here on the answer) and the
simulated source apply them, so the inventory, rollups, ledger and signal pipeline only ever see
utilisation that means something, and None where nothing is known.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field

from domain.report_cards.usage import PROFILING_FAMILIES

GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
FB_USED = "DCGM_FI_DEV_FB_USED"
FB_FREE = "DCGM_FI_DEV_FB_FREE"
FB_RESERVED = "DCGM_FI_DEV_FB_RESERVED"
POWER = "DCGM_FI_DEV_POWER_USAGE"
TEMPERATURE = "DCGM_FI_DEV_GPU_TEMP"
XID = "DCGM_FI_DEV_XID_ERRORS"
XID_COUNT = "DCGM_EXP_XID_ERRORS_COUNT"

PROFILING: dict[str, str] = PROFILING_FAMILIES
"""The DCGM profiling (DCP) families the report cards read, by field name of
:class:`~domain.telemetry.readings.ProfilingReading`: activity ratios (0..1 of cycles) and bus rates
(bytes per second). A cluster exports them only with profiling enabled in its dcgm-exporter; each may
be absent on its own (older exporters' counter sets carry fewer)."""
PROFILING_RATIOS = tuple(key for key in PROFILING if not key.endswith("_bytes"))

UTILIZATION_ROUNDING = 0.5
"""Percent above 100 still taken as 100 (averages of rounded samples, exporters' own rounding)."""


def utilization_percent(gpu_util: float | None, engine_active: float | None, *, mig: bool) -> float | None:
    """A device's utilisation in percent over what was read, or None when it is unknown.

    * A MIG instance (and a GPU in MIG mode) takes ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` (a ratio, 0..1)
      x 100 and never ``DCGM_FI_DEV_GPU_UTIL``: DCGM does not support that field on MIG, and
      dcgm-exporter versions either leave it out or report it as 0, which would make every busy
      slice look idle.
    * A whole GPU takes ``DCGM_FI_DEV_GPU_UTIL`` (percent), else engine activity x 100.
    * With neither, utilisation is unknown (None): never idle, never charted as 0.

    ``gpu_util`` and ``engine_active`` are the device's readings (latest values, or the same statistic
    over the poll window), already checked by :class:`ReadingCheck`.
    """
    if not mig and gpu_util is not None:
        return gpu_util
    if engine_active is not None:
        return round(engine_active * 100, 3)
    return None


@dataclass(frozen=True, slots=True)
class Bounds:
    """The plausible range of one family's readings; anything outside is a broken reading, not a value."""

    low: float = 0.0
    high: float = math.inf


BOUNDS: dict[str, Bounds] = {
    GPU_UTIL: Bounds(high=100 + UTILIZATION_ROUNDING),
    ENGINE_ACTIVE: Bounds(high=1 + UTILIZATION_ROUNDING / 100),
    FB_USED: Bounds(),
    FB_FREE: Bounds(),
    FB_RESERVED: Bounds(),
    POWER: Bounds(high=10_000.0),
    TEMPERATURE: Bounds(high=200.0),
    XID: Bounds(),
    XID_COUNT: Bounds(),
    **{PROFILING[key]: Bounds(high=1 + UTILIZATION_ROUNDING / 100) for key in PROFILING_RATIOS},
}
"""Per family: negative readings are broken everywhere; utilisation above 100 % beyond rounding, power
beyond 10 kW and temperatures above 200 °C are no GPU's. Families not listed are only checked for NaN
and infinities."""
_CAPS = {GPU_UTIL: 100.0, ENGINE_ACTIVE: 1.0, **{PROFILING[key]: 1.0 for key in PROFILING_RATIOS}}


@dataclass
class ReadingCheck:
    """Turns impossible readings (NaN, ±Inf, negative, absurd) into None and counts them per family.

    One check per poll: :meth:`report` then logs one line per family that had broken readings (not one
    per series) and returns the same sentences for ``Snapshot.warnings``.
    """

    source: str
    rejected: Counter[str] = field(default_factory=Counter)

    def value(self, family: str, raw: float | None) -> float | None:
        if raw is None:
            return None
        bounds = BOUNDS.get(family)
        broken = math.isnan(raw) or math.isinf(raw)
        if not broken and bounds is not None:
            broken = raw < bounds.low or raw > bounds.high
        if broken:
            self.rejected[family] += 1
            return None
        cap = _CAPS.get(family)
        return cap if cap is not None and raw > cap else raw

    def report(self, log: logging.Logger) -> list[str]:
        sentences = []
        for family, count in sorted(self.rejected.items()):
            bounds = BOUNDS.get(family, Bounds())
            limit = f"{bounds.low:g}..{bounds.high:g}" if math.isfinite(bounds.high) else f">= {bounds.low:g}"
            sentence = (
                f"{count} {family} reading{'s' if count != 1 else ''} NaN, infinite or outside {limit} taken as unknown"
            )
            log.warning("source %s: %s", self.source, sentence)
            sentences.append(sentence)
        return sentences
