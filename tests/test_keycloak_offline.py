"""Keycloak-mode pieces that need no Keycloak: token checks, permission answers, caches, sessions.

Token shapes a real Keycloak never issues (expired, foreign issuer, ``alg: none``, an ID token
passed as an access token) and permission answers it gives only when broken (500, garbage) are
produced here with a stand-in realm: keys made in the test and served through
``httpx.MockTransport``, the transport every Keycloak httpx client accepts. The behaviour against
the real server is in ``test_keycloak.py``.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from jwcrypto import jwk, jwt
from sqlalchemy import Engine
from sqlmodel import Session

from domain.access import AuthorizationUnavailable, NotAuthenticated, Principal, ReadScope
from domain.access.keycloak import KeycloakAuthorizer, TtlCache, principal_from_claims
from domain.access.login_sessions import LoginSessionStore, TokenSet
from domain.access.resources import ResourceIndex, cluster_resource, hub_resource, project_resource, specs_for
from domain.database import session_scope
from domain.models import Cluster, Hub, ResearchProject, utcnow
from domain.settings import KeycloakSettings
from worker.scheduler import create_scheduler

URL = "http://keycloak.test"
ISSUER = f"{URL}/realms/ai-telemetry"
AUDIENCE = "ai-telemetry-site"


class StandInRealm:
    """Signs tokens with a key made here and answers the JWKS and UMA endpoints of the realm."""

    def __init__(self) -> None:
        self.key = jwk.JWK.generate(kty="RSA", size=2048, kid="k1", alg="RS256", use="sig")
        self.jwks_calls = 0
        self.uma_calls = 0
        self.uma: Callable[[httpx.Request], httpx.Response] = lambda _: httpx.Response(200, json=[])
        self.down = False

    def sign(self, key: jwk.JWK | None = None, header: dict[str, Any] | None = None, **claims: Any) -> str:
        key = key or self.key
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "aud": [AUDIENCE, "account"],
            "typ": "Bearer",
            "exp": now + 300,
            "iat": now,
            "sub": "u-1",
            "preferred_username": "alice",
            "azp": "ai-telemetry-site",
            **claims,
        }
        token = jwt.JWT(header=header or {"alg": "RS256", "kid": key.kid, "typ": "JWT"}, claims=body)
        token.make_signed_token(key)
        return str(token.serialize())

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path.endswith("/protocol/openid-connect/certs"):
            self.jwks_calls += 1
            return httpx.Response(200, json={"keys": [json.loads(self.key.export_public())]})
        if request.url.path.endswith("/protocol/openid-connect/token"):
            self.uma_calls += 1
            return self.uma(request)
        return httpx.Response(404)


@pytest.fixture
def realm() -> StandInRealm:
    return StandInRealm()


@pytest.fixture
def authorizer(realm: StandInRealm, sqlite_engine: Engine) -> KeycloakAuthorizer:
    settings = KeycloakSettings(url=URL, client_secret="s" * 20, permission_cache_seconds=30)
    return KeycloakAuthorizer(
        settings, sqlite_engine, session_secret="x" * 40, transport=httpx.MockTransport(realm.handler)
    )


def unsigned(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def test_a_valid_access_token_becomes_a_principal(realm: StandInRealm, authorizer: KeycloakAuthorizer) -> None:
    token = realm.sign(realm_access={"roles": ["admin"]}, name="Alice A.", groups=["ml-team-a"])
    principal = authorizer.authenticate_bearer(token)
    assert principal == Principal("user:alice", "Alice A.", is_admin=True, groups=frozenset({"ml-team-a"}))
    assert principal is not None and principal.token == token
    assert authorizer.authenticate_bearer(token) is principal  # cached: no second verification
    assert realm.jwks_calls == 1


def test_service_accounts_become_clients() -> None:
    claims = {"sub": "x", "preferred_username": "service-account-ml-team-a-api", "azp": "ml-team-a-api"}
    assert principal_from_claims(claims, "t").subject == "client:ml-team-a-api"


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda r: r.sign(exp=int(time.time()) - 600), id="expired"),
        pytest.param(lambda r: r.sign(iss="http://elsewhere/realms/ai-telemetry"), id="foreign-issuer"),
        pytest.param(lambda r: r.sign(aud=["account"]), id="no-audience"),
        pytest.param(lambda r: r.sign(typ="ID"), id="id-token"),
        pytest.param(lambda r: r.sign(typ="Refresh"), id="refresh-token"),
        pytest.param(lambda r: r.sign(key=jwk.JWK.generate(kty="RSA", size=2048, kid="k1")), id="forged-same-kid"),
        pytest.param(lambda r: r.sign(key=jwk.JWK.generate(kty="RSA", size=2048, kid="k9")), id="unknown-key"),
        pytest.param(
            lambda r: unsigned({"iss": ISSUER, "aud": AUDIENCE, "typ": "Bearer", "exp": 2**31}), id="alg-none"
        ),
        pytest.param(lambda r: "ait_not_a_jwt", id="not-a-jwt"),
        pytest.param(lambda r: r.sign()[:-6] + "abcdef", id="bad-signature"),
    ],
)
def test_bad_tokens_are_refused(realm: StandInRealm, authorizer: KeycloakAuthorizer, make) -> None:  # type: ignore[no-untyped-def]
    assert authorizer.authenticate_bearer(make(realm)) is None


def test_an_unknown_key_refetches_the_keys_at_most_once_in_a_while(
    realm: StandInRealm, authorizer: KeycloakAuthorizer
) -> None:
    assert authorizer.authenticate_bearer(realm.sign()) is not None
    stranger = jwk.JWK.generate(kty="RSA", size=2048, kid="k9")
    for _ in range(5):
        assert authorizer.authenticate_bearer(realm.sign(key=stranger)) is None
    assert realm.jwks_calls == 1  # refetched within JWKS_REFETCH_SECONDS: not again

    rotated = jwk.JWK.generate(kty="RSA", size=2048, kid="k2", alg="RS256", use="sig")
    realm.key = rotated  # Keycloak rotated its key: after the refetch pause, tokens of the new key pass
    authorizer.verifier._attempted_at -= 60  # as if the last fetch were a minute ago
    assert authorizer.authenticate_bearer(realm.sign(key=rotated)) is not None
    assert realm.jwks_calls == 2


def test_without_keys_tokens_cannot_be_checked_so_it_fails_closed(
    realm: StandInRealm, authorizer: KeycloakAuthorizer
) -> None:
    realm.down = True
    with pytest.raises(AuthorizationUnavailable):
        authorizer.authenticate_bearer(realm.sign())


def seed_inventory(engine: Engine) -> dict[str, int]:
    now = utcnow()
    with session_scope(engine) as session:
        hub = Hub(name="demo", kind="simulated")
        session.add(hub)
        session.flush()
        ids: dict[str, int] = {}
        for cluster_name, namespaces in (("moc-prod", ["ml-team-a", "nlp"]), ("nerc-ocp", ["vision-lab"])):
            cluster = Cluster(name=cluster_name, hub_id=hub.id)
            session.add(cluster)
            session.flush()
            ids[cluster_name] = cluster.id
            for namespace in namespaces:
                project = ResearchProject(
                    namespace=namespace, display_name=namespace, cluster_id=cluster.id, first_seen=now, last_seen=now
                )
                session.add(project)
                session.flush()
                ids[namespace] = project.id
    return ids


def uma_answer(*names: str, scopes: list[str] | None = None) -> Callable[[httpx.Request], httpx.Response]:
    body = [{"rsid": f"id-{n}", "rsname": n, "scopes": scopes or ["GET"]} for n in names]
    return lambda _: httpx.Response(200, json=body)


def test_permissions_become_a_read_scope_and_are_cached(
    realm: StandInRealm, authorizer: KeycloakAuthorizer, sqlite_engine: Engine
) -> None:
    ids = seed_inventory(sqlite_engine)
    realm.uma = uma_answer(
        project_resource("demo", "moc-prod", "ml-team-a"),
        cluster_resource("demo", "nerc-ocp"),
        project_resource("demo", "gone", "old-project"),  # a resource for something no longer in the inventory
    )
    principal = authorizer.authenticate_bearer(realm.sign())
    assert principal is not None
    scope = authorizer.read_scope(principal)
    assert scope == ReadScope(project_ids=frozenset({ids["ml-team-a"]}), cluster_ids=frozenset({ids["nerc-ocp"]}))
    for _ in range(3):
        assert authorizer.read_scope(principal) == scope
    assert realm.uma_calls == 1
    authorizer.forget_permissions()
    authorizer.read_scope(principal)
    assert realm.uma_calls == 2


def test_the_uma_request_names_the_site_as_audience_and_asks_for_permissions(
    realm: StandInRealm, authorizer: KeycloakAuthorizer, sqlite_engine: Engine
) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    realm.uma = answer
    token = realm.sign()
    principal = authorizer.authenticate_bearer(token)
    assert principal is not None and authorizer.read_scope(principal).is_empty
    form = dict(httpx.QueryParams(seen[0].content.decode()))
    assert form == {
        "grant_type": "urn:ietf:params:oauth:grant-type:uma-ticket",
        "audience": AUDIENCE,
        "response_mode": "permissions",
    }
    assert seen[0].headers["authorization"] == f"Bearer {token}"


def test_a_hub_grant_reads_every_cluster_of_the_hub(sqlite_engine: Engine) -> None:
    ids = seed_inventory(sqlite_engine)

    with Session(sqlite_engine) as session:
        index = ResourceIndex.load(session)
    whole_hub = ReadScope(cluster_ids=frozenset({ids["moc-prod"], ids["nerc-ocp"]}))
    assert index.scope_for([hub_resource("demo")]) == whole_hub
    assert index.scope_for(["HUB-other"]).is_empty
    assert [s.name for s in specs_for("demo", "moc-prod", "ml-team-a")] == [
        "HUB-demo",
        "HUB-demo-CLUSTER-moc-prod",
        "HUB-demo-CLUSTER-moc-prod-PROJECT-ml-team-a",
    ]


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (lambda _: httpx.Response(403, json={"error": "access_denied", "error_description": "not_authorized"}), None),
        (lambda _: httpx.Response(401, json={"error": "invalid_grant"}), NotAuthenticated),
        (lambda _: httpx.Response(500, text="boom"), AuthorizationUnavailable),
        (lambda _: httpx.Response(400, json={"error": "invalid_request"}), AuthorizationUnavailable),
        (lambda _: httpx.Response(200, json={"not": "a list"}), AuthorizationUnavailable),
        (lambda r: (_ for _ in ()).throw(httpx.ReadTimeout("slow", request=r)), AuthorizationUnavailable),
    ],
    ids=["nothing-granted", "token-rejected", "server-error", "misconfigured", "garbage", "timeout"],
)
def test_permission_failures_fail_closed(  # type: ignore[no-untyped-def]
    realm: StandInRealm, authorizer: KeycloakAuthorizer, sqlite_engine: Engine, answer, error
) -> None:
    seed_inventory(sqlite_engine)
    realm.uma = answer
    principal = authorizer.authenticate_bearer(realm.sign())
    assert principal is not None
    if error is None:
        assert authorizer.read_scope(principal).is_empty
    else:
        with pytest.raises(error):
            authorizer.read_scope(principal)


def test_admins_read_everything_without_asking(realm: StandInRealm, authorizer: KeycloakAuthorizer) -> None:
    principal = authorizer.authenticate_bearer(realm.sign(realm_access={"roles": ["admin"]}))
    assert principal is not None and authorizer.read_scope(principal) == ReadScope.all()
    assert realm.uma_calls == 0


def test_ttl_cache_expires_and_stays_bounded() -> None:
    now = [0.0]
    cache: TtlCache[int] = TtlCache(max_entries=2, clock=lambda: now[0])
    cache.put("a", 1, 10)
    cache.put("b", 2, 10)
    cache.put("c", 3, 10)
    assert cache.get("a") is None and cache.get("c") == 3 and len(cache) == 2
    now[0] = 11
    assert cache.get("b") is None
    cache.put("d", 4, 0)
    assert cache.get("d") is None  # a zero TTL caches nothing


def test_session_store_keeps_tokens_encrypted(sqlite_engine: Engine) -> None:
    store = LoginSessionStore(sqlite_engine, "k" * 40)
    now = utcnow()
    tokens = TokenSet(
        "access-secret", "refresh-secret", "id-secret", now + timedelta(minutes=5), now + timedelta(hours=1)
    )
    handle = store.create("user:alice", tokens)
    with sqlite_engine.connect() as connection:
        raw = connection.exec_driver_sql("SELECT handle_digest, tokens FROM oidc_session").one()
    assert handle not in raw[0] and "secret" not in raw[1]
    loaded = store.load(handle)
    assert loaded is not None and loaded.tokens.refresh_token == "refresh-secret" and loaded.subject == "user:alice"
    assert LoginSessionStore(sqlite_engine, "other" * 10).load(handle) is None  # another key: unreadable, gone
    assert store.load(handle, now=now + timedelta(hours=2)) is None  # past the refresh token
    assert store.purge_expired(now + timedelta(hours=2)) == 1
    assert store.load(handle) is None


def test_worker_schedules_project_sync_only_in_keycloak_mode(make_settings, sqlite_engine: Engine) -> None:  # type: ignore[no-untyped-def]
    local = create_scheduler(make_settings(sqlite_engine), sqlite_engine, [])
    keycloak = create_scheduler(
        make_settings(
            sqlite_engine,
            auth={"mode": "keycloak"},
            keycloak={"url": "http://127.0.0.1:9", "client_secret": "s" * 20, "timeout_seconds": 1},
        ),
        sqlite_engine,
        [],
    )
    try:
        local.start()
        keycloak.start()
        assert "keycloak-project-sync" not in {j.id for j in local.jobs}
        assert "keycloak-project-sync" in {j.id for j in keycloak.jobs}
        assert keycloak.run_project_sync() == 0  # Keycloak unreachable: logged, retried later, never raised
    finally:
        local.shutdown()
        keycloak.shutdown()
