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
    values: Sequence[float | None]
    """One value per time; None is unknown and breaks the line (a gap, never a 0)."""
    css_class: str


def segments(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """Runs of consecutive known values as (index, value): each run is drawn as one line."""
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for i, value in enumerate(values):
        if value is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append((i, value))
    if current:
        runs.append(current)
    return runs


def line_chart(
    times: Sequence[datetime],
    series: Sequence[Series],
    *,
    title: str,
    unit: str = "",
    y_max: float | None = None,
    width: int = 720,
    height: int = 180,
    partial: Sequence[str | None] = (),
) -> Markup:
    """A labelled line chart; an empty-state message when there are fewer than two points.

    Unknown values (None) leave gaps; a lone known value between gaps is a dot. ``partial`` gives,
    per time, a note for a bucket the ledger has not fully accounted (None: complete); such points
    are marked, with the note as their tooltip.
    """
    if len(times) < 2:
        return Markup('<p class="empty">Not enough history yet for “{}”.</p>').format(title)
    pad_left, pad_bottom, pad_top = 44, 22, 10
    plot_w, plot_h = width - pad_left - 8, height - pad_bottom - pad_top
    known = [v for s in series for v in s.values if v is not None]
    top = y_max if y_max is not None else max(known, default=0) or 1.0
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
        values = list(s.values)
        if len(values) != len(times):
            raise ValueError(f"series {s.name!r} has {len(values)} values for {len(times)} times")
        for run in segments(values):
            if len(run) == 1:
                i, v = run[0]
                parts.append(
                    f'<circle class="{escape(s.css_class)}" cx="{x(times[i]):.1f}" cy="{y(v):.1f}" r="2">'
                    f"<title>{escape(s.name)}</title></circle>"
                )
                continue
            points = " ".join(f"{x(times[i]):.1f},{y(v):.1f}" for i, v in run)
            parts.append(
                f'<polyline class="{escape(s.css_class)}" fill="none" points="{points}">'
                f"<title>{escape(s.name)}</title></polyline>"
            )
    for t, note in zip(times, partial, strict=False):
        if note:
            parts.append(
                f'<line class="partial" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{pad_top}" y2="{pad_top + plot_h}">'
                f"<title>{escape(note)}</title></line>"
            )
    parts.append("</svg>")
    legend = "".join(f'<span class="legend {escape(s.css_class)}">{escape(s.name)}</span>' for s in series)
    if any(partial):
        legend += '<span class="legend partial">partial bucket: averages over the accounted part</span>'
    return Markup("".join(parts) + f'<div class="legend-row">{legend}</div>')  # noqa: S704  (every value above is escaped)


def _tick(value: float, top: float) -> str:
    return f"{value:,.1f}" if top < 10 else f"{value:,.0f}"


RANGES = (1, 6, 24, 24 * 7, 24 * 30, 24 * 365)
"""The history ranges the pages offer, in hours."""


def partial_notes(points: Sequence[UsagePoint], bucket_seconds: int | None = None) -> list[str | None]:
    """Per point, why it is not a whole bucket (its covered seconds), or None."""
    return [
        f"partial bucket: {p.covered_seconds:,.0f} s accounted"
        + (f" of {bucket_seconds:,} s" if bucket_seconds else "")
        if p.partial
        else None
        for p in points
    ]


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def usage_charts(points: Sequence[UsagePoint], *, per_gpu: bool = True) -> dict[str, Markup]:
    """The four standard charts of a subject's rollups: utilisation, memory, power, temperature.

    Unknown readings are gaps; partial buckets are marked (their averages are over the covered part).
    """
    times = [p.bucket_start for p in points]
    notes = partial_notes(points)
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
            partial=notes,
        ),
        "memory": line_chart(
            times,
            [Series("memory in use", [_scaled(p.memory_mib, 1 / 1024) for p in points], "s-avg")],
            title="Framebuffer memory in use",
            unit=" GiB",
            partial=notes,
        ),
        "power": line_chart(
            times,
            [Series("power draw", [p.power_watts for p in points], "s-alloc")],
            title="Power" + ("" if per_gpu else ", all GPUs"),
            unit=" W",
            partial=notes,
        ),
        "temperature": line_chart(
            times,
            [Series("hottest GPU", [p.temperature_max_c for p in points], "s-max")],
            title="Temperature",
            unit=" °C",
            partial=notes,
        ),
    }


def allocation_series(points: Sequence[UsagePoint]) -> list[Series]:
    """GPUs held, and the GPU-equivalents actually working (held x utilisation; a gap where it is unknown)."""
    return [
        Series("GPUs allocated", [p.gpus_allocated for p in points], "s-alloc"),
        Series("GPUs in use (allocated x utilisation)", [p.gpus_in_use for p in points], "s-avg"),
    ]
