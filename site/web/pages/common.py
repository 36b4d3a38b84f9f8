"""Query parameters every table page shares, validated once."""

from __future__ import annotations

from typing import Annotated

from litestar.params import PathParameter, QueryParameter

from domain.inventory import PageRequest
from domain.inventory.paging import MAX_LIMIT

ID_MAX = 2**31 - 1
"""Row ids are 32-bit integers in PostgreSQL; larger values are rejected as bad input, not queried."""

EntityId = Annotated[int, PathParameter(ge=1, le=ID_MAX, description="Row id.")]
Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="Rows per page.")]
Offset = Annotated[int, QueryParameter(ge=0, le=ID_MAX, description="Rows to skip.")]
Sort = Annotated[str | None, QueryParameter(description="Sort key; prefix with - for descending.", max_length=64)]
Search = Annotated[str | None, QueryParameter(description="Case-insensitive substring search.", max_length=200)]


Hours = Annotated[int, QueryParameter(ge=1, le=24 * 366, description="Hours of history to show.")]
IdFilter = Annotated[int | None, QueryParameter(ge=1, le=ID_MAX, description="Only rows of this id.")]
TextFilter = Annotated[str | None, QueryParameter(max_length=253, description="Exact match.")]


def sort_by(keys: tuple[str, ...]) -> QueryParameter:
    """The ``sort`` parameter whose schema lists the keys a list accepts (``-`` prefix: descending);
    declared as ``Annotated[str | None, sort_by(keys)]``, a type the checker can read."""
    return QueryParameter(pattern=f"^-?({'|'.join(keys)})$", description=f"One of {', '.join(keys)}; - for descending.")


def page_request(limit: int, offset: int) -> PageRequest:
    return PageRequest(limit=limit, offset=offset)
