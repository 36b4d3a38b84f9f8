"""``/api/v1/sessions``: workload sessions (a pod on a GPU or MIG slice, start to end, with its trace)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency

from domain.models import WorkloadSessionRead
from domain.sessions import get_session
from web.api.schemas import ERRORS, Paged
from web.filters import WorkloadFilter, filters_of
from web.identity import PROTECTED, Db, Visible, site_context
from web.pages.common import EntityId


def trace_template(request: Request[Any, Any, Any]) -> str | None:
    return site_context(request.app.state).settings.otel.trace_url_template


class SessionApi(Controller):
    path = "/api/v1/sessions"
    dependencies = PROTECTED
    tags = ["sessions"]

    @get(
        "/",
        dependencies=filters_of(WorkloadFilter),
        sync_to_thread=True,
        responses=ERRORS,
        summary="List workload sessions",
    )
    def index(
        self, request: Request[Any, Any, Any], visible: Visible, db: Db, filters: NamedDependency[WorkloadFilter]
    ) -> Paged[WorkloadSessionRead]:
        """Newest first. ``since``/``until`` keep the sessions overlapping that interval."""
        return Paged.of(filters.fetch(db, visible, trace_url_template=trace_template(request)))

    @get("/{session_id:int}", sync_to_thread=True, responses=ERRORS, summary="One workload session")
    def detail(
        self, request: Request[Any, Any, Any], visible: Visible, db: Db, session_id: EntityId
    ) -> WorkloadSessionRead:
        return get_session(db, visible, session_id, trace_url_template=trace_template(request))


SESSION_CONTROLLERS = [SessionApi]
