"""What the messages say: one e-mail and one webhook post per project and run, one alert per workload.

Pure functions of the decided notices, so the same decision always renders the same message (its
idempotency key is derived from the notices it carries).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from domain.notifications.rules import IdleAllocation
from domain.notifications.store import NoticeRecord, OutboxMessage

ALERT_NAME = "GPUAllocatedIdle"
_HEADLINE = {
    "notice": "GPUs allocated but idle",
    "reminder": "Reminder: GPUs still allocated but idle",
    "escalation": "Escalation: GPUs idle for a long time",
}


def workload_link(site_url: str, allocation: IdleAllocation) -> str:
    if allocation.workload_id is not None:
        return f"{site_url}/workloads/{allocation.workload_id}"
    return f"{site_url}/workloads?q={allocation.pod}"


def report_card_link(site_url: str, allocation: IdleAllocation) -> str | None:
    """The workload's report card (how well it used what it held, and what to change), once it has a workload row."""
    if allocation.workload_id is None:
        return None
    return f"{site_url}/workloads/{allocation.workload_id}/report-card"


def exemption_link(site_url: str, allocation: IdleAllocation) -> str:
    """The "still using it" form; the site checks login, project access and CSRF before anything changes."""
    if allocation.project_id is None:
        return f"{site_url}/notifications/exemptions"
    return f"{site_url}/notifications/projects/{allocation.project_id}/exempt?pod={quote(allocation.pod)}"


def _utilisation(allocation: IdleAllocation) -> str:
    return "unknown" if allocation.utilisation is None else f"{allocation.utilisation:.1f} %"


def evidence_lines(allocation: IdleAllocation, site_url: str, now: datetime) -> list[str]:
    idle_for = now - allocation.idle_since
    hours = idle_for / timedelta(hours=1)
    card = report_card_link(site_url, allocation)
    return [
        f"- {allocation.namespace}/{allocation.pod} on cluster {allocation.cluster}"
        + (f", node {allocation.node}" if allocation.node else ""),
        f"  idle since {allocation.idle_since:%Y-%m-%d %H:%M} UTC ({hours:.1f} h),"
        f" utilisation {_utilisation(allocation)},"
        f" {allocation.idle_gpu_hours:.2f} GPU-hours held idle, {len(allocation.gpus) or 1} GPU(s)",
        f"  workload: {workload_link(site_url, allocation)}",
        *([f"  report card: {card}"] if card else []),
        f"  still using it? {exemption_link(site_url, allocation)}",
    ]


def batch_key(channel: str, notices: Sequence[NoticeRecord]) -> str:
    digest = hashlib.sha256("\n".join(sorted(n.key for n in notices)).encode()).hexdigest()[:40]
    return f"{channel}:{digest}"


def project_messages(
    project: str,
    project_id: int | None,
    notices: Sequence[NoticeRecord],
    recipients: Sequence[str],
    site_url: str,
    now: datetime,
    *,
    email: bool,
    webhook: bool,
) -> list[OutboxMessage]:
    """The e-mail and webhook messages carrying one project's notices of this run."""
    kinds = {n.kind for n in notices}
    kind = "escalation" if "escalation" in kinds else "notice" if "notice" in kinds else "reminder"
    count = len(notices)
    subject = f"[AI Telemetry] {_HEADLINE[kind]}: {count} workload{'s' if count != 1 else ''} in {project}"
    lines = [
        f"{_HEADLINE[kind]} in project {project}.",
        "",
        "These workloads hold GPUs that have done (almost) nothing for a while. If they are no longer needed,",
        "please stop them so others can use the GPUs. If you are still using them, say so with the link.",
        "",
    ]
    for notice in notices:
        lines.extend(evidence_lines(notice.allocation, site_url, now))
        lines.append("")
    body = "\n".join(lines)
    out = []
    if email:  # even with nobody to write to: the row then fails visibly, with the reason
        out.append(
            OutboxMessage(batch_key("email", notices), "email", kind, project_id, tuple(recipients), subject, body, {})
        )
    if webhook:
        out.append(
            OutboxMessage(
                batch_key("webhook", notices),
                "webhook",
                kind,
                project_id,
                (),
                subject,
                body,
                {"text": f"*{subject}*\n{body}"},
            )
        )
    return out


def alert_labels(allocation: IdleAllocation) -> dict[str, str]:
    labels = {
        "alertname": ALERT_NAME,
        "project": allocation.namespace,
        "namespace": allocation.namespace,
        "pod": allocation.pod,
        "cluster": allocation.cluster,
        "severity": "warning",
    }
    if allocation.node:
        labels["node"] = allocation.node
    if allocation.gpus:
        labels["gpu"] = ",".join(allocation.gpus)
    return labels


def alert_message(
    allocation: IdleAllocation, site_url: str, now: datetime, ttl: timedelta, refresh: timedelta, *, resolve: bool
) -> OutboxMessage:
    """A GPUAllocatedIdle alert for Alertmanager: endsAt ahead while idle, now when it is over.

    Its key names the time slot (``refresh`` wide), so one post per slot keeps it firing and a
    restart within the slot does not post again.
    """
    since = allocation.idle_since.strftime("%Y%m%dT%H%M%S")
    if resolve:
        key, ends = f"resolve:{since}:{allocation.subject}", now
    else:
        slot = int(now.timestamp() // max(1, refresh.total_seconds()))
        key, ends = f"alert:{slot}:{since}:{allocation.subject}", now + ttl
    alert: dict[str, Any] = {
        "labels": alert_labels(allocation),
        "annotations": {
            "summary": f"GPU allocated but idle: {allocation.namespace}/{allocation.pod} ({allocation.cluster})",
            "idle_since": allocation.idle_since.isoformat(),
            "utilisation": _utilisation(allocation),
            "idle_gpu_hours": f"{allocation.idle_gpu_hours:.3f}",
            "workload_url": workload_link(site_url, allocation),
            **({"report_card_url": card} if (card := report_card_link(site_url, allocation)) else {}),
        },
        "startsAt": allocation.idle_since.isoformat(),
        "endsAt": ends.isoformat(),
        "generatorURL": workload_link(site_url, allocation),
    }
    return OutboxMessage(
        key[:128] if len(key) <= 128 else f"alert:{hashlib.sha256(key.encode()).hexdigest()}",
        "alertmanager",
        "resolve" if resolve else "alert",
        allocation.project_id,
        (),
        alert["annotations"]["summary"],
        "\n".join(evidence_lines(allocation, site_url, now)),
        {"alerts": [alert], "subject": allocation.subject, "idle_since": allocation.idle_since.isoformat()},
    )


def resolution_of(previous: dict[str, Any], now: datetime) -> OutboxMessage | None:
    """The resolving post for an alert sent earlier (same labels, endsAt now), from its stored payload."""
    alerts = previous.get("alerts") or []
    subject, since = previous.get("subject"), previous.get("idle_since")
    if not alerts or not subject or not since:
        return None
    alert = {**alerts[0], "endsAt": now.isoformat()}
    key = f"resolve:{since}:{subject}"
    if len(key) > 128:
        key = f"resolve:{hashlib.sha256(key.encode()).hexdigest()}"
    summary = str(alert.get("annotations", {}).get("summary", subject)).replace("idle:", "idle (over):", 1)
    return OutboxMessage(
        key,
        "alertmanager",
        "resolve",
        None,
        (),
        summary,
        summary,
        {"alerts": [alert], "subject": subject, "idle_since": since},
    )
