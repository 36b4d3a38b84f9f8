"""Process-wide memory settings of the worker: malloc arenas and mmap threshold, freed pages handed
back after each poll, and the cyclic garbage collector paused for a poll.

glibc gives each thread that allocates its own malloc arena (up to eight per core) and rarely
hands freed arena memory back. The worker decodes large Prometheus answers on short-lived pool
threads, so without a limit every thread keeps its own high-water mark and the process's resident
memory grows well past what it uses. Two arenas, a fixed mmap threshold and a ``malloc_trim`` after
each poll keep a 10,000-GPU worker under 250 MB (docs/benchmarks.md); ``MALLOC_ARENA_MAX`` in the
environment limits the arenas too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

M_ARENA_MAX = -8
"""glibc's mallopt parameter number for the arena limit."""
M_MMAP_THRESHOLD = -3
"""glibc's mallopt parameter number for the size from which a block gets pages of its own."""
MMAP_THRESHOLD_BYTES = 1 << 20
"""Blocks of 1 MiB and more (answer bodies, JSON documents of bulk writes) are mapped on their own and
given back when freed. glibc's default threshold rises after each such free up to 32 MiB, after which
those blocks land in the heap and leave holes the next poll's small objects cannot always reuse."""


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt, libc.malloc_trim  # noqa: B018  (glibc's, absent on musl or macOS)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return None
    return libc


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Limit glibc's malloc arenas (arenas created from now on) and fix its mmap threshold at
    :data:`MMAP_THRESHOLD_BYTES`; False where there is no glibc."""
    libc = _libc()
    if libc is None:
        return False
    done = libc.mallopt(M_ARENA_MAX, arenas) == 1
    if not done:
        log.debug("mallopt(M_ARENA_MAX, %d) was refused", arenas)
    if libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1:
        log.debug("mallopt(M_MMAP_THRESHOLD, %d) was refused", MMAP_THRESHOLD_BYTES)
        done = False
    return done


def release_free_memory() -> bool:
    """Give the free pages of the malloc heaps back to the system (``malloc_trim``), as after a poll:
    what one poll freed is not kept resident until the next. False where there is no glibc."""
    libc = _libc()
    return libc is not None and libc.malloc_trim(0) == 1


class _GcPauses:
    """Counts the pauses in progress; the collector runs again when the last one ends."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.was_enabled = True

    def begin(self) -> None:
        with self.lock:
            if self.active == 0:
                self.was_enabled = gc.isenabled()
                gc.disable()
            self.active += 1

    def end(self) -> None:
        with self.lock:
            self.active -= 1
            if self.active == 0 and self.was_enabled:
                gc.enable()


_PAUSES = _GcPauses()


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a burst of allocation that lives until it ends (a
    10,000-GPU poll: the snapshot, the rows it compares against, the plan; several hundred thousand
    objects).
    Meanwhile the collector would sweep them ~400 times, two of them full passes over the heap (~0.7 s
    of such a poll), to find a few hundred objects in cycles; reference counting still frees the rest
    as it goes. Nested and concurrent pauses (pollers of several sources) resume it when the last one
    ends, and only if it was running before."""
    _PAUSES.begin()
    try:
        yield
    finally:
        _PAUSES.end()
