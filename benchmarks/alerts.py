"""Alertmanager webhooks against the worker's receiver on PostgreSQL, beside a bare Litestar endpoint.

Webhooks of 50 GPU-usage alerts each (a firing batch of new workloads, then their resolution, so
workloads open and close) from 20 concurrent connections for 30 s, twice:

* paced at the target rate (1,500 alerts/s, open loop, as Alertmanager sends: notifications do not
  wait for each other), for the latency at that load;
* saturating (each connection posts again as soon as it is answered), for the most the receiver
  persists per second. With 20 connections always busy, latency there is queueing: about
  20 / webhooks per second.

The receiver runs under uvicorn in a process of its own, the load generator (httpx, asyncio) in
another; the bare endpoint, measured the same ways in the same run, reads the body and answers 200,
so the ratios are the price of parsing, authentication, persistence and workloads. Afterwards every
acknowledged alert is counted in the database. Targets: at least 1,500 alerts/s persisted, p99 at
most 100 ms (at that rate), nothing missing.

PostgreSQL is the test suite's throwaway server (tests/services.py: fsync off, as in CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from benchmarks.measure import Timing, report
from domain.database import create_db_engine, upgrade
from domain.models import AlertReceipt, Workload
from domain.settings import PROJECT_ROOT, DatabaseSettings
from tests.services import find_postgres_bin, free_port, fresh_database, running_postgres

SECONDS = float(os.environ.get("BENCH_ALERTS_SECONDS", "30"))
CONNECTIONS = 20
ALERTS_PER_WEBHOOK = 50
TOKEN = "benchmark-token-0123456789abcdef"  # noqa: S105  (a loopback benchmark's own token)
TARGET_ALERTS_PER_SECOND = 1500
TARGET_P99_MS = 100


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.alerts_processes", *args]


@contextmanager
def _server(*args: str, port: int) -> Iterator[str]:
    process = subprocess.Popen(_python(*args), cwd=PROJECT_ROOT)  # noqa: S603  (our own module, our arguments)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{args[0]} exited with {process.returncode}")
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{args[0]} did not start") from None
                time.sleep(0.2)
        yield f"{url}/webhooks/alertmanager"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _load(url: str, rate: float, run: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = Path(out.name)
    try:
        subprocess.run(  # noqa: S603  (our own module, our arguments)
            _python("load", url, TOKEN, *map(str, (SECONDS, CONNECTIONS, ALERTS_PER_WEBHOOK, rate, run, path))),
            cwd=PROJECT_ROOT,
            check=True,
            timeout=SECONDS + 120,
        )
        return json.loads(path.read_text())
    finally:
        path.unlink(missing_ok=True)


def _figures(result: dict[str, Any]) -> tuple[float, Timing]:
    return result["alerts_acknowledged"] / result["seconds"], Timing(result["latencies_ms"])


def run() -> None:
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        print("PostgreSQL binaries not found: run scripts/install-test-services")
        return
    with running_postgres(bin_dir) as server, fresh_database(server) as url:
        engine = create_db_engine(DatabaseSettings(url=url))
        upgrade(engine)
        bare_port, receiver_port = free_port(), free_port()
        paced_rate = TARGET_ALERTS_PER_SECOND / ALERTS_PER_WEBHOOK
        with _server("bare", str(bare_port), port=bare_port) as bare_url:
            bare_paced, bare = _load(bare_url, paced_rate, 0), _load(bare_url, 0, 1)
        with _server("receiver", url, str(receiver_port), TOKEN, port=receiver_port) as receiver_url:
            paced, receiver = _load(receiver_url, paced_rate, 0), _load(receiver_url, 0, 1)
        with engine.connect() as connection:
            stored = connection.execute(select(func.count()).select_from(AlertReceipt)).scalar_one()
            workloads = connection.execute(select(func.count()).select_from(Workload)).scalar_one()
        engine.dispose()

    paced_rate_done, paced_timing = _figures(paced)
    _, bare_paced_timing = _figures(bare_paced)
    bare_rate, bare_timing = _figures(bare)
    rate, timing = _figures(receiver)
    sent = sum(r["alerts_acknowledged"] + r["warmup_alerts"] for r in (paced, receiver))
    errors = paced["errors"] + receiver["errors"]
    report(
        f"Alertmanager webhooks of {ALERTS_PER_WEBHOOK} alerts, {CONNECTIONS} connections, {SECONDS:g} s each, "
        "PostgreSQL",
        [
            (f"paced at {TARGET_ALERTS_PER_SECOND:,} alerts/s: persisted alerts/s", f"{paced_rate_done:,.0f}"),
            (
                "paced: receiver latency p50 / p99",
                f"{paced_timing.p50:.1f} / {paced_timing.p99:.1f} ms  (target p99 <= {TARGET_P99_MS} ms)",
            ),
            (
                "paced: bare Litestar endpoint p50 / p99 (baseline)",
                f"{bare_paced_timing.p50:.1f} / {bare_paced_timing.p99:.1f} ms",
            ),
            ("paced: p99 ratio receiver / bare", f"{paced_timing.p99 / bare_paced_timing.p99:.1f}x"),
            ("saturated: receiver alerts/s persisted", f"{rate:,.0f}  (target >= {TARGET_ALERTS_PER_SECOND:,})"),
            ("saturated: receiver webhooks/s", f"{receiver['requests'] / receiver['seconds']:,.1f}"),
            ("saturated: bare Litestar endpoint alerts/s (baseline)", f"{bare_rate:,.0f}"),
            ("saturated: throughput ratio receiver / bare", f"{rate / bare_rate:.2f}"),
            ("saturated: receiver p50 / p99 (queueing)", f"{timing.p50:.1f} / {timing.p99:.1f} ms"),
            ("saturated: bare p50 / p99", f"{bare_timing.p50:.1f} / {bare_timing.p99:.1f} ms"),
            ("errors (non-2xx or transport)", f"{errors}"),
            ("alerts acknowledged, both runs (incl. 2 s warm-ups)", f"{sent:,}"),
            ("alert receipts in the database", f"{stored:,}  ({'all there' if stored == sent else 'MISSING'})"),
            ("workloads written", f"{workloads:,}"),
        ],
    )
