"""Many rows as one JSON parameter for PostgreSQL (``json_populate_recordset``): encoded once by
msgspec and handed to the driver as bytes, never copied into a ``str`` and encoded again (a
10,000-GPU poll sends a few such documents of several megabytes), in documents of at most
:data:`DOCUMENT_ROWS` rows."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import msgspec
from psycopg.types.json import Json

_ENCODER = msgspec.json.Encoder()

DOCUMENT_ROWS = 2_000
"""Rows per document. libpq keeps a connection's send buffer at the largest message it ever sent
(doubled until it fits) for the connection's life: a 10,000-GPU window's rows in one document
(~4 MB) left 8 MB on every pooled connection that sent one, resident beside the next poll."""

T = TypeVar("T")


def in_documents(rows: Sequence[T]) -> Iterator[Sequence[T]]:
    """``rows`` in slices of :data:`DOCUMENT_ROWS`, one document (and one statement) each."""
    for start in range(0, len(rows), DOCUMENT_ROWS):
        yield rows[start : start + DOCUMENT_ROWS]


def json_parameter(value: Any) -> Json:
    """``value`` (lists, dicts, numbers, strings, naive datetimes) as a ``json`` parameter."""
    return Json(_ENCODER.encode(value), dumps=_encoded)


def _encoded(document: bytes) -> bytes:
    return document
