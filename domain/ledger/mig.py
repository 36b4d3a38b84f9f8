"""MIG geometry: the share of a GPU a MIG profile holds, by compute slices of the GPU's model.

A MIG profile ``Ng.XXgb`` holds ``N`` of the GPU's compute slices; its share of the GPU (for
GPU-seconds, energy and cost) is ``N / compute slices of the model``:

===========  ==============  =============================================================
model        compute slices  profiles (compute slices)
===========  ==============  =============================================================
A100 40GB    7               1g.5gb (1), 1g.10gb (1), 2g.10gb (2), 3g.20gb (3), 4g.20gb (4),
                             7g.40gb (7)
A100 80GB    7               1g.10gb (1), 1g.20gb (1), 2g.20gb (2), 3g.40gb (3), 4g.40gb (4),
                             7g.80gb (7)
A30          4               1g.6gb (1), 2g.12gb (2), 4g.24gb (4)
H100         7               1g.10gb (1), 1g.20gb (1), 2g.20gb (2), 3g.40gb (3), 4g.40gb (4),
                             7g.80gb (7)
H200         7               1g.18gb (1), 1g.35gb (1), 2g.35gb (2), 3g.71gb (3), 4g.71gb (4),
                             7g.141gb (7)
B200         7               1g.23gb (1), 1g.45gb (1), 2g.45gb (2), 3g.90gb (3), 4g.90gb (4),
                             7g.180gb (7)
===========  ==============  =============================================================

``+me`` variants (``1g.10gb+me``) hold the same compute slices as their base profile. A model not in
the table is taken to have 7 compute slices (every MIG-capable model but the A30 has 7).
"""

from __future__ import annotations

import re

DEFAULT_COMPUTE_SLICES = 7
COMPUTE_SLICES = {"A30": 4, "A100": 7, "H100": 7, "H200": 7, "B200": 7, "GH200": 7, "GB200": 7}
"""Compute slices per MIG-capable model family, matched against the model name (``NVIDIA A30``)."""
_FAMILY = re.compile(r"\b(GH200|GB200|A100|A30|H100|H200|B200)\b")
_PROFILE = re.compile(r"^(\d+)g\.\d+gb(\+me)?$")


class MigProfileError(ValueError):
    """A MIG profile name that is not ``Ng.XXgb``, or holds more compute slices than its GPU has."""


def compute_slices(model: str) -> int:
    """Compute slices of a GPU model in MIG mode (7 unless the model is known to have fewer)."""
    match = _FAMILY.search(model.upper())
    return COMPUTE_SLICES.get(match.group(1), DEFAULT_COMPUTE_SLICES) if match else DEFAULT_COMPUTE_SLICES


def profile_slices(profile: str) -> int:
    """Compute slices a profile holds: the ``N`` of ``Ng.XXgb``."""
    match = _PROFILE.match(profile.strip().lower())
    if match is None:
        raise MigProfileError(f"MIG profile {profile!r} is not of the form '<N>g.<M>gb'")
    return int(match.group(1))


def profile_share(model: str, profile: str) -> float:
    """The share of the GPU a slice of ``profile`` holds on ``model``: ``3g.40gb`` on an A100 is 3/7."""
    total = compute_slices(model)
    held = profile_slices(profile)
    if not 0 < held <= total:
        raise MigProfileError(f"MIG profile {profile!r} holds {held} compute slices; a {model} has {total}")
    return held / total


_LEADING_SLICES = re.compile(r"^(\d+)g\.")


def slice_fraction(profile: str, model: str = "") -> float:
    """The share of a GPU a MIG slice holds, never failing: ``3g.40gb`` on an A100 is 3/7, ``2g.12gb``
    on an A30 2/4. Where :func:`profile_share` refuses a profile, it counts one compute slice (capped
    at the model's). The inventory's allocation shares, the workloads' energy and the pipeline's
    ``gpus`` label use it, so they agree with the ledger on every model it knows.
    """
    total = compute_slices(model)
    match = _LEADING_SLICES.match(profile)
    held = int(match.group(1)) if match else 1
    return min(max(held, 1), total) / total


PROFILES: dict[str, tuple[str, ...]] = {
    "A100-40GB": ("1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"),
    "A100-80GB": ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "A30": ("1g.6gb", "2g.12gb", "4g.24gb"),
    "H100": ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "H200": ("1g.18gb", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"),
    "B200": ("1g.23gb", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"),
}
"""The MIG profiles of each model (the table above), smallest first; ``GH200``/``GB200`` as H100/B200."""
_PROFILE_FAMILY = {"GH200": "H100", "GB200": "B200"}


def mig_profiles(model: str) -> tuple[str, ...]:
    """The MIG profiles ``model`` can be cut into (empty for a model without MIG)."""
    match = _FAMILY.search(model.upper())
    if match is None:
        return ()
    family = _PROFILE_FAMILY.get(match.group(1), match.group(1))
    if family == "A100":
        family = "A100-40GB" if "40GB" in model.upper() else "A100-80GB"
    return PROFILES.get(family, ())


def profile_memory_mib(profile: str) -> float:
    """A profile's nominal framebuffer in MiB: the ``M`` of ``Ng.Mgb`` x 1024."""
    match = re.match(r"^\d+g\.(\d+)gb", profile.strip().lower())
    if match is None:
        raise MigProfileError(f"MIG profile {profile!r} is not of the form '<N>g.<M>gb'")
    return int(match.group(1)) * 1024.0
