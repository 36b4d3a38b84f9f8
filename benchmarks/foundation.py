"""Foundation figures on the embedded default (SQLite, built-in simulated fleet).

* poll cycle: simulated source read + inventory/rollup write, against the source read alone;
* API and page latency: ``/api/v1/gpus`` and ``/`` in-process, against the bare SQL of the same rows.
"""

from __future__ import annotations

import re
import tempfile
from datetime import timedelta
from pathlib import Path

from litestar.testing import TestClient
from sqlalchemy import text

from benchmarks.measure import peak_rss_mb, report, timed
from domain.access.demo import seed_demo_identities
from domain.database import create_db_engine, upgrade
from domain.models import utcnow
from domain.settings import DEMO_SOURCE, load_settings
from web.app import create_app
from worker.polling import SourcePoller
from worker.sources.simulated import SimulatedSource

BARE_GPU_PAGE = text(
    "SELECT gpu.*, node.hostname, cluster.id, cluster.name FROM gpu JOIN node ON node.id = gpu.node_id "
    "JOIN cluster ON cluster.id = node.cluster_id ORDER BY node.hostname, gpu.id LIMIT 50"
)


def run() -> None:
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'bench.db'}"
        settings = load_settings({"database": {"url": url}, "site": {"session_secret": "b" * 40}}, demo=True)
        engine = create_db_engine(settings.database)
        upgrade(engine)
        source = SimulatedSource.from_settings(DEMO_SOURCE)
        poller = SourcePoller(source, engine, settings.scheduler, interval_seconds=15)  # polled every 15 s

        start = utcnow()
        moments = iter(start + timedelta(seconds=15 * i) for i in range(10_000))
        first = poller.poll_once(now=next(moments), force=True)
        poll = timed(lambda: poller.poll_once(now=next(moments), force=True), repeat=40)
        bare = timed(lambda: source.poll(next(moments), 15), repeat=40)
        unchanged = poller.poll_once(now=poller.state.last_attempt_at, force=True)
        report(
            "Poll cycle, built-in fleet (40 GPUs), SQLite",
            [
                ("poll + write p50", f"{poll.p50:.1f} ms"),
                ("source read alone p50 (baseline)", f"{bare.p50:.1f} ms"),
                ("ratio", f"{poll.p50 / bare.p50:.2f}x"),
                ("rows written, first poll", str(first.changes.rows_written if first.changes else "?")),
                (
                    "inventory rows written, same instant again",
                    str(unchanged.changes.rows_written if unchanged.changes else "?"),
                ),
            ],
        )

        seed_demo_identities(engine)
        with TestClient(create_app(settings, engine)) as client:
            page = client.get("/login")
            csrf = re.search(r'name="_csrf_token" value="([^"]+)"', page.text).group(1)
            client.post("/login", data={"username": "admin", "password": "admin-demo", "_csrf_token": csrf})
            api = timed(lambda: client.get("/api/v1/gpus?limit=50"), repeat=200)
            overview = timed(lambda: client.get("/"), repeat=100)
            with engine.connect() as connection:
                sql = timed(lambda: connection.execute(BARE_GPU_PAGE).all(), repeat=200)
        report(
            "Site latency, in-process, built-in fleet, SQLite",
            [
                ("GET /api/v1/gpus?limit=50 p50 / p95", f"{api.p50:.2f} / {api.p95:.2f} ms"),
                ("GET / (overview page) p50 / p95", f"{overview.p50:.2f} / {overview.p95:.2f} ms"),
                ("bare SQL, same GPU page p50 (baseline)", f"{sql.p50:.3f} ms"),
                ("API / bare SQL", f"{api.p50 / sql.p50:.1f}x"),
                ("peak RSS", f"{peak_rss_mb():.0f} MB"),
            ],
        )
        engine.dispose()
