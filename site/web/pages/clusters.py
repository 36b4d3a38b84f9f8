from __future__ import annotations

from dataclasses import replace
from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Template

from domain.inventory import PageRequest
from domain.inventory.queries import get_cluster, list_projects
from web import history
from web.charts import RANGES, usage_charts
from web.filters import ClusterFilter, NodeFilter, filters_of
from web.identity import PROTECTED, Caller, Db, Visible, site_context
from web.pages.common import EntityId, Hours
from web.rendering import render


class ClusterPages(Controller):
    path = "/clusters"
    dependencies = PROTECTED
    include_in_schema = False

    @get("/", name="clusters", sync_to_thread=True, dependencies=filters_of(ClusterFilter))
    def index(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        visible: Visible,
        db: Db,
        filters: NamedDependency[ClusterFilter],
    ) -> Template:
        context = {
            "principal": principal,
            "page": filters.fetch(db, visible),
            "sort": filters.sort or "name",
            "q": filters.q or "",
            "status": filters.status,
        }
        return render(request, "clusters/index.html", context, fragments={"table": "clusters/_table.html"})

    @get("/{cluster_id:int}", name="cluster", sync_to_thread=True, dependencies=filters_of(NodeFilter))
    def detail(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        visible: Visible,
        db: Db,
        cluster_id: EntityId,
        filters: NamedDependency[NodeFilter],
        hours: Hours = 24,
    ) -> Template:
        """The cluster, its history, its projects and its nodes (the nodes list, on this cluster)."""
        cluster = get_cluster(db, visible, cluster_id)
        bucket = site_context(request.app.state).settings.scheduler.rollup_bucket_seconds
        points = history.series(db, visible, hours=hours, bucket_seconds=bucket, cluster_id=cluster_id)
        nodes = replace(filters, cluster=str(cluster_id)).fetch(db, visible)
        projects = list_projects(db, visible, PageRequest(limit=200), cluster_id=cluster_id, sort="-allocated")
        context = {
            "principal": principal,
            "cluster": cluster,
            "page": nodes,
            "projects": projects,
            "sort": filters.sort or "hostname",
            "q": filters.q or "",
            "charts": usage_charts(points, per_gpu=False),
            "hours": hours,
            "history_points": history.complete_buckets(points),
            "ranges": RANGES,
        }
        return render(request, "clusters/detail.html", context, fragments={"table": "nodes/_table.html"})
