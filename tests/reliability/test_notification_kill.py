"""The worker killed with SIGKILL in the middle of sending a notice: after a restart it is delivered exactly once.

A real ``ai-telemetry worker`` polls the simulator's default fleet (its idle notebooks), the
pipeline opens idle findings, the notification job decides a notice into the outbox and starts
the SMTP conversation with a real SMTP server (aiosmtpd) that holds the recipient command. While
the worker waits there, the test kills it (the outbox row is committed and leased; nothing was
accepted by the server). A second worker, after the lease expires, sends it again; the inbox ends
with exactly one message per decided row, and the row says sent.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

from domain.models import NotificationOutbox
from domain.settings import PROJECT_ROOT
from tests import services
from tests.notification_support import Inbox, smtp_server
from tests.reliability.processes import start_worker, write_simulated_config

TOKEN = "notification-kill-test-token"
SMTP_TIMEOUT_SECONDS = 5
LEASE_SECONDS = 8 * SMTP_TIMEOUT_SECONDS
WAIT_SECONDS = 120.0


class HoldingInbox(Inbox):
    """Holds every RCPT command until released; what it accepts before that counts as delivered."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = threading.Event()
        self.holding.set()
        self.rcpt_seen = threading.Event()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        self.rcpt_seen.set()
        while self.holding.is_set():  # noqa: ASYNC110 - released from the test's thread, not this loop's
            await asyncio.sleep(0.05)
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def database_url(postgres_server: str) -> Iterator[str]:
    with services.fresh_database(postgres_server) as url:
        yield url


def rows(url: str) -> list[NotificationOutbox]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return [
                NotificationOutbox.model_validate(dict(r._mapping))
                for r in connection.execute(select(NotificationOutbox.__table__)).all()
            ]
    except Exception:  # the worker has not created the schema yet
        return []
    finally:
        engine.dispose()


def wait_until(condition, what: str, worker=None) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if worker is not None and not worker.alive():
            raise AssertionError(f"the worker exited on its own while waiting for {what}:\n{worker.log_text()}")
        if time.monotonic() > deadline:
            log = worker.log_text() if worker is not None else ""
            raise AssertionError(f"gave up waiting for {what}\n{log}")
        time.sleep(0.1)


def test_worker_killed_mid_send_delivers_exactly_once(tmp_path: Path, database_url: str, reliability) -> None:
    config = write_simulated_config(
        tmp_path / "config.toml", PROJECT_ROOT / "simulator" / "default_fleet.toml", poll_interval_seconds=5
    )
    with config.open("a", encoding="utf-8") as out:
        out.write("\n[notifications.default]\ngrace_minutes = 0\nreminder_interval_minutes = 1440\n")
    inbox = HoldingInbox()
    with smtp_server(inbox) as (port, _):
        env = {
            "AI_TELEMETRY_PIPELINE_PERSISTENCE_POLLS": "1",
            "AI_TELEMETRY_NOTIFY_ENABLED": "true",
            "AI_TELEMETRY_NOTIFY_INTERVAL_SECONDS": "1",
            "AI_TELEMETRY_NOTIFY_SMTP_HOST": "127.0.0.1",
            "AI_TELEMETRY_NOTIFY_SMTP_PORT": str(port),
            "AI_TELEMETRY_NOTIFY_SMTP_STARTTLS": "false",
            "AI_TELEMETRY_NOTIFY_SMTP_TIMEOUT_SECONDS": str(SMTP_TIMEOUT_SECONDS),
            "AI_TELEMETRY_NOTIFY_FALLBACK_EMAILS": "gpu-team@example.test",
            "AI_TELEMETRY_NOTIFY_LEASE_SECONDS": str(LEASE_SECONDS),
            "AI_TELEMETRY_NOTIFY_BATCH_SIZE": "1",
        }
        first = start_worker(tmp_path, database_url, config, token=TOKEN, env=env, name="worker-1")
        try:
            wait_until(inbox.rcpt_seen.is_set, "the first SMTP recipient command", first)
            first.kill()
            held = [r for r in rows(database_url) if r.lease_owner is not None]
            assert len(held) == 1 and held[0].status == "pending" and held[0].attempts == 0
        finally:
            first.stop()
        inbox.holding.clear()  # the killed worker's connection is gone: nothing of it is accepted
        decided = rows(database_url)
        assert decided and all(r.status == "pending" for r in decided)
        assert inbox.messages == []
        second = start_worker(tmp_path, database_url, config, token=TOKEN, env=env, name="worker-2")
        try:
            wait_until(
                lambda: (
                    (found := rows(database_url))
                    and all(r.status == "sent" for r in found)
                    and len(found) >= len(decided)
                ),
                "every decided notice sent",
                second,
            )
        finally:
            second.stop()
    final = rows(database_url)
    keys = [r.idempotency_key for r in final if r.channel == "email"]
    assert len(keys) == len(set(keys))
    delivered_ids = [m["Message-ID"] for _rcpts, m in inbox.messages]
    assert len(delivered_ids) == len(set(delivered_ids)) == len(keys)
    for rcpts, message in inbox.messages:
        assert rcpts == ["gpu-team@example.test"]
        assert "idle" in message["Subject"]
    killed = next(r for r in final if r.id == held[0].id)
    assert killed.status == "sent" and killed.attempts == 1
    reliability.record(
        area="Faults",
        tried="worker SIGKILLed while its SMTP send of a decided notice waited on the server",
        held=f"{len(keys)} notice e-mail(s) delivered exactly once after restart; the interrupted one after its lease",
        messages=len(keys),
    )
