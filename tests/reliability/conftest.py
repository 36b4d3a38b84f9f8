"""The reliability suite of issue 8 (``make verify``): load, faults, bad input and security checks.

Every test here is marked ``verify`` and records its checks with the ``reliability`` fixture
(tests/reliability_report.py); tests elsewhere that belong to the suite carry the mark themselves.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.verify)
