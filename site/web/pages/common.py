"""Query parameters every table page shares, validated once."""

from __future__ import annotations

from typing import Annotated

from litestar.params import QueryParameter

from domain.inventory import PageRequest
from domain.inventory.paging import MAX_LIMIT

Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="Rows per page.")]
Offset = Annotated[int, QueryParameter(ge=0, description="Rows to skip.")]
Sort = Annotated[str | None, QueryParameter(description="Sort key; prefix with - for descending.", max_length=64)]
Search = Annotated[str | None, QueryParameter(description="Case-insensitive substring search.", max_length=200)]


Hours = Annotated[int, QueryParameter(ge=1, le=24 * 31, description="Hours of history to show.")]
IdFilter = Annotated[int | None, QueryParameter(ge=1, description="Only rows of this id.")]
TextFilter = Annotated[str | None, QueryParameter(max_length=253, description="Exact match.")]


def page_request(limit: int, offset: int) -> PageRequest:
    return PageRequest(limit=limit, offset=offset)
