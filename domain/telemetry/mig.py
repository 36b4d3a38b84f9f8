"""MIG profiles: how much of a GPU one instance holds."""

from __future__ import annotations

import re

MIG_COMPUTE_SLICES = 7
"""Compute slices of a MIG-capable GPU (A100, H100): ``1g.10gb`` is 1/7 of the GPU."""
_PROFILE = re.compile(r"^(\d+)g\.")


def slice_fraction(profile: str) -> float:
    """The share of a GPU a MIG profile holds: ``3g.40gb`` is 3/7. Unparsable profiles count 1/7."""
    match = _PROFILE.match(profile)
    compute = int(match.group(1)) if match else 1
    return min(compute, MIG_COMPUTE_SLICES) / MIG_COMPUTE_SLICES
