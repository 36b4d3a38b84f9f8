"""The shared domain of AI Telemetry: settings, models, database and authorization.

The worker and the site both import this package; it imports neither of them.
"""
