"""Real uvicorn servers for the reliability tests: the product's own server set-up, in a thread, on loopback."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from ai_telemetry.serving import Listener, create_server
from domain.settings import HttpSettings
from tests.services import free_port


@dataclass
class Served:
    url: str
    host: str
    port: int
    server: uvicorn.Server

    def open_connections(self) -> int:
        return len(self.server.server_state.connections)


@contextmanager
def served(app: Any, limits: HttpSettings | None = None, *, retry_cut_bodies: bool = False) -> Iterator[Served]:
    """``app`` under the product's uvicorn set-up (ai_telemetry.serving) in a thread; stopped afterwards."""
    port = free_port()
    listener = Listener(app, "127.0.0.1", port, retry_cut_bodies=retry_cut_bodies)
    server = create_server(listener, limits, log_level="warning")
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield Served(f"http://127.0.0.1:{port}", "127.0.0.1", port, server)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        assert not thread.is_alive(), "the server did not stop"


def raw_exchange(host: str, port: int, request: bytes, timeout: float = 20) -> bytes:
    """Send ``request`` as is (whatever the server thinks of it) and read the answer until the server closes.

    No half-close: uvicorn drops the answer to a client that shut its side down; requests meant to be
    answered normally carry ``Connection: close``.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the server answered early
            sock.sendall(request)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def status_of(answer: bytes) -> int:
    """The status code of a raw HTTP answer (0: none)."""
    line = answer.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) >= 2 and line[0].startswith(b"HTTP/") and line[1].isdigit() else 0
