"""Inventory upsert: one snapshot of one source becomes cluster, node, GPU, slice, project and allocation rows.

Why it is shaped this way:

* A poll runs every few seconds for fleets of thousands of GPUs, so the hub's existing rows are
  read in a fixed handful of bulk queries (never one SELECT per GPU), compared in memory, and only
  rows whose values differ are written. A second poll of an unchanged fleet writes no inventory row;
  only each cluster's poll heartbeat (``last_poll_at``/``last_success_at``) is refreshed. GPUs and
  slices, whose latest readings change at nearly every poll, are written in one UPDATE per table
  (:class:`~worker.inventory.store.BulkUpdate`), not one per row: the ORM would group them by which columns changed and
  send thousands of small statements.
* GPUs and open allocations, nearly all of the hub's rows (~19,000 at 10,000 GPUs), are loaded as
  plain slotted rows (:class:`GpuRow`, :class:`AllocationRow`), not ORM objects: they are only
  compared, and the few that change are written by primary key in bulk statements. The ORM objects
  cost several times the memory, and the poll holds them while the source's answers are decoded.
* ``last_seen`` is kept coarse: it is refreshed when a row is written anyway or when it is older
  than a quarter of the missing grace period. Something that stops reporting is therefore marked
  missing between 0.75 and 1 times ``missing_after`` after its last report, never earlier.
* Inventory is never deleted. A node, GPU or slice that a present cluster no longer reports is
  marked ``missing`` once the grace period has passed, and its open allocations close. A cluster
  the source no longer answers for goes ``stale``; its rows are left as they were.
* Allocations are history: a pod appearing on a GPU or slice opens one, the pod disappearing or
  changing closes it (``until``); there is never more than one open allocation per slot and pod.

Nothing here commits: the caller owns the transaction, so a failure leaves no half-applied poll.
"""

from worker.inventory.jobs import UNREACHABLE_AFTER_FAILURES, apply_snapshot, mark_source_failed
from worker.inventory.rules import InventoryChanges, InventoryIds
from worker.inventory.store import load_inventory

__all__ = [
    "UNREACHABLE_AFTER_FAILURES",
    "InventoryChanges",
    "InventoryIds",
    "apply_snapshot",
    "load_inventory",
    "mark_source_failed",
]
