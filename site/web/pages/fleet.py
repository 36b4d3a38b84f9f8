from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.response import Template

from domain.inventory import PageRequest
from domain.inventory.queries import fleet_summary, list_clusters
from domain.pipeline.queries import list_findings
from web import history
from web.charts import allocation_series, line_chart, partial_notes
from web.identity import PROTECTED, Caller, Db, Visible, site_context
from web.rendering import render

OVERVIEW_HOURS = 24


class FleetPages(Controller):
    dependencies = PROTECTED

    @get("/", name="fleet", sync_to_thread=True, include_in_schema=False)
    def overview(self, request: Request[Any, Any, Any], principal: Caller, visible: Visible, db: Db) -> Template:
        settings = site_context(request.app.state).settings.scheduler
        context: dict[str, Any] = {
            "principal": principal,
            "summary": fleet_summary(db, visible, idle_threshold_percent=settings.idle_threshold_percent),
            "idle_threshold": settings.idle_threshold_percent,
        }
        if request.headers.get("hx-target") == "tiles":  # the live tiles need nothing else
            return render(request, "fleet/overview.html", context, fragments={"tiles": "fleet/_tiles.html"})
        bucket = settings.rollup_bucket_seconds
        points = history.series(db, visible, hours=OVERVIEW_HOURS, bucket_seconds=bucket)
        context.update(
            hours=OVERVIEW_HOURS,
            history_points=history.complete_buckets(points),
            chart=line_chart(
                [p.bucket_start for p in points],
                allocation_series(points),
                title="GPUs allocated and in use",
                width=1100,
                height=220,
                partial=partial_notes(points, bucket),
            ),
            top_projects=history.top_projects(db, visible, hours=OVERVIEW_HOURS, bucket_seconds=bucket, limit=5),
            sources=list_clusters(db, visible, PageRequest(limit=100), sort="hub").items,
            findings=list_findings(db, visible, PageRequest(limit=5), status="active", sort="-severity"),
        )
        return render(request, "fleet/overview.html", context)
