"""Local-mode login and logout: a form, a session cookie rotated at login, CSRF on both forms.

The cookie names a server-side session (:meth:`PasswordLogin.start_session`); logout deletes it, so
a copy of the cookie replayed after the logout authenticates nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, post
from litestar.datastructures import State
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromQuery
from litestar.response import Redirect, Template
from pydantic import BaseModel

from domain.access import PasswordLogin
from web.identity import SESSION_SUBJECT, site_context


class LoginForm(BaseModel):
    username: str = ""
    password: str = ""
    next: str = "/"


def _password_login(state: State) -> PasswordLogin:
    login = site_context(state).password_login
    if login is None:  # the factory mounts these routes only beside a password login
        raise TypeError("the login form needs a password login backend")
    return login


def safe_next(target: str | None) -> str:
    """Only same-site paths: no scheme, no host, no protocol-relative ``//``, no backslash tricks.

    Control characters are refused outright: browsers drop tabs and newlines from a Location, so
    ``/<TAB>/evil.example`` would be read as ``//evil.example``; CR and LF would split the header.
    """
    if not target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return "/"
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@get("/login", include_in_schema=False)
async def login_page(next: FromQuery[str | None] = None) -> Template:
    return Template("login.html", context={"next": safe_next(next), "error": None, "principal": None})


@post("/login", include_in_schema=False, sync_to_thread=True)
def login(
    request: Request[Any, Any, Any],
    state: State,
    data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Template | Redirect:
    authorizer = _password_login(state)
    principal = authorizer.authenticate_password(data.username, data.password)
    if principal is None:
        context = {"next": safe_next(data.next), "error": "Unknown user or wrong password.", "principal": None}
        return Template("login.html", context=context, status_code=401)
    previous = request.session.get(SESSION_SUBJECT) if request.session else None
    if isinstance(previous, str):  # logging in again ends the session the browser had: its cookie is dead
        authorizer.end_session(previous)
    request.clear_session()  # a fresh session at login defeats session fixation
    request.set_session({SESSION_SUBJECT: authorizer.start_session(principal)})
    return Redirect(safe_next(data.next), status_code=303)


@post("/logout", include_in_schema=False, sync_to_thread=True)
def logout(request: Request[Any, Any, Any], state: State) -> Redirect:
    subject = request.session.get(SESSION_SUBJECT) if request.session else None
    if isinstance(subject, str):
        _password_login(state).end_session(subject)
    request.clear_session()
    return Redirect("/login", status_code=303)


LOGIN_ROUTES = [login_page, login, logout]
