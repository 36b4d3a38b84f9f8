from __future__ import annotations

from dataclasses import replace
from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Template

from domain.inventory.queries import get_node
from web import history
from web.charts import RANGES, usage_charts
from web.filters import GpuFilter, NodeFilter, filters_of
from web.identity import PROTECTED, Caller, Db, Visible, site_context
from web.pages.common import EntityId, Hours
from web.rendering import render


class NodePages(Controller):
    path = "/nodes"
    dependencies = PROTECTED
    include_in_schema = False

    @get("/", name="nodes", sync_to_thread=True, dependencies=filters_of(NodeFilter))
    def index(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        visible: Visible,
        db: Db,
        filters: NamedDependency[NodeFilter],
    ) -> Template:
        page = filters.fetch(db, visible)
        context = {"principal": principal, "page": page, "sort": filters.sort or "hostname", "q": filters.q or ""}
        return render(request, "nodes/index.html", context, fragments={"table": "nodes/_table.html"})

    @get("/{node_id:int}", name="node", sync_to_thread=True, dependencies=filters_of(GpuFilter))
    def detail(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        visible: Visible,
        db: Db,
        node_id: EntityId,
        filters: NamedDependency[GpuFilter],
        hours: Hours = 24,
    ) -> Template:
        """The node, its history and its GPUs (the GPUs list, on this node)."""
        node = get_node(db, visible, node_id)
        gpus = replace(filters, node=str(node_id), sort=filters.sort or "index").fetch(db, visible)
        bucket = site_context(request.app.state).settings.scheduler.rollup_bucket_seconds
        points = history.series(db, visible, hours=hours, bucket_seconds=bucket, node_id=node_id)
        context = {
            "principal": principal,
            "node": node,
            "page": gpus,
            "sort": filters.sort or "index",
            "q": "",
            "charts": usage_charts(points, per_gpu=False),
            "hours": hours,
            "history_points": history.complete_buckets(points),
            "ranges": RANGES,
        }
        return render(request, "nodes/detail.html", context, fragments={"table": "gpus/_table.html"})
