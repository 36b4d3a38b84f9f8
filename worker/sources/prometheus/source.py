"""The Prometheus source itself: settings, the HTTP exchange of one poll's queries, their answers
folded into a snapshot as they arrive (see :mod:`worker.sources.prometheus`)."""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime
from typing import Any

import httpx
import msgspec

from domain.settings import SettingsError, SourceSettings, read_bearer_token
from domain.telemetry.labels import LabelReader
from domain.telemetry.readings import Snapshot, SourceError
from worker.memory import gc_paused
from worker.sources.prometheus.answers import QueryResult, answer_decoder, decode_vector, row_type
from worker.sources.prometheus.queries import QUERY_PATH, PromQl
from worker.sources.prometheus.snapshot import SnapshotBuilder

log = logging.getLogger(__name__)


def _ssl_context(source: SourceSettings) -> ssl.SSLContext | bool:
    if not (source.tls_ca_file or source.tls_cert_file):
        return True
    try:
        context = ssl.create_default_context(cafile=str(source.tls_ca_file) if source.tls_ca_file else None)
        if source.tls_cert_file and source.tls_key_file:
            context.load_cert_chain(str(source.tls_cert_file), str(source.tls_key_file))
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"source {source.name}: TLS files cannot be loaded: {exc}") from None
    return context


class PrometheusSource:
    """A :class:`~worker.sources.Source` reading a Prometheus HTTP API.

    ``transport`` replaces the network (``httpx.MockTransport`` in unit tests); ``token_reader``
    reads the bearer token at every poll (so a rotated token file is picked up).
    """

    kind = "prometheus"

    def __init__(
        self,
        settings: SourceSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        token_reader: Callable[[SourceSettings], str | None] = read_bearer_token,
    ) -> None:
        if settings.kind != "prometheus" or not settings.url:
            raise SettingsError(f"source {settings.name}: not a prometheus source with a url")
        self.settings = settings
        self.name = settings.name
        self.url: str | None = settings.url
        self.poll_interval_seconds = settings.poll_interval_seconds
        self.promql = PromQl(settings)
        self._token_reader = token_reader
        token_reader(settings)  # a missing token stops start-up, naming it
        self.reader = LabelReader(
            cluster=settings.cluster,
            cluster_label=settings.cluster_label,
            exporter_pod_pattern=settings.exporter_pod_pattern,
        )
        self._client = httpx.Client(
            base_url=settings.url.rstrip("/"),
            timeout=settings.timeout_seconds,
            verify=_ssl_context(settings),
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "ai-telemetry-collector"},
            follow_redirects=False,
        )
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"source-{settings.name}")
        self._decode_lock = threading.Lock()
        self._rows = answer_decoder(row_type(settings.cluster_label))

    @classmethod
    def from_settings(cls, settings: SourceSettings) -> PrometheusSource:
        return cls(settings)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._client.close()

    # --- queries ----------------------------------------------------------------------------

    def query_window_seconds(self, window_seconds: float) -> float:
        return self.promql.query_window_seconds(window_seconds)

    def queries(self, window_seconds: float) -> dict[str, str]:
        """The PromQL of one poll, by name (:meth:`PromQl.queries`)."""
        return self.promql.queries(window_seconds)

    # --- HTTP -------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        try:
            token = self._token_reader(self.settings)
        except SettingsError as exc:
            raise SourceError(str(exc)) from None
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _decoder(self, name: str) -> msgspec.json.Decoder[Any] | None:
        """Values, profiling and utilization decode into :class:`DcgmRow`; identity and kube keep dicts."""
        return None if name in ("identity", "kube") else self._rows

    def _query(
        self,
        name: str,
        promql: str,
        at: float,
        headers: Mapping[str, str],
        consume: Callable[[QueryResult], None] | None,
    ) -> QueryResult | None:
        params = {"query": promql, "time": f"{at:.3f}", "partial_response": "false"}
        timeout = self.settings.timeout_seconds
        try:
            with self._client.stream("POST", QUERY_PATH, data=params, headers=headers) as response:
                # gathered here, not kept as ``response.content``: httpx's response sits in a reference
                # cycle, which would hold the body until the collector runs (paused during a poll); and
                # grown in place rather than joined, so a large answer is never held twice
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
        except httpx.TimeoutException:
            raise SourceError(f"query {name}: no answer within {timeout:g} s (timeout)") from None
        except httpx.ConnectError as exc:
            raise SourceError(f"query {name}: cannot connect to {self.url}: {_reason(exc)}") from None
        except httpx.HTTPError as exc:
            raise SourceError(f"query {name}: HTTP exchange failed: {type(exc).__name__}: {_reason(exc)}") from None
        if response.status_code >= 300:
            detail = ""
            try:
                detail = str(json.loads(body).get("error") or "")
            except (ValueError, AttributeError):
                detail = body[:200].decode("utf-8", "replace").strip()
            what = "not authorised" if response.status_code in (401, 403) else "from the source"
            raise SourceError(f"query {name}: HTTP {response.status_code} {what}: {detail or 'no detail'}")
        with self._decode_lock:  # one decoded answer in memory at a time: decoded, consumed, dropped
            result = decode_vector(name, body, self._decoder(name))
            del body
            if consume is None:
                return result
            consume(result)
            return None

    def _run(
        self, now: datetime, window_seconds: float, consume: Callable[[QueryResult], None] | None
    ) -> list[QueryResult]:
        """Run the poll's queries concurrently; each answer is decoded (and given to ``consume``) as
        soon as it is in. The first failure is raised once every query has finished, so none is left running.
        """
        headers = self._headers()
        at = now.timestamp()
        futures = [
            self._pool.submit(self._query, name, promql, at, headers, consume)
            for name, promql in self.queries(window_seconds).items()
        ]
        failure: BaseException | None = None
        results: list[QueryResult] = []
        for future in as_completed(futures):
            try:
                result = future.result()
            except BaseException as exc:  # keep collecting, so no query is left running
                failure = failure or exc
                continue
            if result is not None:
                results.append(result)
        if failure is not None:
            raise failure
        return results

    def fetch(self, now: datetime, window_seconds: float) -> dict[str, QueryResult]:
        """Every decoded answer of one poll, by query name."""
        return {result.name: result for result in self._run(now, window_seconds, None)}

    def poll(self, now: datetime, window_seconds: float) -> Snapshot:
        """Each answer goes into the snapshot as soon as it is decoded, in the thread that fetched it
        (one at a time), and is dropped then: building it overlaps with waiting for the slower
        queries, and no two decoded answers are held at once."""
        builder = SnapshotBuilder(self.name, self.reader, self.settings.cluster)
        with gc_paused():
            self._run(now, window_seconds, builder.add)
            return builder.finish(now, window_seconds)


def _reason(exc: BaseException) -> str:
    """The innermost cause's message (an SSL verification error rather than httpx's wrapper)."""
    while (inner := exc.__cause__ or exc.__context__) is not None:
        exc = inner
    return str(exc) or type(exc).__name__
