"""Read side of workload sessions: scoped, filtered, paged queries for the site's pages and API."""

from domain.sessions.queries import (
    SORT_KEYS,
    SessionState,
    get_session,
    list_sessions,
    sessions_visible,
    trace_url,
)

__all__ = ["SORT_KEYS", "SessionState", "get_session", "list_sessions", "sessions_visible", "trace_url"]
