"""Which policy applies to a project: the configured default, its TOML entry, then the admin page's override."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta

from sqlalchemy import select
from sqlmodel import Session, col

from domain.models import Cluster, NotificationPolicyOverride, ResearchProject
from domain.notifications.rules import Policy, QuietHours
from domain.settings import NotificationPolicies, PolicySettings


def apply(base: Policy, given: PolicySettings) -> Policy:
    """``base`` with the fields ``given`` sets."""
    policy = base
    if given.enabled is not None:
        policy = replace(policy, enabled=given.enabled)
    if given.idle_threshold_percent is not None:
        policy = replace(policy, idle_threshold_percent=given.idle_threshold_percent)
    if given.grace_minutes is not None:
        policy = replace(policy, grace=timedelta(minutes=given.grace_minutes))
    if given.reminder_interval_minutes is not None:
        policy = replace(policy, reminder_interval=timedelta(minutes=given.reminder_interval_minutes))
    if given.escalate_after_minutes is not None:
        minutes = given.escalate_after_minutes
        policy = replace(policy, escalate_after=timedelta(minutes=minutes) if minutes > 0 else None)
    if given.quiet_hours is not None:
        zone = given.timezone or (policy.quiet_hours.timezone if policy.quiet_hours else "UTC")
        policy = replace(policy, quiet_hours=QuietHours.parse(given.quiet_hours, zone))
    elif given.timezone is not None and policy.quiet_hours is not None:  # the inherited window, in another zone
        policy = replace(policy, quiet_hours=replace(policy.quiet_hours, timezone=given.timezone))
    if given.max_exemption_days is not None:
        policy = replace(policy, max_exemption=timedelta(days=given.max_exemption_days))
    return policy


def apply_override(base: Policy, row: NotificationPolicyOverride) -> Policy:
    return apply(
        base,
        PolicySettings(
            enabled=row.enabled,
            idle_threshold_percent=row.idle_threshold_percent,
            grace_minutes=row.grace_minutes,
            reminder_interval_minutes=row.reminder_interval_minutes,
            escalate_after_minutes=row.escalate_after_minutes,
            quiet_hours=row.quiet_hours,
            timezone=row.timezone,
            max_exemption_days=row.max_exemption_days,
        ),
    )


class PolicyBook:
    """Every project's policy, read once per run."""

    def __init__(self, default: Policy, by_project: Mapping[int, Policy]) -> None:
        self.default = default
        self.by_project = dict(by_project)

    def for_project(self, project_id: int | None) -> Policy:
        if project_id is None:
            return self.default
        return self.by_project.get(project_id, self.default)


def load_policies(session: Session, configured: NotificationPolicies) -> PolicyBook:
    default = apply(Policy(), configured.default)
    by_project: dict[int, Policy] = {}
    if configured.projects:
        wanted = {(p.cluster, p.namespace): p for p in configured.projects}
        for pid, cluster, namespace in session.execute(
            select(col(ResearchProject.id), col(Cluster.name), col(ResearchProject.namespace)).join(
                Cluster, col(Cluster.id) == ResearchProject.cluster_id
            )
        ).all():
            entry = wanted.get((cluster, namespace))
            if entry is not None:
                by_project[pid] = apply(default, entry)
    for row in session.execute(select(NotificationPolicyOverride)).scalars():
        by_project[row.project_id] = apply_override(by_project.get(row.project_id, default), row)
    return PolicyBook(default, by_project)
