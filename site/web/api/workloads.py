"""``/api/v1/workloads``: workloads (a pod on a GPU or MIG slice, start to end, with its trace)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency

from domain.models import WorkloadRead
from domain.workloads import get_workload
from web.api.schemas import ERRORS, Paged
from web.filters import WorkloadFilter, filters_of
from web.identity import PROTECTED, Db, Visible, site_context
from web.pages.common import EntityId


def trace_template(request: Request[Any, Any, Any]) -> str | None:
    return site_context(request.app.state).settings.otel.trace_url_template


class WorkloadApi(Controller):
    path = "/api/v1/workloads"
    dependencies = PROTECTED
    tags = ["workloads"]

    @get(
        "/",
        dependencies=filters_of(WorkloadFilter),
        sync_to_thread=True,
        responses=ERRORS,
        summary="List workloads",
    )
    def index(
        self, request: Request[Any, Any, Any], visible: Visible, db: Db, filters: NamedDependency[WorkloadFilter]
    ) -> Paged[WorkloadRead]:
        """Newest first. ``since``/``until`` keep the workloads overlapping that interval."""
        return Paged.of(filters.fetch(db, visible, trace_url_template=trace_template(request)))

    @get("/{workload_id:int}", sync_to_thread=True, responses=ERRORS, summary="One workload")
    def detail(self, request: Request[Any, Any, Any], visible: Visible, db: Db, workload_id: EntityId) -> WorkloadRead:
        return get_workload(db, visible, workload_id, trace_url_template=trace_template(request))


WORKLOAD_CONTROLLERS = [WorkloadApi]
