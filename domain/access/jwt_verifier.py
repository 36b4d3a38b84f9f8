"""Verify JWT access tokens issued by a Keycloak realm: signature against the realm's published keys
(JWKS, fetched over HTTP and cached), issuer, audience, expiry.

The one token check of the product: the worker's receiver uses it for Alertmanager's ``oauth2``
client credentials, the site's Keycloak mode for API bearer tokens, session access tokens and the
ID token of a login (with its nonce).

Failures are the authorization interface's exceptions (:mod:`domain.access`)::

    NotAuthenticated  ← InvalidToken     malformed, bad signature, expired, wrong issuer,
                                          unknown key id, not an access token          → 401
    Forbidden         ← WrongAudience     a valid token of the realm, meant for someone else → 403
    AuthorizationUnavailable ← KeysUnavailable   the realm's keys cannot be fetched      → 503

Keys are cached for ``cache_seconds``. A token signed with a key id the cache does not know makes
the verifier fetch the keys again (Keycloak rotated them), at most once per ``min_refresh_seconds``
so a stream of forged key ids cannot turn the verifier into a load generator against Keycloak.
When a refresh fails the keys already held stay in use; only with no keys at all does
verification become unavailable.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from jwt import PyJWK

from domain.access import AuthorizationUnavailable, Forbidden, NotAuthenticated
from domain.settings import KeycloakSettings

log = logging.getLogger(__name__)

ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
"""Only public-key signatures: a shared-secret algorithm (HS256) can never be satisfied by a JWKS key."""
REQUIRED_CLAIMS = ("exp", "iat", "iss")
ACCESS_TOKEN = "Bearer"  # noqa: S105  (Keycloak's typ claim of access tokens, not a secret)
ID_TOKEN = "ID"  # noqa: S105  (the typ claim of ID tokens)
LEEWAY_SECONDS = 30.0
"""Clock skew tolerated on ``exp``, ``iat`` and ``nbf``."""
JWKS_REFETCH_SECONDS = 10.0
"""An unknown key id refetches the realm keys at most this often (garbage tokens cannot hammer Keycloak)."""
_CONFIGURED: Any = object()
"""``verify``'s default audience: the one the verifier was built with."""


class InvalidToken(NotAuthenticated):
    """The token is not a valid, current access token of the realm."""


class WrongAudience(Forbidden):
    """A valid token of the realm, but its audience does not include this service."""


class KeysUnavailable(AuthorizationUnavailable):
    """The realm's signing keys could not be fetched and none are cached."""


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """The claims of a token that passed every check."""

    subject: str | None
    client_id: str | None
    """``azp``: the client the token was issued to (Alertmanager's client for client credentials)."""
    claims: Mapping[str, Any]


def keycloak_issuer(base_url: str, realm: str) -> str:
    """The ``iss`` of a realm's tokens: ``https://sso.example.org/realms/NAME``."""
    return f"{base_url.rstrip('/')}/realms/{realm}"


def keycloak_jwks_url(issuer: str) -> str:
    return f"{issuer}/protocol/openid-connect/certs"


class JwtVerifier:
    """Checks tokens of one issuer, for one audience unless ``audience`` is None; thread-safe."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str | None,
        jwks_url: str | None = None,
        cache_seconds: float = 300,
        min_refresh_seconds: float = JWKS_REFETCH_SECONDS,
        leeway_seconds: float = LEEWAY_SECONDS,
        algorithms: tuple[str, ...] = ASYMMETRIC_ALGORITHMS,
        timeout_seconds: float = 5,
        ca_file: str | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        unsafe = [a for a in algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if unsafe:
            raise ValueError(f"only public-key algorithms may verify JWKS-signed tokens, not {', '.join(unsafe)}")
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = jwks_url or keycloak_jwks_url(issuer)
        self.cache_seconds = cache_seconds
        self.min_refresh_seconds = min_refresh_seconds
        self.leeway_seconds = leeway_seconds
        self.algorithms = algorithms
        self._clock = clock
        self._client = httpx.Client(
            transport=transport, timeout=timeout_seconds, verify=ca_file or True, follow_redirects=False
        )
        self._lock = threading.Lock()
        self._keys: dict[str | None, PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self.fetches = 0
        """How many times the keys were requested (for tests and metrics)."""

    def close(self) -> None:
        self._client.close()

    # --- verification -----------------------------------------------------------------------

    def verify(
        self,
        token: str,
        *,
        token_type: str = ACCESS_TOKEN,
        audience: str | None = _CONFIGURED,
        nonce: str | None = None,
    ) -> VerifiedToken:
        """The token's claims, or :class:`InvalidToken`, :class:`WrongAudience`, :class:`KeysUnavailable`.

        ``token_type`` is the ``typ`` claim Keycloak sets (``Bearer`` or ``ID``); an access token from
        an issuer that sets no ``typ`` passes, an ID token must say so. ``audience`` overrides the
        verifier's (None: any audience); ``nonce`` must match the ID token of a login.
        """
        audience = self.audience if audience is _CONFIGURED else audience
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise InvalidToken("not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise InvalidToken(f"signature algorithm {algorithm!r} is not accepted")
        key = self._key_for(header.get("kid"))
        if key.algorithm_name and key.algorithm_name != algorithm:
            raise InvalidToken("token algorithm does not match the key's")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[algorithm],
                audience=audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": [*REQUIRED_CLAIMS, *(["aud"] if audience else [])], "verify_aud": bool(audience)},
            )
        except jwt.InvalidAudienceError:
            raise WrongAudience(f"token is not meant for audience {audience!r}") from None
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim == "aud":
                raise WrongAudience(f"token has no audience; {audience!r} is required") from None
            raise InvalidToken(f"token lacks the {exc.claim!r} claim") from None
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token has expired") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("token was issued by another realm") from None
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"invalid token: {type(exc).__name__}") from None
        claimed_type = claims.get("typ")
        if claimed_type is None and token_type != ACCESS_TOKEN:
            raise InvalidToken(f"expected a {token_type} token, got one without a type")
        if claimed_type is not None and str(claimed_type).lower() != token_type.lower():
            raise InvalidToken(f"expected a {token_type} token, got {claimed_type!r}")
        if nonce is not None and not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise InvalidToken("nonce mismatch")
        return VerifiedToken(subject=claims.get("sub"), client_id=claims.get("azp"), claims=claims)

    # --- keys ---------------------------------------------------------------------------------

    def _key_for(self, kid: Any) -> PyJWK:
        kid = kid if isinstance(kid, str) else None
        with self._lock:
            now = self._clock()
            if self._fetched_at is None or now - self._fetched_at >= self.cache_seconds:
                self._refresh(now, required=not self._keys)
            key = self._lookup(kid)
            if key is None and self._may_refresh(now):
                self._refresh(now, required=False)  # perhaps Keycloak rotated its keys
                key = self._lookup(kid)
        if key is None:
            raise InvalidToken("token is signed with a key the realm does not publish")
        return key

    def _lookup(self, kid: str | None) -> PyJWK | None:
        if kid is not None:
            return self._keys.get(kid)
        # No key id: acceptable only when there is exactly one signing key to choose from.
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    def _may_refresh(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.min_refresh_seconds

    def _refresh(self, now: float, *, required: bool) -> None:
        """Fetch the keys; on failure keep the old ones, or raise when there are none (``required``)."""
        self._attempted_at = now
        self.fetches += 1
        try:
            response = self._client.get(self.jwks_url, headers={"accept": "application/json"})
            response.raise_for_status()
            keys = _signing_keys(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if required or not self._keys:
                raise KeysUnavailable(f"cannot fetch the realm's signing keys from {self.jwks_url}: {reason}") from None
            log.warning("refreshing signing keys from %s failed (%s); keeping the cached keys", self.jwks_url, reason)
            return
        self._keys = keys
        self._fetched_at = now


def _signing_keys(document: Any) -> dict[str | None, PyJWK]:
    """The usable signature keys of a JWKS document, by key id; encryption keys are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    keys: dict[str | None, PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("alg") is not None and entry["alg"] not in ASYMMETRIC_ALGORITHMS:
            continue
        try:
            keys[entry.get("kid")] = PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            log.debug("skipping an unusable JWKS entry (kid %r)", entry.get("kid"))
    if not keys:
        raise ValueError("the JWKS document has no usable signature key")
    return keys


def realm_verifier(
    settings: KeycloakSettings,
    *,
    audience: str | None = None,
    transport: httpx.BaseTransport | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> JwtVerifier:
    """The realm's token check as the settings describe it: issuer (or its override), the realm's
    published keys cached ``jwks_cache_seconds``, Keycloak's timeout and CA file; ``audience``
    None checks none by default (callers then name one per call)."""
    return JwtVerifier(
        issuer=settings.expected_issuer,
        audience=audience,
        jwks_url=keycloak_jwks_url(settings.realm_url),
        cache_seconds=settings.jwks_cache_seconds,
        timeout_seconds=settings.timeout_seconds,
        ca_file=str(settings.ca_file) if settings.ca_file else None,
        transport=transport,
        clock=clock,
    )
