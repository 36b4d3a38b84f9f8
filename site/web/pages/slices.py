from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.response import Template

from domain.inventory.queries import list_slices
from web.identity import PROTECTED, Caller, Db, Visible
from web.pages.common import IdFilter, Limit, Offset, Sort, TextFilter, page_request
from web.rendering import render


class SlicePages(Controller):
    path = "/slices"
    dependencies = PROTECTED
    include_in_schema = False

    @get("/", name="slices", sync_to_thread=True)
    def index(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        visible: Visible,
        db: Db,
        limit: Limit = 50,
        offset: Offset = 0,
        sort: Sort = None,
        cluster: IdFilter = None,
        profile: TextFilter = None,
    ) -> Template:
        page = list_slices(db, visible, page_request(limit, offset), cluster_id=cluster, profile=profile, sort=sort)
        context = {"principal": principal, "page": page, "sort": sort or "gpu", "q": ""}
        return render(request, "slices/index.html", context, fragments={"table": "slices/_table.html"})
