"""``/admin/users``: local users and administrators (local authorization mode; admins only).

The same changes as ``ai-telemetry user ...``, through :mod:`domain.access.users`: create, set a
password, disable, enable, delete. Plain forms with CSRF tokens; each change answers with a redirect
back and a notice saying what was done or why not. In Keycloak mode users live in Keycloak: the page
says so and the forms answer 403.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from domain.access import Forbidden
from domain.access import users as local_users
from domain.access.users import PASSWORD_MAX, PASSWORD_MIN, UserError
from domain.database import session_scope
from web.identity import ADMIN_ONLY, Admin, Db, site_context
from web.pages.admin import flash, take_flash
from web.rendering import render

HOME = "/admin/users"
Form = Body(media_type=RequestEncodingType.URL_ENCODED)


class NewUserForm(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=PASSWORD_MAX)
    display_name: str = Field(default="", max_length=128)
    email: str = Field(default="", max_length=254)
    admin: bool = False


class UserForm(BaseModel):
    username: str = Field(min_length=1, max_length=64)


class PasswordForm(UserForm):
    password: str = Field(min_length=1, max_length=PASSWORD_MAX)


def _local_mode(request: Request[Any, Any, Any]) -> Engine:
    context = site_context(request.app.state)
    if context.settings.auth.mode != "local":
        raise Forbidden("users are managed in Keycloak in this installation")
    return context.engine


class UserPages(Controller):
    path = HOME
    dependencies = ADMIN_ONLY
    include_in_schema = False

    @get("/", name="admin-users", sync_to_thread=True)
    def index(self, request: Request[Any, Any, Any], admin: Admin, db: Db) -> Template:
        mode = site_context(request.app.state).settings.auth.mode
        context = {
            "principal": admin,
            "mode": mode,
            "users": local_users.list_users(db) if mode == "local" else [],
            "notice": take_flash(request),
            "password_min": PASSWORD_MIN,
        }
        return render(request, "admin/users.html", context)

    def _change(self, request: Request[Any, Any, Any], change: Any, done: str) -> Redirect:
        engine = _local_mode(request)
        try:
            with session_scope(engine) as session:
                change(session)
        except UserError as exc:
            flash(request, str(exc), error=True)
        else:
            flash(request, done)
        return Redirect(HOME, status_code=303)

    @post("/", name="admin-user-create", sync_to_thread=True)
    def create(self, request: Request[Any, Any, Any], admin: Admin, data: Annotated[NewUserForm, Form]) -> Redirect:
        def change(session: Any) -> None:
            local_users.create_user(
                session,
                data.username.strip(),
                password=data.password,
                display_name=data.display_name or None,
                email=data.email or None,
                is_admin=data.admin,
            )

        role = "administrator" if data.admin else "user"
        return self._change(request, change, f"Created {role} {data.username.strip()}.")

    @post("/password", name="admin-user-password", sync_to_thread=True)
    def password(self, request: Request[Any, Any, Any], admin: Admin, data: Annotated[PasswordForm, Form]) -> Redirect:
        return self._change(
            request,
            lambda session: local_users.set_password(session, data.username, data.password),
            f"New password for {data.username}; their open logins ended.",
        )

    @post("/disable", name="admin-user-disable", sync_to_thread=True)
    def disable(self, request: Request[Any, Any, Any], admin: Admin, data: Annotated[UserForm, Form]) -> Redirect:
        return self._change(
            request,
            lambda session: local_users.set_disabled(session, data.username, True),
            f"{data.username} is disabled: no login, no token.",
        )

    @post("/enable", name="admin-user-enable", sync_to_thread=True)
    def enable(self, request: Request[Any, Any, Any], admin: Admin, data: Annotated[UserForm, Form]) -> Redirect:
        return self._change(
            request,
            lambda session: local_users.set_disabled(session, data.username, False),
            f"{data.username} is enabled.",
        )

    @post("/delete", name="admin-user-delete", sync_to_thread=True)
    def delete(self, request: Request[Any, Any, Any], admin: Admin, data: Annotated[UserForm, Form]) -> Redirect:
        return self._change(
            request,
            lambda session: local_users.delete_user(session, data.username),
            f"Deleted {data.username} with their tokens and grants.",
        )


USER_CONTROLLERS = [UserPages]
