from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, TypeVarTuple

from sqlalchemy import Select, func, select
from sqlmodel import Session

T = TypeVar("T")
Columns = TypeVarTuple("Columns")
MAX_LIMIT = 500


@dataclass(frozen=True, slots=True)
class PageRequest:
    limit: int = 50
    offset: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        if self.offset < 0:
            raise ValueError("offset must not be negative")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int

    @property
    def next_offset(self) -> int | None:
        return self.offset + self.limit if self.offset + self.limit < self.total else None

    @property
    def previous_offset(self) -> int | None:
        return max(self.offset - self.limit, 0) if self.offset > 0 else None


class InvalidQuery(ValueError):
    """A filter or sort key that the list does not support; the message names it."""


def like_pattern(text: str) -> str:
    """A case-insensitive substring pattern with LIKE's wildcards escaped (use ``escape="\\"``)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def order_by_key(
    stmt: Select[*Columns], sort: str | None, columns: Mapping[str, Any], default: str
) -> Select[*Columns]:
    """Order by ``sort`` (``-`` prefix: descending), then by the list's ``_tiebreak`` for a stable page."""
    key = sort or default
    name = key.removeprefix("-")
    public = sorted(k for k in columns if not k.startswith("_"))
    if name not in public:
        raise InvalidQuery(f"sort: unknown key {name!r}; one of {', '.join(public)}")
    column = columns[name]
    return stmt.order_by(column.desc() if key.startswith("-") else column.asc(), *columns["_tiebreak"])


def fetch_page(session: Session, stmt: Select[*Columns], page: PageRequest) -> tuple[list[Any], int]:
    """The page's rows and the total matching rows, in two statements."""
    total = session.execute(select(func.count()).select_from(stmt.order_by(None).subquery())).scalar_one()
    rows = session.execute(stmt.limit(page.limit).offset(page.offset)).all()
    return list(rows), total
