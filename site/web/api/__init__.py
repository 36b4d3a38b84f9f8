"""The JSON API under /api/v1/, described by the OpenAPI document Litestar generates."""

from web.api.ngsi_ld import NgsiLdApi
from web.api.v1 import API_CONTROLLERS as V1_CONTROLLERS

API_CONTROLLERS = [*V1_CONTROLLERS, NgsiLdApi]

__all__ = ["API_CONTROLLERS"]
