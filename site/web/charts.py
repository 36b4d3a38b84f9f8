"""Charts drawn on the server as SVG, so pages work without a JavaScript build."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup, escape

from domain.inventory.usage import UsagePoint


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]
    css_class: str


def line_chart(
    times: Sequence[datetime],
    series: Sequence[Series],
    *,
    title: str,
    unit: str = "",
    y_max: float | None = None,
    width: int = 720,
    height: int = 180,
) -> Markup:
    """A labelled line chart; an empty-state message when there are fewer than two points."""
    if len(times) < 2:
        return Markup('<p class="empty">Not enough history yet for “{}”.</p>').format(title)
    pad_left, pad_bottom, pad_top = 44, 22, 10
    plot_w, plot_h = width - pad_left - 8, height - pad_bottom - pad_top
    top = y_max if y_max is not None else max((max(s.values, default=0) for s in series), default=0) or 1.0
    t0, t1 = times[0].timestamp(), times[-1].timestamp()
    span = (t1 - t0) or 1.0

    def x(t: datetime) -> float:
        return pad_left + (t.timestamp() - t0) / span * plot_w

    def y(v: float) -> float:
        return pad_top + plot_h - min(v, top) / top * plot_h

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for fraction in (0, 0.5, 1):
        gy = y(top * fraction)
        parts.append(f'<line class="grid" x1="{pad_left}" x2="{width - 8}" y1="{gy:.1f}" y2="{gy:.1f}"/>')
        parts.append(
            f'<text class="axis" x="{pad_left - 4}" y="{gy + 4:.1f}" text-anchor="end">'
            f"{_tick(top * fraction, top)}{escape(unit)}</text>"
        )
    for t, anchor in ((times[0], "start"), (times[-1], "end")):
        parts.append(
            f'<text class="axis" x="{x(t):.1f}" y="{height - 4}" text-anchor="{anchor}">'
            f"{t.strftime('%d %b %H:%M')}</text>"
        )
    for s in series:
        points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in zip(times, s.values, strict=True))
        parts.append(
            f'<polyline class="{escape(s.css_class)}" fill="none" points="{points}">'
            f"<title>{escape(s.name)}</title></polyline>"
        )
    parts.append("</svg>")
    legend = "".join(f'<span class="legend {escape(s.css_class)}">{escape(s.name)}</span>' for s in series)
    return Markup("".join(parts) + f'<div class="legend-row">{legend}</div>')  # noqa: S704  (every value above is escaped)


def _tick(value: float, top: float) -> str:
    return f"{value:,.1f}" if top < 10 else f"{value:,.0f}"


RANGES = (1, 6, 24, 24 * 7, 24 * 30)
"""The history ranges the pages offer, in hours."""


def usage_charts(points: Sequence[UsagePoint], *, per_gpu: bool = True) -> dict[str, Markup]:
    """The four standard charts of a subject's rollups: utilisation, memory, power, temperature."""
    times = [p.bucket_start for p in points]
    return {
        "utilisation": line_chart(
            times,
            [
                Series("average", [p.util_avg for p in points], "s-avg"),
                Series("peak", [p.util_max for p in points], "s-max"),
            ],
            title="Utilisation",
            unit="%",
            y_max=100,
        ),
        "memory": line_chart(
            times,
            [Series("memory in use", [p.memory_mib / 1024 for p in points], "s-avg")],
            title="Framebuffer memory in use",
            unit=" GiB",
        ),
        "power": line_chart(
            times,
            [Series("power draw", [p.power_watts for p in points], "s-alloc")],
            title="Power" + ("" if per_gpu else ", all GPUs"),
            unit=" W",
        ),
        "temperature": line_chart(
            times,
            [Series("hottest GPU", [p.temperature_max_c for p in points], "s-max")],
            title="Temperature",
            unit=" °C",
        ),
    }


def allocation_series(points: Sequence[UsagePoint]) -> list[Series]:
    """GPUs held, and the GPU-equivalents actually working (held x utilisation)."""
    return [
        Series("GPUs allocated", [p.gpus_allocated for p in points], "s-alloc"),
        Series("GPUs in use (allocated x utilisation)", [p.gpus_allocated * p.util_avg / 100 for p in points], "s-avg"),
    ]
