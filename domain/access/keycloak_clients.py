"""Is the site's Keycloak client configured right? Asked once at start-up, and what a refusal means.

A wrong ``AI_TELEMETRY_KEYCLOAK_CLIENT_SECRET`` otherwise shows only when someone logs in: Keycloak
refuses the code exchange and the user is blamed. So the site asks for a client credentials token
before it serves anything (:func:`check_clients`): a refusal stops start-up with a message naming
the variable; a Keycloak that does not answer yet (it often starts after the site) is a loud
warning, and the site starts anyway, failing closed until Keycloak answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from domain.access import AuthorizationUnavailable
from domain.settings import PREFIX, KeycloakSettings, SettingsError

log = logging.getLogger(__name__)

CLIENT_REFUSED = frozenset({"unauthorized_client", "invalid_client"})
"""OAuth errors by which Keycloak refuses a client's own credentials: the operator's mistake, not the user's."""
NO_SERVICE_ACCOUNT = "not enabled to retrieve service account"
"""Keycloak's description when the credentials are right but the client has no service account."""


class ClientRejected(AuthorizationUnavailable):
    """Keycloak refuses the site's client credentials: the site is misconfigured, nobody can log in."""


@dataclass(frozen=True, slots=True)
class ClientCheck:
    client_id: str
    secret_variable: str
    outcome: Literal["ok", "no_service_account", "rejected", "no_realm", "unreachable"]
    detail: str = ""


def oauth_error(body: Any) -> tuple[str, str]:
    """(error, error_description) of an OAuth error answer, as JSON text, bytes or a decoded dict."""
    if isinstance(body, bytes | str):
        try:
            body = httpx.Response(200, content=body).json()
        except ValueError:
            return "", ""
    if not isinstance(body, dict):
        return "", ""
    return str(body.get("error") or ""), str(body.get("error_description") or "")


def refused_client(body: Any) -> bool:
    """True when an answer of the token endpoint refuses the client itself (wrong secret, unknown client)."""
    error, description = oauth_error(body)
    return error in CLIENT_REFUSED and NO_SERVICE_ACCOUNT not in description


def _clients(settings: KeycloakSettings) -> list[tuple[str, str, str]]:
    """(client id, secret, the secret's variable) of the site client and, if it is another, the admin client."""
    site_secret = settings.client_secret.get_secret_value() if settings.client_secret else ""
    clients = [(settings.client_id, site_secret, f"{PREFIX}KEYCLOAK_CLIENT_SECRET")]
    admin_id = settings.admin_client_id or settings.client_id
    if settings.admin_client_secret is not None:
        clients.append(
            (admin_id, settings.admin_client_secret.get_secret_value(), f"{PREFIX}KEYCLOAK_ADMIN_CLIENT_SECRET")
        )
    elif admin_id != settings.client_id:
        clients.append((admin_id, site_secret, f"{PREFIX}KEYCLOAK_CLIENT_SECRET"))
    return list(dict.fromkeys(clients))


def check_client(
    settings: KeycloakSettings, client_id: str, secret: str, variable: str, http: httpx.Client
) -> ClientCheck:
    try:
        response = http.post(
            settings.token_url,
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        )
    except httpx.HTTPError as exc:
        return ClientCheck(client_id, variable, "unreachable", f"{type(exc).__name__}: {exc}")
    if response.status_code == 200:
        return ClientCheck(client_id, variable, "ok")
    error, description = oauth_error(response.content)
    if error in CLIENT_REFUSED and NO_SERVICE_ACCOUNT in description:
        return ClientCheck(client_id, variable, "no_service_account", description)
    if error in CLIENT_REFUSED:
        return ClientCheck(client_id, variable, "rejected", f"{error}: {description}")
    if response.status_code == 404:  # Keycloak answers, but has no such realm
        return ClientCheck(client_id, variable, "no_realm", f"HTTP 404 {error}".strip())
    return ClientCheck(client_id, variable, "unreachable", f"HTTP {response.status_code} {error} {description}".strip())


def check_clients(settings: KeycloakSettings, transport: httpx.BaseTransport | None = None) -> list[ClientCheck]:
    """Ask Keycloak for a client credentials token with each configured secret.

    Raises :class:`SettingsError` naming the variable when Keycloak refuses a client; logs a warning
    when Keycloak cannot be asked, and when the admin client has no service account.
    """
    verify: Any = str(settings.ca_file) if settings.ca_file else True
    with httpx.Client(timeout=settings.timeout_seconds, verify=verify, transport=transport) as http:
        checks = [check_client(settings, *client, http) for client in _clients(settings)]
    admin_id = settings.admin_client_id or settings.client_id
    for check in checks:
        if check.outcome == "no_realm":
            raise SettingsError(
                f"{PREFIX}KEYCLOAK_REALM: Keycloak at {settings.url} has no realm {settings.realm!r} ({check.detail})"
            )
        if check.outcome == "rejected":
            raise SettingsError(
                f"{check.secret_variable}: Keycloak at {settings.url} refuses client {check.client_id!r} of realm "
                f"{settings.realm!r} ({check.detail}); compare the secret with Keycloak's (Clients > {check.client_id} "
                "> Credentials) and check the client id"
            )
        if check.outcome == "unreachable":
            log.warning(
                "KEYCLOAK NOT REACHABLE: could not check client %r at %s (%s); starting anyway: logins and "
                "permission checks fail (503) until Keycloak answers",
                check.client_id,
                settings.token_url,
                check.detail,
            )
        elif check.outcome == "no_service_account" and check.client_id == admin_id:
            log.warning(
                "client %r has no service account: grants, API clients and the project sync need one "
                "(enable Service accounts, or set %sKEYCLOAK_ADMIN_CLIENT_ID)",
                check.client_id,
                PREFIX,
            )
        else:
            log.info("Keycloak accepts client %r (%s)", check.client_id, check.outcome)
    return checks


def reachable(settings: KeycloakSettings, http: httpx.Client, timeout: float) -> str | None:
    """None when the realm's discovery document answers; otherwise why not (for /readyz)."""
    try:
        response = http.get(f"{settings.realm_url}/.well-known/openid-configuration", timeout=timeout)
    except httpx.HTTPError as exc:
        return f"unreachable ({type(exc).__name__})"
    return None if response.status_code == 200 else f"answered HTTP {response.status_code}"
