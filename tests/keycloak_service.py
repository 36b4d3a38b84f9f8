"""A real Keycloak for the test session, started from the official distribution.

The distribution (``org.keycloak:keycloak-quarkus-dist``, a zip) is fetched with Maven into
``~/.m2`` (so CI reuses the cache; ``scripts/install-test-services`` does it ahead of time) and
unpacked once under ``~/.cache/ai-telemetry/``. Each test session copies it to a temporary
directory of its own, puts the realm file into ``data/import`` and runs ``kc.sh start-dev`` on a
free loopback port (H2 database inside that directory), waits for the realm to answer, and stops
and deletes it afterwards. The first start of a fresh distribution spends ~20 s building itself
for dev mode; that build is copied back into the cache so later sessions skip it.

Without Java or Maven the Keycloak tests are skipped loudly, or fail in CI.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.services import ServiceError, free_port, in_ci, service_unavailable

KEYCLOAK_VERSION = "26.4.7"
ARTIFACT = f"org.keycloak:keycloak-quarkus-dist:{KEYCLOAK_VERSION}:zip"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
REALM_FILE = PROJECT_ROOT / "keycloak" / "realm-ai-telemetry.json"
REALM = "ai-telemetry"
SITE_CLIENT = "ai-telemetry-site"
SITE_SECRET = "site-demo-secret-change-me"
MASTER_ADMIN = ("admin", "test-admin-password")
START_TIMEOUT_SECONDS = 240  # a cold first start on two shared cores can take minutes; stays under pytest's 300 s
STOP_TIMEOUT_SECONDS = 30
BUILD_MARKER = ".ai-telemetry-dev-build"
INSTALL_HINT = "run scripts/install-test-services (Java 17+ and Maven; it fetches the Keycloak distribution)"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ai-telemetry"


def maven_zip(repository: Path | None = None) -> Path:
    group, artifact, version, _ = ARTIFACT.split(":")
    repository = repository or Path.home() / ".m2" / "repository"
    return repository / Path(*group.split(".")) / artifact / version / f"{artifact}-{version}.zip"


def fetch_distribution() -> Path:
    """The zip in the local Maven repository, fetched with ``mvn dependency:get`` if missing."""
    archive = maven_zip()
    if archive.is_file():
        return archive
    mvn = shutil.which("mvn")
    if mvn is None:
        raise FileNotFoundError(f"Maven (mvn) is not installed; {INSTALL_HINT}")
    result = subprocess.run(
        [mvn, "-q", "-B", "dependency:get", f"-Dartifact={ARTIFACT}", "-Dtransitive=false"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if result.returncode != 0 or not archive.is_file():
        raise ServiceError(f"mvn could not fetch {ARTIFACT}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return archive


def unpacked_distribution() -> Path:
    """The distribution unpacked under the cache directory (once; atomically, so sessions may race)."""
    target = cache_dir() / f"keycloak-{KEYCLOAK_VERSION}"
    if (target / "bin" / "kc.sh").is_file():
        return target
    archive = fetch_distribution()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="keycloak-unpack-", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as bundle:
            bundle.extractall(staging)
        root = staging / f"keycloak-{KEYCLOAK_VERSION}"
        for script in (root / "bin").glob("*.sh"):
            script.chmod(0o755)
        with suppress(OSError):  # another session won the race: use theirs
            root.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _remember_dev_build(home: Path, distribution: Path) -> None:
    """Copy the dev-mode build of a started server back into the cache, file by file, atomically."""
    marker = distribution / "lib" / "quarkus" / BUILD_MARKER
    if marker.exists():
        return
    built = home / "lib" / "quarkus"
    for source in built.iterdir():
        if source.is_file():
            staging = distribution / "lib" / "quarkus" / f".{source.name}.tmp"
            shutil.copy2(source, staging)
            staging.replace(distribution / "lib" / "quarkus" / source.name)
    marker.write_text(f"dev build of {KEYCLOAK_VERSION}\n")


def realm_for_tests(site_ports: list[int]) -> dict[str, Any]:
    """The repository's realm, with redirect URIs for sites listening on ``site_ports`` too."""
    realm = json.loads(REALM_FILE.read_text(encoding="utf-8"))
    realm = copy.deepcopy(realm)
    site = next(c for c in realm["clients"] if c["clientId"] == SITE_CLIENT)
    bases = [f"http://127.0.0.1:{port}" for port in site_ports]
    site["redirectUris"] += [f"{b}/auth/callback" for b in bases]
    uris = site["attributes"]["post.logout.redirect.uris"].split("##")
    site["attributes"]["post.logout.redirect.uris"] = "##".join(uris + [f"{b}/*" for b in bases])
    return realm


@dataclass
class KeycloakServer:
    """One Keycloak of the session: started, stopped and started again on the same data."""

    home: Path
    port: int
    site_port: int
    """A loopback port registered as a redirect URI of the site client, for a site under test."""
    process: subprocess.Popen[bytes] | None = None
    management_port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def realm_url(self) -> str:
        return f"{self.url}/realms/{REALM}"

    @property
    def token_url(self) -> str:
        return f"{self.realm_url}/protocol/openid-connect/token"

    @property
    def log(self) -> Path:
        return self.home / "keycloak.log"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        environment = {
            **os.environ,
            "KC_BOOTSTRAP_ADMIN_USERNAME": MASTER_ADMIN[0],
            "KC_BOOTSTRAP_ADMIN_PASSWORD": MASTER_ADMIN[1],
            "JAVA_OPTS_KC_HEAP": "-Xms64m -Xmx768m",
        }
        command = [
            str(self.home / "bin" / "kc.sh"),
            "start-dev",
            "--http-host=127.0.0.1",
            f"--http-port={self.port}",
            f"--http-management-port={self.management_port}",
            "--import-realm",
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.home,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.wait_until_ready(time.monotonic() + timeout)

    def wait_until_ready(self, deadline: float) -> None:
        discovery = f"{self.realm_url}/.well-known/openid-configuration"
        last: object = None
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise ServiceError(f"Keycloak exited during start-up:\n{self.log_tail()}")
            try:
                response = httpx.get(discovery, timeout=2)
                if response.status_code == 200:
                    return
                last = response.status_code
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.5)
        raise ServiceError(f"Keycloak did not answer {discovery} in time ({last}):\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server and wait until its port is closed."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_SECONDS)

    # --- conveniences for tests -----------------------------------------------------------------

    def client_token(self, client_id: str, secret: str) -> str:
        response = httpx.post(
            self.token_url,
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
            timeout=30,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def admin_api(self) -> httpx.Client:
        """An httpx client on the realm's admin REST API, as the site client's service account."""
        token = self.client_token(SITE_CLIENT, SITE_SECRET)
        return httpx.Client(
            base_url=f"{self.url}/admin/realms/{REALM}", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )


@contextmanager
def running_keycloak(realm: Mapping[str, Any], site_port: int) -> Iterator[KeycloakServer]:
    """Start a private Keycloak with ``realm`` imported; stop it and delete its directory afterwards."""
    distribution = unpacked_distribution()
    base = Path(tempfile.mkdtemp(prefix="ai-telemetry-keycloak-"))
    home = base / "keycloak"
    server: KeycloakServer | None = None
    try:
        shutil.copytree(distribution, home, symlinks=True)
        (home / "data" / "import").mkdir(parents=True, exist_ok=True)
        (home / "data" / "import" / f"realm-{REALM}.json").write_text(json.dumps(realm), encoding="utf-8")
        server = KeycloakServer(home=home, port=free_port(), site_port=site_port)
        server.start()
        with suppress(OSError):
            _remember_dev_build(home, distribution)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def keycloak_or_skip(environ: Mapping[str, str] | None = None) -> Iterator[KeycloakServer]:
    """The session's Keycloak: skipped (or, in CI, failed) loudly when Java or Maven is missing."""
    if shutil.which("java") is None:
        service_unavailable(f"java not found; {INSTALL_HINT}", environ, service="Keycloak")
    if not maven_zip().is_file() and shutil.which("mvn") is None:
        service_unavailable(f"mvn not found and no cached {ARTIFACT}; {INSTALL_HINT}", environ, service="Keycloak")
    site_port = free_port()
    with ExitStack() as stack:
        try:
            server = stack.enter_context(running_keycloak(realm_for_tests([site_port]), site_port))
        except (ServiceError, OSError) as exc:
            if in_ci(environ):
                raise
            service_unavailable(f"could not start Keycloak: {exc}", environ, service="Keycloak")
            raise AssertionError("unreachable") from exc
        yield server
