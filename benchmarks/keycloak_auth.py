"""API list latency with Keycloak authorization, against the same route in local mode, same run.

A real Keycloak (tests/keycloak_service.py: the official distribution in dev mode, the repository's
realm) answers the permission requests; the site runs in-process on SQLite with the built-in fleet,
whose projects the worker's sync has put into Keycloak.

* cold: the first request of a fresh client-credentials token (JWT check, UMA round trip,
  resource index), one new token per sample;
* warm: the same token again (principal and permissions cached per token);
* baseline: ``GET /api/v1/projects`` in local mode with a personal access token;
* reference: the UMA round trip alone, as the site makes it.

Needs Java and Maven (``scripts/install-test-services``); prints why it is skipped otherwise.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import httpx
from litestar.testing import TestClient

from benchmarks.measure import Timing, report, timed
from domain.access.accounts import create_token
from domain.access.demo import seed_demo_identities
from domain.access.keycloak_admin import KeycloakAccessAdmin
from domain.database import create_db_engine, session_scope, upgrade
from domain.models import utcnow
from domain.settings import DEMO_SOURCE, load_settings
from tests.keycloak_service import (
    SITE_SECRET,
    maven_zip,
    realm_for_tests,
    running_keycloak,
)
from tests.services import ServiceError, free_port
from web.app import create_app
from worker.polling import SourcePoller
from worker.sources.simulated import SimulatedSource

ROUTE = "/api/v1/projects?limit=50"
CLIENT = ("ml-team-a-api", "ml-team-a-api-demo-secret-change-me")
COLD_SAMPLES = 40
WARM_SAMPLES = 300


def _cold(client: TestClient, tokens: list[str]) -> Timing:
    """Each token's first request, timed one by one (``timed`` repeats one action; here each differs)."""
    samples = []
    for token in tokens:
        started = time.perf_counter()
        response = client.get(ROUTE, headers={"Authorization": f"Bearer {token}"})
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    return Timing(samples)


def run() -> None:
    if shutil.which("java") is None or (not maven_zip().is_file() and shutil.which("mvn") is None):
        print("keycloak_auth: skipped (needs Java and Maven; run scripts/install-test-services)")
        return
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'bench.db'}"
        local = load_settings({"database": {"url": url}, "site": {"session_secret": "b" * 40}})
        engine = create_db_engine(local.database)
        upgrade(engine)
        source = SimulatedSource.from_settings(DEMO_SOURCE)
        SourcePoller(source, engine, local.scheduler).poll_once(now=utcnow() - timedelta(minutes=1), force=True)
        seed_demo_identities(engine)
        with session_scope(engine) as session:
            local_token = create_token(session, "alice")

        site_port = free_port()
        with ExitStack() as stack:
            try:
                keycloak = stack.enter_context(running_keycloak(realm_for_tests([site_port]), site_port))
            except ServiceError as exc:
                print(f"keycloak_auth: skipped, Keycloak did not start: {exc}")
                return
            settings = load_settings(
                {
                    "database": {"url": url},
                    "site": {"session_secret": "b" * 40},
                    "auth": {"mode": "keycloak"},
                    "keycloak": {"url": keycloak.url, "client_secret": SITE_SECRET, "permission_cache_seconds": 300},
                }
            )
            KeycloakAccessAdmin(settings.keycloak).sync_projects(engine)
            tokens = [keycloak.client_token(*CLIENT) for _ in range(COLD_SAMPLES + 3)]

            with TestClient(create_app(local, engine)) as client:
                headers = {"Authorization": f"Bearer {local_token}"}
                baseline = timed(lambda: client.get(ROUTE, headers=headers), repeat=WARM_SAMPLES)

            app = create_app(settings, engine)
            authorizer = app.state["site"].authorizer
            stack.callback(authorizer.close)
            with TestClient(app) as client:
                _cold(client, tokens[:3])  # warm the process (JWKS, imports, connection pool), not the tokens
                cold = _cold(client, tokens[3:])
                headers = {"Authorization": f"Bearer {tokens[0]}"}
                asked = authorizer.uma_requests
                warm = timed(lambda: client.get(ROUTE, headers=headers), repeat=WARM_SAMPLES)
                assert authorizer.uma_requests == asked  # every warm request came from the cache

            with httpx.Client(timeout=30) as http:
                form = {
                    "grant_type": "urn:ietf:params:oauth:grant-type:uma-ticket",
                    "audience": "ai-telemetry-site",
                    "response_mode": "permissions",
                }
                bearer = {"Authorization": f"Bearer {tokens[0]}"}
                uma = timed(lambda: http.post(keycloak.token_url, data=form, headers=bearer), repeat=COLD_SAMPLES)
        engine.dispose()

    report(
        f"GET {ROUTE}: Keycloak authorization vs local mode, in-process, SQLite, built-in fleet",
        [
            ("local mode (baseline) p50 / p95", f"{baseline.p50:.2f} / {baseline.p95:.2f} ms"),
            ("Keycloak warm (cached) p50 / p95", f"{warm.p50:.2f} / {warm.p95:.2f} ms"),
            ("Keycloak cold (first request of a token) p50 / p95", f"{cold.p50:.2f} / {cold.p95:.2f} ms"),
            ("UMA round trip alone p50 (reference)", f"{uma.p50:.2f} ms"),
            ("warm / local", f"{warm.p50 / baseline.p50:.2f}x"),
            ("cold / local", f"{cold.p50 / baseline.p50:.2f}x"),
            (
                "samples (cold / warm / local)",
                f"{len(cold.samples_ms)} / {len(warm.samples_ms)} / {len(baseline.samples_ms)}",
            ),
        ],
    )
