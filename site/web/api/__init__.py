"""The JSON API under /api/v1/, described by the OpenAPI document Litestar generates."""

from litestar.types import ControllerRouterHandler

from web.api.ngsi_ld import NgsiLdApi, ngsi_ld_context
from web.api.pipeline import PIPELINE_API_CONTROLLERS
from web.api.report_cards import REPORT_CARD_CONTROLLERS
from web.api.v1 import API_CONTROLLERS as INVENTORY_API_CONTROLLERS
from web.api.workloads import WORKLOAD_CONTROLLERS

API_CONTROLLERS: list[ControllerRouterHandler] = [
    *INVENTORY_API_CONTROLLERS,
    *PIPELINE_API_CONTROLLERS,
    NgsiLdApi,
    ngsi_ld_context,
    *WORKLOAD_CONTROLLERS,
    *REPORT_CARD_CONTROLLERS,
]

__all__ = ["API_CONTROLLERS"]
