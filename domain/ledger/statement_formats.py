"""A statement as JSON (a dict), CSV and a plain-text table: one shape for the CLI, the site and the API."""

from __future__ import annotations

import csv
import io
from dataclasses import fields, is_dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from domain.ledger.statements import Reconciliation, Statement, StatementLine, Totals

RECONCILIATION_SCOPE = (
    "fleet-level: the projects on the hubs listed + unallocated + unaccounted = capacity x hours, from the "
    "accounted windows (for a reader who does not see every project: their own projects + the other "
    "projects and unallocated as one figure + unaccounted)"
)

CSV_COLUMNS = (
    "row",
    "month",
    "hub",
    "cluster",
    "project",
    "model",
    "profile",
    "gpu_hours",
    "idle_gpu_hours",
    "unknown_util_gpu_hours",
    "energy_kwh",
    "price_per_gpu_hour",
    "currency",
    "cost",
    "service_units",
    "unallocated_gpu_hours",
    "unaccounted_gpu_hours",
    "capacity_gpu_hours",
)
"""``row`` says what a row is: ``line`` (a project's model/profile), ``project`` (its total), ``total``
(all projects of the statement) or ``reconciliation`` (per hub, and ``fleet``)."""


def _plain(value: Any) -> Any:
    """A statement part as JSON-ready data: dataclass fields by name, costs as numbers, times as ISO text."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    return value


def _reconciliation(r: Reconciliation) -> dict[str, Any]:
    """A reconciliation line with its derived figures (the difference, whether it balances, its text)."""
    return {**_plain(r), "difference_gpu_hours": r.difference_gpu_hours, "balanced": r.balanced, "line": r.line}


def statement_dict(s: Statement) -> dict[str, Any]:
    """The statement as JSON-ready data (numbers unrounded; costs rounded to the cent; null: unknown)."""
    return {
        "month": s.month,
        "start": s.start.isoformat(),
        "end": s.end.isoformat(),
        "generated_at": s.generated_at.isoformat(),
        "provisional": s.provisional,
        "currency": s.currency,
        "service_unit": None if s.service_unit is None else s.service_unit.model_dump(),
        "projects": _plain(s.projects),
        "totals": _plain(s.totals),
        "unpriced": s.unpriced_models,
        "reconciliation": {
            "scope": RECONCILIATION_SCOPE,
            "hubs": [_reconciliation(r) for r in s.reconciliation[:-1]],
            "fleet": _reconciliation(s.fleet),
        },
    }


def _cell(value: object) -> str:
    """Spreadsheets run cells that start with = + - @ as formulas; quote them."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def _num(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def statement_csv(s: Statement) -> str:
    """One row per line, per project total, the statement total and the reconciliation (per hub, fleet)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    currency = s.currency or ""

    def figures(t: Totals | StatementLine) -> list[str]:
        return [
            _num(t.gpu_hours),
            _num(t.idle_gpu_hours),
            _num(t.unknown_util_gpu_hours),
            _num(t.energy_kwh),
        ]

    for p in s.projects:
        for line in p.lines:
            writer.writerow(
                [
                    _cell(v)
                    for v in (
                        "line",
                        s.month,
                        p.hub,
                        p.cluster,
                        p.namespace,
                        line.model,
                        line.profile,
                        *figures(line),
                        _num(line.price_per_gpu_hour),
                        currency,
                        "" if line.cost is None else str(line.cost),
                        _num(line.service_units),
                        "",
                        "",
                        "",
                    )
                ]
            )
        writer.writerow(
            [
                _cell(v)
                for v in (
                    "project",
                    s.month,
                    p.hub,
                    p.cluster,
                    p.namespace,
                    "",
                    "",
                    *figures(p.totals),
                    "",
                    currency,
                    "" if p.totals.cost is None else str(p.totals.cost),
                    _num(p.totals.service_units),
                    "",
                    "",
                    "",
                )
            ]
        )
    t = s.totals
    writer.writerow(
        [
            "total",
            s.month,
            "",
            "",
            "",
            "",
            "",
            *figures(t),
            "",
            currency,
            "" if t.cost is None else str(t.cost),
            _num(t.service_units),
            "",
            "",
            "",
        ]
    )
    for r in s.reconciliation:
        writer.writerow(
            [
                _cell(v)
                for v in (
                    "reconciliation",
                    s.month,
                    r.hub or "fleet",
                    "",
                    "(your projects; others in unallocated)" if r.scoped else "(all projects)",
                    "",
                    "",
                    _num(r.projects_gpu_hours),
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    _num(r.unallocated_gpu_hours),
                    _num(r.unaccounted_gpu_hours),
                    _num(r.capacity_gpu_hours),
                )
            ]
        )
    return buffer.getvalue()


def statement_table(s: Statement) -> str:
    """A plain-text statement for a terminal."""
    money = s.currency or ""
    out = [
        f"GPU statement {s.month} ({s.start:%Y-%m-%d} to {s.end:%Y-%m-%d} UTC)"
        + (" — provisional: not fully accounted yet" if s.provisional else ""),
        "",
        f"{'project':<28} {'model':<26} {'profile':<10} {'GPU-h':>11} {'idle':>10} {'unknown':>10} "
        f"{'kWh':>10} {'cost ' + money:>14}",
    ]

    def cost(value: Decimal | None) -> str:
        if s.currency is None:
            return "—"
        return "unpriced" if value is None else f"{value:,.2f}"

    for p in s.projects:
        name = f"{p.cluster}/{p.namespace}"
        for line in p.lines:
            out.append(
                f"{name:<28.28} {line.model:<26.26} {line.profile:<10} {line.gpu_hours:>11,.3f} "
                f"{line.idle_gpu_hours:>10,.3f} {line.unknown_util_gpu_hours:>10,.3f} {line.energy_kwh:>10,.3f} "
                f"{cost(line.cost):>14}"
            )
            name = ""
        t = p.totals
        out.append(
            f"{'':<28} {'project total':<37} {t.gpu_hours:>11,.3f} {t.idle_gpu_hours:>10,.3f} "
            f"{t.unknown_util_gpu_hours:>10,.3f} {t.energy_kwh:>10,.3f} {cost(t.cost):>14}"
        )
    if not s.projects:
        out.append("(no GPU-hours recorded for the projects in this statement)")
    t = s.totals
    out += [
        f"{'TOTAL':<66} {t.gpu_hours:>11,.3f} {t.idle_gpu_hours:>10,.3f} {t.unknown_util_gpu_hours:>10,.3f} "
        f"{t.energy_kwh:>10,.3f} {cost(t.cost):>14}",
    ]
    if s.currency is None:
        out.append("No rate card (AI_TELEMETRY_STATEMENTS_RATE_CARD or --rate-card): GPU-hours without cost.")
    elif t.unpriced_gpu_hours:
        out.append(
            f"Unpriced: {t.unpriced_gpu_hours:,.3f} GPU-hours ({', '.join(s.unpriced_models)}), not in the cost."
        )
    if s.service_unit and t.service_units is not None:
        out.append(f"Service units ({s.service_unit.name}: {s.service_unit.description}): {t.service_units:,.3f}")
    out += ["", f"Reconciliation is {RECONCILIATION_SCOPE}:"]
    for r in s.reconciliation:
        out.append("  " + r.line)
        if r.hub is not None and (r.unaccounted_hours or r.accounted_until is None or r.accounted_until < s.end):
            until = r.accounted_until.isoformat() if r.accounted_until else "never"
            out.append(f"    unaccounted time {r.unaccounted_hours:,.3f} h; accounted until {until}")
    return "\n".join(out) + "\n"
