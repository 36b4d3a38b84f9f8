"""The ``ai-telemetry`` command: composes the worker and the site into processes (the only place both meet)."""
