"""Faults: PostgreSQL stopped under load for ten seconds, then started again, with the worker left running.

One real worker process (``ai-telemetry worker``) polls a small simulated fleet every few seconds
and receives a steady paced load of Alertmanager webhooks from an Alertmanager-style sender
(tests/reliability/alert_sender.py: retries 5xx and transport errors with backoff, as Alertmanager
does). A few seconds into the load the test stops the worker's PostgreSQL server (``pg_ctl stop -m
fast``: sessions are cut), keeps it down for :data:`OUTAGE_SECONDS` while probing the worker, then
starts it again on the same port.

Held: while the database is down, webhooks are answered 503 with Retry-After, promptly (the measured
slowest answer is recorded; nothing hangs to the client timeout), /healthz stays 200 and /readyz
answers 503; after the restart the sender's retries deliver every alert exactly once (receipts in
the database equal the distinct alerts sent); the same worker process (same pid, never restarted)
polls successfully again and /readyz answers 200.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from benchmarks.measure import Timing
from tests.reliability.alert_sender import SenderConfig, finish, sending
from tests.reliability.processes import (
    WorkerProcess,
    count_alert_receipts,
    metric_value,
    running_worker,
    write_fleet_file,
    write_simulated_config,
)
from tests.services import fresh_database, postgres_server_or_skip

WEBHOOKS_PER_SECOND = 10.0
"""500 alerts/s of 50-alert webhooks: a steady load, a third of the receiver benchmark's target."""
ALERTS_PER_WEBHOOK = 50
LOAD_SECONDS = 30.0
STOP_AFTER_SECONDS = 5.0
OUTAGE_SECONDS = 10.0
POLL_INTERVAL_SECONDS = 3.0
"""A 160-GPU fleet polls in well under a second: several polls fail during the outage, one soon succeeds after."""
CLIENT_TIMEOUT_SECONDS = 30.0
MAX_OUTAGE_ANSWER_SECONDS = 10.0
"""Generous: a 503 should come in milliseconds (the connection is refused); a hang would reach the client timeout."""
RECOVERY_TIMEOUT_SECONDS = 60.0
TOKEN = "outage-test-token-0123456789abcdef"
SOURCE = "fleet"


@dataclass
class Probe:
    """/healthz and /readyz answers while the database is down, and how long they took."""

    healthz: dict[str, int] = field(default_factory=dict)
    readyz: dict[str, int] = field(default_factory=dict)
    slowest_s: float = 0.0

    def read(self, worker: WorkerProcess) -> None:
        for path, seen in (("/healthz", self.healthz), ("/readyz", self.readyz)):
            started = time.monotonic()
            try:
                code = str(worker.get(path, timeout=CLIENT_TIMEOUT_SECONDS).status_code)
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            self.slowest_s = max(self.slowest_s, time.monotonic() - started)
            seen[code] = seen.get(code, 0) + 1


def last_success(worker: WorkerProcess) -> float:
    """Start time (Unix epoch) of the worker's last successful poll; 0 before the first."""
    return metric_value(worker.metrics(), "ai_telemetry_source_last_success_timestamp_seconds", source=SOURCE) or 0.0


def db_errors(worker: WorkerProcess) -> float:
    return metric_value(worker.metrics(), "ai_telemetry_source_polls_total", source=SOURCE, outcome="db_error") or 0.0


def wait_until(condition, timeout: float, what: str) -> float:
    """Poll ``condition`` every 0.2 s; the time it took. Fails the test after ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.2)
    return time.monotonic() - started


@pytest.mark.timeout(300)
def test_postgresql_stopped_and_restarted_under_load(tmp_path: Path, reliability) -> None:
    fleet = write_fleet_file(tmp_path / "fleet.toml", clusters=2, nodes=20)
    config_file = write_simulated_config(
        tmp_path / "sources.toml", fleet, name=SOURCE, poll_interval_seconds=POLL_INTERVAL_SECONDS
    )
    with (
        postgres_server_or_skip() as server,
        fresh_database(server.url) as url,
        running_worker(tmp_path, url, config_file, token=TOKEN) as worker,
    ):
        pid = worker.pid
        wait_until(lambda: last_success(worker) > 0, RECOVERY_TIMEOUT_SECONDS, "a first successful poll")
        config = SenderConfig(
            url=worker.webhook_url,
            token=TOKEN,
            rate=WEBHOOKS_PER_SECOND,
            seconds=LOAD_SECONDS,
            alerts=ALERTS_PER_WEBHOOK,
            groups=20,
            run=2,
            give_up_after=120.0,
            timeout=CLIENT_TIMEOUT_SECONDS,
        )
        out = tmp_path / "sender.json"
        with sending(config, out) as sender:
            time.sleep(STOP_AFTER_SECONDS)

            errors_before = db_errors(worker)
            stop_began = time.time()
            server.stop()  # fast shutdown: open sessions are terminated
            stopped_at = time.time()
            probe = Probe()
            while time.time() < stopped_at + OUTAGE_SECONDS:
                probe.read(worker)
                time.sleep(0.5)
            errors_during = db_errors(worker) - errors_before
            restart_began = time.time()
            server.start()
            restarted_at = time.time()
            readyz_after_s = wait_until(
                lambda: worker.get("/readyz").status_code == 200, RECOVERY_TIMEOUT_SECONDS, "/readyz 200 again"
            )
            poll_after_s = wait_until(
                lambda: last_success(worker) > restarted_at, RECOVERY_TIMEOUT_SECONDS, "a poll after the restart"
            )

            result = finish(sender, config, out)
        receipts = count_alert_receipts(url)
        same_process = worker.alive() and worker.pid == pid

    outage = [(sent, ms, code) for sent, ms, code in result.attempts if stopped_at <= sent < restart_began]
    outage_codes = {code for _, _, code in outage}
    slowest_outage_ms = max((ms for _, ms, _ in outage), default=0.0)
    acks_after = [sent for sent, _, code in result.attempts if code == "200" and sent >= restarted_at]
    first_ack_after_s = min(acks_after, default=float("inf")) - restarted_at

    # during the outage: 503 with Retry-After, promptly; live but not ready
    assert outage, "no webhook was sent while the database was down"
    assert outage_codes == {"503"}, f"answers while the database was down: {outage_codes}"
    assert slowest_outage_ms <= MAX_OUTAGE_ANSWER_SECONDS * 1000, f"a 503 took {slowest_outage_ms:.0f} ms"
    assert set(result.retry_after) == {"5"}, f"Retry-After values seen: {result.retry_after}"
    assert set(probe.healthz) == {"200"}, f"/healthz during the outage: {probe.healthz}"
    assert set(probe.readyz) == {"503"}, f"/readyz during the outage: {probe.readyz}"
    assert set(result.statuses) <= {"200", "503"}, f"answers seen: {result.statuses}"
    assert errors_during >= 1, "no poll failed during the outage: the test did not take the database away"

    # after the restart: everything delivered, once; the same worker polls again and is ready
    assert result.given_up == 0, f"{result.given_up} notifications given up; statuses {result.statuses}"
    assert result.alerts_acknowledged == result.alerts_sent
    assert receipts == result.alerts_sent, f"{receipts} receipts for {result.alerts_sent} distinct alerts sent"
    assert same_process, "the worker process exited or was replaced"

    delivery = Timing(result.deliveries_ms)
    reliability.record(
        area="Faults",
        tried=(
            f"PostgreSQL stopped for {OUTAGE_SECONDS:.0f} s and started again under "
            f"{WEBHOOKS_PER_SECOND * ALERTS_PER_WEBHOOK:,.0f} alerts/s of webhooks (Alertmanager-style retries) "
            f"while the worker polled every {POLL_INTERVAL_SECONDS:.0f} s"
        ),
        held=(
            f"{len(outage)} webhooks answered 503 with Retry-After during the outage (slowest "
            f"{slowest_outage_ms:.0f} ms), /healthz 200 and /readyz 503; after the restart all "
            f"{result.alerts_sent:,} alerts stored once, and the same worker process polled again within "
            f"{poll_after_s:.1f} s"
        ),
        alerts_sent=result.alerts_sent,
        lost=result.alerts_sent - receipts,
        answers_503=result.statuses.get("503", 0),
        max_503_ms=round(slowest_outage_ms, 1),
        retries=result.retries,
        polls_failed=int(errors_during),
        readyz_after_s=round(readyz_after_s, 1),
        first_ack_after_s=round(first_ack_after_s, 1),
        poll_after_s=round(poll_after_s, 1),
        delivery_p99_s=round(delivery.p99 / 1000, 1),
    )
    print(
        f"\noutage: stop took {stopped_at - stop_began:.1f} s, restart {restarted_at - restart_began:.1f} s; "
        f"statuses {result.statuses}, retry-after {result.retry_after}, retries {result.retries}; slowest 503 "
        f"{slowest_outage_ms:.0f} ms; probes {probe.healthz} {probe.readyz} slowest {probe.slowest_s:.2f} s; "
        f"readyz after {readyz_after_s:.1f} s, first ack after {first_ack_after_s:.1f} s, poll after "
        f"{poll_after_s:.1f} s; polls failed {errors_during:.0f}; delivery p50 {delivery.p50:.0f} ms "
        f"p99 {delivery.p99:.0f} ms; alerts new {result.alerts_new} duplicate {result.alerts_duplicate}"
    )
