"""Findings: the list (status, severity, kind filters), one finding with its evidence, and the actions.

Acknowledge and resolve are POST forms (CSRF-protected; htmx swaps the row in place, a plain form
post redirects back). A caller may act on exactly the findings they may read: their projects' or
clusters' findings, every finding for an admin.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.response import Redirect, Template
from sqlmodel import Session

from domain.access import Principal, ReadScope
from domain.models import utcnow
from domain.pipeline.findings import acknowledge, resolve
from domain.pipeline.queries import (
    STATUS_FILTERS,
    finding_counts,
    get_finding,
    get_finding_row,
    kinds_in_use,
    waste_by_project,
)
from web.filters import FindingFilter, filters_of
from web.identity import PROTECTED, Caller, Db, Visible
from web.pages.common import EntityId
from web.rendering import is_htmx, render


def _act(db: Session, visible: ReadScope, principal: Principal, finding_id: int, action: str) -> None:
    row = get_finding_row(db, visible, finding_id)
    (acknowledge if action == "acknowledge" else resolve)(db, row, principal.name, utcnow())
    db.add(row)
    db.commit()


class FindingPages(Controller):
    path = "/findings"
    dependencies = PROTECTED
    include_in_schema = False

    @get("/", name="findings", sync_to_thread=True, dependencies=filters_of(FindingFilter))
    def index(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        visible: Visible,
        db: Db,
        filters: NamedDependency[FindingFilter],
    ) -> Template:
        context = {
            "principal": principal,
            "page": filters.fetch(db, visible),
            "sort": filters.sort or "-last_seen",
            "q": filters.q or "",
            "status": filters.status or "active",
            "severity": filters.severity or "",
            "kind": filters.kind or "",
            "statuses": STATUS_FILTERS,
            "kinds": kinds_in_use(db, visible),
            "counts": finding_counts(db, visible),
            "waste": waste_by_project(db, visible),
        }
        return render(request, "findings/index.html", context, fragments={"table": "findings/_table.html"})

    @get("/{finding_id:int}", name="finding", sync_to_thread=True)
    def detail(
        self, request: Request[Any, Any, Any], principal: Caller, visible: Visible, db: Db, finding_id: EntityId
    ) -> Template:
        finding = get_finding(db, visible, finding_id)
        return render(request, "findings/detail.html", {"principal": principal, "f": finding})

    @post("/{finding_id:int}/acknowledge", name="finding-acknowledge", sync_to_thread=True, status_code=200)
    def acknowledge(
        self, request: Request[Any, Any, Any], principal: Caller, visible: Visible, db: Db, finding_id: EntityId
    ) -> Template | Redirect:
        _act(db, visible, principal, finding_id, "acknowledge")
        return self._answer(request, principal, visible, db, finding_id)

    @post("/{finding_id:int}/resolve", name="finding-resolve", sync_to_thread=True, status_code=200)
    def resolve(
        self, request: Request[Any, Any, Any], principal: Caller, visible: Visible, db: Db, finding_id: EntityId
    ) -> Template | Redirect:
        _act(db, visible, principal, finding_id, "resolve")
        return self._answer(request, principal, visible, db, finding_id)

    @staticmethod
    def _answer(
        request: Request[Any, Any, Any], principal: Principal, visible: ReadScope, db: Session, finding_id: int
    ) -> Template | Redirect:
        finding = get_finding(db, visible, finding_id)
        if is_htmx(request):
            template = (
                "findings/_actions.html"
                if request.headers.get("hx-target", "").startswith("actions")
                else ("findings/_row.html")
            )
            return Template(template, context={"principal": principal, "f": finding})
        return Redirect(f"/findings/{finding_id}", status_code=303)
