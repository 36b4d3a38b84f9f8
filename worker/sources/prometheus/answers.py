"""Decoding a Prometheus ``/api/v1/query`` answer (see :mod:`worker.sources.prometheus`).

Answers are decoded by msgspec straight into small structs holding only the labels read, so a large
answer is never held twice (raw bytes and a full JSON document). Anything but a complete, successful
instant vector raises :class:`~domain.telemetry.readings.SourceError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import msgspec

from domain.telemetry.readings import SourceError
from worker.sources.prometheus.queries import TAG


class DcgmRow(msgspec.Struct, frozen=True, gc=False):
    """The labels read from a ``values-N``, ``profiling-N`` or ``utilization`` series (field names are label names)."""

    tag: str = msgspec.field(default="", name=TAG)
    family: str = msgspec.field(default="", name="__name__")
    cluster: str = ""
    """Renamed to the source's ``cluster_label`` by :func:`row_type`."""
    uuid: str = msgspec.field(default="", name="UUID")
    instance: str = msgspec.field(default="", name="GPU_I_ID")
    xid: str = ""


def row_type(cluster_label: str | None) -> type[DcgmRow]:
    """:class:`DcgmRow` with its ``cluster`` field read from the source's cluster label (if any)."""
    if not cluster_label or cluster_label == "cluster":
        return DcgmRow
    field = msgspec.field(default="", name=cluster_label)
    # cast: defstruct is typed as returning type[Struct]; with bases=(DcgmRow,) it makes a DcgmRow subclass
    return cast(
        type[DcgmRow],
        msgspec.defstruct("DcgmRowLabelled", [("cluster", str, field)], bases=(DcgmRow,), frozen=True, gc=False),
    )


@dataclass(frozen=True)
class QueryResult:
    """One decoded instant-vector answer: (labels, value) pairs; NaN and infinities kept for the checks."""

    name: str
    series: list[tuple[Any, float]]
    """(labels, value): labels a dict, or a :class:`DcgmRow` for the values and utilization answers."""


def answer_decoder(metric: type) -> msgspec.json.Decoder[Any]:
    """A decoder of ``/api/v1/query`` answers whose series' labels become ``metric`` (a struct or dict)."""
    sample = msgspec.defstruct("Sample", [("metric", metric), ("value", tuple[float, str])], gc=False)
    data = msgspec.defstruct("Data", [("resultType", str), ("result", list[sample])], gc=False)  # type: ignore[valid-type]
    optional: list[tuple[str, Any, Any]] = [("data", data | None, None)]
    optional += [(key, Any, None) for key in ("warnings", "error", "errorType")]
    answer = msgspec.defstruct("Answer", [("status", str), *optional], gc=False)
    return msgspec.json.Decoder(answer)


def decode_vector(name: str, body: bytes | bytearray, decoder: msgspec.json.Decoder[Any] | None = None) -> QueryResult:
    """Parse a ``/api/v1/query`` answer; anything but a complete, successful vector raises SourceError.

    ``decoder`` (:func:`answer_decoder`) decodes straight into the labels the collector reads; without
    one, labels are dicts. The body is parsed once, into the final shape.
    """
    try:
        document = (decoder or _DICT_DECODER).decode(body)
    except msgspec.ValidationError:
        raise SourceError(_diagnose(name, body)) from None
    except msgspec.DecodeError as exc:
        raise SourceError(f"query {name}: malformed JSON from the source ({exc})") from None
    if document.status != "success":
        error = document.error or document.errorType or "no error given"
        raise SourceError(f"query {name}: the source answered status {document.status!r}: {error}")
    warnings = document.warnings
    if warnings:
        shown = "; ".join(str(w) for w in warnings[:3]) if isinstance(warnings, list) else str(warnings)
        raise SourceError(f"query {name}: partial response: {shown}")
    data = document.data
    if data is None or data.resultType != "vector":
        raise SourceError(f"query {name}: answer is not an instant vector")
    try:
        series = [(sample.metric, float(sample.value[1])) for sample in data.result]
    except ValueError as exc:
        raise SourceError(f"query {name}: malformed series in the answer (ValueError: {exc})") from None
    return QueryResult(name, series)


_DICT_DECODER = answer_decoder(dict[str, str])


def _diagnose(name: str, body: bytes | bytearray) -> str:
    """Why an answer that is JSON does not have the API's shape (the failure path only)."""
    try:
        document = json.loads(body)
    except ValueError as exc:
        return f"query {name}: malformed JSON from the source ({exc})"
    if not isinstance(document, dict):
        return f"query {name}: answer is not a JSON object"
    if document.get("status") != "success":
        error = document.get("error") or document.get("errorType") or "no error given"
        return f"query {name}: the source answered status {document.get('status')!r}: {error}"
    data = document.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
        return f"query {name}: answer is not an instant vector"
    return f"query {name}: malformed series in the answer"
