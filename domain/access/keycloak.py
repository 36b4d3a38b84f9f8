"""Keycloak mode: OIDC login, bearer tokens and per-project permissions from Authorization Services.

* Browsers log in with the authorization code flow and PKCE (:class:`OidcLogin`, python-keycloak);
  the tokens stay server-side (:mod:`domain.access.login_sessions`) and are refreshed when the
  access token runs out; logout ends the Keycloak session too.
* API clients send ``Authorization: Bearer <access token>`` (client credentials grant). Tokens are
  checked locally against the realm's keys (JWKS, cached, refetched for an unknown key id), the
  issuer, the audience, the expiry and the token type by the product's one token check
  (:func:`~domain.access.jwt_verifier.realm_verifier`).
* What a token may read comes from Keycloak itself: a UMA ticket grant with
  ``response_mode=permissions`` against the site client (the resource server) lists the resources the
  token may ``GET``; :class:`~domain.access.resources.ResourceIndex` turns their names into project
  and cluster ids. The answer is cached briefly per token. Holders of the realm role ``admin``
  read everything without asking.
* It fails closed: when Keycloak cannot answer, :class:`~domain.access.AuthorizationUnavailable`
  is raised (503), never an unfiltered answer. Answers cached before the outage keep serving their
  token until they expire (``permission_cache_seconds``): that is the documented outage window.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

import httpx
from keycloak import KeycloakOpenID, pkce_utils
from keycloak.exceptions import KeycloakConnectionError, KeycloakError
from sqlalchemy import Engine
from sqlmodel import Session

from domain.access import AuthorizationUnavailable, LoginRequest, NotAuthenticated, Principal, ReadScope
from domain.access.jwt_verifier import ID_TOKEN, InvalidToken, JwtVerifier, WrongAudience, realm_verifier
from domain.access.keycloak_clients import ClientRejected, reachable, refused_client
from domain.access.login_sessions import LoginSessionStore, TokenSet
from domain.access.resources import SCOPE, ResourceIndex
from domain.models import utcnow
from domain.settings import KeycloakSettings

log = logging.getLogger(__name__)

ADMIN_ROLE = "admin"
"""Realm role whose holders read everything and manage access."""
MANAGER_ROLE = "manager"
"""Realm role of cluster managers (what they read comes from their cluster groups)."""
SERVICE_ACCOUNT_PREFIX = "service-account-"
SESSION_PREFIX = "oidc:"
"""What the login stores in the session cookie: ``oidc:<handle>`` of a server-side session."""
REFRESH_MARGIN_SECONDS = 15
"""Refresh a session's access token this long before it expires."""
UMA_GRANT = "urn:ietf:params:oauth:grant-type:uma-ticket"
CACHE_ENTRIES = 10_000
STATUS_CACHE_SECONDS = 5.0
"""/readyz asks Keycloak at most this often per process, however many probes arrive."""
STATUS_TIMEOUT_SECONDS = 1.0
"""... and waits at most this long, so a silent Keycloak never makes the readiness probe time out."""

V = TypeVar("V")


def token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TtlCache(Generic[V]):
    """A small thread-safe cache whose entries expire; the oldest go first when it is full."""

    def __init__(self, max_entries: int = CACHE_ENTRIES, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._entries[key]
                return None
            return entry[1]

    def put(self, key: Hashable, value: V, ttl_seconds: float) -> None:
        if ttl_seconds <= 0:
            return
        with self._lock:
            self._entries[key] = (self._clock() + ttl_seconds, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def pop(self, key: Hashable) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _http_client(settings: KeycloakSettings, transport: httpx.BaseTransport | None) -> httpx.Client:
    verify: Any = str(settings.ca_file) if settings.ca_file else True
    return httpx.Client(timeout=settings.timeout_seconds, verify=verify, transport=transport)


def _claims(verifier: JwtVerifier, token: str, **checks: Any) -> dict:
    """The claims of a token that passes, or :class:`InvalidToken` (a wrong audience included)."""
    try:
        return dict(verifier.verify(token, **checks).claims)
    except WrongAudience as exc:
        raise InvalidToken(str(exc)) from None


def principal_from_claims(claims: dict, token: str) -> Principal:
    """People become ``user:NAME``; service accounts of API clients become ``client:CLIENT_ID``."""
    username = str(claims.get("preferred_username") or claims["sub"])
    roles = set((claims.get("realm_access") or {}).get("roles") or ())
    groups = frozenset(str(g) for g in claims.get("groups") or ())
    is_admin = ADMIN_ROLE in roles
    expires_at = float(claims.get("exp", 0))
    if username.startswith(SERVICE_ACCOUNT_PREFIX):
        client = str(claims.get("client_id") or claims.get("azp") or username.removeprefix(SERVICE_ACCOUNT_PREFIX))
        return Principal(f"client:{client}", client, is_admin, groups, token, expires_at)
    name = str(claims.get("name") or username)
    return Principal(f"user:{username}", name, is_admin, groups, token, expires_at)


class OidcLogin:
    """Authorization code + PKCE against the realm, through python-keycloak.

    python-keycloak's client keeps request headers on a shared connection, so its calls are
    serialised by a lock; they happen only at login, refresh and logout.
    """

    def __init__(self, settings: KeycloakSettings, verifier: JwtVerifier) -> None:
        secret = settings.client_secret.get_secret_value() if settings.client_secret else None
        self._settings = settings
        self._verifier = verifier
        self._client = KeycloakOpenID(
            server_url=f"{settings.url}/",
            realm_name=settings.realm,
            client_id=settings.client_id,
            client_secret_key=secret,
            timeout=int(max(1, settings.timeout_seconds)),
            verify=str(settings.ca_file) if settings.ca_file else True,
        )
        self._lock = threading.Lock()

    @contextmanager
    def _calling(self, what: str) -> Iterator[KeycloakOpenID]:
        with self._lock:
            try:
                yield self._client
            except KeycloakConnectionError as exc:
                raise AuthorizationUnavailable(f"Keycloak at {self._settings.url} is unreachable ({what})") from exc

    def endpoints(self) -> dict[str, Any]:
        """The realm's discovery document, read afresh: a login starts only when Keycloak answers,
        so a browser is never sent to a login service that is down."""
        with self._calling("discovery") as client:
            try:
                return dict(client.well_known())
            except KeycloakError as exc:
                raise AuthorizationUnavailable(f"Keycloak realm discovery failed: {exc}") from exc

    def start(self, redirect_uri: str) -> LoginRequest:
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = pkce_utils.generate_code_verifier(96)
        challenge, method = pkce_utils.generate_code_challenge(verifier, "S256")
        query = urlencode(
            {
                "client_id": self._settings.client_id,
                "response_type": "code",
                "redirect_uri": redirect_uri,
                "scope": "openid profile email",
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": method,
            }
        )
        return LoginRequest(f"{self.endpoints()['authorization_endpoint']}?{query}", state, nonce, verifier)

    def exchange(self, code: str, redirect_uri: str, code_verifier: str, nonce: str) -> TokenSet:
        """Trade the code for tokens and check the ID token's nonce; raises :class:`InvalidToken`."""
        with self._calling("code exchange") as client:
            try:
                response = client.token(
                    grant_type="authorization_code", code=code, redirect_uri=redirect_uri, code_verifier=code_verifier
                )
            except KeycloakError as exc:
                if refused_client(exc.response_body):  # the site's secret, not the user's code
                    raise ClientRejected(f"Keycloak refuses client {self._settings.client_id!r}: {exc}") from exc
                raise InvalidToken(f"Keycloak refused the authorization code: {exc}") from exc
        tokens = TokenSet.from_response(response, utcnow())
        if not tokens.id_token:
            raise InvalidToken("no ID token in the token response (is the openid scope allowed?)")
        _claims(self._verifier, tokens.id_token, token_type=ID_TOKEN, audience=self._settings.client_id, nonce=nonce)
        return tokens

    def refresh(self, tokens: TokenSet) -> TokenSet | None:
        """New tokens, or None when the Keycloak session is over (logged out, expired, revoked)."""
        if not tokens.refresh_token:
            return None
        with self._calling("token refresh") as client:
            try:
                response = client.refresh_token(tokens.refresh_token)
            except KeycloakError as exc:
                if refused_client(exc.response_body):  # the site is misconfigured: keep the session for later
                    raise ClientRejected(f"Keycloak refuses client {self._settings.client_id!r}: {exc}") from exc
                if exc.response_code is not None and 400 <= exc.response_code < 500:
                    return None
                raise AuthorizationUnavailable(f"Keycloak could not refresh the session: {exc}") from exc
        return TokenSet.from_response(response, utcnow(), previous=tokens)

    def end_session(self, tokens: TokenSet) -> bool:
        """End the Keycloak session (back-channel call to the end-session endpoint); False if it failed."""
        if not tokens.refresh_token:
            return False
        try:
            with self._calling("logout") as client:
                client.logout(tokens.refresh_token)
        except (AuthorizationUnavailable, KeycloakError) as exc:
            log.warning("could not end the Keycloak session: %s", exc)
            return False
        return True


class KeycloakAuthorizer:
    """The :class:`~domain.access.Authorizer` of Keycloak mode."""

    def __init__(
        self,
        settings: KeycloakSettings,
        engine: Engine,
        *,
        session_secret: str,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settings.url:
            raise ValueError("Keycloak mode needs the Keycloak URL")
        self.settings = settings
        self._engine = engine
        self._clock = clock
        self._http = _http_client(settings, transport)
        self.verifier = realm_verifier(settings, transport=transport, clock=clock)
        self.login = OidcLogin(settings, self.verifier)
        self.sessions = LoginSessionStore(engine, session_secret)
        self._principals: TtlCache[Principal] = TtlCache(clock=clock)
        self._scopes: TtlCache[ReadScope] = TtlCache(clock=clock)
        self._index: TtlCache[ResourceIndex] = TtlCache(max_entries=1, clock=clock)
        self._status: TtlCache[str] = TtlCache(max_entries=1, clock=clock)
        self._flights: dict[str, threading.Lock] = {}
        self._flights_lock = threading.Lock()
        self.uma_requests = 0
        """How many permission requests went to Keycloak (for tests and benchmarks)."""

    # --- the Authorizer protocol -------------------------------------------------------------

    def authenticate_password(self, username: str, password: str) -> Principal | None:
        """Passwords are typed into Keycloak's own login form, never into the site."""
        return None

    def authenticate_bearer(self, token: str) -> Principal | None:
        key = token_key(token)
        cached = self._principals.get(key)
        if cached is not None:
            return cached
        try:
            claims = _claims(self.verifier, token, audience=self.settings.expected_audience)
        except InvalidToken as exc:
            log.debug("bearer token rejected: %s", exc)
            return None
        principal = principal_from_claims(claims, token)
        self._principals.put(key, principal, self._lifetime(claims))
        return principal

    def principal_for_subject(self, subject: str) -> Principal | None:
        """``subject`` is what the login stored in the session cookie: ``oidc:<handle>``."""
        if not subject.startswith(SESSION_PREFIX):
            return None
        handle = subject.removeprefix(SESSION_PREFIX)
        stored = self.sessions.load(handle)
        if stored is None:
            return None
        tokens = stored.tokens
        if (tokens.access_expires_at - utcnow()).total_seconds() <= REFRESH_MARGIN_SECONDS:
            refreshed = self.login.refresh(tokens)
            if refreshed is None:
                self.sessions.delete(handle)
                return None
            self.sessions.replace_tokens(handle, refreshed)
            tokens = refreshed
        key = token_key(tokens.access_token)
        cached = self._principals.get(key)
        if cached is not None:
            return cached
        try:
            claims = _claims(self.verifier, tokens.access_token, audience=None)
        except InvalidToken as exc:
            log.info("session token rejected, logging out: %s", exc)
            self.sessions.delete(handle)
            return None
        principal = principal_from_claims(claims, tokens.access_token)
        self._principals.put(key, principal, self._lifetime(claims))
        return principal

    def read_scope(self, principal: Principal) -> ReadScope:
        if principal.is_admin:
            return ReadScope.all()
        if not principal.token:
            raise NotAuthenticated("no token to evaluate permissions for")
        key = token_key(principal.token)
        cached = self._scopes.get(key)
        if cached is not None:
            return cached
        with self._single_flight(key):
            cached = self._scopes.get(key)
            if cached is not None:
                return cached
            names = self.permitted_resources(principal.token)
            scope = self._resource_index().scope_for(names)
            ttl = min(self.settings.permission_cache_seconds, _seconds_left(principal))
            self._scopes.put(key, scope, ttl)
            return scope

    # --- the RedirectLogin protocol (the site's OIDC routes) ----------------------------------

    @property
    def provider_url(self) -> str:
        return self.settings.url or ""

    @property
    def site_url(self) -> str | None:
        return self.settings.site_url

    def start_login(self, redirect_uri: str) -> LoginRequest:
        return self.login.start(redirect_uri)

    def finish_login(self, code: str, redirect_uri: str, code_verifier: str, nonce: str) -> tuple[str, Principal]:
        """Exchange the code, store the session server-side; returns (cookie value, principal)."""
        tokens = self.login.exchange(code, redirect_uri, code_verifier, nonce)
        claims = _claims(self.verifier, tokens.access_token, audience=None)
        principal = principal_from_claims(claims, tokens.access_token)
        self.sessions.purge_expired()
        handle = self.sessions.create(principal.subject, tokens)
        return SESSION_PREFIX + handle, principal

    def logout(self, subject: str) -> bool:
        """Forget the server-side session and end the Keycloak session; True if Keycloak confirmed."""
        if not subject.startswith(SESSION_PREFIX):
            return False
        stored = self.sessions.delete(subject.removeprefix(SESSION_PREFIX))
        if stored is None:
            return False
        key = token_key(stored.tokens.access_token)
        self._principals.pop(key)
        self._scopes.pop(key)
        return self.login.end_session(stored.tokens)

    # --- permissions --------------------------------------------------------------------------

    def permitted_resources(self, token: str) -> set[str]:
        """Names of the resources ``token`` may ``GET``, asked of Keycloak (UMA, permissions mode)."""
        self.uma_requests += 1
        try:
            response = self._http.post(
                self.settings.token_url,
                headers={"Authorization": f"Bearer {token}"},
                data={"grant_type": UMA_GRANT, "audience": self.settings.client_id, "response_mode": "permissions"},
            )
        except httpx.HTTPError as exc:
            raise AuthorizationUnavailable(f"Keycloak at {self.settings.url} is unreachable: {exc}") from exc
        if response.status_code == 403 and _error_of(response) == "access_denied":
            return set()  # authenticated, granted nothing
        if response.status_code == 401:
            self._principals.pop(token_key(token))
            raise NotAuthenticated("Keycloak no longer accepts this token")
        if response.status_code != 200:
            log.error("Keycloak refused the permission request: %s %s", response.status_code, response.text[:500])
            raise AuthorizationUnavailable(f"Keycloak answered the permission request with {response.status_code}")
        try:
            permissions = response.json()
            if not isinstance(permissions, list):
                raise TypeError(f"expected a list, got {type(permissions).__name__}")
            return {str(p["rsname"]) for p in permissions if SCOPE in (p.get("scopes") or [SCOPE])}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise AuthorizationUnavailable(f"unexpected permission answer from Keycloak: {exc}") from exc

    def keycloak_status(self) -> str:
        """``ok`` when the realm answers, else why not; asked at most every few seconds (for /readyz)."""
        status = self._status.get("status")
        if status is None:
            problem = reachable(self.settings, self._http, min(self.settings.timeout_seconds, STATUS_TIMEOUT_SECONDS))
            status = problem or "ok"
            self._status.put("status", status, STATUS_CACHE_SECONDS)
        return status

    def forget_permissions(self) -> None:
        """Drop every cached answer (after a grant or revoke made through this process)."""
        self._scopes.clear()
        self._index.clear()

    def close(self) -> None:
        self._http.close()
        self.verifier.close()

    # --- helpers ------------------------------------------------------------------------------

    def _resource_index(self) -> ResourceIndex:
        index = self._index.get("index")
        if index is None:
            with Session(self._engine) as session:
                index = ResourceIndex.load(session)
            self._index.put("index", index, min(10.0, self.settings.permission_cache_seconds))
        return index

    def _lifetime(self, claims: dict) -> float:
        """Seconds until the token expires (a cached principal never outlives its token)."""
        return max(0.0, float(claims.get("exp", 0)) - time.time())

    @contextmanager
    def _single_flight(self, key: str) -> Iterator[None]:
        """Concurrent first requests of one token ask Keycloak once."""
        with self._flights_lock:
            lock = self._flights.setdefault(key, threading.Lock())
        with lock:
            try:
                yield
            finally:
                with self._flights_lock:
                    self._flights.pop(key, None)


def _seconds_left(principal: Principal) -> float:
    """Seconds until the principal's (verified) token expires."""
    if principal.token_expires_at is None:
        return 0.0
    return max(0.0, principal.token_expires_at - time.time())


def _error_of(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None
