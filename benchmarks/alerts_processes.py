"""The processes of the alert benchmark, each started with ``python -m benchmarks.alerts_processes``:

* ``receiver URL PORT TOKEN``: the worker's receiver app on PostgreSQL under uvicorn;
* ``bare PORT``: a bare Litestar endpoint that reads the body and answers 200 (the baseline);
* ``load URL TOKEN SECONDS CONNECTIONS ALERTS RATE RUN OUT``: the load generator (httpx, asyncio), which
  posts webhooks of ALERTS alerts over CONNECTIONS connections for SECONDS and writes its figures
  as JSON to OUT. RATE 0 sends as fast as answers come back (saturation: each connection waits for
  its answer); RATE > 0 paces the webhooks to RATE per second in total, open loop, and measures
  latency from when each webhook was due, so a slow answer cannot hide the queue behind it. RUN
  numbers the run, so the workloads (and fingerprints) of two runs never collide.

Each webhook is a realistic GPU-usage group: a firing batch of new workloads, then the resolved
batch of the same workloads, so the receiver opens and closes sessions as it would in production.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import httpx
import uvicorn
from litestar import Litestar, Request, post

from benchmarks.alert_payloads import webhook
from domain.database import create_db_engine
from domain.settings import load_settings
from worker.receiver import create_receiver_app

WARMUP_SECONDS = 2.0


def _receiver(url: str, port: int, token: str) -> None:
    settings = load_settings(
        {
            "database": {"url": url, "pool_size": 20},
            "receiver": {"webhook_token": token, "port": port},
        }
    )
    engine = create_db_engine(settings.database)
    app = create_receiver_app(settings, engine)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _bare(port: int) -> None:
    @post("/webhooks/alertmanager", status_code=200)
    async def webhook(request: Request[Any, Any, Any]) -> dict[str, str]:
        await request.body()
        return {"status": "ok"}

    app = Litestar(route_handlers=[webhook], openapi_config=None, logging_config=None)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def _load(
    url: str, token: str, seconds: float, connections: int, alerts: int, rate: float, run: int
) -> dict[str, Any]:

    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    latencies: list[float] = []
    counts = {"requests": 0, "alerts_acknowledged": 0, "alerts_new": 0, "errors": 0, "warmup_alerts": 0}
    statuses: dict[str, int] = {}
    started = time.perf_counter()
    measure_from = started + WARMUP_SECONDS
    stop_at = measure_from + seconds

    interval = connections / rate if rate > 0 else 0.0

    async def worker(index: int, client: httpx.AsyncClient) -> None:
        batch = 0
        due = started + index * interval / connections
        while time.perf_counter() < stop_at:
            status = "firing" if batch % 2 == 0 else "resolved"
            body = json.dumps(webhook(run * connections + index, batch // 2, alerts, status)).encode()
            if interval:
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent = due
                due += interval
            else:
                sent = time.perf_counter()
            try:
                response = await client.post(url, content=body, headers=headers)
                code = str(response.status_code)
            except httpx.HTTPError as exc:
                code = type(exc).__name__
                response = None
            done = time.perf_counter()
            statuses[code] = statuses.get(code, 0) + 1
            if response is not None and response.status_code == 200:
                if sent >= measure_from:
                    counts["requests"] += 1
                    counts["alerts_acknowledged"] += alerts
                    latencies.append((done - sent) * 1000)
                else:
                    counts["warmup_alerts"] += alerts
                counts["alerts_new"] += response.json().get("new", 0)
            else:
                counts["errors"] += 1
            batch += 1

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        await asyncio.gather(*(worker(i, client) for i in range(connections)))
    elapsed = time.perf_counter() - measure_from
    return {**counts, "seconds": elapsed, "latencies_ms": latencies, "statuses": statuses}


def main(argv: list[str]) -> int:
    kind, *args = argv
    if kind == "receiver":
        _receiver(args[0], int(args[1]), args[2])
    elif kind == "bare":
        _bare(int(args[0]))
    elif kind == "load":
        url, token, seconds, connections, alerts, rate, run, out = args
        result = asyncio.run(_load(url, token, float(seconds), int(connections), int(alerts), float(rate), int(run)))
        with open(out, "w", encoding="utf-8") as handle:
            json.dump(result, handle)
    else:
        print(f"unknown process {kind!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
