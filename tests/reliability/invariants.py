"""What a database written by the worker must look like, however the worker was stopped.

Each check reads a database (SQLite or PostgreSQL) and returns a list of violations, one readable
line each, so a test asserts the list is empty and reports what it found. They encode what
"half-written" would mean for the worker's two writers:

* **a poll** writes the hub's heartbeat, the inventory (clusters, nodes, GPUs, slices, projects,
  allocations), one rollup sample per GPU and slice, and the workloads it sees, all in one
  transaction (worker/polling.py). Half-written would be a rollup bucket holding a sample for only
  part of the fleet, counts that disagree with the rows they count, a heartbeat without the rows
  of that poll, an allocation without its session, or two open allocations/sessions for one slot.
* **a webhook** stores its receipts and applies them to workloads in one transaction,
  committed before it answers 2xx (worker/alerts/intake.py). Half-written would be a receipt
  without its session effect, an acknowledged alert missing, a receipt stored twice, or a
  workload with two sessions.

:func:`compare_with_reference` compares a database with one that an uninterrupted worker wrote
from the same fleet at the same poll time, ignoring ids and the number of polls.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, bindparam, text

from domain.ledger import bucket_start
from domain.ledger.mig import slice_fraction
from domain.models import UtcDateTime
from worker.workloads.rules import WorkloadKey

MAX_LISTED = 5
"""Violations listed per check before the rest are only counted."""


def _rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    """The rows of ``sql``; a ``:bucket`` parameter is a timestamp, bound as the models bind theirs."""
    statement = text(sql)
    if "bucket" in params:
        statement = statement.bindparams(bindparam("bucket", type_=UtcDateTime))
    with engine.connect() as connection:
        return list(connection.execute(statement, params))


def as_utc(value: datetime | str | None) -> datetime | None:
    """A timestamp as an aware UTC datetime (SQLite hands back strings or naive values)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _capped(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_LISTED:
        return lines
    return [*lines[:MAX_LISTED], f"... and {len(lines) - MAX_LISTED} more"]


# --- uniqueness --------------------------------------------------------------------------------------


def duplicate_open_sessions(engine: Engine) -> list[str]:
    """No workload has two open sessions (the partial unique index should make it impossible)."""
    rows = _rows(
        engine,
        "SELECT workload_key, count(*) FROM workload WHERE ended_at IS NULL GROUP BY workload_key HAVING count(*) > 1",
    )
    return _capped([f"workload {key}: {n} open sessions" for key, n in rows])


def repeated_sessions(engine: Engine, clusters: Iterable[str] | None = None) -> list[str]:
    """No workload has more than one session at all: for a fleet whose pods never leave, or alerts
    that open and close each workload once, a second session means one was lost and reopened."""
    rows = _rows(engine, "SELECT cluster, workload_key, count(*) FROM workload GROUP BY cluster, workload_key")
    wanted = set(clusters) if clusters is not None else None
    return _capped(
        [
            f"workload {key} on {cluster}: {n} sessions"
            for cluster, key, n in rows
            if n > 1 and (wanted is None or cluster in wanted)
        ]
    )


def duplicate_receipts(engine: Engine) -> list[str]:
    """No alert receipt is stored twice (fingerprint + startsAt + status is unique)."""
    rows = _rows(
        engine,
        "SELECT fingerprint, starts_at, status, count(*) FROM alert_receipt "
        "GROUP BY fingerprint, starts_at, status HAVING count(*) > 1",
    )
    return _capped([f"receipt {f} {s} {st}: stored {n} times" for f, s, st, n in rows])


def duplicate_open_allocations(engine: Engine) -> list[str]:
    """No GPU or slice has two open allocations."""
    rows = _rows(
        engine,
        "SELECT gpu_id, slice_id, count(*) FROM allocation WHERE until IS NULL "
        "GROUP BY gpu_id, slice_id HAVING count(*) > 1",
    )
    return _capped([f"GPU {g} slice {s}: {n} open allocations" for g, s, n in rows])


def duplicate_open_findings(engine: Engine) -> list[str]:
    """No finding (kind + subject) is open twice: a restarted pipeline continues the stored ones."""
    rows = _rows(
        engine,
        "SELECT kind, subject, count(*) FROM finding WHERE status <> 'resolved' "
        "GROUP BY kind, subject HAVING count(*) > 1",
    )
    return _capped([f"finding {kind} {subject}: open {n} times" for kind, subject, n in rows])


# --- alerts ------------------------------------------------------------------------------------------


ReceiptKey = tuple[str, datetime, str]
"""(fingerprint, startsAt, status) of one alert."""


def missing_receipts(engine: Engine, acknowledged: Iterable[ReceiptKey]) -> list[str]:
    """Every alert the receiver acknowledged (answered 2xx for) is stored."""
    stored = {
        (fingerprint, as_utc(starts_at), status)
        for fingerprint, starts_at, status in _rows(engine, "SELECT fingerprint, starts_at, status FROM alert_receipt")
    }
    return _capped(
        [
            f"acknowledged alert {f} {s.isoformat()} {st} is not stored"
            for f, s, st in acknowledged
            if (f, as_utc(s), st) not in stored
        ]
    )


@dataclass(frozen=True)
class ExpectedSession:
    """What the alerts said about one workload: when it started and, once resolved, when it ended."""

    key: WorkloadKey
    started_at: datetime
    ended_at: datetime | None


def sessions_as_alerted(engine: Engine, expected: Iterable[ExpectedSession]) -> list[str]:
    """Each alerted workload has exactly one session, opened and closed as its alerts said."""
    by_key: dict[str, list[Any]] = defaultdict(list)
    for row in _rows(engine, "SELECT workload_key, started_at, ended_at FROM workload"):
        by_key[row[0]].append(row)
    problems: list[str] = []
    for want in expected:
        found = by_key.get(want.key.digest, [])
        name = f"{want.key.namespace}/{want.key.pod}"
        if len(found) != 1:
            problems.append(f"workload {name}: {len(found)} sessions, expected 1")
            continue
        _, started_at, ended_at = found[0]
        if as_utc(started_at) != want.started_at:
            problems.append(f"workload {name}: started {as_utc(started_at)}, alerted {want.started_at}")
        if want.ended_at is None and ended_at is not None:
            problems.append(f"workload {name}: closed at {as_utc(ended_at)}, but its alert still fires")
        elif want.ended_at is not None and as_utc(ended_at) != want.ended_at:
            problems.append(f"workload {name}: ended {as_utc(ended_at)}, resolved at {want.ended_at}")
    return _capped(problems)


# --- polls -------------------------------------------------------------------------------------------


def incomplete_rollup_buckets(engine: Engine) -> list[str]:
    """Every rollup bucket holds the same GPU-seconds for each GPU it should cover.

    A poll adds its window's seconds to every GPU it reports (split among the GPU's slices and
    projects), so in a bucket every GPU that was in the inventory for the whole bucket (first seen
    before it began, never missing) has as many seconds as any other; one first seen inside the
    bucket has at most that many. A poll half applied would leave part of the fleet short.
    """
    counts = _rows(
        engine,
        "SELECT bucket_start, gpu_id, 0, sum(seconds) FROM usage_rollup GROUP BY bucket_start, gpu_id",
    )
    slots = _rows(engine, "SELECT g.id, 0, g.first_seen, g.health FROM gpu g")
    per_bucket: dict[datetime, dict[tuple[int, int], float]] = defaultdict(dict)
    for bucket, gpu_id, slice_id, seconds in counts:
        per_bucket[as_utc(bucket) or datetime.min.replace(tzinfo=UTC)][(gpu_id, slice_id)] = round(seconds, 6)
    problems: list[str] = []
    for bucket, covered in sorted(per_bucket.items()):
        full = max(covered.values())
        whole = [
            (gpu_id, slice_id)
            for gpu_id, slice_id, first_seen, health in slots
            if health != "missing" and (as_utc(first_seen) or bucket) <= bucket
        ]
        short = [slot for slot in whole if covered.get(slot, 0) != full]
        if short:
            problems.append(
                f"bucket {bucket.isoformat()}: {len(short)} of {len(whole)} GPUs present all bucket have "
                f"other than {full} GPU-seconds (e.g. {short[:3]})"
            )
        if not whole:  # the fleet first appeared in this bucket: the samples must still agree
            spread = Counter(covered.values())
            if len(spread) > 1:
                problems.append(f"bucket {bucket.isoformat()}: GPU-seconds differ across the fleet: {dict(spread)}")
    return _capped(problems)


def inventory_vs_last_poll(engine: Engine, bucket_seconds: int) -> list[str]:
    """The inventory, allocations, rollups and sessions all agree with the hub's last committed poll.

    * every cluster the last poll answered for (status ok) carries that poll's time;
    * each cluster's and node's counts equal the rows they count;
    * each project's allocated GPUs equal its open allocations (slices by their fraction);
    * the rollup bucket of the last poll has a sample for every GPU the inventory holds;
    * every open allocation has its open workload, and every open session a poll opened
      still has its allocation.
    """
    problems: list[str] = []
    hubs = _rows(engine, "SELECT id, name, last_poll_at FROM hub")
    for hub_id, hub_name, polled_at in hubs:
        last_poll = as_utc(polled_at)
        clusters = _rows(
            engine,
            "SELECT id, name, status, last_poll_at, last_success_at, node_count, gpu_count, slice_count "
            "FROM cluster WHERE hub_id = :hub",
            hub=hub_id,
        )
        if last_poll is None:
            if clusters:
                problems.append(f"hub {hub_name}: {len(clusters)} clusters but no recorded poll")
            continue
        for cid, name, status, polled, succeeded, node_count, gpu_count, slice_count in clusters:
            if status != "ok":
                continue
            if as_utc(polled) != last_poll or as_utc(succeeded) != last_poll:
                problems.append(f"cluster {name}: last poll {as_utc(polled)}/{as_utc(succeeded)}, hub's {last_poll}")
            nodes, gpus, slices = _rows(
                engine,
                "SELECT (SELECT count(*) FROM node n WHERE n.cluster_id = :c AND n.health <> 'missing'), "
                "(SELECT count(*) FROM gpu g JOIN node n ON n.id = g.node_id "
                " WHERE n.cluster_id = :c AND g.health <> 'missing'), "
                "(SELECT count(*) FROM gpu_slice s JOIN gpu g ON g.id = s.gpu_id JOIN node n ON n.id = g.node_id "
                " WHERE n.cluster_id = :c AND s.health <> 'missing')",
                c=cid,
            )[0]
            if (node_count, gpu_count, slice_count) != (nodes, gpus, slices):
                problems.append(
                    f"cluster {name}: counts {node_count}/{gpu_count}/{slice_count} nodes/GPUs/slices, "
                    f"rows {nodes}/{gpus}/{slices}"
                )
        for hostname, counted, rows in _rows(
            engine,
            "SELECT n.hostname, n.gpu_count, count(g.id) FROM node n JOIN cluster c ON c.id = n.cluster_id "
            "LEFT JOIN gpu g ON g.node_id = n.id AND g.health <> 'missing' "
            "WHERE c.hub_id = :hub AND n.health <> 'missing' GROUP BY n.id, n.hostname, n.gpu_count",
            hub=hub_id,
        ):
            if counted != rows:
                problems.append(f"node {hostname}: gpu_count {counted}, {rows} GPU rows")
        problems.extend(_projects_vs_allocations(engine, hub_id))
        bucket = bucket_start(last_poll, bucket_seconds)
        unsampled = _rows(
            engine,
            "SELECT g.uuid FROM gpu g JOIN node n ON n.id = g.node_id JOIN cluster c ON c.id = n.cluster_id "
            "WHERE c.hub_id = :hub AND g.health <> 'missing' AND NOT EXISTS (SELECT 1 FROM usage_rollup r "
            "WHERE r.gpu_id = g.id AND r.slice_id = 0 AND r.bucket_start = :bucket)",
            hub=hub_id,
            bucket=bucket,
        )
        if unsampled:
            problems.append(
                f"hub {hub_name}: {len(unsampled)} GPUs without a sample in the last poll's bucket {bucket.isoformat()}"
                f" (e.g. {[u for (u,) in unsampled[:3]]})"
            )
        problems.extend(_sessions_vs_allocations(engine, hub_id, hub_name))
    return _capped(problems)


def _projects_vs_allocations(engine: Engine, hub_id: int) -> list[str]:
    held: dict[int, float] = defaultdict(float)
    for project_id, profile, model in _rows(
        engine,
        "SELECT a.project_id, s.profile, g.model FROM allocation a LEFT JOIN gpu_slice s ON s.id = a.slice_id "
        "LEFT JOIN gpu g ON g.id = a.gpu_id "
        "JOIN research_project p ON p.id = a.project_id JOIN cluster c ON c.id = p.cluster_id "
        "WHERE a.until IS NULL AND c.hub_id = :hub",
        hub=hub_id,
    ):
        held[project_id] += 1.0 if profile is None else slice_fraction(profile, model or "")
    problems = []
    for project_id, namespace, allocated in _rows(
        engine,
        "SELECT p.id, p.namespace, p.allocated_gpus FROM research_project p JOIN cluster c ON c.id = p.cluster_id "
        "WHERE c.hub_id = :hub AND c.status = 'ok'",
        hub=hub_id,
    ):
        if not math.isclose(allocated, held.get(project_id, 0.0), abs_tol=1e-6):
            problems.append(f"project {namespace}: allocated_gpus {allocated}, open allocations {held.get(project_id)}")
    return problems


def _sessions_vs_allocations(engine: Engine, hub_id: int, hub_name: str) -> list[str]:
    allocated = {
        WorkloadKey(cluster, namespace, pod, uuid, mig).digest
        for cluster, namespace, pod, uuid, mig in _rows(
            engine,
            "SELECT c.name, p.namespace, a.pod, g.uuid, s.mig_instance_id FROM allocation a "
            "JOIN gpu g ON g.id = a.gpu_id LEFT JOIN gpu_slice s ON s.id = a.slice_id "
            "JOIN research_project p ON p.id = a.project_id JOIN cluster c ON c.id = p.cluster_id "
            "WHERE a.until IS NULL AND c.hub_id = :hub",
            hub=hub_id,
        )
    }
    sessions = {
        key: source
        for key, source in _rows(
            engine,
            "SELECT w.workload_key, w.source FROM workload w WHERE w.ended_at IS NULL "
            "AND w.cluster IN (SELECT name FROM cluster WHERE hub_id = :hub AND status = 'ok')",
            hub=hub_id,
        )
    }
    problems = []
    without_session = allocated - sessions.keys()
    if without_session:
        problems.append(f"hub {hub_name}: {len(without_session)} open allocations without an open session")
    orphaned = [key for key, source in sessions.items() if source == "poll" and key not in allocated]
    if orphaned:
        problems.append(f"hub {hub_name}: {len(orphaned)} open poll sessions without an open allocation")
    return problems


def all_poll_invariants(engine: Engine, bucket_seconds: int) -> dict[str, list[str]]:
    """Every check a polled database must pass, by name (for the test's message and the report)."""
    return {
        "open sessions unique": duplicate_open_sessions(engine),
        "one session per workload": repeated_sessions(engine),
        "open allocations unique": duplicate_open_allocations(engine),
        "open findings unique": duplicate_open_findings(engine),
        "rollup buckets complete": incomplete_rollup_buckets(engine),
        "inventory matches last poll": inventory_vs_last_poll(engine, bucket_seconds),
    }


# --- against an uninterrupted run --------------------------------------------------------------------


def _inventory(engine: Engine) -> dict[str, set[tuple[Any, ...]]]:
    """The inventory without ids or times: what two workers polling the same fleet must agree on."""
    tables = {
        "clusters": "SELECT name, status, node_count, gpu_count, slice_count FROM cluster",
        "nodes": "SELECT c.name, n.hostname, n.gpu_model, n.gpu_count, n.driver_version, n.health "
        "FROM node n JOIN cluster c ON c.id = n.cluster_id",
        "gpus": 'SELECT n.hostname, g.uuid, g."index", g.model, g.pci_bus_id, g.memory_total_mib, g.mig_mode, '
        "g.utilization, g.memory_used_mib, g.power_watts, g.temperature_c, g.last_xid, g.health "
        "FROM gpu g JOIN node n ON n.id = g.node_id",
        "slices": "SELECT g.uuid, s.mig_instance_id, s.profile, s.utilization, s.memory_used_mib, "
        "s.memory_total_mib, s.health FROM gpu_slice s JOIN gpu g ON g.id = s.gpu_id",
        "projects": "SELECT c.name, p.namespace, p.gpu_quota, p.allocated_gpus "
        "FROM research_project p JOIN cluster c ON c.id = p.cluster_id",
        "open allocations": "SELECT g.uuid, s.mig_instance_id, p.namespace, a.pod, a.container FROM allocation a "
        "JOIN gpu g ON g.id = a.gpu_id LEFT JOIN gpu_slice s ON s.id = a.slice_id "
        "JOIN research_project p ON p.id = a.project_id WHERE a.until IS NULL",
        "open sessions": "SELECT workload_key, cluster, namespace, pod, gpu_uuid, mig_instance_id, source, node "
        "FROM workload WHERE ended_at IS NULL",
        "all sessions": "SELECT workload_key FROM workload",
    }
    found: dict[str, set[tuple[Any, ...]]] = {}
    for name, sql in tables.items():
        rows = [tuple(_rounded(v) for v in row) for row in _rows(engine, sql)]
        found[name] = set(rows)
        if len(rows) != len(found[name]):
            found[name].add(("duplicate rows", len(rows) - len(found[name])))
    return found


def _rounded(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


_PEAKS = ("util_max", "memory_max_mib", "temperature_max_c")
_SUMMED = (
    "seconds",
    "seconds_idle",
    "seconds_util_known",
    "util_seconds",
    "memory_mib_seconds",
    "energy_wh",
    "power_seconds_known",
)


def _rollups(engine: Engine, bucket: datetime) -> dict[tuple[Any, ...], dict[str, float | None]]:
    """A bucket's rows by (GPU UUID, MIG instance, project namespace), their sums per GPU-second covered."""
    columns = ", ".join(f"r.{c}" for c in (*_PEAKS, *_SUMMED))
    rows = _rows(
        engine,
        "SELECT g.uuid, s.mig_instance_id, p.namespace, (SELECT sum(t.seconds) FROM usage_rollup t "  # noqa: S608
        f"WHERE t.gpu_id = r.gpu_id AND t.bucket_start = r.bucket_start), {columns} FROM usage_rollup r "
        "JOIN gpu g ON g.id = r.gpu_id LEFT JOIN gpu_slice s ON s.id = r.slice_id "
        "LEFT JOIN research_project p ON p.id = r.project_id WHERE r.bucket_start = :bucket",
        bucket=bucket,
    )
    found: dict[tuple[Any, ...], dict[str, float | None]] = {}
    for uuid, mig, namespace, covered, *values in rows:
        named = dict(zip((*_PEAKS, *_SUMMED), values, strict=True))
        for name in _SUMMED:  # sums grow with the seconds covered; per second they must agree
            named[name] = named[name] / covered if covered else math.nan
        found[(uuid, mig, namespace)] = named
    return found


def last_poll_at(engine: Engine, hub: str) -> datetime | None:
    rows = _rows(engine, "SELECT last_poll_at FROM hub WHERE name = :hub", hub=hub)
    return as_utc(rows[0][0]) if rows else None


def compare_with_reference(
    actual: Engine, reference: Engine, *, bucket: datetime, bucket_seconds: int
) -> tuple[list[str], dict[str, int]]:
    """Differences between a database and one an uninterrupted worker wrote from the same fleet.

    The inventory (clusters, nodes, GPUs, slices, projects, open allocations, open sessions) must be
    equal row for row, ignoring ids and times; the rollup bucket ``bucket`` must hold the same rows
    with the same values per sample (the number of samples depends on how many polls ran). Returns
    the differences and the row counts compared, per table.
    """
    problems: list[str] = []
    mine, theirs = _inventory(actual), _inventory(reference)
    counts: dict[str, int] = {}
    for name in theirs:
        counts[name] = len(mine[name])
        if mine[name] != theirs[name]:
            extra, missing = mine[name] - theirs[name], theirs[name] - mine[name]
            problems.append(
                f"{name}: {len(mine[name])} rows vs {len(theirs[name])} uninterrupted; "
                f"{len(extra)} extra (e.g. {sorted(map(str, extra))[:2]}), "
                f"{len(missing)} missing (e.g. {sorted(map(str, missing))[:2]})"
            )
    start = bucket_start(bucket, bucket_seconds)
    mine_rollups, their_rollups = _rollups(actual, start), _rollups(reference, start)
    counts["rollup rows in last bucket"] = len(mine_rollups)
    if mine_rollups.keys() != their_rollups.keys():
        problems.append(
            f"rollup bucket {start.isoformat()}: {len(mine_rollups)} rows vs {len(their_rollups)} uninterrupted"
        )
    differing = [
        key for key in mine_rollups.keys() & their_rollups.keys() if not _close(mine_rollups[key], their_rollups[key])
    ]
    if differing:
        example = differing[0]
        problems.append(
            f"rollup bucket {start.isoformat()}: {len(differing)} rows differ per sample, e.g. {example}: "
            f"{mine_rollups[example]} vs {their_rollups[example]}"
        )
    return _capped(problems), counts


def _close(mine: Mapping[str, float | None], theirs: Mapping[str, float | None]) -> bool:
    def same(a: float | None, b: float | None) -> bool:
        return a is b if a is None or b is None else math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)

    return all(same(mine[k], theirs[k]) for k in theirs)


def table_counts(engine: Engine) -> dict[str, int]:
    """Rows per table the worker writes (for the report)."""
    names = (
        "hub",
        "cluster",
        "node",
        "gpu",
        "gpu_slice",
        "research_project",
        "allocation",
        "usage_rollup",
        "workload",
        "alert_receipt",
        "finding",
    )
    return {name: _rows(engine, f"SELECT count(*) FROM {name}")[0][0] for name in names}  # noqa: S608
