"""Process-wide memory settings of the worker.

glibc gives each thread that allocates its own malloc arena (up to eight per core) and rarely
hands freed arena memory back. The worker decodes large Prometheus answers on short-lived pool
threads, so without a limit every thread keeps its own high-water mark and the process's resident
memory grows well past what it uses. Two arenas keep a 10,000-GPU worker near 300 MB (see
docs/benchmarks.md); setting ``MALLOC_ARENA_MAX`` in the environment does the same.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

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
