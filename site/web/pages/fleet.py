from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.response import Template

from domain.inventory.queries import fleet_summary
from web.identity import PROTECTED, Caller, Db, Visible, site_context
from web.rendering import render


class FleetPages(Controller):
    dependencies = PROTECTED

    @get("/", name="fleet", sync_to_thread=True, include_in_schema=False)
    def overview(self, request: Request[Any, Any, Any], principal: Caller, visible: Visible, db: Db) -> Template:
        threshold = site_context(request.app.state).settings.scheduler.idle_threshold_percent
        summary = fleet_summary(db, visible, idle_threshold_percent=threshold)
        context = {"principal": principal, "summary": summary, "idle_threshold": threshold}
        return render(request, "fleet/overview.html", context, fragments={"tiles": "fleet/_tiles.html"})
