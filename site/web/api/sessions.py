"""``/api/v1/sessions``: workload sessions (a pod on a GPU or MIG slice, start to end, with its trace)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import FromPath, QueryParameter

from domain.models import WorkloadSessionRead
from domain.sessions import get_session, list_sessions
from web.api.schemas import Paged
from web.identity import PROTECTED, Db, Visible, site_context
from web.pages.common import IdFilter, Limit, Offset, Search, Sort, page_request

State = Annotated[str | None, QueryParameter(
    name="state", description="open or closed.", pattern="^(open|closed)$"
)]
Moment = Annotated[datetime | None, QueryParameter(description="ISO 8601; without a zone it is UTC.")]


def trace_template(request: Request[Any, Any, Any]) -> str | None:
    return site_context(request.app.state).settings.otel.trace_url_template


class SessionApi(Controller):
    path = "/api/v1/sessions"
    dependencies = PROTECTED
    tags = ["sessions"]

    @get("/", sync_to_thread=True, summary="List workload sessions")
    def index(
        self,
        request: Request[Any, Any, Any],
        visible: Visible,
        db: Db,
        limit: Limit = 50,
        offset: Offset = 0,
        sort: Sort = None,
        q: Search = None,
        project: IdFilter = None,
        gpu: IdFilter = None,
        cluster: IdFilter = None,
        session_state: State = None,
        since: Moment = None,
        until: Moment = None,
    ) -> Paged[WorkloadSessionRead]:
        """Newest first. ``since``/``until`` keep the sessions overlapping that interval."""
        page = list_sessions(
            db, visible, page_request(limit, offset), project_id=project, gpu_id=gpu, cluster_id=cluster,
            state=session_state, since=since, until=until, q=q, sort=sort,
            trace_url_template=trace_template(request),
        )
        return Paged.of(page)

    @get("/{session_id:int}", sync_to_thread=True, summary="One workload session")
    def detail(
        self, request: Request[Any, Any, Any], visible: Visible, db: Db, session_id: FromPath[int]
    ) -> WorkloadSessionRead:
        return get_session(db, visible, session_id, trace_url_template=trace_template(request))


SESSION_CONTROLLERS = [SessionApi]
