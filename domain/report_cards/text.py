"""A report card as plain text, for the terminal (``ai-telemetry report-card``)."""

from __future__ import annotations

from domain.report_cards.cards import Figure, ReportCard


def _figure(figure: Figure) -> str:
    if figure.average is None:
        return f"  {figure.label:<34} {figure.not_collected}"
    if figure.unit == "ratio":
        return f"  {figure.label:<34} {figure.average:>6.1%} average, {figure.peak or 0:.1%} peak"
    return f"  {figure.label:<34} {figure.average / 1e9:>6.2f} GB/s average, {(figure.peak or 0) / 1e9:.2f} GB/s peak"


def card_text(card: ReportCard) -> str:
    lines = [f"Report card: {card.title}" + (f" on {card.cluster}" if card.cluster else "")]
    if card.scope == "workload":
        end = card.ended_at.isoformat(timespec="seconds") if card.ended_at else "still running"
        start = card.started_at.isoformat(timespec="seconds") if card.started_at else "?"
        lines.append(f"  {card.devices} device(s) of {card.gpu_model or 'an unknown model'}, {start} to {end}")
    else:
        lines.append(f"  {card.workloads} workload run(s) on {card.devices} device(s)")
    lines.append(f"Grade: {card.grade.letter or '-'}  ({card.grade.text})")
    lines.append(
        f"  GPU-hours held {card.gpu_hours:.2f}, idle {card.idle_gpu_hours:.2f}; energy {card.energy_kwh:.2f} kWh"
    )
    util = "unknown" if card.utilization is None else f"{card.utilization:.1%}"
    lines.append(f"  Utilisation (DCGM_FI_DEV_GPU_UTIL / engine activity) {util}")
    if card.memory_peak_mib is not None and card.memory_capacity_mib:
        peak, capacity = card.memory_peak_mib, card.memory_capacity_mib
        lines.append(f"  Memory peak {peak / 1024:.1f} of {capacity / 1024:.1f} GiB ({peak / capacity:.0%})")
    else:
        lines.append("  Memory peak unknown (framebuffer not read)")
    lines.append("Profiling (time-weighted over the accounted windows):")
    lines.extend(_figure(f) for f in card.figures)
    lines.append("Advice:" if card.notes else "Advice: none; nothing in the figures calls for a change.")
    for note in card.notes:
        lines.append(f"  * [{note.kind}] {note.advice}")
        lines.append(f"    evidence: {note.evidence}")
    if card.right_sizing is not None:
        lines.append(f"Right-sizing: {card.right_sizing.text}")
        if card.right_sizing.gpu_hours_per_month:
            lines.append(f"  returns {card.right_sizing.gpu_hours_per_month:g} GPU-hours a month at the pace observed")
    elif card.recommendations:
        lines.append(f"Right-sizing: {card.gpu_hours_returned_per_month:g} GPU-hours a month could be returned:")
        lines.extend(f"  * {text}" for text in card.recommendations)
    return "\n".join(lines) + "\n"
