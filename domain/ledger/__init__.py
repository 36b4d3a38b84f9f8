"""The GPU-hours ledger (docs/ledger.md).

Write side, pure rules: window planning, attribution, MIG geometry; the worker (``worker/ledger.py``)
applies them to the database. Read side: the rate card (``rate_card``) and the monthly statements
(``statements``, ``statement_formats``), imported from their modules.
"""

from domain.ledger.attribution import GpuUse, Holder, Part, Split, attribute
from domain.ledger.mig import MigProfileError, compute_slices, profile_share
from domain.ledger.windows import (
    BACKFILLED,
    MIGRATED,
    POLLED,
    UNACCOUNTED,
    Window,
    bucket_pieces,
    bucket_start,
    plan_windows,
)

__all__ = [
    "BACKFILLED",
    "MIGRATED",
    "POLLED",
    "UNACCOUNTED",
    "GpuUse",
    "Holder",
    "MigProfileError",
    "Part",
    "Split",
    "Window",
    "attribute",
    "bucket_pieces",
    "bucket_start",
    "compute_slices",
    "plan_windows",
    "profile_share",
]
