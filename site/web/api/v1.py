"""Thin routes: parse the query, call one query function, return a read schema."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import QueryParameter

from domain.inventory.queries import (
    SORT_KEYS,
    get_cluster,
    get_gpu,
    get_node,
    get_project,
    list_clusters,
    list_gpus,
    list_nodes,
    list_projects,
    list_slices,
)
from domain.inventory.usage import usage_series
from domain.ledger.statement_formats import statement_dict
from domain.ledger.statements import MONTH_PATTERN, monthly_statement
from domain.models import ClusterRead, GpuRead, GpuSliceRead, NodeRead, ResearchProjectRead, utcnow
from web.api.schemas import ERRORS, Paged, StatementRead, UsagePointRead
from web.identity import PROTECTED, Db, Visible, site_context
from web.pages.common import EntityId, IdFilter, Limit, Offset, Search, TextFilter, page_request, sort_by

ClusterSort = Annotated[str | None, sort_by(SORT_KEYS["clusters"])]
NodeSort = Annotated[str | None, sort_by(SORT_KEYS["nodes"])]
GpuSort = Annotated[str | None, sort_by(SORT_KEYS["gpus"])]
SliceSort = Annotated[str | None, sort_by(SORT_KEYS["slices"])]
ProjectSort = Annotated[str | None, sort_by(SORT_KEYS["projects"])]
RFC3339 = {"format": "date-time"}
Since = Annotated[str, QueryParameter(schema_extra=RFC3339, description="Start of the range, RFC 3339 with offset.")]
Until = Annotated[str | None, QueryParameter(schema_extra=RFC3339, description="End of the range, exclusive.")]


def moment(name: str, value: str) -> datetime:
    """Parse an RFC 3339 timestamp; one without an offset is ambiguous and refused."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name}: not an RFC 3339 timestamp, e.g. 2026-11-01T00:00:00Z") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{name}: include a UTC offset, e.g. 2026-11-01T00:00:00Z")
    return parsed


class ClusterApi(Controller):
    path = "/api/v1/clusters"
    dependencies = PROTECTED
    tags = ["clusters"]

    @get("/", sync_to_thread=True, responses=ERRORS, summary="List clusters")
    def index(
        self,
        visible: Visible,
        db: Db,
        limit: Limit = 50,
        offset: Offset = 0,
        sort: ClusterSort = None,
        q: Search = None,
        status: TextFilter = None,
        hub: TextFilter = None,
    ) -> Paged[ClusterRead]:
        return Paged.of(list_clusters(db, visible, page_request(limit, offset), status=status, hub=hub, q=q, sort=sort))

    @get("/{cluster_id:int}", sync_to_thread=True, responses=ERRORS, summary="One cluster")
    def detail(self, visible: Visible, db: Db, cluster_id: EntityId) -> ClusterRead:
        return get_cluster(db, visible, cluster_id)


class NodeApi(Controller):
    path = "/api/v1/nodes"
    dependencies = PROTECTED
    tags = ["nodes"]

    @get("/", sync_to_thread=True, responses=ERRORS, summary="List nodes")
    def index(
        self,
        visible: Visible,
        db: Db,
        limit: Limit = 50,
        offset: Offset = 0,
        sort: NodeSort = None,
        q: Search = None,
        cluster: IdFilter = None,
        health: TextFilter = None,
        model: TextFilter = None,
    ) -> Paged[NodeRead]:
        page = list_nodes(
            db, visible, page_request(limit, offset), cluster_id=cluster, health=health, model=model, q=q, sort=sort
        )
        return Paged.of(page)

    @get("/{node_id:int}", sync_to_thread=True, responses=ERRORS, summary="One node")
    def detail(self, visible: Visible, db: Db, node_id: EntityId) -> NodeRead:
        return get_node(db, visible, node_id)


class GpuApi(Controller):
    path = "/api/v1/gpus"
    dependencies = PROTECTED
    tags = ["gpus"]

    @get("/", sync_to_thread=True, responses=ERRORS, summary="List GPUs")
    def index(
        self,
        visible: Visible,
        db: Db,
        limit: Limit = 50,
        offset: Offset = 0,
        sort: GpuSort = None,
        q: Search = None,
        cluster: IdFilter = None,
        node: IdFilter = None,
        model: TextFilter = None,
        health: TextFilter = None,
        project: IdFilter = None,
    ) -> Paged[GpuRead]:
        page = list_gpus(
            db,
            visible,
            page_request(limit, offset),
            cluster_id=cluster,
            node_id=node,
            model=model,
            health=health,
            project_id=project,
            q=q,
            sort=sort,
        )
        return Paged.of(page)

    @get("/{gpu_id:int}", sync_to_thread=True, responses=ERRORS, summary="One GPU")
    def detail(self, visible: Visible, db: Db, gpu_id: EntityId) -> GpuRead:
        return get_gpu(db, visible, gpu_id)


class SliceApi(Controller):
    path = "/api/v1/slices"
    dependencies = PROTECTED
    tags = ["slices"]

    @get("/", sync_to_thread=True, responses=ERRORS, summary="List MIG slices")
    def index(
        self,
        visible: Visible,
        db: Db,
        limit: Limit = 50,
        offset: Offset = 0,
        sort: SliceSort = None,
        cluster: IdFilter = None,
        gpu: IdFilter = None,
        profile: TextFilter = None,
        project: IdFilter = None,
    ) -> Paged[GpuSliceRead]:
        page = list_slices(
            db,
            visible,
            page_request(limit, offset),
            cluster_id=cluster,
            gpu_id=gpu,
            profile=profile,
            project_id=project,
            sort=sort,
        )
        return Paged.of(page)


class ProjectApi(Controller):
    path = "/api/v1/projects"
    dependencies = PROTECTED
    tags = ["projects"]

    @get("/", sync_to_thread=True, responses=ERRORS, summary="List research projects")
    def index(
        self,
        visible: Visible,
        db: Db,
        limit: Limit = 50,
        offset: Offset = 0,
        sort: ProjectSort = None,
        q: Search = None,
        cluster: IdFilter = None,
    ) -> Paged[ResearchProjectRead]:
        return Paged.of(list_projects(db, visible, page_request(limit, offset), cluster_id=cluster, q=q, sort=sort))

    @get("/{project_id:int}", sync_to_thread=True, responses=ERRORS, summary="One research project")
    def detail(self, visible: Visible, db: Db, project_id: EntityId) -> ResearchProjectRead:
        return get_project(db, visible, project_id)


class UsageApi(Controller):
    path = "/api/v1/usage"
    dependencies = PROTECTED
    tags = ["usage"]

    @get("/", sync_to_thread=True, responses=ERRORS, summary="Usage over time, up to 500 points (fleet or a subject)")
    def series(
        self,
        request: Request[Any, Any, Any],
        visible: Visible,
        db: Db,
        since: Since,
        until: Until = None,
        cluster: IdFilter = None,
        node: IdFilter = None,
        gpu: IdFilter = None,
        project: IdFilter = None,
    ) -> list[UsagePointRead]:
        start = moment("since", since)
        end = moment("until", until) if until is not None else None
        if end is not None and end <= start:
            return []  # an empty range has no buckets
        bucket = site_context(request.app.state).settings.scheduler.rollup_bucket_seconds
        points = usage_series(
            db,
            visible,
            since=start,
            until=end,
            bucket_seconds=bucket,
            cluster_id=cluster,
            node_id=node,
            gpu_id=gpu,
            project_id=project,
        )
        return [UsagePointRead.of(p) for p in points]


Month = Annotated[str | None, QueryParameter(pattern=MONTH_PATTERN, description="YYYY-MM, UTC (default: this month).")]


class StatementApi(Controller):
    path = "/api/v1/statements"
    dependencies = PROTECTED
    tags = ["statements"]

    @get("/", sync_to_thread=True, responses=ERRORS, summary="Monthly GPU statement of the caller's projects")
    def monthly(
        self, request: Request[Any, Any, Any], visible: Visible, db: Db, month: Month = None, project: IdFilter = None
    ) -> StatementRead:
        """GPU-hours, idle and unknown-utilisation GPU-hours, energy and cost per visible project, model and
        MIG profile, with the fleet-level reconciliation of the hubs those projects run on."""
        label = month or utcnow().strftime("%Y-%m")
        rate_card = site_context(request.app.state).settings.rate_card
        statement = monthly_statement(db, visible, label, rate_card=rate_card, project_id=project)
        return StatementRead.model_validate(statement_dict(statement))


API_CONTROLLERS = [ClusterApi, NodeApi, GpuApi, SliceApi, ProjectApi, UsageApi, StatementApi]
