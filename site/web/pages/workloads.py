"""Workloads: sessions of pods on GPUs and MIG slices, each linked to its trace."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import QueryParameter
from litestar.response import Template

from domain.report_cards.queries import session_card
from domain.sessions import get_session, list_sessions
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
        session_state: StateFilter = None,
        project: IdFilter = None,
        gpu: IdFilter = None,
        cluster: IdFilter = None,
    ) -> Template:
        page = list_sessions(
            db,
            visible,
            page_request(limit, offset),
            project_id=project,
            gpu_id=gpu,
            cluster_id=cluster,
            state=session_state or None,
            q=q,
            sort=sort,
            trace_url_template=trace_template(request),
        )
        context = {
            "principal": principal,
            "page": page,
            "sort": sort or "-started",
            "q": q or "",
            "state": session_state or "",
        }
        return render(request, "workloads/index.html", context, fragments={"table": "workloads/_table.html"})

    @get("/{session_id:int}", name="workload", sync_to_thread=True)
    def detail(
        self, request: Request[Any, Any, Any], principal: Caller, visible: Visible, db: Db, session_id: EntityId
    ) -> Template:
        session = get_session(db, visible, session_id, trace_url_template=trace_template(request))
        return render(request, "workloads/detail.html", {"principal": principal, "session": session})

    @get("/{session_id:int}/report-card", name="workload-report-card", sync_to_thread=True)
    def report_card(
        self, request: Request[Any, Any, Any], principal: Caller, visible: Visible, db: Db, session_id: EntityId
    ) -> Template:
        """The report card of the workload run the session belongs to (a stable address per session id)."""
        card = session_card(db, visible, session_id)
        context = {"principal": principal, "card": card, "session_id": session_id}
        return render(request, "workloads/report_card.html", context)
