"""Read side of workloads: scoped, filtered, paged queries for the site's pages and API."""

from domain.workloads.queries import (
    SORT_KEYS,
    WorkloadState,
    get_workload,
    list_workloads,
    trace_url,
    workloads_visible,
)

__all__ = ["SORT_KEYS", "WorkloadState", "get_workload", "list_workloads", "trace_url", "workloads_visible"]
