"""Query parameters every table page shares, validated once."""

from __future__ import annotations

from typing import Annotated

from litestar.params import Parameter

from domain.inventory import PageRequest
from domain.inventory.paging import MAX_LIMIT

Limit = Annotated[int, Parameter(ge=1, le=MAX_LIMIT, description="Rows per page.")]
Offset = Annotated[int, Parameter(ge=0, description="Rows to skip.")]
Sort = Annotated[str | None, Parameter(description="Sort key; prefix with - for descending.", max_length=64)]
Search = Annotated[str | None, Parameter(description="Case-insensitive substring search.", max_length=200)]


def page_request(limit: int, offset: int) -> PageRequest:
    return PageRequest(limit=limit, offset=offset)
