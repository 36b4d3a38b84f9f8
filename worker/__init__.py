"""The worker: polls sources into the inventory and rollups, and receives Alertmanager webhooks."""
