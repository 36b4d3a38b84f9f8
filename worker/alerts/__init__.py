"""The Alertmanager webhook area: payload parsing, authentication, persistence, and its route.

``payload`` parses Alertmanager v4 JSON, ``auth`` authenticates the caller, ``rules`` says what an
alert means (pure), ``store`` writes the receipts, ``intake`` stores them and applies them to
workloads in one transaction, ``routes`` is the thin HTTP layer.
"""

from worker.alerts.intake import AlertIntake
from worker.alerts.routes import STATE_KEY, webhook_routes

__all__ = ["STATE_KEY", "AlertIntake", "webhook_routes"]
