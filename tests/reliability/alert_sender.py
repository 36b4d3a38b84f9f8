"""An Alertmanager-style webhook sender, run in a process of its own (``python -m tests.reliability.alert_sender``).

It posts notifications at a fixed rate, each a webhook of GPU-usage alerts built by
:func:`benchmarks.alert_payloads.webhook` (a group's firing batch, then its resolution). Notification
``n`` is due ``n / rate`` seconds after the start and belongs to alert group ``n % groups``. As in
Alertmanager, the groups send independently (open loop: a slow answer to one group does not delay
the others), while one group sends one notification at a time. Like Alertmanager's notify stage it
retries a notification that got a 5xx, a 429 or a transport error (timeout, refused connection), the
same body again, with exponential backoff and jitter, until it is acknowledged (2xx) or its deadline
passes (Alertmanager's is the group interval; here ``give_up_after`` seconds after it was due). Any
other answer (4xx) is final, as in Alertmanager.

Running in its own process keeps it off the worker's and the test runner's GIL. When it is done it
writes a JSON :class:`SenderResult` (counts, statuses seen, per-attempt and delivery latencies, all
times as Unix epoch seconds so they can be matched with the worker's own records). Use
:func:`run_sender` from a test, or :func:`start_sender` to do something else while it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.alert_payloads import webhook

BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MULTIPLIER = 1.5
BACKOFF_RANDOMIZATION = 0.5
"""Alertmanager's backoff (github.com/cenkalti/backoff defaults): 0.5 s, x1.5, +-50% jitter."""
BACKOFF_MAX_SECONDS = 5.0
"""Alertmanager caps at 60 s; 5 s keeps a test's recovery short (the receiver asks Retry-After: 5)."""
RETRY_STATUSES = frozenset({429}) | frozenset(range(500, 600))
MAX_CONNECTIONS = 64


@dataclass(frozen=True)
class SenderConfig:
    """What to send, where, and for how long."""

    url: str
    """The webhook URL, e.g. ``http://127.0.0.1:PORT/webhooks/alertmanager``."""
    token: str
    rate: float
    """Webhooks per second."""
    seconds: float
    """Sending time: ``rate * seconds`` notifications in all (retries come on top, and may run past it)."""
    alerts: int = 50
    """Alerts per webhook."""
    groups: int = 60
    """Alert groups: notification ``n`` belongs to group ``n % groups``. As in Alertmanager, a group sends one
    notification at a time (the next waits until the one before is acknowledged or given up), so a group's
    firing batch and its resolution never race; the groups send independently of each other."""
    run: int = 0
    """Distinguishes the alerts of several senders against one database."""
    give_up_after: float = 120.0
    """A notification not acknowledged this many seconds after it was due is given up (lost)."""
    timeout: float = 30.0
    """Client timeout of one request (connect, write, read, pool)."""


@dataclass
class SenderResult:
    """What the sender did; every time is Unix epoch seconds (``time.time()``)."""

    config: dict[str, Any]
    started_at: float = 0.0
    finished_at: float = 0.0
    notifications: int = 0
    alerts_sent: int = 0
    """Distinct alerts (notifications x alerts per webhook), each sent until acknowledged or given up."""
    alerts_acknowledged: int = 0
    alerts_new: int = 0
    """Alerts the receiver reported new (stored for the first time), summed over acknowledgements."""
    alerts_duplicate: int = 0
    """Alerts the receiver reported already stored (a retry of something it had kept)."""
    notifications_retried: int = 0
    retries: int = 0
    """Attempts beyond the first."""
    given_up: int = 0
    """Notifications never acknowledged (deadline passed or a final 4xx): their alerts are lost."""
    statuses: dict[str, int] = field(default_factory=dict)
    """Answers seen, all attempts: HTTP status codes, or the transport error's name."""
    attempts: list[tuple[float, float, str]] = field(default_factory=list)
    """Every request: (sent at, latency in ms, status)."""
    deliveries_ms: list[float] = field(default_factory=list)
    """Per acknowledged notification: from when it was due to its acknowledgement (waiting for the group's
    previous notification and retries included: the latency an open-loop load sees)."""
    retry_after: dict[str, int] = field(default_factory=dict)
    """Retry-After values seen on answers that are retried (5xx, 429); "" when the header was missing."""
    last_ack_at: float = 0.0
    behind_s: float = 0.0
    """How late, at most, a group sent a notification (its previous one was still being delivered)."""

    @property
    def lost(self) -> int:
        return self.alerts_sent - self.alerts_acknowledged

    def acknowledged_rate(self) -> float:
        """Alerts acknowledged per second, from the start to the last acknowledgement."""
        span = self.last_ack_at - self.started_at
        return self.alerts_acknowledged / span if span > 0 else 0.0

    def latencies_ms(
        self, status: str | None = None, *, since: float = 0.0, until: float = float("inf")
    ) -> list[float]:
        """Attempt latencies, optionally only those answered ``status`` and sent within [since, until)."""
        return [ms for sent, ms, code in self.attempts if (status is None or code == status) and since <= sent < until]

    def record_attempt(self, attempt: int, sent: float, answered: float, code: str) -> None:
        self.attempts.append((sent, (answered - sent) * 1000, code))
        self.statuses[code] = self.statuses.get(code, 0) + 1
        if attempt == 2:
            self.notifications_retried += 1
        if attempt > 1:
            self.retries += 1

    def record_ack(self, alerts: int, answer: dict[str, Any], due: float, answered: float) -> None:
        self.alerts_acknowledged += alerts
        self.alerts_new += int(answer.get("new", 0))
        self.alerts_duplicate += int(answer.get("duplicates", 0))
        self.deliveries_ms.append((answered - due) * 1000)
        self.last_ack_at = max(self.last_ack_at, answered)

    @classmethod
    def load(cls, path: Path) -> SenderResult:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["attempts"] = [tuple(a) for a in data["attempts"]]
        return cls(**data)


def backoff_delays(rng: random.Random) -> Any:
    """Alertmanager-like retry delays: exponential from 0.5 s, x1.5, +-50% jitter, capped."""
    interval = BACKOFF_INITIAL_SECONDS
    while True:
        spread = BACKOFF_RANDOMIZATION * interval
        yield rng.uniform(interval - spread, interval + spread)
        interval = min(interval * BACKOFF_MULTIPLIER, BACKOFF_MAX_SECONDS)


async def _send(config: SenderConfig) -> SenderResult:
    result = SenderResult(config=asdict(config))
    headers = {"authorization": f"Bearer {config.token}", "content-type": "application/json"}
    total = round(config.rate * config.seconds)
    rng = random.Random(config.run)
    limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS)

    async def notify(client: httpx.AsyncClient, n: int, due: float) -> None:
        group, turn = n % config.groups, n // config.groups
        status = "firing" if turn % 2 == 0 else "resolved"
        body = json.dumps(webhook(config.run * config.groups + group, turn // 2, config.alerts, status)).encode()
        delays = backoff_delays(rng)
        deadline = due + config.give_up_after
        for attempt in range(1, 1_000_000):
            code = ""
            sent = time.time()
            try:
                response = await client.post(config.url, content=body, headers=headers)
                code = str(response.status_code)
            except httpx.HTTPError as exc:
                response = None
                code = type(exc).__name__
            now = time.time()
            result.record_attempt(attempt, sent, now, code)
            if response is not None and 200 <= response.status_code < 300:
                result.record_ack(config.alerts, response.json(), due, now)
                return
            if response is not None and response.status_code not in RETRY_STATUSES:
                break  # a final refusal: Alertmanager does not retry it either
            if response is not None:
                value = response.headers.get("retry-after", "")
                result.retry_after[value] = result.retry_after.get(value, 0) + 1
            delay = next(delays)
            if now + delay > deadline:
                break
            await asyncio.sleep(delay)
        result.given_up += 1

    async def group(client: httpx.AsyncClient, index: int, start: float) -> None:
        for n in range(index, total, config.groups):
            due = start + n / config.rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                result.behind_s = max(result.behind_s, -delay)
            await notify(client, n, due)

    async with httpx.AsyncClient(limits=limits, timeout=config.timeout) as client:
        result.started_at = start = time.time()
        await asyncio.gather(*(group(client, g, start) for g in range(min(config.groups, total))))
    result.finished_at = time.time()
    result.notifications = total
    result.alerts_sent = total * config.alerts
    return result


def send(config: SenderConfig) -> SenderResult:
    """Send in this process (blocking); tests use :func:`start_sender` or :func:`run_sender` instead."""
    return asyncio.run(_send(config))


def _command(config: SenderConfig, out: Path) -> list[str]:
    args = [sys.executable, "-m", "tests.reliability.alert_sender", "--out", str(out)]
    for name, value in asdict(config).items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def start_sender(config: SenderConfig, out: Path, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the sender process; it writes its :class:`SenderResult` to ``out`` when done (see :func:`finish`)."""
    from domain.settings import PROJECT_ROOT

    output = (log or out.with_suffix(".log")).open("ab")
    try:
        return subprocess.Popen(_command(config, out), cwd=PROJECT_ROOT, stdout=output, stderr=subprocess.STDOUT)
    finally:
        output.close()


def sender_deadline(config: SenderConfig) -> float:
    """The longest a sender can run: its sending time, a last notification's retries, a last request, slack."""
    return config.seconds + config.give_up_after + config.timeout + 30


def finish(process: subprocess.Popen[bytes], config: SenderConfig, out: Path) -> SenderResult:
    """Wait for a started sender (killing it past :func:`sender_deadline`) and read its result."""
    try:
        process.wait(timeout=sender_deadline(config))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"the alert sender did not finish within {sender_deadline(config):.0f} s") from None
    if process.returncode != 0:
        log = out.with_suffix(".log")
        detail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        raise AssertionError(f"the alert sender failed (exit {process.returncode}):\n{detail}")
    return SenderResult.load(out)


@contextmanager
def sending(config: SenderConfig, out: Path) -> Iterator[subprocess.Popen[bytes]]:
    """:func:`start_sender` for the block; a sender still running when it ends (the test failed) is killed."""
    process = start_sender(config, out)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def run_sender(config: SenderConfig, out: Path) -> SenderResult:
    """Run the sender process to the end and return its result."""
    return finish(start_sender(config, out), config, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.alert_sender")
    parser.add_argument("--out", type=Path, required=True)
    for name, spec in SenderConfig.__dataclass_fields__.items():
        kind = spec.type if isinstance(spec.type, type) else {"str": str, "float": float, "int": int}[str(spec.type)]
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, required=True)
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    result = send(SenderConfig(**args))
    out.write_text(json.dumps(asdict(result)), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
