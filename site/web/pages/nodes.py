from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.response import Template

from domain.inventory.queries import get_node, list_gpus, list_nodes
from web import history
from web.charts import RANGES, usage_charts
from web.identity import PROTECTED, Caller, Db, Visible, site_context
from web.pages.common import EntityId, Hours, IdFilter, Limit, Offset, Search, Sort, TextFilter, page_request
from web.rendering import render


class NodePages(Controller):
    path = "/nodes"
    dependencies = PROTECTED
    include_in_schema = False

    @get("/", name="nodes", sync_to_thread=True)
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
        cluster: IdFilter = None,
        health: TextFilter = None,
    ) -> Template:
        page = list_nodes(db, visible, page_request(limit, offset), cluster_id=cluster, health=health, q=q, sort=sort)
        context = {"principal": principal, "page": page, "sort": sort or "hostname", "q": q or ""}
        return render(request, "nodes/index.html", context, fragments={"table": "nodes/_table.html"})

    @get("/{node_id:int}", name="node", sync_to_thread=True)
    def detail(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        visible: Visible,
        db: Db,
        node_id: EntityId,
        limit: Limit = 50,
        offset: Offset = 0,
        sort: Sort = None,
        hours: Hours = 24,
    ) -> Template:
        node = get_node(db, visible, node_id)
        gpus = list_gpus(db, visible, page_request(limit, offset), node_id=node_id, sort=sort or "index")
        bucket = site_context(request.app.state).settings.scheduler.rollup_bucket_seconds
        points = history.series(db, visible, hours=hours, bucket_seconds=bucket, node_id=node_id)
        context = {
            "principal": principal,
            "node": node,
            "page": gpus,
            "sort": sort or "index",
            "q": "",
            "charts": usage_charts(points, per_gpu=False),
            "hours": hours,
            "history_points": history.complete_buckets(points),
            "ranges": RANGES,
        }
        return render(request, "nodes/detail.html", context, fragments={"table": "gpus/_table.html"})
