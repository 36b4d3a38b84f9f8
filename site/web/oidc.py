"""Keycloak-mode login: authorization code + PKCE, a server-side session, logout ending Keycloak's.

``GET /login`` sends the browser to Keycloak with a fresh ``state``, ``nonce`` and PKCE challenge
(kept in the encrypted session cookie); ``GET /auth/callback`` checks the state, trades the code
for tokens (the ID token's nonce is checked), stores them server-side and rotates the session;
``POST /logout`` drops the server-side session and ends the Keycloak session. When Keycloak
cannot be reached the browser gets a page saying so (503), never a broken redirect.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from litestar import Request, get, post
from litestar.datastructures import State
from litestar.params import FromQuery, QueryParameter
from litestar.response import Redirect, Template

from domain.access import AuthorizationUnavailable, RedirectLogin
from domain.access.jwt_verifier import InvalidToken
from domain.access.keycloak_clients import ClientRejected
from domain.http_headers import RETRY_AFTER
from web.identity import SESSION_SUBJECT, site_context
from web.login import safe_next

log = logging.getLogger(__name__)

PENDING = "oidc_login"
CALLBACK_PATH = "/auth/callback"


def _redirect_login(state: State) -> RedirectLogin:
    login = site_context(state).redirect_login
    if login is None:  # the factory mounts these routes only beside a redirect login
        raise TypeError("OIDC routes need a redirect login backend")
    return login


def _page(title: str, detail: str, status: int, *, retry: bool = True) -> Template:
    context = {"status": status, "title": title, "detail": detail, "principal": None, "retry": retry}
    headers = dict(RETRY_AFTER) if status == 503 else {}
    return Template("login_problem.html", context=context, status_code=status, headers=headers)


def _redirect_uri(request: Request[Any, Any, Any], authorizer: RedirectLogin) -> str:
    base = authorizer.site_url or str(request.base_url).rstrip("/")
    return base + CALLBACK_PATH


@get("/login", include_in_schema=False, sync_to_thread=True)
def oidc_login(
    request: Request[Any, Any, Any],
    state: State,
    next: FromQuery[str | None] = None,
    logged_out: FromQuery[bool] = False,
) -> Template | Redirect:
    if logged_out:
        return Template("login_keycloak.html", context={"principal": None, "logged_out": True})
    authorizer = _redirect_login(state)
    redirect_uri = _redirect_uri(request, authorizer)
    try:
        login = authorizer.start_login(redirect_uri)
    except AuthorizationUnavailable as exc:
        log.error("login impossible: %s", exc)
        return _page(
            "Login service unreachable",
            f"The login service (Keycloak at {authorizer.provider_url}) does not answer, so nobody can log in "
            "right now. Try again in a moment; if it lasts, tell the operators.",
            503,
        )
    request.set_session(
        {
            PENDING: {
                "state": login.state,
                "nonce": login.nonce,
                "verifier": login.code_verifier,
                "next": safe_next(next),
                "redirect_uri": redirect_uri,
            }
        }
    )
    return Redirect(login.url, status_code=303)


@get(CALLBACK_PATH, include_in_schema=False, sync_to_thread=True)
def oidc_callback(
    request: Request[Any, Any, Any],
    state: State,
    code: FromQuery[str | None] = None,
    returned_state: Annotated[str | None, QueryParameter(name="state")] = None,
    error: FromQuery[str | None] = None,
    error_description: FromQuery[str | None] = None,
) -> Template | Redirect:
    pending = request.session.get(PENDING) if request.session else None
    if error:
        request.clear_session()
        return _page("Login refused", f"Keycloak did not log you in: {error_description or error}.", 401)
    if not isinstance(pending, dict) or not code or not returned_state or returned_state != pending.get("state"):
        request.clear_session()
        return _page("Login expired", "This login was not started here or has expired.", 400)
    authorizer = _redirect_login(state)
    try:
        subject, principal = authorizer.finish_login(
            code, pending["redirect_uri"], pending["verifier"], pending["nonce"]
        )
    except ClientRejected as exc:  # the operators' mistake (a wrong client secret): say so, do not blame the user
        log.error("login impossible, the site is misconfigured: %s (check AI_TELEMETRY_KEYCLOAK_CLIENT_SECRET)", exc)
        return _page(
            "Login service misconfigured",
            "Keycloak does not accept this site's credentials, so nobody can log in until the operators fix the "
            "site's configuration. Logging in again will not help; please tell the operators.",
            500,
            retry=False,
        )
    except InvalidToken as exc:
        log.warning("login failed: %s", exc)
        request.clear_session()
        return _page("Login failed", "Keycloak's answer could not be verified; please log in again.", 400)
    except AuthorizationUnavailable as exc:
        log.error("login failed: %s", exc)
        return _page(
            "Login service unreachable",
            f"The login service (Keycloak at {authorizer.provider_url}) stopped answering during the login.",
            503,
        )
    request.clear_session()  # a fresh session at login defeats session fixation
    request.set_session({SESSION_SUBJECT: subject})
    log.info("%s logged in", principal.subject)
    return Redirect(safe_next(pending.get("next")), status_code=303)


@post("/logout", include_in_schema=False, sync_to_thread=True)
def oidc_logout(request: Request[Any, Any, Any], state: State) -> Redirect:
    subject = request.session.get(SESSION_SUBJECT) if request.session else None
    request.clear_session()
    if isinstance(subject, str):
        _redirect_login(state).logout(subject)
    return Redirect("/login?logged_out=true", status_code=303)


OIDC_ROUTES = [oidc_login, oidc_callback, oidc_logout]
