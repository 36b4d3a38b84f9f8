"""A dependency audit of the installed environment, in CI and in ``make verify``: online, and offline.

Any known vulnerability in an installed distribution fails the test (a vulnerability judged not
to apply goes to ``IGNORED`` with its reason).

- Online: pip-audit asks PyPI's per-release JSON API for the advisories of each installed version.
  Where that API does not answer (a registry mirror that serves only the package index, as on the
  machines this project is built on) pip-audit reports every distribution as not audited.
- Offline (no advisory service): the test skips loudly and records exactly which distributions and
  versions went unaudited, in docs/reliability.md. No package on the registries ships a current
  advisory database under a licence this project can depend on (``safety-db`` stops at 2021-07 and is
  CC BY-NC-SA), so nothing stands in for the online audit; run ``make verify`` where the service answers.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

IGNORED: dict[str, str] = {}
"""Advisory id -> why it does not apply here. Empty: nothing is ignored."""

EDITABLE = "distribution marked as editable"


def _audit() -> tuple[list[dict], int]:
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "--local",
        "--skip-editable",
        "--format",
        "json",
        "--progress-spinner",
        "off",
        "--timeout",
        "30",
    ]
    for advisory in IGNORED:
        command += ["--ignore-vuln", advisory]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"pip-audit gave no report (exit {result.returncode}):\n{result.stderr[-2000:]}", pytrace=False)
    return report["dependencies"], result.returncode


def test_installed_dependencies_have_no_known_vulnerabilities(reliability) -> None:
    dependencies, _ = _audit()
    third_party = [d for d in dependencies if d.get("skip_reason") != EDITABLE]
    unaudited = [d for d in third_party if "skip_reason" in d]
    audited = [d for d in third_party if "skip_reason" not in d]
    vulnerable = {f"{d['name']} {d['version']}": [v["id"] for v in d["vulns"]] for d in audited if d["vulns"]}

    assert third_party, "pip-audit listed no installed distribution"
    assert not vulnerable, f"known vulnerabilities: {vulnerable}"
    figures = {"distributions": len(third_party), "audited": len(audited), "not_audited": len(unaudited)}
    if not audited:
        reliability.record(
            area="Security",
            tried="pip-audit over every installed distribution (online advisories)",
            held="not run: the advisory service is out of reach; not audited: "
            + ", ".join(f"{d['name']}=={d.get('version', '?')}" for d in unaudited),
            **figures,
        )
        pytest.skip(
            f"ONLINE DEPENDENCY AUDIT NOT DONE: the advisory service answered for none of {len(third_party)} "
            f"distributions ({unaudited[0]['skip_reason']}); none of them is audited; run `make verify` where "
            "PyPI's JSON API is reachable"
        )
    reliability.record(
        area="Security",
        tried="pip-audit over every installed distribution",
        held="no known vulnerability",
        ignored=len(IGNORED),
        **figures,
    )
