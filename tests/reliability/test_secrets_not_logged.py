"""Secrets never logged: the CLIs at debug level as subprocesses, and the apps in-process with caplog at DEBUG.

Every secret has a distinctive value; logins (right and wrong), API calls with good and bad tokens,
webhooks with bad tokens and settings errors are exercised; no secret may appear in any log line,
exception text, console output or error response body.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy.engine import make_url

from domain.database import create_db_engine
from domain.settings import PREFIX, DatabaseSettings, SettingsError, load_settings
from tests import services
from tests.conftest import settings_for, sqlite_copy
from tests.reliability.security_support import PASSWORDS, fleet_template, source_settings, token_for
from web.app import create_app
from worker.receiver import create_receiver_app

ROOT = Path(__file__).resolve().parents[2]
CLI = [str(Path(sys.executable).parent / "ai-telemetry"), "-v"]


def _secret(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(16)}"


SESSION_SECRET = _secret("SESSION-SECRET")
WEBHOOK_TOKEN = _secret("WEBHOOK-TOKEN")
KEYCLOAK_SECRET = _secret("KEYCLOAK-CLIENT-SECRET")
DB_PASSWORD = _secret("DBPASS")
WRONG_PASSWORD = _secret("WRONG-PASSWORD")
BAD_TOKEN = "ait_" + _secret("BAD-TOKEN")
SHORT_SECRET = "SHORT-" + secrets.token_hex(4)


class Secrets:
    """Every secret of a run; :meth:`leaks` names those that appear in a text."""

    def __init__(self, *values: str) -> None:
        self.values = {v for v in values if v}

    def add(self, *values: str) -> None:
        self.values |= set(values)

    def leaks(self, text: str) -> list[str]:
        return sorted(v for v in self.values if v in text)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fleet_template(tmp_path_factory.mktemp("security-fleet"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(PREFIX)}
    env.update({f"{PREFIX}{k.upper()}": v for k, v in settings.items()})
    return env


@contextmanager
def running(args: list[str], env: dict[str, str], port: int, output: list[str]) -> Iterator[str]:
    """Run a CLI server until the block ends; its stdout and stderr are appended to ``output``."""
    process = subprocess.Popen(
        CLI + args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"{args} exited early"
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{args} did not start"
            time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            out, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
        output.append(out)


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def exercise_site(client: httpx.Client | TestClient, pat: str, bodies: list[str]) -> None:
    """Logins right and wrong, API calls with good, bad and malformed credentials, a logout."""
    form = client.get("/login")
    token = re.search(r'name="_csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    for password in (WRONG_PASSWORD, PASSWORDS["alice"]):
        answer = client.post(
            "/login", data={"username": "alice", "password": password, "_csrf_token": token}, follow_redirects=False
        )
        bodies.append(answer.text)
    bodies.append(client.post("/login", data={"username": "alice", "password": WRONG_PASSWORD}).text)  # no CSRF
    for header in (f"Bearer {pat}", f"Bearer {BAD_TOKEN}", f"Basic {BAD_TOKEN}", f"Token {pat}", BAD_TOKEN):
        for path in ("/api/v1/projects", "/projects", "/api/v1/gpus/99999", "/ngsi-ld/v1/entities/x"):
            response = client.get(path, headers={"Authorization": header}, follow_redirects=False)
            bodies.append(response.text + str(dict(response.headers)))
    bodies.append(client.post("/logout", headers={"x-csrftoken": "forged"}).text)


def exercise_receiver(client: httpx.Client | TestClient, bodies: list[str]) -> None:
    for header in (
        f"Bearer {WEBHOOK_TOKEN}-wrong",
        f"Bearer {BAD_TOKEN}",
        f"Basic {WEBHOOK_TOKEN}",
        WEBHOOK_TOKEN,
        f"bearer  {WEBHOOK_TOKEN}x",
    ):
        response = client.post("/webhooks/alertmanager", headers={"Authorization": header}, content=b"{}")
        assert response.status_code == 401
        bodies.append(response.text + str(dict(response.headers)))
    bad = client.post(
        "/webhooks/alertmanager",
        headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
        content=b'{"version": "4", "alerts": "not a list"}',
    )
    assert bad.status_code == 400
    bodies.append(bad.text)


def test_cli_processes_log_no_secret(template: Path, tmp_path: Path, reliability) -> None:
    engine = sqlite_copy(template, tmp_path)
    pat = token_for(engine, "alice")
    engine.dispose()
    database = f"sqlite:///{tmp_path / 'security.db'}"
    watched = Secrets(
        SESSION_SECRET, WEBHOOK_TOKEN, KEYCLOAK_SECRET, WRONG_PASSWORD, PASSWORDS["alice"], BAD_TOKEN, pat, SHORT_SECRET
    )
    env = child_env(
        site_session_secret=SESSION_SECRET, receiver_webhook_token=WEBHOOK_TOKEN, keycloak_client_secret=KEYCLOAK_SECRET
    )
    output: list[str] = []
    bodies: list[str] = []
    site_port, receiver_port = free_port(), free_port()
    site = ["site", "--database-url", database, "--port", str(site_port)]
    with running(site, env, site_port, output) as base, httpx.Client(base_url=base, timeout=30) as client:
        exercise_site(client, pat, bodies)
    fleet = source_settings(tmp_path)
    config = tmp_path / "sources.toml"
    config.write_text(f'[[sources]]\nname = "{fleet.name}"\nkind = "simulated"\nfleet = "{fleet.fleet}"\n')
    worker = ["worker", "--database-url", database, "--port", str(receiver_port), "--config", str(config)]
    with running(worker, env, receiver_port, output) as base, httpx.Client(base_url=base, timeout=30) as client:
        exercise_receiver(client, bodies)
    # settings errors: a too-short session secret, a misspelt database URL carrying a password
    keycloak_without_url = child_env(
        site_session_secret=SESSION_SECRET, auth_mode="keycloak", keycloak_client_secret=KEYCLOAK_SECRET
    )
    errors = [
        cli("site", "--database-url", database, env=child_env(site_session_secret=SHORT_SECRET)),
        cli("db", "upgrade", "--database-url", f"mysql://ait:{DB_PASSWORD}@127.0.0.1/x", env=child_env()),
        cli(
            "db",
            "upgrade",
            "--database-url",
            f"postgresql+psycopg://ait:{DB_PASSWORD}@127.0.0.1:{free_port()}/x",
            env=child_env(),
        ),
        cli("site", "--database-url", database, env=keycloak_without_url),
    ]
    watched.add(DB_PASSWORD)
    for result in errors:
        assert result.returncode != 0, result.args
        output.append(result.stdout + result.stderr)
    log_text = "\n".join(output)
    assert "DEBUG" in log_text, "the processes did not log at debug level"
    assert "401" in log_text or "webhook" in log_text.lower() or "GET /" in log_text
    assert not watched.leaks(log_text), f"secrets in the process output: {watched.leaks(log_text)}"
    assert not watched.leaks("\n".join(bodies)), f"secrets in responses: {watched.leaks(chr(10).join(bodies))}"
    reliability.record(
        area="Security",
        tried="Ran `ai-telemetry -v site` and `-v worker` as processes with distinctive secrets (session secret, "
        "webhook token, Keycloak client secret), logged in right and wrong, called the API with good, bad and "
        "malformed tokens, posted webhooks with bad tokens, and started them with broken settings and a "
        "password in the database URL",
        held=f"none of the {len(watched.values)} secrets appeared in {len(log_text.splitlines())} lines of output "
        f"or in {len(bodies)} response bodies",
        secrets=len(watched.values),
        output_lines=len(log_text.splitlines()),
        responses=len(bodies),
    )


def test_database_password_never_printed(postgres_server: str, reliability) -> None:
    with services.fresh_database(postgres_server) as url:
        with_password = make_url(url).set(password=DB_PASSWORD).render_as_string(hide_password=False)
        result = cli("db", "upgrade", "--database-url", with_password, env=child_env())
        assert result.returncode == 0, result.stderr[-2000:]
        assert "up to date" in result.stdout
        assert DB_PASSWORD not in result.stdout + result.stderr, "the database password was printed"
        assert "***" in result.stdout
        create_db_engine(DatabaseSettings(url=url)).dispose()
    reliability.record(
        area="Security",
        tried="Migrated a real PostgreSQL with `ai-telemetry -v db upgrade` given a URL with a password",
        held="the password appeared nowhere in the output (the URL is shown masked)",
    )


def test_in_process_logs_and_errors_hold_no_secret(template: Path, tmp_path: Path, caplog, reliability) -> None:
    engine = sqlite_copy(template, tmp_path)
    pat = token_for(engine, "alice")
    watched = Secrets(
        SESSION_SECRET,
        WEBHOOK_TOKEN,
        KEYCLOAK_SECRET,
        WRONG_PASSWORD,
        PASSWORDS["alice"],
        BAD_TOKEN,
        pat,
        DB_PASSWORD,
        SHORT_SECRET,
    )
    settings = settings_for(
        engine,
        site={"session_secret": SESSION_SECRET},
        receiver={"webhook_token": WEBHOOK_TOKEN},
        keycloak={"client_secret": KEYCLOAK_SECRET},
    )
    bodies: list[str] = [repr(settings), str(settings), repr(settings.model_dump())]
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(settings, engine)) as client:
        exercise_site(client, pat, bodies)
    with TestClient(create_receiver_app(settings, engine)) as client:
        exercise_receiver(client, bodies)
    # Keycloak mode with Keycloak unreachable: the login page says so, and nothing says the client secret
    keycloak = settings_for(
        engine,
        auth={"mode": "keycloak"},
        site={"session_secret": SESSION_SECRET},
        keycloak={"url": f"http://127.0.0.1:{free_port()}", "client_secret": KEYCLOAK_SECRET},
    )
    with TestClient(create_app(keycloak, engine)) as client:
        page = client.get("/login", follow_redirects=False)
        assert page.status_code == 503
        bodies.append(page.text)
        bodies.append(client.get("/api/v1/projects", headers={"Authorization": f"Bearer {BAD_TOKEN}"}).text)
    # settings errors carry no values
    for overrides in (
        {"site": {"session_secret": SHORT_SECRET}},
        {"database": {"url": f"mysql://u:{DB_PASSWORD}@h/db"}},
        {"auth": {"mode": "keycloak"}, "keycloak": {"client_secret": KEYCLOAK_SECRET}},
    ):
        with pytest.raises(SettingsError) as raised:
            load_settings(overrides)
        bodies.append(str(raised.value))
    engine.dispose()
    log_text = "\n".join(f"{r.levelname} {r.name}: {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert caplog.records, "nothing was logged"
    assert not watched.leaks(log_text), f"secrets in the logs: {watched.leaks(log_text)}"
    answers = "\n".join(bodies)
    assert not watched.leaks(answers), f"secrets in responses or errors: {watched.leaks(answers)}"
    reliability.record(
        area="Security",
        tried="Drove the site (local and Keycloak mode with Keycloak down) and the receiver in-process with "
        "logging at DEBUG, the same logins, tokens and webhooks, plus settings errors and the settings' repr",
        held=f"none of the {len(watched.values)} secrets appeared in {len(caplog.records)} log records, "
        f"{len(bodies)} response bodies or error messages",
        log_records=len(caplog.records),
        responses=len(bodies),
    )
