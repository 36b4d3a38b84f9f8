from __future__ import annotations

from typing import Generic, TypeVar

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
