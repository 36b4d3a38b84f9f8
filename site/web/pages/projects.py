from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from litestar.response import Template

from domain.inventory import PageRequest
from domain.inventory.queries import get_project, list_allocations, list_gpus
from domain.inventory.usage import totals
from domain.ledger.statements import MONTH_PATTERN
from domain.models import utcnow
from domain.report_cards.queries import project_month_card
from domain.workloads import list_workloads
from web import history
from web.charts import RANGES, Series, allocation_series, line_chart, partial_notes
from web.filters import ProjectFilter, filters_of
from web.identity import PROTECTED, Caller, Db, Visible, site_context
from web.pages.common import EntityId, Hours
from web.rendering import render

Month = Annotated[str | None, QueryParameter(pattern=MONTH_PATTERN, description="YYYY-MM, UTC.")]


class ProjectPages(Controller):
    path = "/projects"
    dependencies = PROTECTED
    include_in_schema = False

    @get("/", name="projects", sync_to_thread=True, dependencies=filters_of(ProjectFilter))
    def index(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        visible: Visible,
        db: Db,
        filters: NamedDependency[ProjectFilter],
    ) -> Template:
        page = filters.fetch(db, visible)
        context = {"principal": principal, "page": page, "sort": filters.sort or "namespace", "q": filters.q or ""}
        return render(request, "projects/index.html", context, fragments={"table": "projects/_table.html"})

    @get("/{project_id:int}", name="project", sync_to_thread=True)
    def detail(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        visible: Visible,
        db: Db,
        project_id: EntityId,
        hours: Hours = 24,
    ) -> Template:
        project = get_project(db, visible, project_id)
        bucket = site_context(request.app.state).settings.scheduler.rollup_bucket_seconds
        points = history.series(db, visible, hours=hours, bucket_seconds=bucket, project_id=project_id)
        series = allocation_series(points)
        if project.gpu_quota is not None:
            series.insert(0, Series("quota", [project.gpu_quota] * len(points), "s-max"))
        chart = line_chart(
            [p.bucket_start for p in points],
            series,
            title="Allocation vs use",
            width=1100,
            height=220,
            y_max=max([project.gpu_quota or 0, *(p.gpus_allocated for p in points)]) or 1,
            partial=partial_notes(points, bucket),
        )
        context = {
            "principal": principal,
            "project": project,
            "chart": chart,
            "totals": totals(points),
            "hours": hours,
            "history_points": history.complete_buckets(points),
            "ranges": RANGES,
            "allocations": list_allocations(db, visible, project_id=project_id),
            "gpus": list_gpus(db, visible, PageRequest(limit=100), project_id=project_id).items,
            "card": project_month_card(db, visible, project_id, utcnow().strftime("%Y-%m")),
            "workloads": list_workloads(
                db,
                visible,
                PageRequest(limit=10),
                project_id=project_id,
                trace_url_template=site_context(request.app.state).settings.otel.trace_url_template,
            ),
        }
        return render(request, "projects/detail.html", context)

    @get("/{project_id:int}/report-card", name="project-report-card", sync_to_thread=True)
    def report_card(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        visible: Visible,
        db: Db,
        project_id: EntityId,
        month: Month = None,
    ) -> Template:
        """The project's report card for a month (default: this month)."""
        label = month or utcnow().strftime("%Y-%m")
        project = get_project(db, visible, project_id)
        card = project_month_card(db, visible, project_id, label)
        context = {"principal": principal, "card": card, "project": project, "month": label}
        return render(request, "projects/report_card.html", context)
