from __future__ import annotations

from datetime import timedelta
from typing import Any

from litestar import Controller, Request, get
from litestar.params import FromPath
from litestar.response import Template

from domain.inventory import PageRequest
from domain.inventory.queries import get_gpu, gpu_models, list_allocations, list_gpus, list_slices
from domain.inventory.usage import gpu_usage
from domain.models import utcnow
from domain.sessions import list_sessions
from web.charts import Series, line_chart
from web.identity import PROTECTED, Caller, Db, Visible, site_context
from web.pages.common import Hours, IdFilter, Limit, Offset, Search, Sort, TextFilter, page_request
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
        gpu_id: FromPath[int],
        hours: Hours = 24,
    ) -> Template:
        gpu = get_gpu(db, visible, gpu_id)
        bucket = site_context(request.app.state).settings.scheduler.rollup_bucket_seconds
        points = gpu_usage(db, gpu_id, utcnow() - timedelta(hours=max(1, min(hours, 24 * 30))), bucket)
        chart = line_chart(
            [p.bucket_start for p in points],
            [
                Series("average", [p.util_avg for p in points], "s-avg"),
                Series("peak", [p.util_max for p in points], "s-max"),
            ],
            title="Utilisation",
            unit="%",
            y_max=100,
        )
        context = {
            "principal": principal,
            "gpu": gpu,
            "chart": chart,
            "hours": hours,
            "slices": list_slices(db, visible, PageRequest(limit=20), gpu_id=gpu_id, sort="instance").items,
            "allocations": list_allocations(db, visible, gpu_id=gpu_id, open_only=False, limit=20),
            "sessions": list_sessions(
                db, visible, PageRequest(limit=10), gpu_id=gpu_id,
                trace_url_template=site_context(request.app.state).settings.otel.trace_url_template,
            ),
        }
        return render(request, "gpus/detail.html", context)
