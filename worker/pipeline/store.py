"""The signal pipeline's reads and writes besides the findings themselves (those are
:mod:`domain.pipeline.findings`): the inventory's known GPUs, pending alert receipts, LLM analyses."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, tuple_, update
from sqlalchemy import select as core_select  # typed for any number of columns (sqlmodel's: up to 4)
from sqlmodel import Session, col, select

from domain.database import session_scope
from domain.models import AlertReceipt, Cluster, Finding, Gpu, Hub, Node, utcnow
from domain.models.base import table_of
from domain.pipeline.correlation import FindingState
from domain.pipeline.findings import load_open_findings
from domain.pipeline.llm import Analysis
from domain.statuses import Health
from worker.pipeline.rules import ANALYSED_FIELDS, REPLAY_BATCH, ReceiptKey

log = logging.getLogger(__name__)

KnownGpu = tuple[str, str, str, int, str, datetime]
"""(cluster, node, uuid, index, model, last seen) of a GPU the inventory knows."""


def known_gpus(engine: Engine, source: str) -> list[KnownGpu]:
    """The GPUs of ``source`` the inventory knows and has not marked missing."""
    with Session(engine) as session:
        rows = session.execute(
            core_select(
                col(Cluster.name),
                col(Node.hostname),
                col(Gpu.uuid),
                col(Gpu.index),
                col(Gpu.model),
                col(Gpu.last_seen),
            )
            .join(Node, col(Node.id) == col(Gpu.node_id))
            .join(Cluster, col(Cluster.id) == col(Node.cluster_id))
            .join(Hub, col(Hub.id) == col(Cluster.hub_id))
            .where(col(Hub.name) == source, col(Gpu.health) != Health.MISSING.value)
        ).all()
    return [(cluster, node, uuid, index, model, last_seen) for cluster, node, uuid, index, model, last_seen in rows]


def open_findings(engine: Engine) -> list[FindingState]:
    with Session(engine) as session:
        return load_open_findings(session)


def resolved_findings(engine: Engine, ids: Sequence[int]) -> list[int]:
    """Which of the findings ``ids`` a person has resolved."""
    with Session(engine) as session:
        return [
            finding_id
            for finding_id in session.exec(
                select(Finding.id).where(col(Finding.id).in_(list(ids)), Finding.status == "resolved")
            ).all()
            if finding_id is not None
        ]


def pending_receipts(engine: Engine, *, older_than: datetime, limit: int) -> list[AlertReceipt]:
    """Receipts still marked ``signals_pending``, stored before ``older_than``, oldest first."""
    with Session(engine) as session:
        return list(
            session.exec(
                select(AlertReceipt)
                .where(col(AlertReceipt.signals_pending), col(AlertReceipt.received_at) < older_than)
                .order_by(col(AlertReceipt.received_at), col(AlertReceipt.id))
                .limit(limit)
            ).all()
        )


def unmark_receipts(session: Session, receipts: Sequence[ReceiptKey]) -> None:
    """Clear ``signals_pending`` of receipts whose signals the batch being saved holds."""
    table = table_of(AlertReceipt)
    key = tuple_(table.c.fingerprint, table.c.starts_at, table.c.status)
    for start in range(0, len(receipts), REPLAY_BATCH):
        chunk = receipts[start : start + REPLAY_BATCH]
        session.execute(update(table).where(key.in_(chunk)).values(signals_pending=False))


# --- LLM analyses ---------------------------------------------------------------------------------


def spent_on_analysis(engine: Engine, *, since: datetime) -> list[tuple[float, int]]:
    """(Unix time, tokens) of the analyses stored since ``since``: what counts against the LLM budget."""
    with Session(engine) as session:
        rows = session.execute(
            select(Finding.analysis_at, Finding.analysis_tokens).where(col(Finding.analysis_at) >= since)
        ).all()
    return [(at.timestamp(), tokens or 0) for at, tokens in rows]


def pending_analyses(engine: Engine, limit: int) -> list[int]:
    """Findings waiting for an analysis, escalated and recent first."""
    with Session(engine) as session:
        return [
            finding_id
            for finding_id in session.exec(
                select(Finding.id)
                .where(Finding.analysis_status == "pending")
                .order_by(col(Finding.escalated).desc(), col(Finding.last_seen).desc())
                .limit(limit)
            )
            if finding_id is not None
        ]


def analysis_facts(engine: Engine, finding_id: int) -> dict[str, Any] | None:
    """What the LLM is told of a finding; None when it is gone or no longer pending."""
    with session_scope(engine) as session:
        row = session.get(Finding, finding_id)
        if row is None or row.analysis_status != "pending":
            return None
        return row.model_dump(include=set(ANALYSED_FIELDS))


def save_analysis(engine: Engine, finding_id: int, analysis: Analysis) -> bool:
    """Store an answer; False when the finding is gone."""
    with session_scope(engine) as session:
        row = session.get(Finding, finding_id)
        if row is None:
            return False
        row.analysis = analysis.text
        row.analysis_model = analysis.model[:128]
        row.analysis_tokens = analysis.tokens
        row.analysis_at = utcnow()
        row.analysis_status = "done"
    return True


def give_up_analysis(engine: Engine, finding_id: int) -> None:
    """Mark a finding's analysis failed (logged, never raised)."""
    try:
        with session_scope(engine) as session:
            row = session.get(Finding, finding_id)
            if row is not None:
                row.analysis_status = "failed"
                row.analysis_at = utcnow()
    except Exception:
        log.exception("could not mark the analysis of finding %d failed", finding_id)
