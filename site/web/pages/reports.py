"""Monthly usage report per research project, as a page and as CSV for managers."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Controller, Request, Response, get
from litestar.params import QueryParameter
from litestar.response import Template

from domain.inventory.usage import ProjectUsage, usage_by_project
from domain.models import utcnow
from web.identity import PROTECTED, Caller, Db, Visible
from web.rendering import render

Month = Annotated[str | None, QueryParameter(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM, UTC.")]
CSV_COLUMNS = (
    "cluster",
    "project",
    "gpu_quota",
    "gpu_hours",
    "idle_gpu_hours",
    "idle_share",
    "energy_kwh",
    "avg_utilisation_percent",
)


def month_bounds(month: str | None) -> tuple[str, datetime, datetime]:
    """The month's label and [start, end) in UTC; the current month when none is given."""
    start = (
        datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
        if month
        else utcnow().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    )
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.strftime("%Y-%m"), start, end


def _previous(start: datetime) -> str:
    return (
        start.replace(year=start.year - 1, month=12) if start.month == 1 else start.replace(month=start.month - 1)
    ).strftime("%Y-%m")


def _cell(value: object) -> str:
    """Spreadsheets run cells that start with = + - @ as formulas; quote them."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def _csv(rows: list[ProjectUsage]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(
            [
                _cell(v)
                for v in (
                    r.cluster,
                    r.namespace,
                    r.gpu_quota,
                    f"{r.gpu_hours:.3f}",
                    f"{r.idle_gpu_hours:.3f}",
                    f"{r.idle_share:.4f}",
                    f"{r.energy_kwh:.3f}",
                    f"{r.util_avg:.1f}",
                )
            ]
        )
    return buffer.getvalue()


class ReportPages(Controller):
    path = "/reports"
    dependencies = PROTECTED
    include_in_schema = False

    @get("/monthly", name="monthly_report", sync_to_thread=True)
    def monthly(
        self, request: Request[Any, Any, Any], principal: Caller, visible: Visible, db: Db, month: Month = None
    ) -> Template:
        label, start, end = month_bounds(month)
        rows = usage_by_project(db, visible, since=start, until=end)
        context = {
            "principal": principal,
            "month": label,
            "previous": _previous(start),
            "next": end.strftime("%Y-%m") if end <= utcnow() else None,
            "rows": rows,
            "total_hours": sum(r.gpu_hours for r in rows),
            "total_idle": sum(r.idle_gpu_hours for r in rows),
            "total_energy": sum(r.energy_kwh for r in rows),
        }
        return render(request, "reports/monthly.html", context)

    @get("/monthly.csv", name="monthly_report_csv", sync_to_thread=True)
    def monthly_csv(self, visible: Visible, db: Db, month: Month = None) -> Response[str]:
        label, start, end = month_bounds(month)
        return Response(
            _csv(usage_by_project(db, visible, since=start, until=end)),
            media_type="text/csv",  # Litestar adds "; charset=utf-8" to text types
            headers={"Content-Disposition": f'attachment; filename="ai-telemetry-{label}.csv"'},
        )
