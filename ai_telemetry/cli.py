"""``ai-telemetry``: demo, site, worker, simulate, db upgrade, token create, user, grant, revoke, ledger,
report-card.

Flags override environment variables (``AI_TELEMETRY_*``), which override defaults; the sources
come from the TOML file named by ``--config`` or ``AI_TELEMETRY_CONFIG``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from sqlalchemy.exc import OperationalError

from ai_telemetry.commands import access, reports, serve
from domain.settings import SettingsError

Handler = Callable[[argparse.Namespace], int]

COMMAND_GROUPS = (serve, access, reports)
"""Each module adds its own subcommands (``add_commands``), in this order in ``--help``."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ai-telemetry", description="GPU telemetry for research clouds.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per job run is noise
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # its import lists its plugins
    handler: Handler = args.handler
    try:
        return handler(args)
    except SettingsError as exc:
        print(f"ai-telemetry: {exc}", file=sys.stderr)
        return 2
    except OperationalError as exc:  # a wrong database URL or a database that is down: say so, no traceback
        reason = str(exc.orig or exc).strip().splitlines()[0]
        print(f"ai-telemetry: cannot use the database (AI_TELEMETRY_DATABASE_URL): {reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
