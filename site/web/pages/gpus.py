from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.response import Template

from domain.inventory import PageRequest
from domain.inventory.queries import get_gpu, gpu_models, list_allocations, list_gpus, list_slices
from domain.workloads import list_workloads
from web import history
from web.charts import RANGES, usage_charts
from web.identity import PROTECTED, Caller, Db, Visible, site_context
from web.pages.common import EntityId, Hours, IdFilter, Limit, Offset, Search, Sort, TextFilter, page_request
from web.rendering import render


class GpuPages(Controller):
    path = "/gpus"
    dependencies = PROTECTED
    include_in_schema = False

    @get("/", name="gpus", sync_to_thread=True)
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
        model: TextFilter = None,
        health: TextFilter = None,
        project: IdFilter = None,
    ) -> Template:
        page = list_gpus(
            db,
            visible,
            page_request(limit, offset),
            cluster_id=cluster,
            model=model,
            health=health,
            project_id=project,
            q=q,
            sort=sort,
        )
        context = {
            "principal": principal,
            "page": page,
            "sort": sort or "node",
            "q": q or "",
            "model": model or "",
            "health": health or "",
            "models": gpu_models(db, visible),
        }
        return render(request, "gpus/index.html", context, fragments={"table": "gpus/_table.html"})

    @get("/{gpu_id:int}", name="gpu", sync_to_thread=True)
    def detail(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        visible: Visible,
        db: Db,
        gpu_id: EntityId,
        hours: Hours = 24,
    ) -> Template:
        gpu = get_gpu(db, visible, gpu_id)
        bucket = site_context(request.app.state).settings.scheduler.rollup_bucket_seconds
        points = history.series(db, visible, hours=hours, bucket_seconds=bucket, gpu_id=gpu_id)
        context = {
            "principal": principal,
            "gpu": gpu,
            "charts": usage_charts(points),
            "hours": hours,
            "history_points": history.complete_buckets(points),
            "ranges": RANGES,
            "slices": list_slices(db, visible, PageRequest(limit=20), gpu_id=gpu_id, sort="instance").items,
            "allocations": list_allocations(db, visible, gpu_id=gpu_id, open_only=False, limit=20),
            "workloads": list_workloads(
                db,
                visible,
                PageRequest(limit=10),
                gpu_id=gpu_id,
                trace_url_template=site_context(request.app.state).settings.otel.trace_url_template,
            ),
        }
        return render(request, "gpus/detail.html", context)
