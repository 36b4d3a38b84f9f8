"""Faults: a group's firing and resolved webhooks delivered at the same time (two Alertmanager replicas, or
a redelivery racing the next notification), against the receiver on PostgreSQL.

One Alertmanager sends a group's notifications one at a time, but a highly available pair does not
coordinate its deliveries, so the receiver may persist a resolved alert while the firing one is still
in its transaction. Each workload must still end with one session, closed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from litestar.testing import TestClient
from sqlalchemy import Engine, func, select

from benchmarks.alert_payloads import webhook
from domain.models import Workload
from domain.settings import Settings
from worker.alerts.routes import WEBHOOK_PATH
from worker.receiver import create_receiver_app

TOKEN = "concurrent-test-token-0123456789abcdef"
BATCHES = 40
ALERTS = 5


def test_firing_and_resolved_delivered_at_once_leave_one_closed_session(
    pg_engine: Engine, make_settings: Callable[..., Settings], reliability
) -> None:
    settings = make_settings(pg_engine, receiver={"webhook_token": TOKEN})
    app = create_receiver_app(settings, pg_engine)
    headers = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    bodies = [
        json.dumps(webhook(3, batch, ALERTS, status)) for batch in range(BATCHES) for status in ("firing", "resolved")
    ]

    with TestClient(app) as client, ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda body: client.post(WEBHOOK_PATH, content=body, headers=headers), bodies))
    codes = [answer.status_code for answer in answers]

    table = Workload.__table__  # type: ignore[attr-defined]
    with pg_engine.connect() as db:
        sessions = db.execute(select(func.count()).select_from(table)).scalar_one()
        still_open = db.execute(select(func.count()).select_from(table).where(table.c.ended_at.is_(None))).scalar_one()
        workloads = db.execute(select(func.count(func.distinct(table.c.workload_key)))).scalar_one()

    assert codes == [200] * len(bodies)
    assert workloads == BATCHES * ALERTS
    assert (sessions, still_open) == (workloads, 0), f"{sessions} sessions, {still_open} open, {workloads} workloads"
    reliability.record(
        area="Faults",
        tried=(
            f"{BATCHES} alert groups' firing and resolved webhooks posted at the same time (16 at once), as two "
            "Alertmanager replicas may"
        ),
        held=f"all {len(bodies)} acknowledged; each of the {workloads} workloads has one session, closed",
        webhooks=len(bodies),
        workloads=workloads,
        sessions=sessions,
        left_open=still_open,
    )
