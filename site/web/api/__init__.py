"""The JSON API under /api/v1/, described by the OpenAPI document Litestar generates."""

from web.api.ngsi_ld import NgsiLdApi, ngsi_ld_context
from web.api.sessions import SESSION_CONTROLLERS
from web.api.v1 import API_CONTROLLERS as V1_CONTROLLERS

API_CONTROLLERS = [*V1_CONTROLLERS, NgsiLdApi, ngsi_ld_context, *SESSION_CONTROLLERS]

__all__ = ["API_CONTROLLERS"]
