"""Many rows as one JSON parameter for PostgreSQL (``json_populate_recordset``): encoded once by
msgspec and handed to the driver as bytes, never copied into a ``str`` and encoded again (a
10,000-GPU poll sends a few such documents of several megabytes)."""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg.types.json import Json

_ENCODER = msgspec.json.Encoder()


def json_parameter(value: Any) -> Json:
    """``value`` (lists, dicts, numbers, strings, naive datetimes) as a ``json`` parameter."""
    return Json(_ENCODER.encode(value), dumps=_encoded)


def _encoded(document: bytes) -> bytes:
    return document
