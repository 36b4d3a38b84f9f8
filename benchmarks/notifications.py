"""Notices about idle GPUs at scale: 10,000 idle GPUs in 400 projects, decided, batched and delivered over SMTP.

On PostgreSQL (the test suite's throwaway server, fsync off) with 10,000 open idle-while-allocated
findings, one per GPU (25 single-GPU pods in each of 400 projects, over 4 clusters), all reaching
the end of their grace period at the same instant, and an SMTP server on loopback (aiosmtpd):

* decide: the run at the end of the grace period reads the findings, applies every policy and puts
  one e-mail per project in the outbox (10,000 notices batched into 400 messages); then the next
  run, with nothing due, which is what every later minute costs;
* send: the outbox delivered to the SMTP server (one connection per message, as the channel does);
* delay: from the end of the grace period (the start of the deciding run) to each message in the
  server's inbox: p50 and the last one.

Baselines in the same run: the findings query alone (what deciding must read anyway), and the same
400 messages sent with smtplib straight to the same server (what delivery costs without the outbox).
"""

from __future__ import annotations

import os
import smtplib
import statistics
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

from sqlalchemy import insert, select
from sqlmodel import Session

from benchmarks.measure import report
from domain.database import create_db_engine, upgrade
from domain.models import Cluster, Finding, Hub, ResearchProject
from domain.notifications.recipients import StaticRecipients
from domain.notifications.store import idle_allocations
from domain.pipeline.signals import IDLE_ALLOCATED
from domain.settings import DatabaseSettings, NotificationPolicies, NotificationSettings, PolicySettings
from tests.notification_support import Inbox, smtp_server
from tests.services import find_postgres_bin, fresh_database, running_postgres
from worker.notifications.channels import SmtpChannel
from worker.notifications.jobs import NotificationJobs

GPUS = int(os.environ.get("BENCH_NOTIFY_GPUS", "10000"))
PROJECTS = int(os.environ.get("BENCH_NOTIFY_PROJECTS", "400"))
CLUSTERS = 4
GRACE = timedelta(minutes=60)
NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


class TimedInbox(Inbox):
    """Records when each message arrived (monotonic clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: list[float] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        answer = await super().handle_DATA(server, session, envelope)
        self.arrived.append(time.monotonic())
        return answer


def seed(engine) -> None:  # type: ignore[no-untyped-def]
    idle_since = NOW - GRACE
    with Session(engine) as session:
        hub = Hub(name="bench", kind="simulated")
        session.add(hub)
        session.flush()
        clusters = [Cluster(name=f"cluster-{c}", hub_id=hub.id) for c in range(CLUSTERS)]
        session.add_all(clusters)
        session.flush()
        projects = [
            ResearchProject(
                cluster_id=clusters[p % CLUSTERS].id,
                namespace=f"project-{p:03d}",
                display_name=f"project-{p:03d}",
                first_seen=idle_since,
                last_seen=NOW,
            )
            for p in range(PROJECTS)
        ]
        session.add_all(projects)
        session.flush()
        rows = []
        for g in range(GPUS):
            project = projects[g % PROJECTS]
            cluster = clusters[g % PROJECTS % CLUSTERS].name
            pod = f"notebook-{g // PROJECTS}"
            rows.append(
                {
                    "kind": IDLE_ALLOCATED,
                    "subject": f"gpu:GPU-{g:05d}",
                    "severity": "warning",
                    "status": "open",
                    "first_seen": idle_since,
                    "last_seen": NOW,
                    "count": 12,
                    "level": "gpu",
                    "escalated": False,
                    "escalations": 0,
                    "waste_gpu_hours": 1.0,
                    "project_id": project.id,
                    "evidence": {
                        "level": "gpu",
                        "labels": {
                            "cluster": cluster,
                            "namespace": project.namespace,
                            "pod": pod,
                            "node": f"n{g % 97}",
                        },
                        "members": [{"subject": f"gpu:GPU-{g:05d}", "value": 0.0, "gpu": str(g % 8)}],
                    },
                }
            )
        session.execute(insert(Finding), rows)
        session.commit()


def baseline_send(port: int, count: int, body: str) -> float:
    started = time.perf_counter()
    for index in range(count):
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "bench@localhost", "team@example.test", f"baseline {index}"
        message.set_content(body)
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.send_message(message)
    return time.perf_counter() - started


def run() -> None:
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        print("PostgreSQL not installed; run scripts/install-test-services")
        return
    with running_postgres(bin_dir) as server, fresh_database(server) as url:
        engine = create_db_engine(DatabaseSettings(url=url, pool_size=4))
        upgrade(engine)
        seed(engine)
        inbox = TimedInbox()
        with smtp_server(inbox) as (port, _):
            settings = NotificationSettings(
                enabled=True, smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False, batch_size=100_000
            )
            policies = NotificationPolicies(default=PolicySettings(grace_minutes=GRACE.total_seconds() / 60))
            jobs = NotificationJobs(
                settings,
                policies,
                engine,
                {"email": SmtpChannel(settings)},
                StaticRecipients(["team-a@example.test", "team-b@example.test"]),
            )
            with Session(engine) as session:
                started = time.perf_counter()
                raw = session.execute(
                    select(Finding).where(Finding.kind == IDLE_ALLOCATED, Finding.status == "open")
                ).all()
                query_s = time.perf_counter() - started
            with Session(engine) as session:
                started = time.perf_counter()
                found = idle_allocations(session, NOW, timedelta(minutes=15))
                read_s = time.perf_counter() - started
            grace_end = time.monotonic()
            started = time.perf_counter()
            decided = jobs.decide(NOW)
            decide_s = time.perf_counter() - started
            started = time.perf_counter()
            again = jobs.decide(NOW + timedelta(minutes=1))
            steady_s = time.perf_counter() - started
            started = time.perf_counter()
            sent = jobs.send(NOW)
            send_s = time.perf_counter() - started
            delays = [t - grace_end for t in inbox.arrived]
            body = inbox.messages[0][1].get_payload() if inbox.messages else ""
            base_count = len(inbox.messages)
            inbox.messages.clear()
            base_s = baseline_send(port, base_count, body)
        engine.dispose()
    report(
        f"notifications: {GPUS:,} idle GPUs in {PROJECTS} projects, PostgreSQL + aiosmtpd",
        [
            (
                "idle allocations read",
                f"{len(found):,} in {read_s * 1000:.0f} ms; baseline, the findings query alone: "
                f"{len(raw):,} rows in {query_s * 1000:.0f} ms",
            ),
            (
                "decide at the end of the grace period",
                f"{decided.notices:,} notices -> {decided.messages} e-mails in {decide_s:.2f} s",
            ),
            ("next run, nothing due", f"{again.messages} e-mails in {steady_s:.2f} s"),
            (
                "send",
                f"{sent.sent} sent, {sent.retrying} retrying in {send_s:.2f} s "
                f"({sent.sent / send_s:.0f}/s); baseline smtplib alone: {base_count} in {base_s:.2f} s "
                f"({base_count / base_s:.0f}/s)",
            ),
            (
                "grace end -> inbox",
                f"p50 {statistics.median(delays):.2f} s, last {max(delays):.2f} s" if delays else "no messages",
            ),
        ],
    )
