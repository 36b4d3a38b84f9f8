from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Template

from web.filters import SliceFilter, filters_of
from web.identity import PROTECTED, Caller, Db, Visible
from web.rendering import render


class SlicePages(Controller):
    path = "/slices"
    dependencies = PROTECTED
    include_in_schema = False

    @get("/", name="slices", sync_to_thread=True, dependencies=filters_of(SliceFilter))
    def index(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        visible: Visible,
        db: Db,
        filters: NamedDependency[SliceFilter],
    ) -> Template:
        context = {"principal": principal, "page": filters.fetch(db, visible), "sort": filters.sort or "gpu", "q": ""}
        return render(request, "slices/index.html", context, fragments={"table": "slices/_table.html"})
