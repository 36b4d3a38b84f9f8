"""Workloads: pods on GPUs and MIG slices, each linked to its trace."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Template

from domain.report_cards.queries import run_card_of
from domain.workloads import get_workload
from web.filters import WorkloadFilter, filters_of
from web.identity import PROTECTED, Caller, Db, Visible, site_context
from web.pages.common import EntityId
from web.rendering import render


def trace_template(request: Request[Any, Any, Any]) -> str | None:
    return site_context(request.app.state).settings.otel.trace_url_template


class WorkloadPages(Controller):
    path = "/workloads"
    dependencies = PROTECTED
    include_in_schema = False

    @get("/", name="workloads", sync_to_thread=True, dependencies=filters_of(WorkloadFilter))
    def index(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        visible: Visible,
        db: Db,
        filters: NamedDependency[WorkloadFilter],
    ) -> Template:
        context = {
            "principal": principal,
            "page": filters.fetch(db, visible, trace_url_template=trace_template(request)),
            "sort": filters.sort or "-started",
            "q": filters.q or "",
            "state": filters.workload_state or "",
        }
        return render(request, "workloads/index.html", context, fragments={"table": "workloads/_table.html"})

    @get("/{workload_id:int}", name="workload", sync_to_thread=True)
    def detail(
        self, request: Request[Any, Any, Any], principal: Caller, visible: Visible, db: Db, workload_id: EntityId
    ) -> Template:
        workload = get_workload(db, visible, workload_id, trace_url_template=trace_template(request))
        return render(request, "workloads/detail.html", {"principal": principal, "workload": workload})

    @get("/{workload_id:int}/report-card", name="workload-report-card", sync_to_thread=True)
    def report_card(
        self, request: Request[Any, Any, Any], principal: Caller, visible: Visible, db: Db, workload_id: EntityId
    ) -> Template:
        """The report card of the workload run the workload belongs to (a stable address per workload id)."""
        card = run_card_of(db, visible, workload_id)
        context = {"principal": principal, "card": card, "workload_id": workload_id}
        return render(request, "workloads/report_card.html", context)
