"""Optional root-cause analysis of escalated findings by an OpenAI-compatible chat-completions endpoint.

Off unless ``AI_TELEMETRY_LLM_BASE_URL`` and ``AI_TELEMETRY_LLM_MODEL`` are set: then
:func:`build_analyzer` returns a :class:`ChatCompletionsAnalyzer`, otherwise a :class:`NullAnalyzer`.
Only escalated findings are ever sent ("reason expensive" comes after "filter cheap"), and the
analyzer bounds what it spends: at most ``requests_per_minute``, and per rolling 24 hours at most
``requests_per_day`` requests and ``tokens_per_day`` tokens (as the endpoint reports them in
``usage``, else estimated at four characters a token). The budget is seeded from the answers
already stored, so a restart does not reset it.

The request is ``POST {base_url}/chat/completions`` with a system prompt and the finding (kind,
subject, severity, summary, evidence) as JSON; the answer's text is stored on the finding.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from domain.pipeline import PipelineError
from domain.settings import LlmSettings

SYSTEM_PROMPT = (
    "You are a reliability engineer for GPU clusters (NVIDIA datacenter GPUs, Kubernetes/OpenShift, "
    "dcgm-exporter metrics). You get one finding of a GPU telemetry pipeline as JSON. Reply in at most "
    "120 words: the most likely root cause, how to confirm it, and the next step. Be concrete, no preamble."
)
MAX_EVIDENCE_CHARS = 4000
DAY = 86400.0
MINUTE = 60.0


class LlmError(PipelineError):
    """The analysis could not be had."""


class LlmUnavailable(LlmError):
    """Connection failure, timeout, an error status, or an answer that is not chat-completions JSON."""


class LlmBudgetExceeded(LlmError):
    """The rate limit or the daily budget leaves no room for a request now."""


@dataclass(frozen=True)
class Analysis:
    text: str
    model: str
    tokens: int


class Analyzer(Protocol):
    """What the worker asks of an LLM: explanations within a budget it can be told about and report on."""

    enabled: bool

    def analyse(self, finding: Mapping[str, Any]) -> Analysis:
        """Explain one finding (its fields as a mapping); raise :class:`LlmError` when it cannot."""
        ...

    def seed(self, spent: Iterable[tuple[float, int]]) -> None:
        """Count earlier answers (Unix time, tokens) against the budget, e.g. those stored before a restart."""
        ...

    def counters(self) -> dict[str, int]:
        """Cumulative request counters for the pipeline's (``llm.*``); empty when it counts nothing."""
        ...


class NullAnalyzer:
    """The analyzer when no endpoint is configured: never called by the worker."""

    enabled = False

    def analyse(self, finding: Mapping[str, Any]) -> Analysis:
        raise LlmUnavailable("no LLM endpoint configured (AI_TELEMETRY_LLM_BASE_URL)")

    def seed(self, spent: Iterable[tuple[float, int]]) -> None:
        """Nothing to budget."""

    def counters(self) -> dict[str, int]:
        return {}


def messages_for(finding: Mapping[str, Any]) -> list[dict[str, str]]:
    facts = {
        k: finding.get(k)
        for k in ("kind", "subject", "severity", "level", "summary", "first_seen", "last_seen", "count")
    }
    evidence = json.dumps(finding.get("evidence") or {}, default=str, sort_keys=True)
    if len(evidence) > MAX_EVIDENCE_CHARS:
        evidence = evidence[:MAX_EVIDENCE_CHARS] + "...(truncated)"
    body = json.dumps(facts, default=str, sort_keys=True)
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Finding: {body}\nEvidence: {evidence}"},
    ]


class ChatCompletionsAnalyzer:
    """Calls an OpenAI-compatible ``/chat/completions`` endpoint, within a rate and a daily budget."""

    enabled = True

    def __init__(
        self,
        settings: LlmSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not settings.enabled:
            raise LlmUnavailable("AI_TELEMETRY_LLM_BASE_URL and AI_TELEMETRY_LLM_MODEL must both be set")
        self.settings = settings
        self.model = settings.model or ""
        self._clock = clock
        headers = {"Accept": "application/json"}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._client = httpx.Client(
            base_url=(settings.base_url or "").rstrip("/") + "/",
            headers=headers,
            timeout=settings.timeout_seconds,
            transport=transport,
        )
        self._requests: deque[float] = deque()
        self._spent: deque[tuple[float, int]] = deque()
        """(time, tokens) of the requests of the last 24 hours."""
        self.requests = 0
        self.failures = 0
        self.refused = 0

    def seed(self, spent: Iterable[tuple[float, int]]) -> None:
        """Count earlier answers (time, tokens) against the budget, e.g. the ones stored before a restart."""
        for at, tokens in sorted(spent):
            self._spent.append((at, tokens))

    def _forget(self, now: float) -> None:
        while self._requests and self._requests[0] <= now - MINUTE:
            self._requests.popleft()
        while self._spent and self._spent[0][0] <= now - DAY:
            self._spent.popleft()

    def headroom(self) -> str | None:
        """Why no request may go out now, or None when one may."""
        now = self._clock()
        self._forget(now)
        settings = self.settings
        if len(self._requests) >= settings.requests_per_minute:
            return f"rate limit: {settings.requests_per_minute} requests per minute"
        if len(self._spent) >= settings.requests_per_day:
            return f"daily budget: {settings.requests_per_day} requests per 24 h"
        if sum(tokens for _, tokens in self._spent) >= settings.tokens_per_day:
            return f"daily budget: {settings.tokens_per_day} tokens per 24 h"
        return None

    def analyse(self, finding: Mapping[str, Any]) -> Analysis:
        refusal = self.headroom()
        if refusal is not None:
            self.refused += 1
            raise LlmBudgetExceeded(refusal)
        messages = messages_for(finding)
        now = self._clock()
        self._requests.append(now)
        self.requests += 1
        payload = {
            "model": self.model,
            "messages": messages,
            "temperature": 0.2,
            "max_tokens": self.settings.max_answer_tokens,
        }
        try:
            response = self._client.post("chat/completions", json=payload)
        except httpx.HTTPError as exc:
            self.failures += 1
            self._spent.append((now, 0))
            raise LlmUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            self.failures += 1
            self._spent.append((now, 0))
            raise LlmUnavailable(f"endpoint answered {response.status_code}: {response.text[:200]}")
        try:
            data = response.json()
            text = str(data["choices"][0]["message"]["content"]).strip()
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            self.failures += 1
            self._spent.append((now, 0))
            raise LlmUnavailable(f"not a chat-completions answer: {response.text[:200]}") from exc
        usage = data.get("usage") if isinstance(data, dict) else None
        tokens = usage.get("total_tokens") if isinstance(usage, dict) else None
        if not isinstance(tokens, int):
            tokens = (sum(len(m["content"]) for m in messages) + len(text)) // 4
        self._spent.append((now, tokens))
        return Analysis(text[:8000], str(data.get("model") or self.model), tokens)

    def counters(self) -> dict[str, int]:
        return {"llm.requests": self.requests, "llm.failures": self.failures, "llm.refused": self.refused}

    def close(self) -> None:
        self._client.close()


def build_analyzer(settings: LlmSettings, *, transport: httpx.BaseTransport | None = None) -> Analyzer:
    """The real analyzer when an endpoint is configured, the null one otherwise."""
    if settings.enabled:
        return ChatCompletionsAnalyzer(settings, transport=transport)
    return NullAnalyzer()
