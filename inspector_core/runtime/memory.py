"""The station process's memory: glibc's malloc arenas.

glibc gives each thread that allocates concurrently an arena of its own (up to 8 per core), and
keeps what was freed in each for reuse. A station's threads (the steps' lanes, onnxruntime's
workers, the recorder, the sinks, the evidence writer) each hold some: measured on the full
5 MP station (docs/line-rate.md), peak RSS was 419-463 MB with glibc's default and 394-397 MB
with two arenas. :func:`limit_arenas` sets that limit when the station starts, unless the
environment already sets ``MALLOC_ARENA_MAX`` (the user's choice wins: set it larger to undo).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

ARENAS = 2
_M_ARENA_MAX = -8  # glibc's malloc.h


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Limit glibc's malloc to ``arenas`` arenas for the rest of the process (arenas made from
    now on); ``False`` where it does not apply (not Linux/glibc, or ``MALLOC_ARENA_MAX`` set)."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_ARENA_MAX, arenas))
    if not ok:
        log.debug("mallopt(M_ARENA_MAX, %d) refused", arenas)
    return ok
