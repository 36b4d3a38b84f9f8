"""One place that maps failures to responses, rendered for their audience.

Browser pages get a page or a login redirect; ``/api/`` gets JSON problem details; htmx fragments
get a small fragment (401 carries ``HX-Redirect`` to the login, never a login page in a table cell).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, InternalServerException, NotAuthorizedException, NotFoundException
from litestar.response import Redirect, Template
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_403_FORBIDDEN,
    HTTP_404_NOT_FOUND,
    HTTP_408_REQUEST_TIMEOUT,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from sqlalchemy.exc import OperationalError

from domain.access import AuthorizationUnavailable, Forbidden, NotAuthenticated
from domain.http_headers import RETRY_AFTER
from domain.inventory.paging import InvalidQuery
from domain.inventory.queries import NotFound
from web.rendering import is_htmx

log = logging.getLogger(__name__)
CLIENT_GONE = "client disconnected prematurely"
"""Litestar's words when the body stops short: the client went away or the server cut a slow one off (408)."""

_TITLES = {
    400: "Bad request",
    401: "Login required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    413: "Request too large",
    500: "Internal error",
    503: "Service unavailable",
}


def _status_and_detail(exc: Exception) -> tuple[int, str]:  # noqa: PLR0911  (one flat table of cases)
    if isinstance(exc, NotAuthenticated | NotAuthorizedException):
        return HTTP_401_UNAUTHORIZED, str(exc) or "login required"
    if isinstance(exc, Forbidden):
        return HTTP_403_FORBIDDEN, str(exc) or "forbidden"
    if isinstance(exc, NotFound | NotFoundException):
        return HTTP_404_NOT_FOUND, "no such resource, or not visible to you"
    if isinstance(exc, AuthorizationUnavailable):
        return HTTP_503_SERVICE_UNAVAILABLE, "authorization service unavailable; try again shortly"
    if isinstance(exc, OperationalError):
        return HTTP_503_SERVICE_UNAVAILABLE, "database unavailable; try again shortly"
    if isinstance(exc, InternalServerException) and exc.detail == CLIENT_GONE:
        return HTTP_408_REQUEST_TIMEOUT, "the request ended before its body was complete"
    if isinstance(exc, HTTPException):
        detail = exc.detail
        if isinstance(exc.extra, list):  # name the offending parameters
            detail += ": " + "; ".join(f"{e.get('key')}: {e.get('message')}" for e in exc.extra if isinstance(e, dict))
        return exc.status_code, detail
    if isinstance(exc, InvalidQuery | ValueError):  # after HTTPException: Litestar's validation errors are ValueErrors
        return HTTP_400_BAD_REQUEST, str(exc)
    if isinstance(exc, OverflowError):  # a number no column can hold (ids are bounded before; this is the net)
        return HTTP_400_BAD_REQUEST, "a number in the request is out of range"
    return HTTP_500_INTERNAL_SERVER_ERROR, "internal error"


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    status, detail = _status_and_detail(exc)
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=status == 500)
    title = _TITLES.get(status, "Error")
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}  # e.g. Allow on a 405
    if status == HTTP_401_UNAUTHORIZED:
        headers["WWW-Authenticate"] = "Bearer"
    if status == HTTP_503_SERVICE_UNAVAILABLE:
        headers.update(RETRY_AFTER)

    if request.url.path.startswith(("/api/", "/ngsi-ld/")):
        problem = {"type": "about:blank", "title": title, "status": status, "detail": detail}
        return Response(problem, status_code=status, media_type="application/problem+json", headers=headers)
    if is_htmx(request):
        if status == HTTP_401_UNAUTHORIZED:
            return Response("", status_code=status, headers={"HX-Redirect": "/login"})
        return Response(f'<p class="error">{title}</p>', status_code=status, media_type=MediaType.HTML)
    if status == HTTP_401_UNAUTHORIZED:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return Redirect(f"/login?next={quote(target, safe='')}", status_code=303)  # GET the login, whatever the method
    return Template(
        template_name="error.html",
        context={"status": status, "title": title, "detail": detail, "principal": None},
        status_code=status,
        headers=headers,
    )
