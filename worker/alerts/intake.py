"""From an authenticated webhook body to durable receipts and session changes, in one transaction.

``AlertIntake`` is the whole service behind the route (:mod:`~worker.alerts.routes`): authenticate
(:mod:`~worker.alerts.auth`), parse (:mod:`~worker.alerts.payload`), store every alert receipt
(:mod:`~worker.alerts.store`: ``INSERT .. ON CONFLICT DO NOTHING`` on fingerprint + startsAt +
status, so a redelivery is a no-op), apply the new receipts to workloads (what an alert
means: :mod:`~worker.alerts.rules`), commit, and only then emit spans for the
sessions that closed and hand the new non-usage alerts (XID errors and any other rule's alerts) to
the signal pipeline, where they meet the polls' signals about the same faults. Any failure before
the commit rolls everything back: nothing is half-written, and the caller answers 503 so
Alertmanager retries. The pipeline saves what it made of the signals in a transaction of its own;
until then their receipts stay marked ``signals_pending``, so a worker killed between the two
commits loses nothing: a worker replays them (a redelivery would not, being a duplicate).

Exceptions the route maps to responses::

    InvalidPayload (payload.py)            → 400, naming the field
    NotAuthenticated / Forbidden           → 401 / 403   (domain.access)
    AuthorizationUnavailable               → 503   (the realm's keys cannot be fetched)
    PersistenceFailed                      → 503   (the database did not take the receipts)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from domain.database import session_scope
from domain.models import utcnow
from domain.settings import Settings
from worker.alerts.auth import Caller, WebhookAuthenticator, build_authenticator
from worker.alerts.payload import ParsedWebhook, parse_webhook
from worker.alerts.rules import has_pipeline_signals, observe, pipeline_signals
from worker.alerts.store import store_receipts
from worker.metrics import WorkerMetrics
from worker.pipeline.processor import SignalProcessor
from worker.tracing import NullWorkloadTracer, WorkloadTracer
from worker.workloads.jobs import apply_alerts
from worker.workloads.rules import WorkloadChanges

log = logging.getLogger(__name__)

ATTEMPTS = 3
"""Transactions retried after losing a race for the one open row of a workload."""


class PersistenceFailed(Exception):
    """The receipts could not be stored; nothing was written."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """What one accepted webhook did."""

    received: int
    new: int
    duplicates: int
    workloads_opened: int
    workloads_closed: int


class AlertIntake:
    """The webhook service: authentication, parsing, persistence, sessions, spans."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        metrics: WorkerMetrics,
        tracer: WorkloadTracer | None = None,
        authenticator: WebhookAuthenticator | None = None,
        signals: SignalProcessor | None = None,
    ) -> None:
        self.settings = settings
        self.signals = signals
        """The signal pipeline, fed the new alerts that are not GPU-usage events (None: disabled)."""
        self.engine = engine
        self.metrics = metrics
        self.tracer: WorkloadTracer = tracer or NullWorkloadTracer()
        self.authenticator = authenticator or build_authenticator(settings)
        self.max_body_bytes = settings.receiver.max_body_bytes
        self.persist_limiter = anyio.CapacityLimiter(settings.database.pool_size)
        """Webhooks persisted at once (each on a thread of its own), at most the database pool's size: beyond it
        threads would only wait for a connection, and every runnable thread takes its share of the GIL from the
        pollers, which then overrun their interval under a heavy webhook load."""
        if not self.authenticator.configured:
            log.warning(
                "no webhook credentials configured (AI_TELEMETRY_RECEIVER_WEBHOOK_TOKEN or AI_TELEMETRY_KEYCLOAK_URL): "
                "POST /webhooks/alertmanager refuses every request"
            )

    def authenticate(self, authorization: str | None) -> Caller:
        return self.authenticator.authenticate(authorization)

    def parse(self, body: bytes) -> ParsedWebhook:
        return parse_webhook(body)

    def persist(self, parsed: ParsedWebhook) -> Receipt:
        """Store the receipts and apply them to sessions in one transaction; spans after the commit."""
        default_cluster = self.settings.receiver.default_cluster
        last_error: Exception | None = None
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with session_scope(self.engine) as db:
                    new = store_receipts(
                        db,
                        parsed.alerts,
                        utcnow(),
                        signals_pending=has_pipeline_signals if self.signals is not None else None,
                    )
                    observations = [o for o in (observe(r, default_cluster) for r in new) if o is not None]
                    changes = apply_alerts(db, observations) if observations else WorkloadChanges()
            except IntegrityError as exc:  # lost a race for a workload's open row: try again
                last_error = exc
                log.info("webhook transaction conflicted (attempt %d of %d); retrying", attempt, ATTEMPTS)
                continue
            except Exception as exc:
                log.exception("could not persist a webhook of %d alert(s)", len(parsed.alerts))
                raise PersistenceFailed(f"{type(exc).__name__}") from exc
            break
        else:
            raise PersistenceFailed(f"conflicting writes: {type(last_error).__name__}") from last_error
        receipt = Receipt(
            received=len(parsed.alerts),
            new=len(new),
            duplicates=len(parsed.alerts) - len(new),
            workloads_opened=changes.opened,
            workloads_closed=len(changes.closed),
        )
        self.metrics.record_webhook_alerts(new=receipt.new, duplicates=receipt.duplicates)
        self.metrics.record_workloads("alert", opened=changes.opened, closed=len(changes.closed))
        if parsed.webhook.truncated_alerts:
            log.warning(
                "Alertmanager truncated %d alert(s) of group %s (max_alerts); they were not received",
                parsed.webhook.truncated_alerts,
                parsed.webhook.group_key,
            )
            self.metrics.truncated_alerts.inc(parsed.webhook.truncated_alerts)
        if changes.closed:
            self.tracer.emit(changes.closed)
        if self.signals is not None and new:
            for_pipeline = [r for r in new if has_pipeline_signals(r)]
            if for_pipeline:  # never raises; the receipts are stored, marked pending until this is saved
                self.signals.process_alert(
                    pipeline_signals(for_pipeline), receipts=[r.receipt_key for r in for_pipeline]
                )
        return receipt

    def close(self) -> None:
        self.authenticator.close()
