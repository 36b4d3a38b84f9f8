"""The JSON API under /api/v1/, described by the OpenAPI document Litestar generates."""

from web.api.sessions import SESSION_CONTROLLERS
from web.api.v1 import API_CONTROLLERS as INVENTORY_CONTROLLERS

API_CONTROLLERS = [*INVENTORY_CONTROLLERS, *SESSION_CONTROLLERS]

__all__ = ["API_CONTROLLERS"]
