"""The site: server-rendered pages with htmx fragments, the JSON API and operational endpoints.

Imported as ``web`` (the directory ``site/`` is a source root: the standard library owns ``site``).
"""
