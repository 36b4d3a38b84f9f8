"""From an authenticated webhook body to durable receipts and session changes, in one transaction.

``AlertIntake`` is the whole service behind the route: authenticate, parse, store every alert
receipt (``INSERT .. ON CONFLICT DO NOTHING`` on fingerprint + startsAt + status, so a redelivery is
a no-op), apply the new receipts to workload sessions, commit, and only then emit spans for the
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

import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
from pydantic import SecretStr
from sqlalchemy import Engine, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from domain.access import NotAuthenticated
from domain.access.jwt_verifier import JwtVerifier
from domain.database import session_scope
from domain.models import AlertReceipt, utcnow
from domain.pipeline.signals import Signal, signals_from_alert
from domain.settings import Settings
from worker.alerts.payload import AlertRecord, ParsedWebhook, parse_webhook
from worker.bulk import insert_rows, is_postgresql, naive_utc
from worker.metrics import WorkerMetrics
from worker.signals import SignalProcessor
from worker.tracing import NullSessionTracer, SessionTracer
from worker.workloads.jobs import apply_alerts
from worker.workloads.rules import AlertObservation, WorkloadChanges, WorkloadKey

log = logging.getLogger(__name__)

USAGE_ALERTS = frozenset({"GPUWorkloadStarted"})
XID_ALERTS = frozenset({"GPUXidError"})
USAGE_EVENT = "gpu-usage"
XID_EVENT = "gpu-xid"
ATTEMPTS = 3
"""Transactions retried after losing a race for the one open session of a workload."""
_CHUNK = 500
"""Keys per IN list when counting receipts."""
RECEIPT_COLUMNS = ("fingerprint", "starts_at", "status", "alertname", "payload", "received_at", "signals_pending")
RECEIPT_KEY = ("fingerprint", "starts_at", "status")


class PersistenceFailed(Exception):
    """The receipts could not be stored; nothing was written."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who posted: the static token, or a Keycloak client (its ``azp``)."""

    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class Receipt:
    """What one accepted webhook did."""

    received: int
    new: int
    duplicates: int
    sessions_opened: int
    sessions_closed: int


class WebhookAuthenticator:
    """A bearer token: the configured static token, or a Keycloak JWT for our audience."""

    def __init__(self, static_token: SecretStr | None, verifier: JwtVerifier | None) -> None:
        self._static = static_token.get_secret_value().encode() if static_token else None
        self.verifier = verifier

    @property
    def configured(self) -> bool:
        return self._static is not None or self.verifier is not None

    def authenticate(self, authorization: str | None) -> Caller:
        if not self.configured:
            raise NotAuthenticated("no webhook credentials are configured on the worker")
        if authorization is None:
            raise NotAuthenticated("missing Authorization header")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise NotAuthenticated("Authorization header must be 'Bearer <token>'")
        if self._static is not None and hmac.compare_digest(token.encode(), self._static):
            return Caller("static-token", "static token")
        if self.verifier is not None and token.count(".") == 2:
            verified = self.verifier.verify(token)  # raises NotAuthenticated / Forbidden / AuthorizationUnavailable
            return Caller("keycloak", verified.client_id or verified.subject or "unknown client")
        raise NotAuthenticated("invalid token")

    def close(self) -> None:
        if self.verifier is not None:
            self.verifier.close()


def build_authenticator(settings: Settings) -> WebhookAuthenticator:
    verifier = None
    if settings.keycloak.url:
        verifier = JwtVerifier.for_keycloak(
            settings.keycloak.url,
            settings.keycloak.realm,
            settings.receiver.jwt_audience,
            cache_seconds=settings.keycloak.jwks_cache_seconds,
        )
    return WebhookAuthenticator(settings.receiver.webhook_token, verifier)


# --- label normalisation ----------------------------------------------------------------------------


def _first(labels: dict[str, str], *names: str) -> str | None:
    for name in names:
        value = labels.get(name)
        if value:
            return value
    return None


def observe(record: AlertRecord, default_cluster: str | None) -> AlertObservation | None:
    """What a receipt says about a workload, or None when it is not a GPU alert the sessions use.

    Pod labels are taken in the three styles the collector meets (OpenShift's ``exported_*``,
    plain, legacy), in that order, so rules that do not normalise them still work.
    """
    labels = record.labels
    event = labels.get("event")
    if event == USAGE_EVENT or record.alertname in USAGE_ALERTS:
        kind = "usage"
    elif event == XID_EVENT or record.alertname in XID_ALERTS:
        kind = "xid"
    else:
        return None
    cluster = labels.get("cluster") or default_cluster
    if not cluster:
        log.debug("alert %s has no cluster label and no default cluster is set", record.fingerprint)
        return None
    mig = _first(labels, "GPU_I_ID")
    key = WorkloadKey(
        cluster=cluster,
        namespace=_first(labels, "exported_namespace", "namespace", "pod_namespace") or "",
        pod=_first(labels, "exported_pod", "pod", "pod_name") or "",
        gpu_uuid=labels.get("UUID") or None,
        mig_instance_id=int(mig) if mig and mig.isdigit() and len(mig) < 9 else None,
    )
    if kind == "usage" and not key.fits():
        log.warning("alert %s names no usable workload (cluster/namespace/pod); no session", record.fingerprint)
        return None
    code = labels.get("err_code")
    return AlertObservation(
        kind=kind,
        status=record.status,
        key=key,
        starts_at=record.starts_at,
        ends_at=record.ends_at,
        fingerprint=record.fingerprint,
        container=_first(labels, "exported_container", "container", "container_name"),
        node=_first(labels, "Hostname", "node"),
        gpu_model=labels.get("modelName") or None,
        summary=record.annotations.get("summary"),
        xid_code=int(code) if code and code.isdigit() and len(code) < 9 else None,
        xid_message=labels.get("err_msg"),
    )


def pipeline_signals(records: Sequence[AlertRecord]) -> list[Signal]:
    """The signal pipeline's view of new alerts. GPU-usage alerts are workload sessions, not faults."""
    signals: list[Signal] = []
    for record in records:
        if record.labels.get("event") == USAGE_EVENT or record.alertname in USAGE_ALERTS:
            continue
        signals.extend(signals_from_alert(record.labels, record.annotations, record.status, record.starts_at))
    return signals


# --- persistence ------------------------------------------------------------------------------------


def _insert(engine: Engine) -> Any:
    return pg_insert if engine.dialect.name == "postgresql" else sqlite_insert


def has_pipeline_signals(record: AlertRecord) -> bool:
    """Whether the signal pipeline takes the alert in (everything but GPU-usage events)."""
    return bool(pipeline_signals([record]))


def store_receipts(
    db: Session,
    records: Sequence[AlertRecord],
    received_at: datetime,
    *,
    signals_pending: Callable[[AlertRecord], bool] | None = None,
) -> list[AlertRecord]:
    """Insert a receipt per alert; returns the alerts that were new (not a redelivery).

    ``signals_pending``: which receipts to mark as awaiting the signal pipeline (none if omitted).
    """
    unique: dict[tuple[str, datetime, str], AlertRecord] = {}
    for record in records:
        unique.setdefault(record.receipt_key, record)
    if not unique:
        return []
    pending = {key: bool(signals_pending and signals_pending(r)) for key, r in unique.items()}
    table = AlertReceipt.__table__  # type: ignore[attr-defined]
    if is_postgresql(db):
        rows_json = [
            {
                "fingerprint": r.fingerprint,
                "starts_at": naive_utc(r.starts_at),
                "status": r.status,
                "alertname": r.alertname,
                "payload": r.payload,
                "received_at": naive_utc(received_at),
                "signals_pending": pending[key],
            }
            for key, r in unique.items()
        ]
        returned = insert_rows(
            db,
            table,
            rows_json,
            columns=RECEIPT_COLUMNS,
            returning=RECEIPT_KEY,
            conflict="ON CONFLICT (fingerprint, starts_at, status) DO NOTHING",
        )
        inserted = {(f, s.replace(tzinfo=UTC), st) for f, s, st in returned}
        return [record for key, record in unique.items() if key in inserted]
    insert = _insert(db.get_bind())  # type: ignore[arg-type]
    rows = [
        {
            "fingerprint": r.fingerprint,
            "starts_at": r.starts_at,
            "status": r.status,
            "alertname": r.alertname,
            "payload": r.payload,
            "received_at": received_at,
            "signals_pending": pending[key],
        }
        for key, r in unique.items()
    ]
    # one statement, compiled once; SQLAlchemy batches the rows into multi-row INSERTs
    stmt = (
        insert(table)
        .on_conflict_do_nothing(index_elements=["fingerprint", "starts_at", "status"])
        .returning(table.c.fingerprint, table.c.starts_at, table.c.status)
    )
    inserted = {(f, s, st) for f, s, st in db.execute(stmt, rows)}
    return [record for key, record in unique.items() if key in inserted]


def count_receipts(db: Session, keys: Sequence[tuple[str, datetime, str]]) -> int:
    """How many of ``keys`` are stored (for tests and the benchmark's tally)."""
    found = 0
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        found += len(
            db.exec(
                select(AlertReceipt.id).where(
                    tuple_(col(AlertReceipt.fingerprint), col(AlertReceipt.starts_at), col(AlertReceipt.status)).in_(
                        chunk
                    )
                )
            ).all()
        )
    return found


class AlertIntake:
    """The webhook service: authentication, parsing, persistence, sessions, spans."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        metrics: WorkerMetrics,
        tracer: SessionTracer | None = None,
        authenticator: WebhookAuthenticator | None = None,
        signals: SignalProcessor | None = None,
    ) -> None:
        self.settings = settings
        self.signals = signals
        """The signal pipeline, fed the new alerts that are not GPU-usage events (None: disabled)."""
        self.engine = engine
        self.metrics = metrics
        self.tracer: SessionTracer = tracer or NullSessionTracer()
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
            except IntegrityError as exc:  # lost a race for a workload's open session: try again
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
            sessions_opened=changes.opened,
            sessions_closed=len(changes.closed),
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
