"""The GPU-hours ledger's pure rules (docs/ledger.md): window planning, attribution, MIG geometry.

The worker (``worker/ledger.py``) applies them to the database; nothing here does I/O.
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
