"""Run one or more ASGI apps with uvicorn in one event loop, stopping all of them on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    """Signals are handled once for all servers (uvicorn's per-server handlers would stop only one)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True)
class Listener:
    app: Any
    host: str
    port: int
    forwarded_allow_ips: str | None = None
    """Peers whose X-Forwarded-Proto/For uvicorn trusts (None: $FORWARDED_ALLOW_IPS or 127.0.0.1)."""


def serve(*listeners: Listener, log_level: str = "info") -> None:
    asyncio.run(_serve_all(listeners, log_level))


async def _serve_all(listeners: tuple[Listener, ...], log_level: str) -> None:
    servers = [
        _Server(uvicorn.Config(li.app, host=li.host, port=li.port, log_level=log_level, lifespan="on",
                               proxy_headers=True, forwarded_allow_ips=li.forwarded_allow_ips, server_header=False))
        for li in listeners
    ]

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        await asyncio.gather(*(server.serve() for server in servers))
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
