"""The ``ai-telemetry`` subcommands, one module per group; :mod:`ai_telemetry.cli` composes them."""
