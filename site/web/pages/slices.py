from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.response import Template
from sqlmodel import Session

from domain.access import Principal, ReadScope
from domain.inventory.queries import list_slices
from web.identity import PROTECTED
from web.pages.common import Limit, Offset, Sort, page_request
from web.rendering import render


class SlicePages(Controller):
    path = "/slices"
    dependencies = PROTECTED
    include_in_schema = False

    @get("/", name="slices", sync_to_thread=True)
    def index(
        self, request: Request[Any, Any, Any], principal: Principal, visible: ReadScope, db: Session,
        limit: Limit = 50, offset: Offset = 0, sort: Sort = None, cluster: int | None = None,
        profile: str | None = None,
    ) -> Template:
        page = list_slices(db, visible, page_request(limit, offset), cluster_id=cluster, profile=profile, sort=sort)
        context = {"principal": principal, "page": page, "sort": sort or "gpu", "q": ""}
        return render(request, "slices/index.html", context, fragments={"table": "slices/_table.html"})
