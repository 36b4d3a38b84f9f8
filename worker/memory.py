"""Process-wide memory settings of the worker: malloc arenas, and the cyclic garbage collector paused
while a poll builds its snapshot.

glibc gives each thread that allocates its own malloc arena (up to eight per core) and rarely
hands freed arena memory back. The worker decodes large Prometheus answers on short-lived pool
threads, so without a limit every thread keeps its own high-water mark and the process's resident
memory grows well past what it uses. Two arenas keep a 10,000-GPU worker near 300 MB (see
docs/benchmarks.md); setting ``MALLOC_ARENA_MAX`` in the environment does the same.
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


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Limit glibc's malloc arenas (arenas created from now on); False where there is no glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    done = mallopt(M_ARENA_MAX, arenas) == 1
    if not done:
        log.debug("mallopt(M_ARENA_MAX, %d) was refused", arenas)
    return done


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
    """Pause the cyclic garbage collector for a burst of allocation (a 10,000-GPU snapshot: ~100,000
    small objects, none of them cyclic garbage), so it does not walk the whole heap several times
    meanwhile; reference counting still frees everything. Nested and concurrent pauses (pollers of
    several sources) resume it when the last one ends, and only if it was running before."""
    _PAUSES.begin()
    try:
        yield
    finally:
        _PAUSES.end()
