"""The JSON API under /api/v1/, described by the OpenAPI document Litestar generates."""

from web.api.v1 import API_CONTROLLERS

__all__ = ["API_CONTROLLERS"]
