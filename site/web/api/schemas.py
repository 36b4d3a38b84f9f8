from __future__ import annotations

from typing import Generic, TypeVar

from litestar.openapi import ResponseSpec
from pydantic import BaseModel, Field

from domain.inventory import Page

T = TypeVar("T")


class Paged(BaseModel, Generic[T]):
    """One page of a list: ``items``, the ``total`` matching rows, and the ``limit``/``offset`` used."""

    items: list[T]
    total: int = Field(ge=0)
    limit: int = Field(ge=1)
    offset: int = Field(ge=0)

    @classmethod
    def of(cls, page: Page[T]) -> Paged[T]:
        return cls(items=page.items, total=page.total, limit=page.limit, offset=page.offset)


class Problem(BaseModel):
    """An error, as RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str


def _problem(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=Problem, description=description, media_type="application/problem+json")


ERRORS = {
    400: _problem("Invalid query: the detail names the parameter"),
    401: _problem("Missing, invalid or expired credentials"),
    404: _problem("No such resource, or not visible to the caller"),
    503: _problem("A dependency (database or authorization service) is unavailable; retry"),
}
"""The error responses every API route may give, documented once."""
