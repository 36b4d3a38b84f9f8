"""Who may post alerts: a bearer token, either the configured static one or a Keycloak JWT for the
receiver's audience."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from pydantic import SecretStr

from domain.access import NotAuthenticated
from domain.access.jwt_verifier import JwtVerifier, realm_verifier
from domain.settings import Settings


@dataclass(frozen=True, slots=True)
class Caller:
    """Who posted: the static token, or a Keycloak client (its ``azp``)."""

    kind: str
    name: str


class WebhookAuthenticator:
    """A bearer token: the configured static token, or a Keycloak JWT for our audience."""

    def __init__(self, static_token: SecretStr | None, verifier: JwtVerifier | None) -> None:
        self._static = static_token.get_secret_value().encode() if static_token else None
        self.verifier = verifier

    @property
    def configured(self) -> bool:
        return self._static is not None or self.verifier is not None

    def authenticate(self, authorization: str | None) -> Caller:
        if not self.configured:
            raise NotAuthenticated("no webhook credentials are configured on the worker")
        if authorization is None:
            raise NotAuthenticated("missing Authorization header")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise NotAuthenticated("Authorization header must be 'Bearer <token>'")
        if self._static is not None and hmac.compare_digest(token.encode(), self._static):
            return Caller("static-token", "static token")
        if self.verifier is not None and token.count(".") == 2:
            verified = self.verifier.verify(token)  # raises NotAuthenticated / Forbidden / AuthorizationUnavailable
            return Caller("keycloak", verified.client_id or verified.subject or "unknown client")
        raise NotAuthenticated("invalid token")

    def close(self) -> None:
        if self.verifier is not None:
            self.verifier.close()


def build_authenticator(settings: Settings) -> WebhookAuthenticator:
    verifier = None
    if settings.keycloak.url:
        verifier = realm_verifier(settings.keycloak, audience=settings.receiver.jwt_audience)
    return WebhookAuthenticator(settings.receiver.webhook_token, verifier)
