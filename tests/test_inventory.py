"""Inventory upsert: counts, write-only-what-changed, allocations, missing marking and query counts.

The snapshot builders at the top are shared with the rollup and polling tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event, func
from sqlalchemy import delete as sa_delete
from sqlmodel import Session, col, select

from domain.database import session_scope
from domain.ledger.mig import PROFILES, profile_share, slice_fraction
from domain.models import Allocation, Cluster, Gpu, GpuSlice, Hub, Node, ResearchProject
from domain.statuses import ClusterStatus, Health
from domain.telemetry.readings import GpuReading, PodRef, ProjectQuota, SliceReading, Snapshot
from worker.inventory import InventoryChanges, InventoryIds, apply_snapshot, mark_source_failed
from worker.inventory.store import hub_project_ids

T0 = datetime(2025, 3, 3, 12, 0, 0, tzinfo=UTC)
MISSING_AFTER = timedelta(minutes=5)
WINDOW = 30.0


# --- snapshot builders ---------------------------------------------------------------------


def reading(
    n: int,
    *,
    cluster: str = "c1",
    node: str | None = None,
    workloads: Sequence[PodRef] = (),
    slices: Sequence[SliceReading] = (),
    utilization: float | None = 50.0,
    **overrides: object,
) -> GpuReading:
    """GPU number ``n``: four per node, 80 GiB, a steady 50 % unless told otherwise."""
    values: dict[str, object] = {
        "cluster": cluster,
        "node": node or f"{cluster}-node-{n // 4}",
        "uuid": f"GPU-{cluster}-{n:05d}",
        "index": n % 4,
        "model": "NVIDIA A100-SXM4-80GB",
        "pci_bus_id": f"00000000:{n % 4 + 7:02X}:00.0",
        "driver_version": "550.54.15",
        "utilization": utilization,
        "utilization_max": utilization,
        "memory_used_mib": 1000.0,
        "memory_free_mib": 80000.0,
        "memory_reserved_mib": 500.0,
        "power_watts": 200.0,
        "temperature_c": 45.0,
        "xid": 0,
        "workloads": tuple(workloads),
        "slices": tuple(slices),
    }
    values.update(overrides)
    return GpuReading(**values)  # type: ignore[arg-type]


def fleet(count: int, *, cluster: str = "c1") -> tuple[GpuReading, ...]:
    return tuple(reading(n, cluster=cluster) for n in range(count))


def snapshot(
    gpus: Sequence[GpuReading],
    *,
    at: datetime = T0,
    clusters: Sequence[str] | None = None,
    quotas: Sequence[ProjectQuota] = (),
    source: str = "hub-a",
    window: float = WINDOW,
) -> Snapshot:
    names = clusters if clusters is not None else sorted({g.cluster for g in gpus} or {"c1"})
    return Snapshot(
        source=source,
        taken_at=at,
        window_seconds=window,
        clusters=tuple(names),
        gpus=tuple(gpus),
        quotas=tuple(quotas),
    )


def replace_gpu(gpus: Sequence[GpuReading], n: int, **changes: object) -> tuple[GpuReading, ...]:
    """The fleet with GPU ``n`` changed."""
    return tuple(dataclasses.replace(g, **changes) if i == n else g for i, g in enumerate(gpus))  # type: ignore[arg-type]


# --- database helpers ----------------------------------------------------------------------


def hub_row(session: Session, name: str = "hub-a") -> Hub:
    hub = session.exec(select(Hub).where(Hub.name == name)).first()
    if hub is None:
        hub = Hub(name=name, kind="simulated")
        session.add(hub)
        session.flush()
    return hub


def apply(engine: Engine, snap: Snapshot, *, missing_after: timedelta = MISSING_AFTER) -> InventoryChanges:
    with session_scope(engine) as session:
        return apply_snapshot(session, hub_row(session, snap.source), snap, missing_after=missing_after)


def count(engine: Engine, model: type) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(model)).one()


def gpu_by_uuid(engine: Engine, uuid: str) -> Gpu:
    with Session(engine) as session:
        return session.exec(select(Gpu).where(Gpu.uuid == uuid)).one()


def allocations(engine: Engine) -> list[Allocation]:
    with Session(engine) as session:
        return list(session.exec(select(Allocation).order_by(col(Allocation.id))))


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement the engine sends while the block runs."""
    seen: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(statement.lstrip().upper())

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def mixed_fleet() -> tuple[GpuReading, ...]:
    """Two nodes: three whole GPUs (one used by team-a) and one MIG GPU with three slices."""
    return (
        reading(0, workloads=(PodRef("team-a", "train-0", "trainer"),)),
        reading(1),
        reading(2),
        reading(
            4,
            slices=(
                SliceReading(1, "1g.10gb", 30.0, 40.0, 2000.0, 9856.0, workloads=(PodRef("team-b", "nb-1"),)),
                SliceReading(2, "3g.40gb", 70.0, 90.0, 8000.0, 40192.0, workloads=(PodRef("team-a", "train-1"),)),
                SliceReading(3, "1g.10gb", 0.0, 0.0, 0.0, 9856.0),
            ),
        ),
    )


# --- tests ---------------------------------------------------------------------------------


def test_slice_fraction_parses_compute_slices() -> None:
    assert slice_fraction("1g.10gb") == pytest.approx(1 / 7)
    assert slice_fraction("3g.40gb") == pytest.approx(3 / 7)
    assert slice_fraction("7g.80gb") == 1
    assert slice_fraction("weird") == pytest.approx(1 / 7)


@given(data=st.data(), model=st.sampled_from(sorted(PROFILES)))
def test_slice_fraction_is_the_ledgers_share_on_every_mig_model(data: st.DataObject, model: str) -> None:
    """The inventory's share of a slice and the ledger's agree on every model, the A30's four slices included."""
    profile = data.draw(st.sampled_from(PROFILES[model]))
    assert slice_fraction(profile, f"NVIDIA {model}") == profile_share(f"NVIDIA {model}", profile)


def test_slice_fraction_never_fails_on_a_profile_the_ledger_refuses() -> None:
    assert slice_fraction("weird", "NVIDIA A30") == pytest.approx(1 / 4)
    assert slice_fraction("7g.80gb", "NVIDIA A30") == 1


def test_first_snapshot_creates_the_inventory(db_engine: Engine) -> None:
    quota = ProjectQuota("c1", "team-c", 4)
    changes = apply(db_engine, snapshot(mixed_fleet(), quotas=[quota]))

    assert count(db_engine, Cluster) == 1
    assert count(db_engine, Node) == 2
    assert count(db_engine, Gpu) == 4
    assert count(db_engine, GpuSlice) == 3
    assert count(db_engine, ResearchProject) == 3
    assert count(db_engine, Allocation) == 3
    assert changes.inserted == 1 + 2 + 4 + 3 + 3 + 3
    assert changes.updated == 0
    assert changes.allocations_opened == 3
    with Session(db_engine) as session:
        cluster = session.exec(select(Cluster)).one()
        assert (cluster.status, cluster.node_count, cluster.gpu_count, cluster.slice_count) == ("ok", 2, 4, 3)
        assert cluster.last_poll_at == cluster.last_success_at == T0
        node = session.exec(select(Node).where(Node.hostname == "c1-node-0")).one()
        assert (node.gpu_count, node.gpu_model, node.driver_version) == (3, "NVIDIA A100-SXM4-80GB", "550.54.15")
        gpu = session.exec(select(Gpu).where(Gpu.uuid == "GPU-c1-00000")).one()
        assert gpu.memory_total_mib == 81500.0
        assert (gpu.mig_mode, gpu.health, gpu.first_seen, gpu.last_seen) == (False, "healthy", T0, T0)
        assert session.exec(select(Gpu).where(Gpu.uuid == "GPU-c1-00004")).one().mig_mode is True
        projects = {p.namespace: p for p in session.exec(select(ResearchProject))}
        assert projects["team-a"].display_name == "team-a"
        assert projects["team-c"].gpu_quota == 4
        assert projects["team-c"].allocated_gpus == 0
        whole = session.exec(select(Allocation).where(col(Allocation.slice_id).is_(None))).one()
        assert (whole.pod, whole.container, whole.since, whole.until) == ("train-0", "trainer", T0, None)


def test_identical_second_snapshot_writes_no_inventory_row(db_engine: Engine) -> None:
    gpus, quotas = mixed_fleet(), [ProjectQuota("c1", "team-c", 4)]
    apply(db_engine, snapshot(gpus, quotas=quotas))

    with statements(db_engine) as sent:
        changes = apply(db_engine, snapshot(gpus, at=T0 + timedelta(seconds=30), quotas=quotas))

    assert changes.rows_written == 0
    assert changes.clusters_polled == 1
    writes = [s for s in sent if s.startswith(("INSERT", "UPDATE", "DELETE"))]
    assert len(writes) == 1 and writes[0].startswith("UPDATE CLUSTER")  # the poll heartbeat only
    with Session(db_engine) as session:
        assert session.exec(select(Cluster)).one().last_poll_at == T0 + timedelta(seconds=30)


def test_changed_reading_updates_exactly_that_gpu(db_engine: Engine) -> None:
    gpus = fleet(8)
    apply(db_engine, snapshot(gpus))
    later = T0 + timedelta(seconds=30)

    changes = apply(db_engine, snapshot(replace_gpu(gpus, 5, utilization=97.0, power_watts=310.0), at=later))

    assert (changes.updated, changes.inserted) == (1, 0)
    changed = gpu_by_uuid(db_engine, "GPU-c1-00005")
    assert (changed.utilization, changed.power_watts, changed.last_seen) == (97.0, 310.0, later)
    assert gpu_by_uuid(db_engine, "GPU-c1-00004").last_seen == T0


def test_last_seen_is_refreshed_coarsely(db_engine: Engine) -> None:
    gpus = fleet(4)
    apply(db_engine, snapshot(gpus))

    assert apply(db_engine, snapshot(gpus, at=T0 + MISSING_AFTER / 4 - timedelta(seconds=1))).rows_written == 0
    refreshed = T0 + MISSING_AFTER / 4
    changes = apply(db_engine, snapshot(gpus, at=refreshed))

    assert changes.updated == 4 + 1  # the GPUs and their node
    assert gpu_by_uuid(db_engine, "GPU-c1-00000").last_seen == refreshed


def test_health_follows_xid_and_temperature(db_engine: Engine) -> None:
    gpus = (reading(0, xid=79), reading(1, temperature_c=91.0), reading(2))
    apply(db_engine, snapshot(gpus))

    assert gpu_by_uuid(db_engine, "GPU-c1-00000").health == Health.FAILING
    assert gpu_by_uuid(db_engine, "GPU-c1-00001").health == Health.DEGRADED
    assert gpu_by_uuid(db_engine, "GPU-c1-00002").health == Health.HEALTHY
    with Session(db_engine) as session:
        assert session.exec(select(Node)).one().health == Health.FAILING  # the worst of its GPUs


def test_pod_leaving_closes_its_allocation_and_a_new_pod_opens_one(db_engine: Engine) -> None:
    first = (reading(0, workloads=(PodRef("team-a", "job-1"),)), reading(1, workloads=(PodRef("team-a", "job-2"),)))
    apply(db_engine, snapshot(first))
    later = T0 + timedelta(seconds=30)
    second = (reading(0, workloads=(PodRef("team-a", "job-3"),)), reading(1))

    changes = apply(db_engine, snapshot(second, at=later))

    assert (changes.allocations_closed, changes.allocations_opened) == (2, 1)
    rows = allocations(db_engine)
    assert sorted((a.pod, a.until) for a in rows) == [("job-1", later), ("job-2", later), ("job-3", None)]
    assert apply(db_engine, snapshot(second, at=later + timedelta(seconds=30))).rows_written == 0
    assert len(allocations(db_engine)) == 3


def test_each_pod_of_a_time_sliced_gpu_holds_an_allocation_and_half_the_gpu(db_engine: Engine) -> None:
    a, b, c = PodRef("team-a", "job-1"), PodRef("team-b", "job-2"), PodRef("team-b", "job-3")
    apply(db_engine, snapshot((reading(0, workloads=(a, b)),)))
    assert sorted((x.pod, x.until) for x in allocations(db_engine)) == [("job-1", None), ("job-2", None)]
    with Session(db_engine) as session:
        held = {p.namespace: p.allocated_gpus for p in session.exec(select(ResearchProject))}
    assert held == {"team-a": 0.5, "team-b": 0.5}

    later = T0 + timedelta(seconds=30)
    changes = apply(db_engine, snapshot((reading(0, workloads=(b, c)),), at=later))
    assert (changes.allocations_closed, changes.allocations_opened) == (1, 1)
    assert sorted((x.pod, x.until) for x in allocations(db_engine)) == [
        ("job-1", later),
        ("job-2", None),
        ("job-3", None),
    ]
    assert apply(db_engine, snapshot((reading(0, workloads=(b, c)),), at=later)).rows_written == 0


def test_duplicate_open_allocations_are_collapsed(db_engine: Engine) -> None:
    gpus = (reading(0, workloads=(PodRef("team-a", "job-1"),)),)
    apply(db_engine, snapshot(gpus))
    with session_scope(db_engine) as session:
        existing = session.exec(select(Allocation)).one()
        session.add(Allocation(gpu_id=existing.gpu_id, project_id=existing.project_id, pod="job-1", since=T0))

    changes = apply(db_engine, snapshot(gpus, at=T0 + timedelta(seconds=30)))

    assert changes.allocations_closed == 1
    assert sum(a.until is None for a in allocations(db_engine)) == 1


def test_silent_gpu_is_marked_missing_only_after_the_grace_period(db_engine: Engine) -> None:
    gpus = (reading(0), reading(1, workloads=(PodRef("team-a", "job-1"),)))
    apply(db_engine, snapshot(gpus))
    survivors = gpus[:1]

    early = apply(db_engine, snapshot(survivors, at=T0 + MISSING_AFTER - timedelta(seconds=1)))
    assert early.marked_missing == 0
    assert gpu_by_uuid(db_engine, "GPU-c1-00001").health == Health.HEALTHY
    assert allocations(db_engine)[0].until is None

    late_at = T0 + MISSING_AFTER
    late = apply(db_engine, snapshot(survivors, at=late_at))
    assert (late.marked_missing, late.allocations_closed) == (1, 1)
    silent = gpu_by_uuid(db_engine, "GPU-c1-00001")
    assert (silent.health, silent.last_seen) == (Health.MISSING, T0)
    assert allocations(db_engine)[0].until == late_at
    assert count(db_engine, Gpu) == 2  # never deleted
    assert apply(db_engine, snapshot(survivors, at=late_at + timedelta(seconds=30))).marked_missing == 0

    back = apply(db_engine, snapshot(gpus, at=late_at + timedelta(minutes=1)))
    assert gpu_by_uuid(db_engine, "GPU-c1-00001").health == Health.HEALTHY
    assert back.allocations_opened == 1


def test_silent_node_and_slice_are_marked_missing(db_engine: Engine) -> None:
    mig = reading(4, slices=(SliceReading(1, "1g.10gb"), SliceReading(2, "1g.10gb", workloads=(PodRef("t", "p"),))))
    apply(db_engine, snapshot((reading(0), mig)))
    reconfigured = dataclasses.replace(mig, slices=(SliceReading(1, "1g.10gb"),))

    changes = apply(db_engine, snapshot((reconfigured,), at=T0 + MISSING_AFTER))

    assert changes.marked_missing == 3  # node 0, its GPU, slice 2
    with Session(db_engine) as session:
        nodes = {n.hostname: n.health for n in session.exec(select(Node))}
        slices = {s.mig_instance_id: s.health for s in session.exec(select(GpuSlice))}
    assert nodes == {"c1-node-0": Health.MISSING, "c1-node-1": Health.HEALTHY}
    assert slices == {1: Health.HEALTHY, 2: Health.MISSING}
    assert allocations(db_engine)[0].until == T0 + MISSING_AFTER


def test_gpu_moving_to_another_node_keeps_its_row(db_engine: Engine) -> None:
    apply(db_engine, snapshot((reading(0),)))
    before = gpu_by_uuid(db_engine, "GPU-c1-00000")

    apply(db_engine, snapshot((reading(0, node="c1-spare"),), at=T0 + timedelta(seconds=30)))

    after = gpu_by_uuid(db_engine, "GPU-c1-00000")
    assert after.id == before.id and after.node_id != before.node_id
    assert count(db_engine, Node) == 2


def test_gpu_reported_by_another_hub_moves_there(db_engine: Engine) -> None:
    gpu = reading(0, workloads=(PodRef("team-a", "job-1"),))
    apply(db_engine, snapshot((gpu,)))
    with session_scope(db_engine) as session:
        session.add(Hub(name="hub-b", kind="simulated"))

    moved = apply(db_engine, snapshot((dataclasses.replace(gpu, cluster="b1", node="b1-node"),), source="hub-b"))

    assert (moved.allocations_closed, moved.allocations_opened) == (1, 1)  # a project of another cluster
    assert count(db_engine, Gpu) == 1
    with Session(db_engine) as session:
        row = session.exec(select(Gpu)).one()
        node = session.get(Node, row.node_id)
    assert node is not None and node.hostname == "b1-node"


def test_namespace_with_only_a_quota_becomes_a_project(db_engine: Engine) -> None:
    apply(db_engine, snapshot(fleet(2), quotas=[ProjectQuota("c1", "quota-only", 2.5)]))

    with Session(db_engine) as session:
        project = session.exec(select(ResearchProject)).one()
    assert (project.namespace, project.display_name, project.gpu_quota, project.allocated_gpus) == (
        "quota-only",
        "quota-only",
        2.5,
        0,
    )


def test_mig_slices_count_their_fraction_in_allocated_gpus(db_engine: Engine) -> None:
    apply(db_engine, snapshot(mixed_fleet()))

    with Session(db_engine) as session:
        projects = {p.namespace: p.allocated_gpus for p in session.exec(select(ResearchProject))}
    assert projects["team-a"] == pytest.approx(1 + 3 / 7)
    assert projects["team-b"] == pytest.approx(1 / 7)


def test_absent_cluster_goes_stale_and_keeps_its_inventory(db_engine: Engine) -> None:
    apply(db_engine, snapshot((*fleet(2, cluster="c1"), *fleet(2, cluster="c2"))))

    changes = apply(db_engine, snapshot(fleet(2, cluster="c1"), clusters=["c1"], at=T0 + MISSING_AFTER * 2))

    assert changes.marked_missing == 0
    with Session(db_engine) as session:
        c2 = session.exec(select(Cluster).where(Cluster.name == "c2")).one()
        assert c2.status == ClusterStatus.STALE and "hub-a" in (c2.status_reason or "")
        assert c2.last_poll_at == T0
        c2_health = session.exec(
            select(Gpu.health).join(Node, col(Gpu.node_id) == col(Node.id)).where(Node.cluster_id == c2.id)
        ).all()
    assert c2_health == [Health.HEALTHY, Health.HEALTHY]


def test_cluster_without_gpus_is_kept_with_zero_counts(db_engine: Engine) -> None:
    apply(db_engine, snapshot((), clusters=["empty"]))

    with Session(db_engine) as session:
        cluster = session.exec(select(Cluster)).one()
    assert (cluster.name, cluster.status, cluster.gpu_count) == ("empty", "ok", 0)


def test_mark_source_failed_only_touches_cluster_status(db_engine: Engine) -> None:
    apply(db_engine, snapshot(mixed_fleet()))
    failed_at = T0 + timedelta(minutes=1)

    with session_scope(db_engine) as session:
        hub = hub_row(session)
        marked = mark_source_failed(session, hub, "timeout after 10s", failed_at)
    assert [(c.name, c.status) for c in marked] == [("c1", ClusterStatus.STALE)]
    with Session(db_engine) as session:
        cluster = session.exec(select(Cluster)).one()
        assert (cluster.status_reason, cluster.last_poll_at, cluster.last_success_at) == (
            "timeout after 10s",
            failed_at,
            T0,
        )
        assert {g.health for g in session.exec(select(Gpu))} == {Health.HEALTHY}
    assert all(a.until is None for a in allocations(db_engine))

    with session_scope(db_engine) as session:
        marked = mark_source_failed(session, hub_row(session), "x" * 600, failed_at, consecutive_failures=3)
    assert marked[0].status == ClusterStatus.UNREACHABLE
    assert len(marked[0].status_reason or "") == 512


def test_cluster_that_never_succeeded_is_unreachable(db_engine: Engine) -> None:
    with session_scope(db_engine) as session:
        hub = hub_row(session)
        session.add(Cluster(hub_id=hub.id or 0, name="new"))
    with session_scope(db_engine) as session:
        marked = mark_source_failed(session, hub_row(session), "refused", T0)
    assert marked[0].status == ClusterStatus.UNREACHABLE


def _selects_of_second_poll(engine: Engine, gpu_count: int) -> int:
    gpus = tuple(reading(n, workloads=(PodRef(f"ns-{n % 5}", f"pod-{n}"),) if n % 2 else ()) for n in range(gpu_count))
    quotas = [ProjectQuota("c1", "ns-0", 8)]
    apply(engine, snapshot(gpus, quotas=quotas))
    changed = replace_gpu(gpus, 3, utilization=99.0)
    with statements(engine) as sent:
        changes = apply(engine, snapshot(changed, at=T0 + timedelta(seconds=30), quotas=quotas))
    assert changes.updated == 1
    return sum(s.startswith("SELECT") for s in sent)


def test_second_poll_issues_a_constant_number_of_selects(db_engine: Engine) -> None:
    small = _selects_of_second_poll(db_engine, 40)
    with session_scope(db_engine) as session:  # a fresh hub for the larger fleet
        session.add(Hub(name="hub-b", kind="simulated"))
    large_gpus = tuple(dataclasses.replace(g, cluster="big", uuid=g.uuid + "-big") for g in fleet(400))
    apply(db_engine, snapshot(large_gpus, source="hub-b"))
    with statements(db_engine) as sent:
        apply(db_engine, snapshot(large_gpus, source="hub-b", at=T0 + timedelta(seconds=30)))
    large = sum(s.startswith("SELECT") for s in sent)

    assert small == 7  # baseline: the hub, then clusters, nodes, GPUs, slices, projects, open allocations
    assert large == small


# --- the ids handed to the ledger ----------------------------------------------------------


def _ids_in_database(engine: Engine, snap: Snapshot) -> InventoryIds:
    """The ids of the snapshot's GPUs, slices and its hub's projects as the database holds them."""
    with Session(engine) as session:
        gpus = {
            g.uuid: g.id or 0 for g in session.exec(select(Gpu).where(col(Gpu.uuid).in_([r.uuid for r in snap.gpus])))
        }
        slices = {
            (s.gpu_id, s.mig_instance_id): s.id or 0
            for s in session.exec(select(GpuSlice).where(col(GpuSlice.gpu_id).in_(gpus.values())))
        }
        hub = session.exec(select(Hub).where(Hub.name == snap.source)).one()
        projects = hub_project_ids(session, hub.id or 0)  # what the ledger read before it was handed them
    return InventoryIds(gpus, slices, projects)


_pods = st.lists(
    st.builds(PodRef, st.sampled_from(["team-a", "team-b", "team-c"]), st.sampled_from(["p0", "p1"])), max_size=2
)


@st.composite
def _polls(draw: st.DrawFn) -> list[Snapshot]:
    """Two to four polls of up to six GPUs in two clusters and two hubs: GPUs come, go, move between
    hubs and change their MIG slices and pods."""
    polls = []
    for step in range(draw(st.integers(2, 4))):
        gpus = []
        for n in draw(st.sets(st.integers(0, 5), max_size=6)):
            slices = tuple(
                SliceReading(mig, "1g.10gb", 10.0, 10.0, 100.0, 9856.0, workloads=tuple(draw(_pods)))
                for mig in sorted(draw(st.sets(st.integers(1, 7), max_size=3)))
            )
            cluster = draw(st.sampled_from(["c1", "c2"]))
            gpus.append(
                dataclasses.replace(
                    reading(n, cluster=cluster, workloads=() if slices else tuple(draw(_pods)), slices=slices),
                    uuid=f"GPU-{n:05d}",  # the same GPU whichever cluster reports it
                )
            )
        hub = draw(st.sampled_from(["hub-a", "hub-b"]))
        polls.append(snapshot(gpus, at=T0 + timedelta(seconds=30 * step), source=hub))
    return polls


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(polls=_polls())
def test_the_ids_handed_to_the_ledger_are_the_rows_the_database_holds(db_engine: Engine, polls: list[Snapshot]) -> None:
    """The ledger attributes a poll's window to the ids the inventory just wrote instead of reading
    them back; they must be the ids a read would give, for every GPU, slice and pod's project."""
    with session_scope(db_engine) as session:  # each example starts from an empty inventory
        for model in (Allocation, GpuSlice, Gpu, Node, ResearchProject, Cluster):
            session.execute(sa_delete(model))
    for snap in polls:
        handed = apply(db_engine, snap).ids
        assert handed is not None
        held = _ids_in_database(db_engine, snap)
        assert handed.gpus == held.gpus
        reported = {(held.gpus[r.uuid], s.mig_instance_id) for r in snap.gpus for s in r.slices}
        assert handed.slices == {key: held.slices[key] for key in reported}
        pods = {
            (r.cluster, pod.namespace)
            for r in snap.gpus
            for pod in (*r.workloads, *(w for s in r.slices for w in s.workloads))
        }
        assert {key: handed.projects[key] for key in pods} == {key: held.projects[key] for key in pods}
