from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Template

from domain.inventory import PageRequest
from domain.inventory.queries import get_gpu, gpu_models, list_allocations, list_slices
from domain.workloads import list_workloads
from web import history
from web.charts import RANGES, usage_charts
from web.filters import GpuFilter, filters_of
from web.identity import PROTECTED, Caller, Db, Visible, site_context
from web.pages.common import EntityId, Hours
from web.rendering import render


class GpuPages(Controller):
    path = "/gpus"
    dependencies = PROTECTED
    include_in_schema = False

    @get("/", name="gpus", sync_to_thread=True, dependencies=filters_of(GpuFilter))
    def index(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        visible: Visible,
        db: Db,
        filters: NamedDependency[GpuFilter],
    ) -> Template:
        context = {
            "principal": principal,
            "page": filters.fetch(db, visible),
            "sort": filters.sort or "node",
            "q": filters.q or "",
            "model": filters.model or "",
            "health": filters.health or "",
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
