"""JWT verification against real RS256 tokens and a JWKS served over HTTP by the Keycloak stand-in."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator

import jwt
import pytest

from domain.access import AuthorizationUnavailable, Forbidden, NotAuthenticated
from domain.access.jwt_verifier import (
    InvalidToken,
    JwtVerifier,
    KeysUnavailable,
    WrongAudience,
    keycloak_issuer,
    realm_verifier,
)
from domain.settings import KeycloakSettings
from tests.keycloak_standin import KeycloakStandIn, SigningKey, keycloak_standin
from tests.services import free_port

AUDIENCE = "ai-telemetry-receiver"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def realm() -> Iterator[KeycloakStandIn]:
    with keycloak_standin(audience=AUDIENCE) as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(realm: KeycloakStandIn, clock: Clock) -> Iterator[JwtVerifier]:
    verifier = realm_verifier(
        KeycloakSettings(url=realm.base_url, realm=realm.realm, jwks_cache_seconds=300), audience=AUDIENCE
    )
    verifier._clock = clock
    yield verifier
    verifier.close()


def test_a_realm_token_for_our_audience_passes(realm: KeycloakStandIn, verifier: JwtVerifier) -> None:
    verified = verifier.verify(realm.issue(client_id="alertmanager"))

    assert verified.client_id == "alertmanager"
    assert verified.subject == "service-account-alertmanager"
    assert verified.claims["iss"] == keycloak_issuer(realm.base_url, "ai-telemetry")


def test_audience_may_be_one_of_several(realm: KeycloakStandIn, verifier: JwtVerifier) -> None:
    assert verifier.verify(realm.issue(audience=["account", AUDIENCE])).client_id == "alertmanager"


@pytest.mark.parametrize(
    ("make", "error", "base"),
    [
        pytest.param(lambda r: r.issue(audience="account"), WrongAudience, Forbidden, id="other-audience"),
        pytest.param(lambda r: r.issue(omit=("aud",)), WrongAudience, Forbidden, id="no-audience"),
        pytest.param(lambda r: r.issue(lifetime_seconds=-120), InvalidToken, NotAuthenticated, id="expired"),
        pytest.param(lambda r: r.issue(omit=("exp",)), InvalidToken, NotAuthenticated, id="no-expiry"),
        pytest.param(
            lambda r: r.issue(iss="http://127.0.0.1:1/realms/other"), InvalidToken, NotAuthenticated, id="other-issuer"
        ),
        pytest.param(lambda r: r.issue(typ="ID"), InvalidToken, NotAuthenticated, id="id-token"),
        pytest.param(
            lambda r: r.issue(key=SigningKey(r.keys[0].kid, SigningKey.generate().private)),
            InvalidToken,
            NotAuthenticated,
            id="forged-signature-known-kid",
        ),
        pytest.param(lambda r: r.issue(key=SigningKey.generate()), InvalidToken, NotAuthenticated, id="unknown-key"),
        pytest.param(lambda r: "not.a.jwt", InvalidToken, NotAuthenticated, id="garbage"),
        pytest.param(lambda r: "", InvalidToken, NotAuthenticated, id="empty"),
    ],
)
def test_bad_tokens_are_refused(realm: KeycloakStandIn, verifier: JwtVerifier, make, error, base) -> None:
    token = make(realm)

    with pytest.raises(error) as caught:
        verifier.verify(token)
    assert isinstance(caught.value, base)


def test_unsigned_and_shared_secret_tokens_are_refused(realm: KeycloakStandIn, verifier: JwtVerifier) -> None:
    claims = jwt.decode(realm.issue(), options={"verify_signature": False})
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": realm.keys[0].kid})
    # alg confusion: an HMAC "signed" with the public key the JWKS publishes
    header = {"alg": "HS256", "typ": "JWT", "kid": realm.keys[0].kid}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    secret = json.dumps(realm.keys[0].jwk()).encode()
    hmac_token = f"{signing_input}.{_b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"

    for token in (unsigned, hmac_token):
        with pytest.raises(InvalidToken, match="algorithm"):
            verifier.verify(token)


def test_keys_are_cached_then_refreshed_after_the_ttl(realm: KeycloakStandIn, verifier: JwtVerifier, clock) -> None:
    for _ in range(5):
        verifier.verify(realm.issue())
    assert realm.jwks_requests == 1

    clock.now += 301
    verifier.verify(realm.issue())
    assert realm.jwks_requests == 2


def test_a_rotated_key_is_fetched_at_once_but_forged_key_ids_are_rate_limited(
    realm: KeycloakStandIn, verifier: JwtVerifier, clock
) -> None:
    verifier.verify(realm.issue())
    clock.now += 11
    new_key = realm.rotate()

    assert verifier.verify(realm.issue(key=new_key)).client_id == "alertmanager"
    assert realm.jwks_requests == 2

    for _ in range(5):  # unknown key ids within the refresh interval do not reach the realm
        with pytest.raises(InvalidToken):
            verifier.verify(realm.issue(key=SigningKey.generate()))
    assert realm.jwks_requests == 2


def test_no_keys_at_all_is_unavailable_not_unauthenticated(realm: KeycloakStandIn) -> None:
    realm.available = False
    verifier = realm_verifier(KeycloakSettings(url=realm.base_url, realm=realm.realm), audience=AUDIENCE)
    try:
        with pytest.raises(KeysUnavailable) as caught:
            verifier.verify(realm.issue())
    finally:
        verifier.close()
    assert isinstance(caught.value, AuthorizationUnavailable)
    assert "503" in str(caught.value)


def test_nothing_listening_is_unavailable() -> None:
    with keycloak_standin() as realm:
        token = realm.issue()
    verifier = realm_verifier(
        KeycloakSettings(url=f"http://127.0.0.1:{free_port()}", realm="ai-telemetry"), audience=AUDIENCE
    )
    try:
        with pytest.raises(KeysUnavailable, match="ConnectError"):
            verifier.verify(token)
    finally:
        verifier.close()


def test_cached_keys_survive_a_realm_outage(realm: KeycloakStandIn, verifier: JwtVerifier, clock) -> None:
    verifier.verify(realm.issue())
    realm.available = False
    clock.now += 301

    assert verifier.verify(realm.issue()).client_id == "alertmanager"
    assert realm.jwks_requests == 1  # the failed refresh is not counted by the stand-in


def test_only_public_key_algorithms_can_be_configured() -> None:
    with pytest.raises(ValueError, match="HS256"):
        JwtVerifier(issuer="http://127.0.0.1/realms/x", audience="a", algorithms=("RS256", "HS256"))
