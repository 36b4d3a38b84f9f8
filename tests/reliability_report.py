"""The reliability report: what each ``verify`` test tried, what held, and the figures it measured.

A test calls the ``reliability`` fixture once per check::

    reliability.record(area="Faults", tried="PostgreSQL stopped under load", held="503, then all delivered",
                       alerts_sent=12_000, lost=0)

At the end of the session the records that were made, each with its test's outcome, go to
``var/verify/report.md`` (a Markdown table) and ``var/verify/report.json``; ``make verify`` splices
the table into docs/reliability.md. A check whose test failed is reported as not held, whatever it
recorded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from domain.settings import PROJECT_ROOT

AREAS = ("Load", "Faults", "Bad input", "Security")
REPORT_DIR = PROJECT_ROOT / "var" / "verify"
_PROPERTY = "reliability"


@dataclass
class Check:
    area: str
    tried: str
    held: str
    figures: dict[str, Any] = field(default_factory=dict)
    test: str = ""
    outcome: str = ""


class Recorder:
    """What one test hands the fixture; kept on the test item so the report sees its outcome."""

    def __init__(self, item: pytest.Item) -> None:
        self._item = item

    def record(self, *, area: str, tried: str, held: str, **figures: Any) -> None:
        if area not in AREAS:
            raise ValueError(f"area must be one of {AREAS}, not {area!r}")
        check = Check(area=area, tried=tried, held=held, figures=figures, test=self._item.nodeid)
        self._item.user_properties.append((_PROPERTY, asdict(check)))


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> Recorder:
    """Record a check of the reliability suite (see the module docstring)."""
    return Recorder(request.node)


class _Collector:
    def __init__(self) -> None:
        self.checks: list[Check] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
            return
        for name, value in report.user_properties:
            if name == _PROPERTY:
                self.checks.append(Check(**{**value, "outcome": report.outcome}))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.checks:
            write_report(self.checks, REPORT_DIR)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.checks:
            held = sum(check.outcome == "passed" for check in self.checks)
            terminalreporter.write_sep(
                "-", f"reliability: {held} of {len(self.checks)} checks held; table in {REPORT_DIR / 'report.md'}"
            )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_Collector(), "reliability-report")


def _figures(figures: dict[str, Any]) -> str:
    def show(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    return "; ".join(f"{name.replace('_', ' ')} {show(value)}" for name, value in figures.items())


def render_table(checks: list[Check]) -> str:
    """The Markdown table of docs/reliability.md: one row per check, grouped by area."""
    order = {area: index for index, area in enumerate(AREAS)}
    rows = ["| Area | What was tried | What held | Figures | Result |", "|---|---|---|---|---|"]
    for check in sorted(checks, key=lambda c: (order[c.area], c.test)):
        result = "held" if check.outcome == "passed" else f"**{check.outcome.upper()}**"
        cells = (
            check.area,
            check.tried,
            check.held if check.outcome in {"passed", "skipped"} else "—",
            _figures(check.figures),
            result,
        )
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def write_report(checks: list[Check], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.md").write_text(render_table(checks), encoding="utf-8")
    (directory / "report.json").write_text(json.dumps([asdict(c) for c in checks], indent=2), encoding="utf-8")


BEGIN, END = "<!-- verify:begin -->", "<!-- verify:end -->"


def splice(document: Path, table: Path) -> None:
    """Replace the table between the verify markers of ``document`` with ``table``'s contents."""
    text = document.read_text(encoding="utf-8")
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"{document}: markers {BEGIN} and {END} not found")
    document.write_text(f"{head}{BEGIN}\n{table.read_text(encoding='utf-8')}{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    import sys

    splice(Path(sys.argv[1]), Path(sys.argv[2]))
