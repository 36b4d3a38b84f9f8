"""The monthly statement per research project, as a page and as CSV and JSON downloads.

The same statement as ``ai-telemetry ledger`` and ``/api/v1/statements``, scoped to the caller:
their projects' lines, and the fleet-level reconciliation of the hubs those projects run on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, Response, get
from litestar.params import QueryParameter
from litestar.response import Template

from domain.ledger.statement_formats import RECONCILIATION_SCOPE, statement_csv, statement_dict
from domain.ledger.statements import MONTH_PATTERN, Statement, month_bounds, monthly_statement
from domain.models import utcnow
from web.identity import PROTECTED, Caller, Db, Visible, site_context
from web.rendering import render

Month = Annotated[str | None, QueryParameter(pattern=MONTH_PATTERN, description="YYYY-MM, UTC.")]


def _label(month: str | None) -> str:
    return month or utcnow().strftime("%Y-%m")


def _previous(start: datetime) -> str:
    return (
        start.replace(year=start.year - 1, month=12) if start.month == 1 else start.replace(month=start.month - 1)
    ).strftime("%Y-%m")


def _statement(request: Request[Any, Any, Any], visible: Visible, db: Db, label: str) -> Statement:
    rate_card = site_context(request.app.state).settings.rate_card
    return monthly_statement(db, visible, label, rate_card=rate_card)


class ReportPages(Controller):
    path = "/reports"
    dependencies = PROTECTED
    include_in_schema = False

    @get("/monthly", name="monthly_report", sync_to_thread=True)
    def monthly(
        self, request: Request[Any, Any, Any], principal: Caller, visible: Visible, db: Db, month: Month = None
    ) -> Template:
        label = _label(month)
        start, end = month_bounds(label)
        context = {
            "principal": principal,
            "month": label,
            "previous": _previous(start),
            "next": end.strftime("%Y-%m") if end <= utcnow() else None,
            "statement": _statement(request, visible, db, label),
            "reconciliation_scope": RECONCILIATION_SCOPE,
        }
        return render(request, "reports/monthly.html", context)

    @get("/monthly.csv", name="monthly_report_csv", sync_to_thread=True)
    def monthly_csv(
        self, request: Request[Any, Any, Any], visible: Visible, db: Db, month: Month = None
    ) -> Response[str]:
        label = _label(month)
        return Response(
            statement_csv(_statement(request, visible, db, label)),
            media_type="text/csv",  # Litestar adds "; charset=utf-8" to text types
            headers={"Content-Disposition": f'attachment; filename="ai-telemetry-{label}.csv"'},
        )

    @get("/monthly.json", name="monthly_report_json", sync_to_thread=True)
    def monthly_json(
        self, request: Request[Any, Any, Any], visible: Visible, db: Db, month: Month = None
    ) -> Response[dict[str, Any]]:
        label = _label(month)
        return Response(
            statement_dict(_statement(request, visible, db, label)),
            headers={"Content-Disposition": f'attachment; filename="ai-telemetry-{label}.json"'},
        )
