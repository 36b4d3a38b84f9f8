"""Schemathesis over the OpenAPI document Litestar generates: no 5xx, responses match their schema.

Runs in-process against the ASGI app with a real database (the demo fleet, one poll), as an admin
token and as a researcher's token, and once without credentials (every operation must say 401).
Part of the reliability suite (bad input): the last test records how many operations and cases were
checked and what they were answered.
"""

from __future__ import annotations

import tempfile
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from domain.access.accounts import create_token
from domain.access.demo import seed_demo_identities
from domain.database import create_db_engine, session_scope, upgrade
from domain.settings import DEMO_SOURCE, load_settings
from tests.test_access_end_to_end import NOW
from web.app import create_app
from worker.polling import SourcePoller
from worker.sources.simulated import SimulatedSource


def build_app(directory: str):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{directory}/api.db"
    app_settings = load_settings({"database": {"url": url}, "site": {"session_secret": "o" * 40}})
    engine = create_db_engine(app_settings.database)
    upgrade(engine)
    SourcePoller(SimulatedSource.from_settings(DEMO_SOURCE), engine, app_settings.scheduler).poll_once(
        now=NOW, force=True
    )
    seed_demo_identities(engine)
    with session_scope(engine) as session:
        tokens = {user: create_token(session, user) for user in ("admin", "alice")}
    return create_app(app_settings, engine), tokens


# schemathesis generates the tests at collection time, so the app is built at import, in a directory
# removed when the test process ends
_DIRECTORY = tempfile.TemporaryDirectory(prefix="ai-telemetry-openapi-")
APP, TOKENS = build_app(_DIRECTORY.name)
schema = schemathesis.openapi.from_asgi("/schema/openapi.json", APP)
pytestmark = pytest.mark.verify

CASES: Counter[tuple[str, str]] = Counter()  # (who, operation) -> cases run
ANSWERS: Counter[int] = Counter()  # status code -> cases answered with it


def count(who: str, case, status: int) -> None:  # type: ignore[no-untyped-def]
    CASES[(who, case.operation.label)] += 1
    ANSWERS[status] += 1


def test_the_document_describes_every_api_route() -> None:
    document = schema.raw_schema
    paths = set(document["paths"])
    for expected in (
        "/api/v1/gpus",
        "/api/v1/gpus/{gpu_id}",
        "/api/v1/projects",
        "/api/v1/usage",
        "/ngsi-ld/v1/entities",
    ):
        assert expected in paths
    assert not any(p.startswith(("/login", "/gpus", "/static")) for p in paths)  # pages stay out of the API doc
    gpu = document["components"]["schemas"]
    assert any("GpuRead" in name for name in gpu)


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@pytest.mark.parametrize("user", ["admin", "alice"])
def test_api_conforms_to_its_schema(case, user: str) -> None:  # type: ignore[no-untyped-def]
    response = case.call_and_validate(headers={"Authorization": f"Bearer {TOKENS[user]}"})
    count(user, case, response.status_code)


PUBLIC = "/ngsi-ld/v1/context.jsonld"  # a JSON-LD vocabulary, meant to be fetched by anyone


@schema.include(method="GET").exclude(path=PUBLIC).parametrize()
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_without_credentials_never_answers_with_data(case) -> None:  # type: ignore[no-untyped-def]
    response = case.call()
    count("anonymous", case, response.status_code)
    if case.method.upper() == "OPTIONS":  # answered by the framework with the allowed methods, no data
        assert response.status_code == 204 and not response.content
        return
    # parameters are validated before credentials are looked at, so bad input may say 400 first;
    # schemathesis also tries undeclared methods (405)
    expected = (400, 401, 404) if case.method.upper() == "GET" else (405,)  # 404: a path no route matches
    assert response.status_code in expected, response.text


def test_conformance_figures(reliability) -> None:  # type: ignore[no-untyped-def]
    """Runs last in this module: what the schemathesis tests above checked."""
    if not CASES:
        pytest.skip("the schemathesis tests of this module did not run")
    assert not [status for status in ANSWERS if status >= 500], ANSWERS
    operations = {operation for _, operation in CASES}
    by_who = Counter(who for who, _ in CASES.elements())
    reliability.record(
        area="Bad input",
        tried="schemathesis over every operation of the site's OpenAPI document, as an admin token, a "
        "researcher's token and without credentials",
        held="every response matched its schema with no 5xx; without credentials only 401 (or 400 for bad "
        "parameters, 405 for undeclared methods)",
        operations=len(operations),
        cases=sum(CASES.values()),
        **{f"cases_{who}": n for who, n in sorted(by_who.items())},
        **{f"answered_{status}": n for status, n in sorted(ANSWERS.items())},
    )
