"""Test helpers for notifications: a real SMTP server on loopback (aiosmtpd) and idle findings in the database."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import Engine
from sqlmodel import select

from domain.database import session_scope
from domain.models import Cluster, Finding, Hub, ResearchProject
from domain.pipeline.signals import IDLE_ALLOCATED
from tests.services import free_port


@dataclass
class Inbox:
    """What the SMTP server accepted; ``refuse`` makes it answer DATA with that reply instead."""

    messages: list[tuple[list[str], Message]] = field(default_factory=list)
    refuse: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            return self.refuse
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server(inbox: Inbox | None = None) -> Iterator[tuple[int, Inbox]]:
    """aiosmtpd on 127.0.0.1 (plain SMTP; STARTTLS needs a certificate, so the tests turn it off)."""
    inbox = inbox or Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


@contextmanager
def stalled_smtp_server() -> Iterator[int]:
    """Accepts connections and never says a word: the client must give up on its own timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def add_idle_finding(
    engine: Engine,
    *,
    namespace: str = "ml-team",
    pod: str = "notebook-0",
    cluster: str = "c1",
    idle_since: datetime,
    last_seen: datetime,
    utilisation: float = 0.0,
    project_id: int | None = None,
) -> int:
    """An open idle-while-allocated finding for one pod, as the pipeline writes it; returns the project id."""
    with session_scope(engine) as session:
        if project_id is None:
            hub = session.exec(select(Hub).where(Hub.name == "h")).one_or_none() or Hub(name="h", kind="simulated")
            session.add(hub)
            session.flush()
            found = session.exec(select(Cluster).where(Cluster.name == cluster)).one_or_none()
            if found is None:
                found = Cluster(name=cluster, hub_id=hub.id)
                session.add(found)
                session.flush()
            project = session.exec(
                select(ResearchProject).where(
                    ResearchProject.cluster_id == found.id, ResearchProject.namespace == namespace
                )
            ).one_or_none()
            if project is None:
                project = ResearchProject(
                    cluster_id=found.id,
                    namespace=namespace,
                    display_name=namespace,
                    first_seen=idle_since,
                    last_seen=last_seen,
                )
                session.add(project)
                session.flush()
            project_id = project.id
        session.add(
            Finding(
                kind=IDLE_ALLOCATED,
                subject=f"gpu:GPU-{namespace}-{pod}",
                severity="warning",
                first_seen=idle_since,
                last_seen=last_seen,
                level="gpu",
                project_id=project_id,
                waste_gpu_hours=(last_seen - idle_since) / timedelta(hours=1),
                evidence={
                    "level": "gpu",
                    "labels": {"cluster": cluster, "namespace": namespace, "pod": pod, "node": "node-1"},
                    "members": [{"subject": f"gpu:GPU-{namespace}-{pod}", "value": utilisation, "gpu": "0"}],
                },
            )
        )
    assert project_id is not None
    return project_id


@dataclass
class HookServer:
    """A loopback HTTP endpoint standing where a chat server's incoming webhook would be."""

    url: str
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    status: int = 200


@contextmanager
def webhook_server() -> Iterator[HookServer]:
    port = free_port()
    hook = HookServer(f"http://127.0.0.1:{port}/hooks/idle")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            hook.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(hook.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
