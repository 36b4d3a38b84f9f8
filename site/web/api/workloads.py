"""``/api/v1/workloads``: workloads (a pod on a GPU or MIG slice, start to end, with its trace)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import QueryParameter

from domain.models import WorkloadRead
from domain.workloads import SORT_KEYS, get_workload, list_workloads
from web.api.schemas import ERRORS, Paged
from web.api.v1 import RFC3339, moment
from web.identity import PROTECTED, Db, Visible, site_context
from web.pages.common import EntityId, IdFilter, Limit, Offset, Search, page_request

State = Annotated[str | None, QueryParameter(name="state", description="open or closed.", pattern="^(open|closed)$")]
Moment = Annotated[
    str | None, QueryParameter(schema_extra=RFC3339, description="RFC 3339 with offset, e.g. 2026-11-01T00:00:00Z.")
]
WorkloadSort = Annotated[
    str | None,
    QueryParameter(
        pattern=f"^-?({'|'.join(SORT_KEYS)})$",
        description=f"One of {', '.join(SORT_KEYS)}; - for descending (default -started).",
    ),
]


def trace_template(request: Request[Any, Any, Any]) -> str | None:
    return site_context(request.app.state).settings.otel.trace_url_template


class WorkloadApi(Controller):
    path = "/api/v1/workloads"
    dependencies = PROTECTED
    tags = ["workloads"]

    @get("/", sync_to_thread=True, responses=ERRORS, summary="List workloads")
    def index(
        self,
        request: Request[Any, Any, Any],
        visible: Visible,
        db: Db,
        limit: Limit = 50,
        offset: Offset = 0,
        sort: WorkloadSort = None,
        q: Search = None,
        project: IdFilter = None,
        gpu: IdFilter = None,
        cluster: IdFilter = None,
        workload_state: State = None,
        since: Moment = None,
        until: Moment = None,
    ) -> Paged[WorkloadRead]:
        """Newest first. ``since``/``until`` keep the workloads overlapping that interval."""
        page = list_workloads(
            db,
            visible,
            page_request(limit, offset),
            project_id=project,
            gpu_id=gpu,
            cluster_id=cluster,
            state=workload_state,
            since=moment("since", since) if since is not None else None,
            until=moment("until", until) if until is not None else None,
            q=q,
            sort=sort,
            trace_url_template=trace_template(request),
        )
        return Paged.of(page)

    @get("/{workload_id:int}", sync_to_thread=True, responses=ERRORS, summary="One workload")
    def detail(self, request: Request[Any, Any, Any], visible: Visible, db: Db, workload_id: EntityId) -> WorkloadRead:
        return get_workload(db, visible, workload_id, trace_url_template=trace_template(request))


WORKLOAD_CONTROLLERS = [WorkloadApi]
