"""A stand-in for a Keycloak realm's token and JWKS endpoints, on a loopback port inside the test.

A real Keycloak belongs to the Keycloak issue's tests; here we only need what a realm publishes to
the services that verify its tokens: RSA signing keys at ``/realms/{realm}/protocol/openid-connect/certs``
(with an encryption key beside them, as Keycloak publishes one) and the client-credentials grant at
``.../token`` that Alertmanager's ``oauth2`` configuration calls. Tokens are real RS256 JWTs signed
with keys generated per test, carrying the claims Keycloak puts into a client-credentials token.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


@dataclass
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey = field(repr=False)

    @classmethod
    def generate(cls, kid: str | None = None) -> SigningKey:
        return cls(kid or secrets.token_hex(8), rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwk(self, *, use: str = "sig", alg: str = "RS256") -> dict[str, Any]:
        public = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**public, "kid": self.kid, "use": use, "alg": alg}


class KeycloakStandIn(ThreadingHTTPServer):
    """Serves a realm's JWKS and client-credentials token endpoint; counts the requests it answers."""

    daemon_threads = True

    def __init__(self, realm: str = "ai-telemetry", *, audience: str = "ai-telemetry-receiver") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.realm = realm
        self.audience = audience
        self.keys = [SigningKey.generate()]
        self.encryption_key = SigningKey.generate("enc-" + secrets.token_hex(4))
        self.clients: dict[str, str] = {}
        self.jwks_requests = 0
        self.token_requests = 0
        self.available = True
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/realms/{self.realm}"

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    def add_client(self, client_id: str, secret: str) -> None:
        self.clients[client_id] = secret

    def rotate(self) -> SigningKey:
        """A new signing key first in the set (the old one stays published, as Keycloak does)."""
        key = SigningKey.generate()
        self.keys.insert(0, key)
        return key

    def jwks(self) -> dict[str, Any]:
        return {"keys": [*(k.jwk() for k in self.keys), self.encryption_key.jwk(use="enc", alg="RSA-OAEP")]}

    def issue(
        self,
        *,
        client_id: str = "alertmanager",
        audience: str | list[str] | None = None,
        lifetime_seconds: int = 300,
        key: SigningKey | None = None,
        omit: tuple[str, ...] = (),
        **claims: Any,
    ) -> str:
        """A signed access token as Keycloak issues it for the client-credentials grant."""
        now = int(time.time())
        body: dict[str, Any] = {
            "exp": now + lifetime_seconds,
            "iat": now,
            "jti": secrets.token_hex(16),
            "iss": self.issuer,
            "aud": self.audience if audience is None else audience,
            "sub": f"service-account-{client_id}",
            "typ": "Bearer",
            "azp": client_id,
            "scope": "profile email",
            "clientId": client_id,
        }
        body.update(claims)
        for name in omit:
            body.pop(name, None)
        signer = key or self.keys[0]
        return jwt.encode(body, signer.private, algorithm="RS256", headers={"kid": signer.kid})


class _Handler(BaseHTTPRequestHandler):
    server: KeycloakStandIn

    def do_GET(self) -> None:
        if not self.server.available:
            self._reply(503, {"error": "unavailable"})
            return
        if urlsplit(self.path).path == f"/realms/{self.server.realm}/protocol/openid-connect/certs":
            with self.server._lock:
                self.server.jwks_requests += 1
            self._reply(200, self.server.jwks())
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        if urlsplit(self.path).path != f"/realms/{self.server.realm}/protocol/openid-connect/token":
            self._reply(404, {"error": "not found"})
            return
        length = int(self.headers.get("content-length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        header = self.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            decoded = base64.b64decode(header[6:]).decode()
            client_id, _, secret = decoded.partition(":")
            client_id, secret = unquote(client_id), unquote(secret)
        if form.get("grant_type") != "client_credentials":
            self._reply(400, {"error": "unsupported_grant_type"})
            return
        if client_id is None or self.server.clients.get(client_id) != secret:
            self._reply(401, {"error": "invalid_client"})
            return
        with self.server._lock:
            self.server.token_requests += 1
        token = self.server.issue(client_id=client_id)
        self._reply(200, {"access_token": token, "token_type": "Bearer", "expires_in": 300, "scope": "profile email"})

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def keycloak_standin(
    realm: str = "ai-telemetry", *, audience: str = "ai-telemetry-receiver"
) -> Iterator[KeycloakStandIn]:
    server = KeycloakStandIn(realm, audience=audience)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="keycloak-standin", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
