"""Thin routes: parse the query, call one query function, return a read schema."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from domain.inventory.queries import get_cluster, get_gpu, get_node, get_project
from domain.inventory.references import resolve_project
from domain.ledger.statement_formats import statement_dict
from domain.ledger.statements import MONTH_PATTERN, monthly_statement
from domain.models import ClusterRead, GpuRead, GpuSliceRead, NodeRead, ResearchProjectRead, utcnow
from web.api.schemas import ERRORS, Paged, StatementRead, UsagePointRead
from web.filters import (
    ClusterFilter,
    GpuFilter,
    NodeFilter,
    ProjectFilter,
    ProjectRef,
    SliceFilter,
    UsageFilter,
    filters_of,
)
from web.identity import PROTECTED, Db, Visible, site_context
from web.pages.common import EntityId


class ClusterApi(Controller):
    path = "/api/v1/clusters"
    dependencies = PROTECTED
    tags = ["clusters"]

    @get("/", dependencies=filters_of(ClusterFilter), sync_to_thread=True, responses=ERRORS, summary="List clusters")
    def index(self, visible: Visible, db: Db, filters: NamedDependency[ClusterFilter]) -> Paged[ClusterRead]:
        return Paged.of(filters.fetch(db, visible))

    @get("/{cluster_id:int}", sync_to_thread=True, responses=ERRORS, summary="One cluster")
    def detail(self, visible: Visible, db: Db, cluster_id: EntityId) -> ClusterRead:
        return get_cluster(db, visible, cluster_id)


class NodeApi(Controller):
    path = "/api/v1/nodes"
    dependencies = PROTECTED
    tags = ["nodes"]

    @get("/", dependencies=filters_of(NodeFilter), sync_to_thread=True, responses=ERRORS, summary="List nodes")
    def index(self, visible: Visible, db: Db, filters: NamedDependency[NodeFilter]) -> Paged[NodeRead]:
        return Paged.of(filters.fetch(db, visible))

    @get("/{node_id:int}", sync_to_thread=True, responses=ERRORS, summary="One node")
    def detail(self, visible: Visible, db: Db, node_id: EntityId) -> NodeRead:
        return get_node(db, visible, node_id)


class GpuApi(Controller):
    path = "/api/v1/gpus"
    dependencies = PROTECTED
    tags = ["gpus"]

    @get("/", dependencies=filters_of(GpuFilter), sync_to_thread=True, responses=ERRORS, summary="List GPUs")
    def index(self, visible: Visible, db: Db, filters: NamedDependency[GpuFilter]) -> Paged[GpuRead]:
        return Paged.of(filters.fetch(db, visible))

    @get("/{gpu_id:int}", sync_to_thread=True, responses=ERRORS, summary="One GPU")
    def detail(self, visible: Visible, db: Db, gpu_id: EntityId) -> GpuRead:
        return get_gpu(db, visible, gpu_id)


class SliceApi(Controller):
    path = "/api/v1/slices"
    dependencies = PROTECTED
    tags = ["slices"]

    @get("/", dependencies=filters_of(SliceFilter), sync_to_thread=True, responses=ERRORS, summary="List MIG slices")
    def index(self, visible: Visible, db: Db, filters: NamedDependency[SliceFilter]) -> Paged[GpuSliceRead]:
        return Paged.of(filters.fetch(db, visible))


class ProjectApi(Controller):
    path = "/api/v1/projects"
    dependencies = PROTECTED
    tags = ["projects"]

    @get(
        "/",
        dependencies=filters_of(ProjectFilter),
        sync_to_thread=True,
        responses=ERRORS,
        summary="List research projects",
    )
    def index(self, visible: Visible, db: Db, filters: NamedDependency[ProjectFilter]) -> Paged[ResearchProjectRead]:
        return Paged.of(filters.fetch(db, visible))

    @get("/{project_id:int}", sync_to_thread=True, responses=ERRORS, summary="One research project")
    def detail(self, visible: Visible, db: Db, project_id: EntityId) -> ResearchProjectRead:
        return get_project(db, visible, project_id)


class UsageApi(Controller):
    path = "/api/v1/usage"
    dependencies = PROTECTED
    tags = ["usage"]

    @get(
        "/",
        dependencies=filters_of(UsageFilter),
        sync_to_thread=True,
        responses=ERRORS,
        summary="Usage over time, up to 500 points (fleet or a subject)",
    )
    def series(
        self, request: Request[Any, Any, Any], visible: Visible, db: Db, filters: NamedDependency[UsageFilter]
    ) -> list[UsagePointRead]:
        bucket = site_context(request.app.state).settings.scheduler.rollup_bucket_seconds
        return [UsagePointRead.of(p) for p in filters.fetch(db, visible, bucket_seconds=bucket)]


Month = Annotated[str | None, QueryParameter(pattern=MONTH_PATTERN, description="YYYY-MM, UTC (default: this month).")]


class StatementApi(Controller):
    path = "/api/v1/statements"
    dependencies = PROTECTED
    tags = ["statements"]

    @get("/", sync_to_thread=True, responses=ERRORS, summary="Monthly GPU statement of the caller's projects")
    def monthly(
        self, request: Request[Any, Any, Any], visible: Visible, db: Db, month: Month = None, project: ProjectRef = None
    ) -> StatementRead:
        """GPU-hours, idle and unknown-utilisation GPU-hours, energy and cost per visible project, model and
        MIG profile, with the fleet-level reconciliation of the hubs those projects run on."""
        label = month or utcnow().strftime("%Y-%m")
        rate_card = site_context(request.app.state).settings.rate_card
        project_id = resolve_project(db, visible, project)
        statement = monthly_statement(db, visible, label, rate_card=rate_card, project_id=project_id)
        return StatementRead.model_validate(statement_dict(statement))


API_CONTROLLERS = [ClusterApi, NodeApi, GpuApi, SliceApi, ProjectApi, UsageApi, StatementApi]
