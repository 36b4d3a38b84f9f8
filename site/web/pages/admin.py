"""``/admin/access``: who can read which project; grants, revokes and new API clients (admins only).

The same pages serve both modes through :class:`~domain.access.AccessAdmin`: local mode edits
``AccessGrant`` rows, Keycloak mode writes group memberships and group policies through Keycloak's
admin REST API. Forms are plain HTML with CSRF tokens, so they work without JavaScript.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template
from pydantic import BaseModel, Field, field_validator

from domain.access import (
    GRANTEE_KINDS,
    AccessAdmin,
    Forbidden,
    Grantee,
    GranteeKind,
    GrantError,
    Principal,
    ProjectRef,
)
from domain.inventory import PageRequest
from domain.inventory.paging import MAX_LIMIT
from domain.inventory.queries import get_project, list_projects
from domain.inventory.references import ID_MAX
from web.filters import AccessFilter, filters_of
from web.identity import ADMIN_ONLY, Admin, Db, Visible, site_context
from web.login import safe_next
from web.rendering import render

NOTICE = "admin_notice"
HOME = "/admin/access"


class GrantForm(BaseModel):
    project_id: int = Field(ge=1, le=ID_MAX)
    kind: GranteeKind
    name: str = Field(min_length=1, max_length=255)
    back: str = HOME

    @field_validator("name")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


class ClientForm(BaseModel):
    team: str = Field(min_length=1, max_length=60)
    projects: list[Annotated[int, Field(ge=1, le=ID_MAX)]] = []

    @field_validator("projects", mode="before")
    @classmethod
    def _as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | int) else value

    @field_validator("team")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


def _access_admin(request: Request[Any, Any, Any]) -> AccessAdmin:
    admin = site_context(request.app.state).access_admin
    if admin is None:
        raise Forbidden("access management is not configured")
    return admin


def _back(target: str) -> str:
    target = safe_next(target)
    return target if target.startswith(HOME) else HOME


def flash(request: Request[Any, Any, Any], text: str, *, error: bool = False) -> None:
    request.set_session({**(request.session or {}), NOTICE: {"text": text, "error": error}})


def take_flash(request: Request[Any, Any, Any]) -> dict[str, Any] | None:
    session = dict(request.session or {})
    notice = session.pop(NOTICE, None)
    if notice is not None:
        request.set_session(session)
    return notice if isinstance(notice, dict) else None


class AdminAccessPages(Controller):
    path = HOME
    dependencies = ADMIN_ONLY
    include_in_schema = False

    @get("/", name="admin-access", sync_to_thread=True, dependencies=filters_of(AccessFilter))
    def index(
        self,
        request: Request[Any, Any, Any],
        admin: Admin,
        visible: Visible,
        db: Db,
        filters: NamedDependency[AccessFilter],
    ) -> Template:
        access_admin = _access_admin(request)
        page = filters.fetch(db, visible)
        refs = [ProjectRef(p.hub, p.cluster, p.namespace, p.id) for p in page.items]
        mode = site_context(request.app.state).settings.auth.mode
        context = {
            "principal": admin,
            "page": page,
            "rows": list(zip(page.items, access_admin.access_of(refs), strict=True)),
            "q": filters.q or "",
            "sort": "cluster",
            "mode": mode,
            "kinds": [k for k in GRANTEE_KINDS if mode == "keycloak" or k != "group"],
            "teams": access_admin.teams(),
            "all_projects": list_projects(db, visible, PageRequest(limit=MAX_LIMIT), sort="cluster").items,
            "notice": take_flash(request),
            "back": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        }
        return render(request, "admin/access.html", context, fragments={"table": "admin/_access_table.html"})

    def _change(
        self, request: Request[Any, Any, Any], db: Db, visible: Visible, form: GrantForm, grant: bool, who: Principal
    ) -> Redirect:
        project = get_project(db, visible, form.project_id)
        ref = ProjectRef(project.hub, project.cluster, project.namespace, project.id)
        grantee = Grantee(form.kind, form.name)
        try:
            if grant:
                changed = _access_admin(request).grant(ref, grantee, granted_by=who.subject)
                text = f"{grantee} can now read {ref}." if changed else f"{grantee} could already read {ref}."
            else:
                changed = _access_admin(request).revoke(ref, grantee)
                text = f"{grantee} no longer reads {ref} directly." if changed else f"{grantee} had no grant on {ref}."
        except GrantError as exc:
            flash(request, str(exc), error=True)
        else:
            flash(request, text)
        return Redirect(_back(form.back), status_code=303)

    @post("/grant", name="admin-grant", sync_to_thread=True)
    def grant(
        self,
        request: Request[Any, Any, Any],
        admin: Admin,
        visible: Visible,
        db: Db,
        data: Annotated[GrantForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Redirect:
        return self._change(request, db, visible, data, True, admin)

    @post("/revoke", name="admin-revoke", sync_to_thread=True)
    def revoke(
        self,
        request: Request[Any, Any, Any],
        admin: Admin,
        visible: Visible,
        db: Db,
        data: Annotated[GrantForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Redirect:
        return self._change(request, db, visible, data, False, admin)

    @post("/clients", name="admin-client-create", sync_to_thread=True)
    def create_client(
        self,
        request: Request[Any, Any, Any],
        admin: Admin,
        visible: Visible,
        db: Db,
        data: Annotated[ClientForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Template | Redirect:
        projects = [get_project(db, visible, project_id) for project_id in dict.fromkeys(data.projects)]
        refs = [ProjectRef(p.hub, p.cluster, p.namespace, p.id) for p in projects]
        try:
            credentials = _access_admin(request).create_api_client(data.team, refs, created_by=admin.subject)
        except GrantError as exc:
            flash(request, str(exc), error=True)
            return Redirect(HOME, status_code=303)
        context = {"principal": admin, "credentials": credentials, "team": data.team, "projects": refs}
        return Template(
            "admin/client_created.html",
            context=context,
            status_code=201,
            headers={"Cache-Control": "no-store"},
        )


ADMIN_CONTROLLERS = [AdminAccessPages]
