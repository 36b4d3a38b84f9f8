"""Run one or more ASGI apps with uvicorn in one event loop, stopping all of them on SIGINT/SIGTERM.

uvicorn bounds an idle keep-alive connection but nothing else: a client may take forever to send its
headers (slowloris) or its body, send headers of any size, or never read its response, and hold the
connection, its buffers and its task meanwhile. :class:`GuardedHttpProtocol` adds those bounds from
:class:`~domain.settings.HttpSettings`:

- a request (line, headers and body) must arrive within ``request_timeout_seconds`` of its first
  byte (or of the connection): otherwise 408 and the connection is closed (a listener with
  ``retry_cut_bodies`` answers a body that stopped short 503 with Retry-After instead: Alertmanager
  retries 5xx but drops a notification answered 4xx); a connection that sent nothing at all is just
  closed. While the server itself stops reading (flow control: the app has not taken the body yet,
  or a pipelined request waits) the clock does not run out;
- the request line plus headers may not exceed ``max_header_bytes``: 414 (the URL) or 431;
- a response that cannot be written for ``write_timeout_seconds`` (the client does not read) is
  abandoned and the connection closed.

These answers come from the server, before any app saw the request; they are JSON problem documents
with the data-only security headers (:data:`domain.http_headers.DATA_ONLY_HEADERS`), as the receiver's
contract says every answer is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from domain.http_headers import DATA_ONLY_HEADERS, RETRY_AFTER_SECONDS
from domain.settings import HttpSettings

LINGER_SECONDS = 2.0
"""How long input is still read (and dropped) after an error answer, before the connection is closed."""


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
    retry_cut_bodies: bool = False
    """Answer a body that did not arrive in time 503 + Retry-After (webhook senders retry it), not 408."""
    forwarded_allow_ips: str | None = None
    """Peers whose X-Forwarded-Proto/For uvicorn trusts (None: $FORWARDED_ALLOW_IPS or 127.0.0.1)."""


def _problem_response(status: int, reason: str, text: str, extra_headers: str = "") -> bytes:
    """The server's own answer, before any app saw the request: a JSON problem document (the receiver's
    contract: every answer is JSON) with the data-only security headers every app answer carries too."""
    body = json.dumps({"type": "about:blank", "title": reason, "status": status, "detail": text}).encode()
    security = "".join(f"{name.lower()}: {value}\r\n" for name, value in DATA_ONLY_HEADERS.items())
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/problem+json\r\n{security}"
        f"cache-control: no-store\r\n{extra_headers}content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with request, header-size and write bounds (see the module docstring)."""

    limits: HttpSettings  # these two are set on the subclass server_config() makes for each listener
    retry_cut_bodies: bool = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn types it
        super().connection_made(transport)
        self._request_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0  # of the request being read; -1 once its headers are complete
        self._received = False  # any byte of the current request
        self._discarding = False  # answered and closing: input is dropped
        self._arm_request_timer()

    # --- request deadline: from the first byte of a request to its last ---------------------------------

    def _arm_request_timer(self) -> None:
        if self._request_timer is None:
            self._request_timer = self.loop.call_later(self.limits.request_timeout_seconds, self._request_timed_out)

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _request_timed_out(self) -> None:
        self._request_timer = None
        if self.transport.is_closing() or self._discarding:
            return
        if self.flow.read_paused:  # the server is not reading (a busy app, pipelining): not the client's delay
            self._arm_request_timer()
            return
        if self._header_bytes >= 0:  # still reading headers: the request has no cycle yet
            if not self._received:
                self.transport.close()  # a connection that never sent anything gets no answer
                return
            self._answer_and_close(408, "Request Timeout", "request not received in time")
        elif self.cycle is not None and not self.cycle.response_complete:  # reading its body
            started = self.cycle.response_started
            self.cycle.disconnected = True  # the app's receive sees a disconnect, its late sends are dropped
            self.cycle.message_event.set()
            if started:
                self.transport.close()
            elif self.retry_cut_bodies:
                self._answer_and_close(
                    503,
                    "Service Unavailable",
                    "request body not received in time; retry",
                    f"retry-after: {RETRY_AFTER_SECONDS}\r\n",
                )
            else:
                self._answer_and_close(408, "Request Timeout", "request body not received in time")
        else:
            self.transport.close()

    def _answer_and_close(self, status: int, reason: str, text: str, extra_headers: str = "") -> None:
        """Answer and close with a lingering close: closing with unread input would reset the connection,
        which can destroy the answer before the client reads it, so input is read and dropped for a moment."""
        self._cancel_request_timer()
        self.transport.write(_problem_response(status, reason, text, extra_headers))
        self._discarding = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(min(LINGER_SECONDS, self.limits.request_timeout_seconds), self.transport.close)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self._header_bytes < 0:  # a body (armed already, unless it is a pipelined request's)
            self._arm_request_timer()
            super().data_received(data)
            return
        self._received = True
        self._arm_request_timer()
        room = self.limits.max_header_bytes - self._header_bytes
        self._header_bytes += len(data)
        if len(data) <= room:
            super().data_received(data)
            return
        super().data_received(data[:room])  # as far as the limit: the headers may end there
        if self.transport.is_closing():
            return
        if self._header_bytes > self.limits.max_header_bytes:  # not reset: still the same request's headers
            self._headers_too_large()
            return
        super().data_received(data[room:])

    def _headers_too_large(self) -> None:
        in_url = not self.headers  # no header parsed yet: the request line is what is too long
        status, reason = (414, "URI Too Long") if in_url else (431, "Request Header Fields Too Large")
        self._answer_and_close(status, reason, f"request line and headers exceed {self.limits.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._received = True

    def on_headers_complete(self) -> None:
        self._header_bytes = -1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._cancel_request_timer()
        self._header_bytes = 0
        self._received = False

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.cycle is not None and self.cycle.more_body:  # answered before the body was read (e.g. 413)
            self._arm_request_timer()

    def handle_websocket_upgrade(self) -> None:
        self._cancel_request_timer()  # the connection now belongs to the WebSocket protocol
        super().handle_websocket_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_request_timer()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().connection_lost(exc)

    # --- write deadline: a client that does not read its response -----------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.limits.write_timeout_seconds, self._write_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_timed_out(self) -> None:
        self._write_timer = None
        self.transport.abort()  # connection_lost() marks the cycle disconnected and wakes its writer


def server_config(listener: Listener, limits: HttpSettings | None = None, log_level: str = "info") -> uvicorn.Config:
    """The uvicorn configuration of one listener, with the bounds of ``limits``."""
    limits = limits or HttpSettings.model_construct()  # the defaults (settings are read once, by load_settings)
    protocol = type(
        "GuardedHttp", (GuardedHttpProtocol,), {"limits": limits, "retry_cut_bodies": listener.retry_cut_bodies}
    )
    return uvicorn.Config(
        listener.app,
        host=listener.host,
        port=listener.port,
        log_level=log_level,
        lifespan="on",
        proxy_headers=True,
        forwarded_allow_ips=listener.forwarded_allow_ips,
        server_header=False,
        http=protocol,
        timeout_keep_alive=limits.keep_alive_seconds,  # type: ignore[arg-type]  # typed int; a float works (call_later)
    )


def create_server(listener: Listener, limits: HttpSettings | None = None, log_level: str = "info") -> uvicorn.Server:
    """A uvicorn server for ``listener`` that leaves signal handling to its caller."""
    return _Server(server_config(listener, limits, log_level))


def serve(*listeners: Listener, log_level: str = "info", limits: HttpSettings | None = None) -> None:
    asyncio.run(_serve_all(listeners, log_level, limits))


async def _serve_all(listeners: tuple[Listener, ...], log_level: str, limits: HttpSettings | None) -> None:
    servers = [create_server(li, limits, log_level) for li in listeners]

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
