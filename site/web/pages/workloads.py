"""Workloads: pods on GPUs and MIG slices, each linked to its trace."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import QueryParameter
from litestar.response import Template

from domain.report_cards.queries import run_card_of
from domain.workloads import get_workload, list_workloads
from web.identity import PROTECTED, Caller, Db, Visible, site_context
from web.pages.common import EntityId, IdFilter, Limit, Offset, Search, Sort, page_request
from web.rendering import render

StateFilter = Annotated[
    str | None, QueryParameter(name="state", description="open or closed.", pattern="^(open|closed|)$")
]


def trace_template(request: Request[Any, Any, Any]) -> str | None:
    return site_context(request.app.state).settings.otel.trace_url_template


class WorkloadPages(Controller):
    path = "/workloads"
    dependencies = PROTECTED
    include_in_schema = False

    @get("/", name="workloads", sync_to_thread=True)
    def index(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        visible: Visible,
        db: Db,
        limit: Limit = 50,
        offset: Offset = 0,
        sort: Sort = None,
        q: Search = None,
        workload_state: StateFilter = None,
        project: IdFilter = None,
        gpu: IdFilter = None,
        cluster: IdFilter = None,
    ) -> Template:
        page = list_workloads(
            db,
            visible,
            page_request(limit, offset),
            project_id=project,
            gpu_id=gpu,
            cluster_id=cluster,
            state=workload_state or None,
            q=q,
            sort=sort,
            trace_url_template=trace_template(request),
        )
        context = {
            "principal": principal,
            "page": page,
            "sort": sort or "-started",
            "q": q or "",
            "state": workload_state or "",
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
