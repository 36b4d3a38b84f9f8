"""The Alertmanager webhook area: payload parsing, authentication, persistence, and its route.

``payload`` parses Alertmanager v4 JSON, ``intake`` authenticates, stores receipts and applies
them to workload sessions in one transaction, ``routes`` is the thin HTTP layer.
"""

from worker.alerts.intake import AlertIntake
from worker.alerts.routes import STATE_KEY, webhook_routes

__all__ = ["STATE_KEY", "AlertIntake", "webhook_routes"]
