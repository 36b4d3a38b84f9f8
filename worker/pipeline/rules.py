"""The worker pipeline's pure parts: its timings and limits, receipt identities, and what a stored
alert receipt and a batch's counters mean (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from domain.pipeline.signals import Signal, signals_from_alert

RETENTION_EVERY = timedelta(minutes=10)
MAX_ANALYSIS_ATTEMPTS = 3
REPLAY_AFTER = timedelta(minutes=1)
"""A receipt still pending this long was left by a worker that died before saving its batch (a live
worker takes its receipts in within moments)."""
REPLAY_EVERY = timedelta(minutes=1)
REPLAY_BATCH = 500
"""Receipts replayed at most per run."""
ANALYSED_FIELDS = ("kind", "subject", "severity", "level", "summary", "first_seen", "last_seen", "count", "evidence")
"""The fields of a finding the LLM is told."""

ReceiptKey = tuple[str, datetime, str]
"""(fingerprint, startsAt, status): an alert receipt's identity."""


@dataclass(frozen=True)
class SignalOutcome:
    """What one batch did (for logs and tests)."""

    raw: int
    kept: int
    changed: int
    saved: bool


def receipt_signals(payload: Mapping[str, Any], status: str, starts_at: datetime) -> list[Signal]:
    """The signals of a stored receipt (its ``payload["alert"]`` as the webhook sent it)."""
    alert = payload.get("alert") or {}
    return signals_from_alert(alert.get("labels") or {}, alert.get("annotations"), status, starts_at)


def counter_deltas(totals: Mapping[str, int], reported: Mapping[str, int]) -> dict[str, int]:
    """What the counters grew by since ``reported``; ``findings.open`` is a level, recomputed by readers."""
    deltas = {name: value - reported.get(name, 0) for name, value in totals.items()}
    deltas.pop("findings.open", None)
    return deltas
