"""A synthetic dcgm-exporter: serves a simulated fleet on ``/metrics`` so a real Prometheus can scrape it.

The standard library's threading HTTP server is enough: the page is rendered once per simulation
step and cached, so scrapes are cheap, and there are no dependencies to install. Values depend only
on (fleet, seed, current step), so several exporter processes, or an exporter and the in-process
source, agree at the same instant.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from urllib.parse import urlsplit

from simulator.engine import Simulation
from simulator.exposition import CONTENT_TYPE, render
from simulator.fleet import Fleet

logger = logging.getLogger(__name__)

DEFAULT_PORT = 9400  # dcgm-exporter's port
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class MetricsServer(ThreadingHTTPServer):
    """The HTTP server, holding the simulation and the page rendered for the current step."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        simulation: Simulation,
        *,
        cluster: str | None = None,
        clock: Clock = _utc_now,
    ) -> None:
        if cluster is not None and cluster not in simulation.fleet.cluster_names:
            names = ", ".join(simulation.fleet.cluster_names)
            raise ValueError(f"unknown cluster {cluster!r}; the fleet has {names}")
        self.simulation = simulation
        self.cluster = cluster
        self.clock = clock
        self._page: tuple[int, bytes] | None = None
        self._page_lock = threading.Lock()
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def metrics_page(self) -> bytes:
        step = self.simulation.step_at(self.clock())
        with self._page_lock:
            if self._page is None or self._page[0] != step:
                text = render(self.simulation.state_at_step(step), cluster=self.cluster)
                self._page = (step, text.encode("utf-8"))
            return self._page[1]


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    server_version = "ai-telemetry-simulator"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._reply(200, self.server.metrics_page(), CONTENT_TYPE)
        elif path == "/healthz":
            self._reply(200, b"ok\n", "text/plain; charset=utf-8")
        else:
            self._reply(404, b"not found; try /metrics\n", "text/plain; charset=utf-8")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s - " + format, self.address_string(), *args)


def make_server(
    fleet: Fleet,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    seed: int = 42,
    cluster: str | None = None,
    clock: Clock | None = None,
) -> MetricsServer:
    """Bind (port 0 picks a free port) without serving; call ``serve_forever`` and ``shutdown`` yourself."""
    return MetricsServer((host, port), Simulation(fleet, seed), cluster=cluster, clock=clock or _utc_now)


def serve(
    fleet: Fleet,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    seed: int = 42,
    cluster: str | None = None,
    ready: threading.Event | None = None,
) -> None:
    """Serve until KeyboardInterrupt or SIGTERM, then close the socket; ``ready`` is set once bound."""
    server = make_server(fleet, host=host, port=port, seed=seed, cluster=cluster)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    logger.info("simulated dcgm-exporter on %s/metrics (cluster %s)", server.url, cluster or "all")
    try:
        if ready is not None:
            ready.set()
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("simulated dcgm-exporter stopping")
    finally:
        server.server_close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
