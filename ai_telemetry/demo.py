"""The embedded default in one process: SQLite, the simulated fleet, local auth, worker and site."""

from __future__ import annotations

import logging
import secrets
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from domain.access.demo import DEMO_IDENTITIES, seed_demo_identities
from domain.models import utcnow
from domain.settings import PROJECT_ROOT, Settings
from worker.metrics import WorkerMetrics
from worker.pipeline.processor import SignalProcessor
from worker.polling import SourcePoller
from worker.sources import Source

log = logging.getLogger(__name__)
SECRET_FILE = PROJECT_ROOT / "var" / "session-secret"
WEBHOOK_TOKEN_FILE = PROJECT_ROOT / "var" / "webhook-token"


def demo_secret(path: Path = SECRET_FILE) -> str:
    """The demo's secrets (cookie key, webhook token): generated once and kept under var/, so a restart
    keeps people logged in and a local Alertmanager's token file valid."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(secret)
    return secret


def backfill(
    settings: Settings,
    engine: Engine,
    sources: list[Source],
    hours: float,
    *,
    signals: SignalProcessor | None = None,
    metrics: WorkerMetrics | None = None,
    now: datetime | None = None,
) -> None:
    """Fill the simulated fleet's history so charts and GPU-hours have it at once, through the ledger.

    One poll per source, whose planner back-fills from the source's history (docs/ledger.md): on a
    new database the last ``hours``; on an existing one only the time since its last accounted
    window (a restart never counts an hour twice), as far back as ``hours`` reach, and the rest of a
    longer gap is recorded as unaccounted. The chunks are one rollup bucket each, so sessions and, with
    ``signals``, findings get the same history a live worker would have left.
    """
    if hours <= 0:
        return
    scheduler = settings.scheduler.model_copy(
        update={
            "backfill_chunk_seconds": settings.scheduler.rollup_bucket_seconds,
            "backfill_horizon_seconds": hours * 3600,
        }
    )
    now = now or utcnow()
    for source in sources:
        poller = SourcePoller(
            source, engine, scheduler, signals=signals, metrics=metrics, first_lookback_seconds=hours * 3600
        )
        outcome = poller.poll_once(now=now, force=True)
        log.info("demo history of %s: %s, %d window(s)", source.name, outcome.outcome, len(outcome.windows))


def seed(engine: Engine) -> None:
    for problem in seed_demo_identities(engine):
        log.warning("demo identities: %s", problem)


def banner(settings: Settings) -> str:
    url = f"http://{settings.site.host}:{settings.site.port}"
    logins = "\n".join(
        f"    {i.username:<6} / {i.password:<11} sees {'everything' if i.is_admin else '/'.join(i.project or ())}"
        for i in DEMO_IDENTITIES
    )
    return (
        f"\nAI Telemetry demo is running.\n\n  Site:     {url}\n"
        f"  Receiver: http://{settings.receiver.host}:{settings.receiver.port}/webhooks/alertmanager"
        f" (bearer token in {WEBHOOK_TOKEN_FILE})\n"
        f"  Database: {settings.database.display_url}\n\n  Demo logins (user / password):\n{logins}\n\n"
        f"  API token: ai-telemetry token create --user alice\n  Stop with Ctrl-C.\n"
    )
