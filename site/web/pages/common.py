"""Path and query parameters the detail pages share, validated once (list filters: :mod:`web.filters`)."""

from __future__ import annotations

from typing import Annotated

from litestar.params import PathParameter, QueryParameter

from domain.inventory.references import ID_MAX

EntityId = Annotated[int, PathParameter(ge=1, le=ID_MAX, description="Row id.")]
Hours = Annotated[int, QueryParameter(ge=1, le=24 * 366, description="Hours of history to show.")]
