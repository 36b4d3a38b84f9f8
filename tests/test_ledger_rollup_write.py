"""The rollup write adds to a bucket's existing rows exactly, on SQLite (one upsert per row, straight
to the driver) and on PostgreSQL (added by the server, nothing read back, a window's rows in several
documents): sums add, peaks keep the larger known value, unknown never wins, and every key keeps one
row (worker/ledger.py, docs/ledger.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete
from sqlmodel import Session, select

import domain.json_parameter
from domain.ledger.attribution import MEASURES, PEAKS, RowKey, peak
from domain.models import Cluster, Gpu, Hub, Node, UsageRollup
from worker.ledger import write_rows

BUCKETS = [datetime(2026, 12, 1, tzinfo=UTC) + timedelta(minutes=5 * i) for i in range(3)]
GPUS = 3

known = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
keys = st.tuples(st.integers(0, GPUS - 1), st.sampled_from([0, 1]), st.sampled_from([0, 7]), st.sampled_from(BUCKETS))
measures = st.tuples(*(st.none() | known if i in PEAKS else known for i in range(len(MEASURES))))
batches = st.lists(st.dictionaries(keys, measures, max_size=8), min_size=1, max_size=4)


def _gpu_ids(engine: Engine) -> list[int]:
    with Session(engine) as session:
        ids = list(session.exec(select(Gpu.id).order_by(Gpu.id)))
        if ids:
            return [i or 0 for i in ids]
        now = BUCKETS[0]
        hub = Hub(name="h", kind="prometheus", url="http://127.0.0.1:1")
        session.add(hub)
        session.flush()
        cluster = Cluster(hub_id=hub.id or 0, name="c")
        session.add(cluster)
        session.flush()
        node = Node(cluster_id=cluster.id or 0, hostname="n", first_seen=now, last_seen=now)
        session.add(node)
        session.flush()
        gpus = [
            Gpu(uuid=f"GPU-{i}", node_id=node.id or 0, index=i, model="m", first_seen=now, last_seen=now)
            for i in range(GPUS)
        ]
        session.add_all(gpus)
        session.commit()
        return [g.id or 0 for g in gpus]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=batches)
def test_rollups_add_up_exactly_batch_after_batch(
    db_engine: Engine, batches: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(domain.json_parameter, "DOCUMENT_ROWS", 3)  # a batch of up to 8 rows: up to 3 documents
    gpu_ids = _gpu_ids(db_engine)
    expected: dict[RowKey, list[float | None]] = {}
    with Session(db_engine) as session:
        session.exec(delete(UsageRollup))  # type: ignore[call-overload]
        session.commit()
    for batch in batches:
        rows = {(gpu_ids[g], s, p, b): list(m) for (g, s, p, b), m in batch.items()}
        with Session(db_engine) as session:
            assert write_rows(session, rows) == len(rows)
            session.commit()
        for key, values in rows.items():
            old = expected.get(key)
            expected[key] = (
                list(values)
                if old is None
                else [peak(o, v) if i in PEAKS else o + v for i, (o, v) in enumerate(zip(old, values, strict=True))]
            )
    with Session(db_engine) as session:
        stored = {
            (r.gpu_id, r.slice_id, r.project_id, r.bucket_start): [getattr(r, m) for m in MEASURES]
            for r in session.exec(select(UsageRollup))
        }
        count = len(list(session.exec(select(UsageRollup.id))))
    assert count == len(expected)  # one row per key, however many batches wrote to it
    assert stored == expected
    with Session(db_engine) as session:  # and found as every reader finds them: by equal bucket_start
        for gpu_id, slice_id, project_id, bucket in expected:
            found = session.exec(
                select(UsageRollup.id).where(
                    UsageRollup.gpu_id == gpu_id,
                    UsageRollup.slice_id == slice_id,
                    UsageRollup.project_id == project_id,
                    UsageRollup.bucket_start == bucket,
                )
            ).all()
            assert len(found) == 1, (gpu_id, slice_id, project_id, bucket)
