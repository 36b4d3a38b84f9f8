"""The answer of ``/readyz``, in the same words on the site and on the worker's receiver.

``ready`` (200): every check is ``ok``. ``degraded`` (200): a check that does not decide readiness
failed (the site's Keycloak: every replica shares it, so failing readiness would empty the load
balancer at once). ``unavailable`` (503): a required check failed (the database), with the reason.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

OK = "ok"
READY = "ready"
DEGRADED = "degraded"
UNAVAILABLE = "unavailable"


def readiness(checks: Mapping[str, str], *, required: Collection[str] = ("database",)) -> tuple[int, dict[str, Any]]:
    """The status code and JSON body of a readiness probe from named checks (each ``ok`` or what is wrong)."""
    failed = [name for name in required if checks.get(name) != OK]
    if failed:
        reason = "; ".join(f"{name} {checks.get(name, 'unchecked')}" for name in failed)
        return 503, {"status": UNAVAILABLE, "reason": reason, "checks": dict(checks)}
    status = READY if all(value == OK for value in checks.values()) else DEGRADED
    return 200, {"status": status, "checks": dict(checks)}
