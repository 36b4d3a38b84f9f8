"""Read side of the inventory: scoped, paged queries shared by the site's pages, fragments and API."""

from domain.inventory.paging import Page, PageRequest
from domain.inventory.queries import NotFound

__all__ = ["NotFound", "Page", "PageRequest"]
