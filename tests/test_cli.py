"""The ``ai-telemetry`` command as a user runs it: real subprocesses, real ports, real signals."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from domain.settings import PROJECT_ROOT

CLI = [sys.executable, "-m", "ai_telemetry.cli"]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_TELEMETRY_")}
    env["AI_TELEMETRY_DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["demo"],
        ["site"],
        ["worker"],
        ["simulate"],
        ["db", "upgrade"],
        ["token", "create"],
        ["replay"],
        ["grant"],
        ["revoke"],
        ["user"],
        *([["user", action] for action in ("create", "list", "set-password", "disable", "enable", "delete")]),
    ],
    ids=lambda c: " ".join(c) or "top",
)
def test_every_command_has_help(command: list[str], tmp_path: Path) -> None:
    result = run([*command, "--help"], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "usage: ai-telemetry" in result.stdout


def test_invalid_setting_fails_at_start_naming_it(tmp_path: Path) -> None:
    result = run(["db", "upgrade"], clean_env(tmp_path, AI_TELEMETRY_DATABASE_URL="mysql://nope"))
    assert result.returncode == 2
    assert "AI_TELEMETRY_DATABASE_URL" in result.stderr
    site = run(["site"], clean_env(tmp_path))
    assert site.returncode == 2 and "AI_TELEMETRY_SITE_SESSION_SECRET" in site.stderr
    worker = run(["worker"], clean_env(tmp_path))
    assert worker.returncode == 2 and "AI_TELEMETRY_CONFIG" in worker.stderr
    bad_config = tmp_path / "sources.toml"
    bad_config.write_text('[[sources]]\nname = "hub"\nkind = "prometheus"\n')
    result = run(["worker", "--config", str(bad_config)], clean_env(tmp_path))
    assert result.returncode == 2 and "sources.0" in result.stderr and str(bad_config) in result.stderr


def test_flags_override_the_environment(tmp_path: Path) -> None:
    flag_db = tmp_path / "from-flag.db"
    result = run(["db", "upgrade", "--database-url", f"sqlite:///{flag_db}"], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert flag_db.exists() and not (tmp_path / "cli.db").exists()


def test_the_first_admin_is_made_with_user_create_and_managed_from_the_shell(tmp_path: Path) -> None:
    """A fresh database has no user; ``user create`` makes the first admin, whose token then works."""
    env = clean_env(tmp_path)
    assert "no such user: root" in run(["token", "create", "--user", "root"], env).stderr
    as_argument = run(["user", "create", "root", "--admin", "--password", "x" * 16], env)
    assert as_argument.returncode == 2 and "unrecognized arguments" in as_argument.stderr  # never an argument
    no_terminal = subprocess.run(
        [*CLI, "user", "create", "root"], env=env, capture_output=True, text=True, input="", check=False
    )
    assert no_terminal.returncode == 2 and "--password-stdin" in no_terminal.stderr

    def piped(args: list[str], password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args, "--password-stdin"], env=env, capture_output=True, text=True, input=password, check=False
        )

    for email in ("root", "root@localhost", "a b@example.org", "root@exa mple.org", "<root@example.org>"):
        refused = piped(["user", "create", "root", "--admin", "--email", email], "a-good-long-password\n")
        assert refused.returncode == 1 and "not an e-mail address" in refused.stderr, (email, refused.stderr)
    short = piped(["user", "create", "root", "--admin"], "short\n")
    assert short.returncode == 1 and "at least 12 characters" in short.stderr
    made = piped(
        ["user", "create", "root", "--admin", "--email", "Root@Example.ORG", "--display-name", "Ops"],
        "a-good-long-password\n",
    )
    assert made.returncode == 0 and "created administrator root" in made.stdout, made.stderr
    assert piped(["user", "create", "root"], "a-good-long-password\n").returncode == 1  # exists already
    assert run(["token", "create", "--user", "root"], env).stdout.startswith("ait_")
    listing = run(["user", "list"], env).stdout
    assert re.search(r"root\s+admin\s+enabled\s+1 tokens\s+Root@example.org\s+Ops", listing), listing
    assert "last enabled administrator" in run(["user", "disable", "root"], env).stderr
    assert "last enabled administrator" in run(["user", "delete", "root"], env).stderr
    assert piped(["user", "create", "alice", "--email", "alice@example.org"], "alice-long-password\n").returncode == 0
    assert piped(["user", "set-password", "alice"], "another-long-password\n").returncode == 0
    assert run(["user", "disable", "alice"], env).stdout.strip() == "alice disabled"
    assert "disabled" in next(line for line in run(["user", "list"], env).stdout.splitlines() if "alice" in line)
    assert run(["user", "enable", "alice"], env).returncode == 0
    assert run(["user", "delete", "alice"], env).returncode == 0
    assert "alice" not in run(["user", "list"], env).stdout
    assert "no such user: alice" in run(["user", "delete", "alice"], env).stderr


def test_token_create_needs_an_existing_user(tmp_path: Path) -> None:
    result = run(["token", "create", "--user", "nobody"], clean_env(tmp_path))
    assert result.returncode == 2 and "no such user: nobody" in result.stderr


def wait_until_up(url: str, process: subprocess.Popen[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")


def test_demo_runs_and_stops_cleanly_and_token_create_shares_its_database(tmp_path: Path) -> None:
    site_port, receiver_port = free_port(), free_port()
    env = clean_env(tmp_path)
    process = subprocess.Popen(
        [*CLI, "demo", "--port", str(site_port), "--receiver-port", str(receiver_port), "--history-hours", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{site_port}"
        wait_until_up(f"{base}/readyz", process, time.monotonic() + 90)
        assert httpx.get(f"http://127.0.0.1:{receiver_port}/healthz").json() == {"status": "ok"}

        token = run(["token", "create", "--user", "bob"], env)
        assert token.returncode == 0, token.stderr
        headers = {"Authorization": f"Bearer {token.stdout.strip()}"}
        projects = httpx.get(f"{base}/api/v1/projects", headers=headers).json()
        assert [p["namespace"] for p in projects["items"]] == ["vision-lab"]

        with httpx.Client(base_url=base) as browser:
            login = browser.get("/login")
            csrf = re.search(r'name="_csrf_token" value="([^"]+)"', login.text).group(1)
            browser.post("/login", data={"username": "admin", "password": "admin-demo", "_csrf_token": csrf})
            overview = browser.get("/")
            assert overview.status_code == 200
            for cluster in ("moc-prod", "nerc-ocp", "edu-shared"):
                assert cluster in overview.text
            for page in ("/clusters", "/nodes", "/gpus", "/slices", "/projects"):
                assert browser.get(page).status_code == 200, page
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "http://127.0.0.1:" in output and "alice" in output and "bob" in output  # URL and logins printed
    assert "demo stopped" in output


def test_vendored_htmx_matches_its_record() -> None:
    record = (PROJECT_ROOT / "static" / "VENDORED.md").read_text()
    digest = hashlib.sha256((PROJECT_ROOT / "static" / "htmx.min.js").read_bytes()).hexdigest()
    assert f"| `htmx.min.js` | `htmx.org` (`dist/htmx.min.js`) | 2.0.11 | {digest} |" in record
