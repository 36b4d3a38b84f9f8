"""``python -m benchmarks [name ...]``: run every benchmark (or the named ones) and print the figures."""

from __future__ import annotations

import importlib
import logging
import sys

BENCHMARKS = [
    "foundation",
    "collector",
    "site_scale",
    "pipeline",
    "keycloak_auth",
    "alerts",
    "ledger",
    "statements",
    "report_cards",
    "notifications",
    "history",
    "snapshot_builder",
]


def main(names: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    for name in names or BENCHMARKS:
        print(f"\n# benchmark: {name}")
        importlib.import_module(f"benchmarks.{name}").run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
