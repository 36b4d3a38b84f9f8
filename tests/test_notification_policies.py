"""Notice policies: the TOML default, per-project entries and the admin page's overrides, in that order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from domain.database import session_scope
from domain.models import NotificationPolicyOverride
from domain.notifications.policies import load_policies
from domain.settings import SettingsError, load_settings
from tests.notification_support import add_idle_finding

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)
CONFIG = """
[[sources]]
name = "demo"
kind = "simulated"

[notifications.default]
grace_minutes = 30
reminder_interval_minutes = 120
quiet_hours = "22:00-07:00"
timezone = "Europe/Zurich"

[[notifications.projects]]
cluster = "c1"
namespace = "ml-team"
grace_minutes = 240
escalate_after_minutes = 0
"""


def test_toml_policies_and_overrides(tmp_path: Path, db_engine: Engine) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    settings = load_settings(config_path=path)
    ml = add_idle_finding(db_engine, idle_since=NOW, last_seen=NOW)
    other = add_idle_finding(db_engine, namespace="physics", idle_since=NOW, last_seen=NOW)
    with Session(db_engine) as session:
        book = load_policies(session, settings.policies)
    assert book.default.grace == timedelta(minutes=30)
    assert book.default.quiet_hours is not None and book.default.quiet_hours.timezone == "Europe/Zurich"
    assert book.for_project(other) == book.default
    project = book.for_project(ml)
    assert project.grace == timedelta(hours=4) and project.escalate_after is None
    assert project.reminder_interval == timedelta(hours=2)  # inherited from the default
    with session_scope(db_engine) as session:
        session.add(NotificationPolicyOverride(project_id=ml, enabled=False, updated_by="user:admin", updated_at=NOW))
    with Session(db_engine) as session:
        book = load_policies(session, settings.policies)
    assert not book.for_project(ml).enabled and book.for_project(ml).grace == timedelta(hours=4)


@pytest.mark.parametrize(
    ("snippet", "named"),
    [
        ('[notifications.default]\nquiet_hours = "late"', "quiet_hours"),
        ('[notifications.default]\nquiet_hours = "22:00-07:00"\ntimezone = "Mars/Olympus"', "Mars/Olympus"),
        ("[notifications.default]\ngrace_minutes = -5", "grace_minutes"),
        ("[notifications.default]\ngrace = 5", "grace"),
        ('[[notifications.projects]]\nnamespace = "x"', "cluster"),
    ],
)
def test_bad_policy_names_the_key(tmp_path: Path, snippet: str, named: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(snippet)
    with pytest.raises(SettingsError, match=named):
        load_settings(config_path=path)


def test_lease_must_outlast_a_send() -> None:
    with pytest.raises(SettingsError, match="lease_seconds"):
        load_settings({"notify": {"lease_seconds": 30, "smtp_timeout_seconds": 15}})
    assert load_settings({"notify": {"lease_seconds": 120, "smtp_timeout_seconds": 15}}).notify.lease_seconds == 120
