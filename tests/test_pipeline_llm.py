"""LLM root-cause analysis against a stand-in OpenAI-compatible endpoint on loopback.

The stand-in exists because a language model cannot run here: it is a few lines of ``http.server``
that speak the chat-completions wire format, record what they were sent, and answer a canned
text (or an error when told to). The client code under test is the real one (httpx, real HTTP).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

import simulator
from domain.models import Finding
from domain.pipeline.llm import (
    ChatCompletionsAnalyzer,
    LlmBudgetExceeded,
    LlmUnavailable,
    NullAnalyzer,
    build_analyzer,
)
from domain.settings import LlmSettings, SettingsError
from tests.services import free_port
from worker.pipeline.processor import SignalProcessor
from worker.polling import SourcePoller
from worker.scheduler import create_scheduler
from worker.sources.simulated import SimulatedSource

ANSWER = "GPU 2 fell off the bus (XID 79): check PCIe seating and power; drain the node and reseat the card."
FINDING = {
    "kind": "xid_error",
    "subject": "gpu:GPU-1",
    "severity": "critical",
    "summary": "XID 79 on GPU 2",
    "evidence": {"members": [{"subject": "gpu:GPU-1", "value": 79}]},
}


class StandInChatCompletions:
    """A stand-in for an OpenAI-compatible LLM endpoint (the model itself cannot run here)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.body: bytes | None = None
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                stand_in.requests.append(
                    {
                        "path": self.path,
                        "authorization": self.headers.get("authorization"),
                        "json": json.loads(self.rfile.read(length) or b"{}"),
                    }
                )
                body = (
                    stand_in.body
                    if stand_in.body is not None
                    else json.dumps(
                        {
                            "id": "chatcmpl-1",
                            "object": "chat.completion",
                            "model": "stand-in-model",
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": ANSWER},
                                    "finish_reason": "stop",
                                }
                            ],
                            "usage": {"prompt_tokens": 100, "completion_tokens": 23, "total_tokens": 123},
                        }
                    ).encode()
                )
                self.send_response(stand_in.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StandInChatCompletions:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def endpoint() -> Iterator[StandInChatCompletions]:
    with StandInChatCompletions() as stand_in:
        yield stand_in


def settings(url: str, **overrides: Any) -> LlmSettings:
    return LlmSettings(base_url=url, model="test-model", api_key="sk-test", **overrides)


class Clock:
    def __init__(self) -> None:
        self.now = 1_767_607_200.0

    def __call__(self) -> float:
        return self.now


def test_the_analyzer_speaks_chat_completions(endpoint: StandInChatCompletions) -> None:
    analyzer = ChatCompletionsAnalyzer(settings(endpoint.url, max_answer_tokens=200))
    analysis = analyzer.analyse(FINDING)
    assert (analysis.text, analysis.model, analysis.tokens) == (ANSWER, "stand-in-model", 123)
    [request] = endpoint.requests
    assert request["path"] == "/v1/chat/completions" and request["authorization"] == "Bearer sk-test"
    body = request["json"]
    assert body["model"] == "test-model" and body["max_tokens"] == 200
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "XID 79 on GPU 2" in body["messages"][1]["content"]


def test_rate_and_daily_budget_are_bounded(endpoint: StandInChatCompletions) -> None:
    clock = Clock()
    analyzer = ChatCompletionsAnalyzer(
        settings(endpoint.url, requests_per_minute=2, requests_per_day=3, tokens_per_day=10_000), clock=clock
    )
    analyzer.analyse(FINDING)
    analyzer.analyse(FINDING)
    with pytest.raises(LlmBudgetExceeded, match="per minute"):
        analyzer.analyse(FINDING)
    clock.now += 61
    analyzer.analyse(FINDING)
    clock.now += 61
    with pytest.raises(LlmBudgetExceeded, match="requests per 24 h"):
        analyzer.analyse(FINDING)
    assert len(endpoint.requests) == 3 and analyzer.counters()["llm.refused"] == 2
    clock.now += 86400
    analyzer.analyse(FINDING)

    tokens = ChatCompletionsAnalyzer(settings(endpoint.url, tokens_per_day=200), clock=clock)
    tokens.seed([(clock.now - 3600, 150)])  # spent before a restart
    tokens.analyse(FINDING)  # 150 + 123 > 200 afterwards ...
    with pytest.raises(LlmBudgetExceeded, match="tokens per 24 h"):
        tokens.analyse(FINDING)  # ... so the next one waits


def test_endpoint_failures_are_unavailable(endpoint: StandInChatCompletions) -> None:
    analyzer = ChatCompletionsAnalyzer(settings(endpoint.url))
    endpoint.status = 500
    with pytest.raises(LlmUnavailable, match="500"):
        analyzer.analyse(FINDING)
    endpoint.status, endpoint.body = 200, b"<html>not json</html>"
    with pytest.raises(LlmUnavailable, match="not a chat-completions answer"):
        analyzer.analyse(FINDING)
    closed = ChatCompletionsAnalyzer(settings(f"http://127.0.0.1:{free_port()}/v1", timeout_seconds=2))
    with pytest.raises(LlmUnavailable):
        closed.analyse(FINDING)
    assert analyzer.counters()["llm.failures"] == 2


def test_off_unless_configured(sqlite_engine: Engine, make_settings) -> None:
    assert isinstance(build_analyzer(LlmSettings()), NullAnalyzer)
    with pytest.raises(SettingsError, match="AI_TELEMETRY_LLM_MODEL"):
        make_settings(sqlite_engine, llm={"base_url": "http://127.0.0.1:9/v1"})
    off = create_scheduler(make_settings(sqlite_engine), sqlite_engine, [])
    on = create_scheduler(
        make_settings(sqlite_engine, llm={"base_url": "http://127.0.0.1:9/v1", "model": "m"}), sqlite_engine, []
    )
    for scheduler in (off, on):
        scheduler.start()
    try:
        assert "llm-analysis" not in {j.id for j in off.jobs}
        assert "llm-analysis" in {j.id for j in on.jobs}
    finally:
        off.shutdown()
        on.shutdown()


def test_the_worker_stores_an_analysis_on_escalated_findings(
    sqlite_engine: Engine, make_settings, endpoint: StandInChatCompletions
) -> None:
    config = make_settings(
        sqlite_engine,
        llm={"base_url": endpoint.url, "model": "test-model", "min_severity": "critical", "requests_per_minute": 10},
    )
    signals = SignalProcessor(config, sqlite_engine, analyzer=build_analyzer(config.llm))
    fleet = simulator.load_fleet(Path(__file__).parent / "data" / "pipeline_faults.toml")
    poller = SourcePoller(
        SimulatedSource("faults", fleet), sqlite_engine, config.scheduler, interval_seconds=30, signals=signals
    )
    start = datetime(2026, 1, 5, 10, 9, 7, tzinfo=UTC)
    for step in range(6):
        poller.poll_once(now=start + timedelta(seconds=30 * step), force=True)

    with Session(sqlite_engine) as session:
        pending = {f.kind: f.analysis_status for f in session.exec(select(Finding))}
    assert pending["xid_error"] == "pending"  # critical and escalated
    assert pending["thermal"] is None  # below min_severity: never sent
    assert signals.analyse_pending() == 1
    with Session(sqlite_engine) as session:
        xid = session.exec(select(Finding).where(Finding.kind == "xid_error")).one()
    assert (xid.analysis, xid.analysis_status, xid.analysis_model, xid.analysis_tokens) == (
        ANSWER,
        "done",
        "stand-in-model",
        123,
    )
    assert "XID 79" in endpoint.requests[0]["json"]["messages"][1]["content"]
    assert signals.analyse_pending() == 0  # nothing left to ask

    # an endpoint that keeps failing: tried a bounded number of times, then given up
    with Session(sqlite_engine) as session:
        xid = session.exec(select(Finding).where(Finding.kind == "xid_error")).one()
        xid.analysis_status = "pending"
        session.add(xid)
        session.commit()
    endpoint.status = 503
    for _ in range(3):
        signals.analyse_pending()
    with Session(sqlite_engine) as session:
        assert session.exec(select(Finding).where(Finding.kind == "xid_error")).one().analysis_status == "failed"
