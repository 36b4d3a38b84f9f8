from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.response import Template

from domain.inventory import PageRequest
from domain.inventory.queries import get_cluster, list_clusters, list_nodes, list_projects
from web import history
from web.charts import RANGES, usage_charts
from web.identity import PROTECTED, Caller, Db, Visible, site_context
from web.pages.common import EntityId, Hours, Limit, Offset, Search, Sort, TextFilter, page_request
from web.rendering import render


class ClusterPages(Controller):
    path = "/clusters"
    dependencies = PROTECTED
    include_in_schema = False

    @get("/", name="clusters", sync_to_thread=True)
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
        status: TextFilter = None,
    ) -> Template:
        page = list_clusters(db, visible, page_request(limit, offset), status=status, q=q, sort=sort)
        context = {"principal": principal, "page": page, "sort": sort or "name", "q": q or "", "status": status}
        return render(request, "clusters/index.html", context, fragments={"table": "clusters/_table.html"})

    @get("/{cluster_id:int}", name="cluster", sync_to_thread=True)
    def detail(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        visible: Visible,
        db: Db,
        cluster_id: EntityId,
        limit: Limit = 50,
        offset: Offset = 0,
        sort: Sort = None,
        q: Search = None,
        hours: Hours = 24,
    ) -> Template:
        cluster = get_cluster(db, visible, cluster_id)
        bucket = site_context(request.app.state).settings.scheduler.rollup_bucket_seconds
        points = history.series(db, visible, hours=hours, bucket_seconds=bucket, cluster_id=cluster_id)
        nodes = list_nodes(db, visible, page_request(limit, offset), cluster_id=cluster_id, q=q, sort=sort)
        projects = list_projects(db, visible, PageRequest(limit=200), cluster_id=cluster_id, sort="-allocated")
        context = {
            "principal": principal,
            "cluster": cluster,
            "page": nodes,
            "projects": projects,
            "sort": sort or "hostname",
            "q": q or "",
            "charts": usage_charts(points, per_gpu=False),
            "hours": hours,
            "history_points": history.complete_buckets(points),
            "ranges": RANGES,
        }
        return render(request, "clusters/detail.html", context, fragments={"table": "nodes/_table.html"})
