"""Throwaway servers for the test session, started from the machine's own binaries.

PostgreSQL: a private cluster in a temporary directory, listening on 127.0.0.1 on a free port
(never the system's 5432), trust authentication, fsync off. It is stopped and deleted when the
session ends, also when the session fails. ``scripts/install-test-services`` installs the
binaries on a fresh Debian machine.

When the binaries are missing the PostgreSQL tests are skipped with a loud reason, except in CI
(``CI=true``), where they fail: a CI run that silently tested only SQLite would prove nothing.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

POSTGRES_GLOB = "/usr/lib/postgresql/*/bin"
POSTGRES_TOOLS = ("initdb", "pg_ctl")
POSTGRES_SYSTEM_USER = "postgres"
START_TIMEOUT_SECONDS = 60
INSTALL_HINT = "run scripts/install-test-services (as root on Debian/Ubuntu: apt-get install postgresql)"


class ServiceError(RuntimeError):
    """A test service could not be started; the message carries its log."""


def in_ci(environ: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def service_unavailable(reason: str, environ: Mapping[str, str] | None = None, *, service: str = "PostgreSQL") -> None:
    """Fail in CI, skip elsewhere: the reason is always spelled out."""
    if in_ci(environ):
        pytest.fail(f"{service} is required in CI: {reason}", pytrace=False)
    pytest.skip(f"{service} NOT TESTED: {reason}")


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name)) or (0,)


def find_postgres_bin(pattern: str | None = None, path: str | None = None) -> Path | None:
    """The bin directory of the highest installed PostgreSQL, or one on PATH, or None."""
    pattern = POSTGRES_GLOB if pattern is None else pattern
    candidates = [Path(p) for p in sorted(Path("/").glob(pattern.lstrip("/")))] if pattern else []
    complete = [d for d in candidates if all((d / tool).is_file() for tool in POSTGRES_TOOLS)]
    if complete:
        return max(complete, key=_version_key)
    found = shutil.which("initdb", path=path)
    if found:
        bin_dir = Path(found).resolve().parent
        if all((bin_dir / tool).is_file() for tool in POSTGRES_TOOLS):
            return bin_dir
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres_user() -> list[str]:
    """initdb and postgres refuse to run as root: run them as the system user when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        raise ServiceError(
            f"running as root but there is no {POSTGRES_SYSTEM_USER!r} system user to run PostgreSQL as; {INSTALL_HINT}"
        ) from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ServiceError("running as root but runuser (util-linux) is missing")
    return [runuser, "-u", POSTGRES_SYSTEM_USER, "--"]


def _run(command: Sequence[str], cwd: Path, what: str) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise ServiceError(
            f"{what} failed (exit {result.returncode}): {' '.join(command)}\n{result.stdout}\n{result.stderr}"
        )


def _read_log(log: Path) -> str:
    try:
        return log.read_text(encoding="utf-8", errors="replace")[-4000:]
    except OSError:
        return "(no server log)"


def wait_until_ready(url: str, deadline: float) -> None:
    """Connect until the server answers a query, or raise when the deadline passes."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(dsn, connect_timeout=2) as connection:
                connection.execute("SELECT 1")
            return
        except psycopg.Error as exc:
            last_error = exc
        time.sleep(0.1)
    raise ServiceError(f"PostgreSQL at {url} did not become ready: {last_error}")


class PostgresServer:
    """A private PostgreSQL cluster that can be stopped and started again on the same port.

    Made by :func:`postgres_server` (which deletes it afterwards); :func:`running_postgres` yields
    only its :attr:`url`. The fault tests stop it under load and start it again.
    """

    def __init__(self, bin_dir: Path, base: Path, prefix: list[str]) -> None:
        self.bin_dir = bin_dir
        self.base = base
        self.data = base / "data"
        self.log = base / "server.log"
        self._prefix = prefix
        self.port: int | None = None
        self.running = False

    @property
    def url(self) -> str:
        """``postgresql+psycopg://postgres@127.0.0.1:PORT/postgres`` (the port is fixed by the first start)."""
        if self.port is None:
            raise ServiceError("the server has not been started")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        if self._prefix:
            shutil.chown(self.base, user=POSTGRES_SYSTEM_USER, group=None)
            self.base.chmod(0o700)
        _run(
            [
                *self._prefix,
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            cwd=self.base,
            what="initdb",
        )

    def start(self, *, attempts: int = 3) -> None:
        """Start the server and wait until it answers: on a free port the first time, on the same one after."""
        for attempt in range(1, attempts + 1):
            port = self.port or free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={self.base} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            command = [
                *self._prefix,
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                options,
                "-w",
                "-t",
                str(START_TIMEOUT_SECONDS),
                "start",
            ]
            self.running = True  # from here on a postmaster may exist, even if pg_ctl fails or times out
            result = subprocess.run(
                command, cwd=self.base, capture_output=True, text=True, check=False, timeout=START_TIMEOUT_SECONDS + 30
            )
            if result.returncode == 0:
                self.port = port
                break
            self.stop(mode="immediate")
            if attempt == attempts or self.port is not None:  # another process may have taken the port: try a few
                raise ServiceError(
                    f"pg_ctl start failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                    f"server log:\n{_read_log(self.log)}"
                )
        try:
            wait_until_ready(self.url, time.monotonic() + START_TIMEOUT_SECONDS)
        except ServiceError as exc:
            raise ServiceError(f"{exc}\nserver log:\n{_read_log(self.log)}") from None

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients, clean shutdown; ``immediate``: as a crash)."""
        _stop(self._prefix, self.bin_dir, self.data, self.base, mode=mode)
        self.running = False


@contextmanager
def postgres_server(bin_dir: Path, *, attempts: int = 3) -> Iterator[PostgresServer]:
    """Start a private PostgreSQL and yield its handle; stop it and delete it afterwards."""
    server = PostgresServer(bin_dir, Path(tempfile.mkdtemp(prefix="ai-telemetry-pg-")), _as_postgres_user())
    try:
        server.init()
        server.start(attempts=attempts)
        yield server
    finally:
        if server.running:
            server.stop(mode="immediate")
        shutil.rmtree(server.base, ignore_errors=True)


@contextmanager
def running_postgres(bin_dir: Path, *, attempts: int = 3) -> Iterator[str]:
    """Start a private PostgreSQL and yield its SQLAlchemy URL; stop it and delete it afterwards."""
    with postgres_server(bin_dir, attempts=attempts) as server:
        yield server.url


def _stop(prefix: list[str], bin_dir: Path, data: Path, cwd: Path, *, mode: str = "immediate") -> None:
    with suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "stop"],
            cwd=cwd,
            capture_output=True,
            check=False,
            timeout=60,
        )


@contextmanager
def postgres_server_or_skip(
    environ: Mapping[str, str] | None = None, finder: Callable[[], Path | None] | None = None
) -> Iterator[PostgresServer]:
    """A server of the caller's own (to stop and start): skipped (or, in CI, failed) loudly when not installed."""
    bin_dir = (finder or find_postgres_bin)()
    if bin_dir is None:
        service_unavailable(f"initdb/pg_ctl not found under {POSTGRES_GLOB} or on PATH; {INSTALL_HINT}", environ)
        raise AssertionError("unreachable")  # pytest.skip and pytest.fail raise
    with ExitStack() as stack:
        try:
            server = stack.enter_context(postgres_server(bin_dir))
        except ServiceError as exc:
            if in_ci(environ):
                raise
            pytest.skip(f"PostgreSQL NOT TESTED: could not start a test server: {exc}")
        yield server


@contextmanager
def postgres_or_skip(
    environ: Mapping[str, str] | None = None, finder: Callable[[], Path | None] | None = None
) -> Iterator[str]:
    """The session's server: skipped (or, in CI, failed) loudly when PostgreSQL is not installed."""
    with postgres_server_or_skip(environ, finder) as server:
        yield server.url


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the test server; dropped (even with open connections) afterwards."""
    name = f"test_{secrets.token_hex(8)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
