"""The worker killed with SIGKILL mid-poll and mid-webhook: after a restart nothing is duplicated, lost or half-written.

Both tests run the real ``ai-telemetry worker`` process (tests/reliability/processes.py) on a fresh
PostgreSQL database and kill it at moments read from the database itself: a separate connection
watches ``pg_locks`` for the locks the worker's open transactions hold (a poll holds its source's
advisory lock from before it reads the source until its writes commit, and a row-exclusive lock on
every table it has written so far), so "in progress" means an uncommitted transaction that has
written exactly the tables named, not a guess from timing.

The checks are those of tests/reliability/invariants.py, plus, for polls, equality with what an
uninterrupted worker writes for the same fleet at the same poll time. Two in-process tests go with
them: the invariants shown to notice each half-written state they stand for, and an alert whose
receipt committed but whose signal pipeline batch died with the worker, replayed after the restart.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, bindparam, create_engine, text
from sqlalchemy.pool import NullPool

from benchmarks.alert_payloads import webhook
from domain.database import create_db_engine, upgrade
from domain.models import UtcDateTime, utcnow
from domain.settings import DatabaseSettings, SchedulerSettings
from simulator import load_fleet
from tests import services
from tests.reliability import invariants
from tests.reliability.alert_sender import SenderConfig, finish, start_sender
from tests.reliability.processes import WorkerProcess, start_worker, write_fleet_file, write_simulated_config
from tests.services import free_port
from worker.alerts.intake import AlertIntake
from worker.metrics import WorkerMetrics
from worker.pipeline.processor import REPLAY_AFTER, SignalProcessor
from worker.polling import SourcePoller
from worker.sources.simulated import SimulatedSource
from worker.workloads.rules import WorkloadKey

TOKEN = "kill-test-webhook-token"
SOURCE = "fleet"
POLL_INTERVAL = 4.0
BUCKET_SECONDS = SchedulerSettings().rollup_bucket_seconds
FLEET_CLUSTERS = 4
FLEET_NODES = 400
"""3,200 GPUs: the first poll of a fresh database takes seconds, a steady one about one."""
PROBE_SECONDS = 0.01
PIPELINE_ENV = {"AI_TELEMETRY_PIPELINE_PERSISTENCE_POLLS": "1"}
"""Findings open on the first poll that shows their condition (the fleet's idle notebooks), so a restarted
worker has stored findings to continue rather than duplicate."""
KILL_DEADLINE_SECONDS = 60.0
"""How long to wait for one kill point before the test gives up (several polls)."""
FINAL_POLLS = 2
"""Polls the last restarted worker completes before it is stopped cleanly."""
ABORT_TIMEOUT_SECONDS = 30.0
"""How long PostgreSQL may take to roll back a killed worker's transactions."""


@pytest.fixture
def database_url(postgres_server: str) -> Iterator[str]:
    with services.fresh_database(postgres_server) as url:
        yield url


# --- watching the worker's transactions ---------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """The worker's open transactions at one moment, seen from another connection."""

    polling: bool
    """Some transaction holds a source's advisory lock: a poll (or the pipeline batch after it) is running."""
    written: frozenset[str]
    """Tables an uncommitted transaction has written (holds a row-exclusive lock on)."""
    last_poll_at: datetime | None
    """The hub's last committed poll."""


class Probe:
    """Reads ``pg_locks`` and the hub's heartbeat on a connection of its own (autocommit)."""

    def __init__(self, url: str) -> None:
        self._engine = create_engine(url, poolclass=NullPool)
        self._connection: Connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self.polls_seen: set[datetime] = set()

    def observe(self) -> Observed:
        rows = self._connection.execute(
            text(
                "SELECT l.locktype, c.relname FROM pg_locks l LEFT JOIN pg_class c ON c.oid = l.relation "
                "WHERE l.pid <> pg_backend_pid() AND l.granted "
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                # a poll's lock is the one-key form (objsubid 1); webhooks' per-workload locks use two keys
                "AND ((l.locktype = 'advisory' AND l.objsubid = 1) "
                "OR (l.locktype = 'relation' AND l.mode = 'RowExclusiveLock'))"
            )
        ).all()
        try:
            last = self._connection.execute(text("SELECT last_poll_at FROM hub WHERE name = :n"), {"n": SOURCE})
            last_poll = invariants.as_utc(last.scalar())
        except Exception:  # the schema is not there yet (the worker migrates it at start)
            last_poll = None
        if last_poll is not None:
            self.polls_seen.add(last_poll)
        return Observed(
            polling=any(kind == "advisory" for kind, _ in rows),
            written=frozenset(name for kind, name in rows if kind == "relation" and name),
            last_poll_at=last_poll,
        )

    def wait_for(self, condition: Callable[[Observed], bool], worker: WorkerProcess | None, timeout: float) -> Observed:
        """Observe until ``condition`` holds; fail if the worker (if given) exits or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.observe()
            if condition(seen):
                return seen
            if worker is not None and not worker.alive():
                raise AssertionError(f"the worker exited on its own:\n{worker.log_text()}")
            if time.monotonic() > deadline:
                log = worker.log_text() if worker is not None else ""
                raise AssertionError(f"waited {timeout:.0f} s, last seen {seen}\n{log}")
            time.sleep(PROBE_SECONDS)

    def pipeline_recorded(self, poll: datetime) -> bool:
        """Whether the signal pipeline saved its batch for the poll taken at ``poll`` (it records the poll's input)."""
        statement = text("SELECT count(*) FROM pipeline_input WHERE kind = 'poll' AND taken_at = :at").bindparams(
            bindparam("at", type_=UtcDateTime)
        )
        return bool(self._connection.execute(statement, {"at": poll}).scalar_one())

    def receipts(self) -> int:
        """Alert receipts committed."""
        return self._connection.execute(text("SELECT count(*) FROM alert_receipt")).scalar_one()

    def close(self) -> None:
        self._connection.close()
        self._engine.dispose()


@contextmanager
def probing(url: str) -> Iterator[Probe]:
    probe = Probe(url)
    try:
        yield probe
    finally:
        probe.close()


@dataclass
class KillPoint:
    """A moment of a poll to kill the worker at, as a condition on what its transactions hold."""

    name: str
    condition: Callable[[Observed, datetime | None], bool]
    """Given what is seen now and the last poll committed when this worker started."""
    mid_transaction: bool = True
    """The kill lands inside the poll's transaction (False: after it committed)."""


KILL_POINTS = (
    KillPoint(
        "first poll of an empty database, inventory half inserted",
        lambda seen, _: seen.last_poll_at is None and "gpu" in seen.written and "usage_rollup" not in seen.written,
    ),
    KillPoint(
        "heartbeat written, source being read or compared, inventory not yet written",
        lambda seen, _: seen.polling and "hub" in seen.written and "cluster" not in seen.written,
    ),
    KillPoint(
        "steady poll after a committed one: rollups being updated, not committed",
        lambda seen, _: seen.last_poll_at is not None and "usage_rollup" in seen.written,
    ),
    KillPoint(
        "poll committed, its signal pipeline batch not yet",
        lambda seen, started: (
            seen.polling
            and not seen.written
            and seen.last_poll_at is not None
            and (started is None or seen.last_poll_at > started)
        ),
        mid_transaction=False,
    ),
)


@dataclass
class KillLog:
    kills: int = 0
    rolled_back: int = 0
    """Kills inside a poll's transaction after which the poll had not committed (the heartbeat did not move)."""
    batches_lost: int = 0
    """Kills after a poll's commit that took its signal pipeline batch with them (no record of the poll's input)."""
    points: list[str] = field(default_factory=list)


def _kill_at(point: KillPoint, probe: Probe, worker: WorkerProcess, log: KillLog) -> None:
    started = probe.observe().last_poll_at
    seen = probe.wait_for(lambda now: point.condition(now, started), worker, KILL_DEADLINE_SECONDS)
    worker.kill()
    # the server ends a dead client's backend (rolling its transaction back) once it notices the closed socket
    after = probe.wait_for(lambda now: not now.polling and not now.written, None, ABORT_TIMEOUT_SECONDS)
    log.kills += 1
    if point.mid_transaction:
        log.rolled_back += after.last_poll_at == seen.last_poll_at
    else:
        log.batches_lost += after.last_poll_at is not None and not probe.pipeline_recorded(after.last_poll_at)
    log.points.append(point.name)


def _reference(url: str, fleet: Path, at: datetime) -> Engine:
    """What an uninterrupted worker writes for the fleet: one poll at ``at`` on a database of its own."""
    engine = create_db_engine(DatabaseSettings(url=url))
    upgrade(engine)
    source = SimulatedSource(SOURCE, load_fleet(fleet), seed=42)
    poller = SourcePoller(source, engine, SchedulerSettings(), interval_seconds=POLL_INTERVAL)
    outcome = poller.poll_once(now=at, force=True)
    assert outcome.outcome == "success", outcome
    return engine


def _verify_polled(
    url: str, reference_url: str, fleet: Path
) -> tuple[dict[str, list[str]], list[str], dict[str, int], dict[str, int]]:
    """The invariants violated (by name), the differences from an uninterrupted run's database (written
    at ``reference_url``), the rows compared and the rows per table, of the database at ``url``."""
    engine = create_db_engine(DatabaseSettings(url=url))
    try:
        violations = invariants.all_poll_invariants(engine, BUCKET_SECONDS)
        last = invariants.last_poll_at(engine, SOURCE)
        assert last is not None, "no poll was ever committed"
        reference = _reference(reference_url, fleet, last)
        try:
            differences, compared = invariants.compare_with_reference(
                engine, reference, bucket=last, bucket_seconds=BUCKET_SECONDS
            )
        finally:
            reference.dispose()
        counts = invariants.table_counts(engine)
    finally:
        engine.dispose()
    found = {name: problems for name, problems in violations.items() if problems}
    return found, differences, compared, counts


# --- mid-poll -----------------------------------------------------------------------------------------


def test_worker_killed_mid_poll_leaves_nothing_half_written(
    tmp_path: Path, postgres_server: str, database_url: str, reliability
) -> None:
    fleet = write_fleet_file(tmp_path / "fleet.toml", clusters=FLEET_CLUSTERS, nodes=FLEET_NODES)
    config = write_simulated_config(tmp_path / "sources.toml", fleet, name=SOURCE, poll_interval_seconds=POLL_INTERVAL)
    log = KillLog()
    started = time.monotonic()
    with probing(database_url) as probe:
        for number, point in enumerate(KILL_POINTS, start=1):
            worker = start_worker(
                tmp_path, database_url, config, token=TOKEN, env=PIPELINE_ENV, wait=False, name=f"worker-{number}"
            )
            try:
                _kill_at(point, probe, worker, log)
            finally:
                worker.stop()
        # restart; let it complete two polls and the pipeline batch after the second, then stop it cleanly
        worker = start_worker(
            tmp_path, database_url, config, token=TOKEN, env=PIPELINE_ENV, wait=False, name="worker-final"
        )
        try:
            before = len(probe.polls_seen)
            probe.wait_for(
                lambda seen: len(probe.polls_seen) >= before + FINAL_POLLS and not seen.polling,
                worker,
                KILL_DEADLINE_SECONDS,
            )
            assert worker.stop() == 0, worker.log_text()
        finally:
            worker.stop()
        polls = len(probe.polls_seen)
    with services.fresh_database(postgres_server) as reference_url:
        violations, differences, compared, counts = _verify_polled(database_url, reference_url, fleet)
    assert not violations, violations
    assert not differences, differences
    assert log.kills == len(KILL_POINTS)
    assert log.rolled_back == sum(point.mid_transaction for point in KILL_POINTS), "a kill landed after a commit"
    assert log.batches_lost == sum(not point.mid_transaction for point in KILL_POINTS), "a kill missed its batch"
    reliability.record(
        area="Faults",
        tried=f"SIGKILL of the worker at {log.kills} points of a poll of {counts['gpu']:,} GPUs on PostgreSQL "
        f"({'; '.join(log.points)}), restarting it each time",
        held=f"{polls} polls committed in all, {FINAL_POLLS} after the last restart; the {log.rolled_back} polls "
        f"killed mid-transaction rolled back whole; 0 invariant violations (no duplicate session, allocation or of the "
        f"{counts['finding']} findings, every rollup bucket complete, counts and heartbeats equal to the last poll); "
        f"inventory, open allocations, sessions and the last rollup bucket equal to an uninterrupted run's "
        f"({compared['gpus']:,} GPUs, {compared['open sessions']:,} sessions, "
        f"{compared['rollup rows in last bucket']:,} rollup rows)",
        kills=log.kills,
        polls_rolled_back=log.rolled_back,
        pipeline_batches_lost=log.batches_lost,
        polls_completed=polls,
        gpus=counts["gpu"],
        sessions=counts["workload"],
        findings=counts["finding"],
        rollup_rows=counts["usage_rollup"],
        violations=0,
        seconds=round(time.monotonic() - started, 1),
    )


# --- mid-poll on SQLite, the embedded default -----------------------------------------------------------


class SqliteProbe:
    """Whether a write transaction is open on a SQLite file (``BEGIN IMMEDIATE`` fails at once), and its heartbeat.

    SQLite names no tables, so its kill points are offsets into a write transaction; with the signal
    pipeline off, the only writer is the poll.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self.polls_seen: set[datetime] = set()

    def _connect(self) -> sqlite3.Connection | None:
        if self._connection is None and self.path.exists():
            self._connection = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, timeout=0, isolation_level=None)
        return self._connection

    def heartbeat(self) -> tuple[bool, datetime | None]:
        """(the schema is there, the hub's last committed poll)."""
        connection = self._connect()
        if connection is None:
            return False, None
        try:
            row = connection.execute("SELECT last_poll_at FROM hub WHERE name = ?", (SOURCE,)).fetchone()
        except sqlite3.OperationalError:  # no table yet, or the worker is migrating
            return False, None
        last = invariants.as_utc(row[0]) if row else None
        if last is not None:
            self.polls_seen.add(last)
        return True, last

    def writing(self) -> bool:
        connection = self._connect()
        if connection is None:
            return False
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # "database is locked": another connection holds the write lock
            return True
        connection.execute("ROLLBACK")
        return False

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


SQLITE_KILL_POINTS = (
    ("first poll, heartbeat written, source being read", False, 0.0),
    ("first poll, 0.6 s into its write transaction (inventory being inserted)", False, 0.6),
    ("steady poll after a committed one, 0.2 s into its write transaction", True, 0.2),
)
"""(name, whether a poll must have committed before, seconds into the write transaction). The first poll's
write transaction lasts about 2 s here, a steady one about 0.6 s."""
SQLITE_ENV = {"AI_TELEMETRY_PIPELINE_ENABLED": "false"}


def _kill_sqlite(probe: SqliteProbe, worker: WorkerProcess, after_commit: bool, offset: float) -> bool:
    """Kill ``offset`` seconds into a poll's write transaction; True if the poll then had not committed."""
    deadline = time.monotonic() + KILL_DEADLINE_SECONDS
    since: float | None = None
    while True:
        ready, last = probe.heartbeat()
        assert ready or time.monotonic() < deadline, f"the worker never created its schema:\n{worker.log_text()}"
        assert after_commit or last is None, "a poll committed before the first poll could be killed"
        if ready and (last is not None or not after_commit) and probe.writing():
            since = since if since is not None else time.monotonic()
            if time.monotonic() - since >= offset:
                break
        else:
            since = None
        assert worker.alive(), f"the worker exited on its own:\n{worker.log_text()}"
        assert time.monotonic() < deadline, f"no poll to kill within {KILL_DEADLINE_SECONDS:.0f} s"
        time.sleep(PROBE_SECONDS)
    worker.kill()
    return probe.heartbeat()[1] == last


def test_worker_killed_mid_poll_on_sqlite(tmp_path: Path, reliability) -> None:
    """The same on the embedded default's SQLite file (WAL): a killed writer's transaction is discarded."""
    fleet = write_fleet_file(tmp_path / "fleet.toml", clusters=FLEET_CLUSTERS, nodes=FLEET_NODES)
    config = write_simulated_config(tmp_path / "sources.toml", fleet, name=SOURCE, poll_interval_seconds=POLL_INTERVAL)
    path = tmp_path / "worker.db"
    url = f"sqlite:///{path}"
    probe = SqliteProbe(path)
    rolled_back = 0
    started = time.monotonic()
    try:
        for number, (_, after_commit, offset) in enumerate(SQLITE_KILL_POINTS, start=1):
            worker = start_worker(tmp_path, url, config, token=TOKEN, env=SQLITE_ENV, wait=False, name=f"lite-{number}")
            try:
                rolled_back += _kill_sqlite(probe, worker, after_commit, offset)
            finally:
                worker.stop()
        worker = start_worker(tmp_path, url, config, token=TOKEN, env=SQLITE_ENV, wait=False, name="lite-final")
        try:
            before = len(probe.polls_seen)
            deadline = time.monotonic() + KILL_DEADLINE_SECONDS
            while len(probe.polls_seen) < before + FINAL_POLLS or probe.writing():
                assert worker.alive() and time.monotonic() < deadline, worker.log_text()
                probe.heartbeat()
                time.sleep(PROBE_SECONDS)
            assert worker.stop() == 0, worker.log_text()
        finally:
            worker.stop()
    finally:
        probe.close()
    polls = len(probe.polls_seen)
    violations, differences, compared, counts = _verify_polled(url, f"sqlite:///{tmp_path / 'reference.db'}", fleet)
    assert not violations, violations
    assert not differences, differences
    assert rolled_back == len(SQLITE_KILL_POINTS), "a kill landed after its poll committed"
    reliability.record(
        area="Faults",
        tried=f"SIGKILL of the worker on SQLite (WAL, the embedded default) at {len(SQLITE_KILL_POINTS)} points of a "
        f"poll of {counts['gpu']:,} GPUs ({'; '.join(name for name, _, _ in SQLITE_KILL_POINTS)}), restarting it",
        held=f"the {rolled_back} killed polls rolled back whole; {polls} polls committed in all; 0 invariant "
        f"violations; inventory, open allocations, sessions and the last rollup bucket equal to an uninterrupted "
        f"run's ({compared['gpus']:,} GPUs, {compared['open sessions']:,} sessions)",
        kills=len(SQLITE_KILL_POINTS),
        polls_rolled_back=rolled_back,
        polls_completed=polls,
        gpus=counts["gpu"],
        violations=0,
        seconds=round(time.monotonic() - started, 1),
    )


# --- mid-webhook --------------------------------------------------------------------------------------

SENDER_RATE = 20.0
SENDER_SECONDS = 15.0
SENDER_GROUPS = 20
SENDER_ALERTS = 20
"""300 notifications of 20 alerts: each group sends 15 in turn (firing, resolved, ...), the last still firing."""
WEBHOOK_KILL_DEADLINE_SECONDS = 20.0
ALERTED_CLUSTER = "bench"
"""The cluster label of the sender's alerts (benchmarks/alert_payloads.py)."""


@dataclass(frozen=True)
class WebhookKillPoint:
    name: str
    condition: Callable[[Observed, int, int], bool]
    """Given what is seen now, the receipts stored now and those stored when the search began."""


WEBHOOK_KILL_POINTS = (
    WebhookKillPoint(
        "receipts inserted, their sessions not yet",
        lambda seen, _, __: "alert_receipt" in seen.written and "workload" not in seen.written,
    ),
    WebhookKillPoint(
        "receipts and sessions written, not committed",
        lambda seen, _, __: "alert_receipt" in seen.written and "workload" in seen.written,
    ),
    WebhookKillPoint(
        "just after a webhook committed (its answer perhaps not yet sent)",
        lambda seen, stored, before: stored > before and "alert_receipt" not in seen.written,
    ),
)


def _sent_alerts(config: SenderConfig) -> list[dict]:
    """Every alert the sender sends, numbered as it numbers its notifications (``n`` in group ``n % groups``)."""
    total = round(config.rate * config.seconds)
    alerts = []
    for n in range(total):
        group, turn = n % config.groups, n // config.groups
        status = "firing" if turn % 2 == 0 else "resolved"
        alerts.extend(webhook(config.run * config.groups + group, turn // 2, config.alerts, status)["alerts"])
    return alerts


def _alert_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _expected(alerts: list[dict]) -> tuple[list[invariants.ReceiptKey], list[invariants.ExpectedSession]]:
    """The receipt of every alert, and the session each workload should have once all are delivered."""
    keys = [(a["fingerprint"], _alert_time(a["startsAt"]), a["status"]) for a in alerts]
    sessions: dict[WorkloadKey, invariants.ExpectedSession] = {}
    for alert in alerts:
        labels = alert["labels"]
        key = WorkloadKey(labels["cluster"], labels["namespace"], labels["pod"], labels["UUID"])
        ended = _alert_time(alert["endsAt"]) if alert["status"] == "resolved" else None
        known = sessions.get(key)
        if known is None or ended is not None:
            sessions[key] = invariants.ExpectedSession(key, _alert_time(alert["startsAt"]), ended)
    return keys, list(sessions.values())


def test_worker_killed_mid_webhook_loses_and_duplicates_nothing(tmp_path: Path, database_url: str, reliability) -> None:
    fleet = write_fleet_file(tmp_path / "fleet.toml", clusters=1, nodes=1)
    config = write_simulated_config(tmp_path / "sources.toml", fleet, name=SOURCE, poll_interval_seconds=60)
    port = free_port()
    sender = SenderConfig(
        url=f"http://127.0.0.1:{port}/webhooks/alertmanager",
        token=TOKEN,
        rate=SENDER_RATE,
        seconds=SENDER_SECONDS,
        alerts=SENDER_ALERTS,
        groups=SENDER_GROUPS,
    )
    out = tmp_path / "sender.json"
    kills, points = 0, []
    started = time.monotonic()
    with probing(database_url) as probe:
        worker = start_worker(tmp_path, database_url, config, token=TOKEN, port=port, name="worker-1")
        try:
            # the one poll (of a tiny fleet) done, so every transaction seen from here on is a webhook's
            probe.wait_for(lambda seen: seen.last_poll_at is not None and not seen.polling, worker, 60)
            sending = start_sender(sender, out)
            try:
                for number, point in enumerate(WEBHOOK_KILL_POINTS, start=2):
                    before = probe.receipts()
                    probe.wait_for(
                        lambda seen, p=point, b=before: p.condition(seen, probe.receipts(), b),
                        worker,
                        WEBHOOK_KILL_DEADLINE_SECONDS,
                    )
                    worker.kill()
                    kills += 1
                    points.append(point.name)
                    probe.wait_for(lambda seen: not seen.written, None, ABORT_TIMEOUT_SECONDS)
                    worker = start_worker(
                        tmp_path, database_url, config, token=TOKEN, port=port, name=f"worker-{number}"
                    )
                result = finish(sending, sender, out)
            finally:
                if sending.poll() is None:
                    sending.kill()
                    sending.wait()
            assert worker.stop() == 0, worker.log_text()
        finally:
            worker.stop()
    keys, sessions = _expected(_sent_alerts(sender))
    engine = create_db_engine(DatabaseSettings(url=database_url))
    try:
        violations = {
            "acknowledged alerts stored": invariants.missing_receipts(engine, keys),
            "receipts unique": invariants.duplicate_receipts(engine),
            "sessions as alerted": invariants.sessions_as_alerted(engine, sessions),
            "open sessions unique": invariants.duplicate_open_sessions(engine),
            "one session per workload": invariants.repeated_sessions(engine),
        }
        counts = invariants.table_counts(engine)
        with engine.connect() as connection:
            alerted, open_sessions = connection.execute(  # the fleet's own (polled) sessions aside
                text(
                    "SELECT count(*), count(*) FILTER (WHERE ended_at IS NULL) FROM workload WHERE cluster = :cluster"
                ),
                {"cluster": ALERTED_CLUSTER},
            ).one()
    finally:
        engine.dispose()
    assert kills == len(WEBHOOK_KILL_POINTS)
    assert result.given_up == 0 and result.alerts_acknowledged == result.alerts_sent == len(keys), result.statuses
    assert result.retries > 0, "no request was retried: the kills missed every webhook in flight"
    found = {name: problems for name, problems in violations.items() if problems}
    assert not found, found
    assert counts["alert_receipt"] == len(keys)
    assert alerted == len(sessions)
    expected_open = sum(s.ended_at is None for s in sessions)
    assert open_sessions == expected_open
    reliability.record(
        area="Faults",
        tried=f"SIGKILL of the worker {kills} times while an Alertmanager-style sender posted {result.notifications} "
        f"GPU-usage webhooks ({result.alerts_sent:,} alerts, firing then resolved) on PostgreSQL, at: "
        f"{'; '.join(points)}; restarted on the same port each time",
        held=f"the sender's retries ({result.retries} attempts beyond the first) delivered all; every one of the "
        f"{result.alerts_acknowledged:,} acknowledged alerts stored exactly once ({result.alerts_duplicate} "
        f"acknowledged as duplicates: stored, but answered only after a restart); {alerted:,} sessions "
        f"for {len(sessions):,} workloads ({open_sessions} open as their alerts still fire), none duplicated or "
        f"lost; 0 violations",
        kills=kills,
        alerts_sent=result.alerts_sent,
        alerts_acknowledged=result.alerts_acknowledged,
        notifications_retried=result.notifications_retried,
        retries=result.retries,
        duplicates_acknowledged=result.alerts_duplicate,
        sessions_expected=len(sessions),
        sessions_found=alerted,
        violations=0,
        seconds=round(time.monotonic() - started, 1),
    )


# --- the invariants themselves ---------------------------------------------------------------------------

HALF_WRITTEN = {
    "a poll's rollup sample missing for part of the fleet": (
        "UPDATE usage_rollup SET seconds = seconds / 2 WHERE id IN (SELECT id FROM usage_rollup ORDER BY id LIMIT 3)",
        "rollup buckets complete",
    ),
    "the last poll's bucket without some GPUs": (
        "DELETE FROM usage_rollup WHERE id IN (SELECT id FROM usage_rollup WHERE slice_id = 0 ORDER BY id LIMIT 2)",
        "inventory matches last poll",
    ),
    "the hub's heartbeat committed without the poll's inventory": (
        "UPDATE cluster SET last_poll_at = '2001-01-01 00:00:00', last_success_at = '2001-01-01 00:00:00'",
        "inventory matches last poll",
    ),
    "a cluster's count disagreeing with its rows": (
        "UPDATE cluster SET gpu_count = gpu_count + 1",
        "inventory matches last poll",
    ),
    "an allocation without its session": (
        "UPDATE workload SET ended_at = started_at WHERE id = (SELECT min(id) FROM workload)",
        "inventory matches last poll",
    ),
    "a slot allocated twice": (
        "INSERT INTO allocation (gpu_id, slice_id, project_id, pod, container, since, until) "
        "SELECT gpu_id, slice_id, project_id, pod, container, since, until FROM allocation "
        "WHERE id = (SELECT min(id) FROM allocation)",
        "open allocations unique",
    ),
    "a workload's session opened a second time": (
        "INSERT INTO workload (trace_id, workload_key, cluster, namespace, pod, container, node, gpu_uuid, "
        "mig_instance_id, gpu_model, started_at, ended_at, source, alert_fingerprint, summary, samples, util_avg, "
        "util_max, memory_max_mib, energy_wh, events, project_id, last_xid, throttled) "
        "SELECT '0123456789abcdef0123456789abcdef', workload_key, cluster, namespace, pod, container, node, gpu_uuid, "
        "mig_instance_id, gpu_model, started_at, started_at, source, alert_fingerprint, summary, samples, util_avg, "
        "util_max, memory_max_mib, energy_wh, events, project_id, last_xid, throttled FROM workload "
        "WHERE id = (SELECT min(id) FROM workload)",
        "one session per workload",
    ),
}


def _damaged(tmp_path: Path, fleet: Path, statement: str) -> dict[str, list[str]]:
    """The invariants of a database polled twice by an uninterrupted poller, after ``statement`` damaged it."""
    engine = create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'polled.db'}"))
    try:
        upgrade(engine)
        source = SimulatedSource(SOURCE, load_fleet(fleet), seed=42)
        poller = SourcePoller(source, engine, SchedulerSettings(), interval_seconds=POLL_INTERVAL)
        at = invariants.bucket_start(datetime.now(UTC), BUCKET_SECONDS) + timedelta(seconds=10)
        for n in range(2):
            assert poller.poll_once(now=at + timedelta(seconds=POLL_INTERVAL * n), force=True).outcome == "success"
        clean = {name: found for name, found in invariants.all_poll_invariants(engine, BUCKET_SECONDS).items() if found}
        assert not clean, f"an undamaged database violates invariants: {clean}"
        with engine.begin() as connection:
            connection.execute(text(statement))
        return invariants.all_poll_invariants(engine, BUCKET_SECONDS)
    finally:
        engine.dispose()
        (tmp_path / "polled.db").unlink()


def test_invariants_see_half_written_polls(tmp_path: Path, reliability) -> None:
    """Each invariant reports the half-written state it is meant for (SQLite; the same SQL runs on PostgreSQL)."""
    fleet = write_fleet_file(tmp_path / "fleet.toml", clusters=2, nodes=6)
    unnoticed = {}
    for damage, (statement, check) in HALF_WRITTEN.items():
        found = _damaged(tmp_path, fleet, statement)
        if not found[check]:
            unnoticed[damage] = found
    assert not unnoticed, f"damage the invariants did not notice: {unnoticed}"
    reliability.record(
        area="Faults",
        tried=f"the kill test's invariants run on polled databases damaged the {len(HALF_WRITTEN)} ways a "
        f"half-applied poll would leave them ({'; '.join(HALF_WRITTEN)})",
        held=f"each of the {len(HALF_WRITTEN)} damages was reported by its invariant; the undamaged databases passed",
        damages=len(HALF_WRITTEN),
        noticed=len(HALF_WRITTEN) - len(unnoticed),
    )


# --- between the receipt's commit and the pipeline's ------------------------------------------------------


def _xid_webhook(uuid: str, at: datetime) -> bytes:
    alert = {
        "status": "firing",
        "labels": {
            "alertname": "GPUXidError",
            "cluster": "lab",
            "Hostname": "gpu-b",
            "UUID": uuid,
            "xid": "79",
            "severity": "critical",
        },
        "annotations": {"summary": "XID 79: GPU has fallen off the bus"},
        "startsAt": at.isoformat().replace("+00:00", "Z"),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": "0badc0ffee000079",
    }
    webhook = {
        "receiver": "gpu-telemetry",
        "status": "firing",
        "alerts": [alert],
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": "xid",
        "truncatedAlerts": 0,
    }
    return json.dumps(webhook).encode()


def _xid_state(engine: Engine) -> tuple[int, int]:
    """(XID findings, receipts still pending for the pipeline)."""
    with engine.connect() as connection:
        findings = connection.execute(text("SELECT count(*) FROM finding WHERE kind = 'xid_error'")).scalar_one()
        pending = connection.execute(text("SELECT count(*) FROM alert_receipt WHERE signals_pending")).scalar_one()
    return findings, pending


def test_alert_signals_a_killed_worker_left_pending_are_replayed(
    db_engine: Engine, make_settings, monkeypatch: pytest.MonkeyPatch, reliability
) -> None:
    """The receiver commits an XID alert's receipt, then the process dies before the pipeline saves its
    finding. A redelivery is a duplicate and changes nothing; the restarted worker replays the receipt."""
    settings = make_settings(db_engine, receiver={"webhook_token": TOKEN})
    dying = SignalProcessor(settings, db_engine, metrics=WorkerMetrics())
    monkeypatch.setattr(dying, "process_alert", lambda *args, **kwargs: None)  # killed right after the commit
    intake = AlertIntake(settings, db_engine, metrics=WorkerMetrics(), signals=dying)
    body = _xid_webhook("GPU-dead-0079", utcnow() - timedelta(minutes=5))
    assert intake.persist(intake.parse(body)).new == 1
    assert intake.persist(intake.parse(body)).duplicates == 1  # Alertmanager's retry: a duplicate
    assert _xid_state(db_engine) == (0, 1)

    restarted = SignalProcessor(settings, db_engine, metrics=WorkerMetrics())
    assert restarted.replay_pending(utcnow()) == 0  # too fresh: a live worker may be taking it in right now
    later = utcnow() + REPLAY_AFTER + timedelta(seconds=1)
    replayed = restarted.replay_pending(later)
    assert replayed == 1
    assert _xid_state(db_engine) == (1, 0)
    findings = _xid_state(db_engine)[0]
    assert restarted.replay_pending(later + REPLAY_AFTER) == 0  # taken in once
    assert _xid_state(db_engine) == (1, 0)

    live = AlertIntake(settings, db_engine, metrics=WorkerMetrics(), signals=restarted)
    assert live.persist(intake.parse(_xid_webhook("GPU-dead-0080", utcnow()))).new == 1
    pending = _xid_state(db_engine)[1]
    assert pending == 0, "a receipt whose batch was saved is still marked pending"
    reliability.record(
        area="Faults",
        tried=f"{db_engine.dialect.name}: an XID alert's receipt committed, then the worker gone before its signal "
        f"pipeline batch was saved (its finding not written); Alertmanager's redelivery, then a restarted worker",
        held=f"the redelivery was a duplicate; the restarted worker replayed the {replayed} receipt left pending "
        f"(after {REPLAY_AFTER.total_seconds():.0f} s) into {findings} XID finding, once; "
        f"a live worker leaves no receipt pending",
        receipts_replayed=replayed,
        receipts_pending_after=pending,
    )
