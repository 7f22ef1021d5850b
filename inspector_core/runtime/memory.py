"""The station process's memory: glibc's malloc arenas and its mmap threshold.

glibc gives each thread that allocates concurrently an arena of its own (up to 8 per core), and
keeps what was freed in each for reuse. A station's threads (the steps' lanes, onnxruntime's
workers, the recorder, the sinks, the evidence writer) each hold some: measured on the full
5 MP station (docs/line-rate.md), peak RSS was 419-463 MB with glibc's default and 394-397 MB
with two arenas. :func:`limit_arenas` sets that limit when the station starts, unless the
environment already sets ``MALLOC_ARENA_MAX`` (the user's choice wins: set it larger to undo).

Even with two arenas the peak was bimodal run to run (about 350 or 395-420 MB): glibc's mmap
threshold is dynamic, rising to the size of each freed mmapped block (up to 32 MB), so once a
step's 10-20 MB temporary (a 5 MP frame as int16 or float32) was freed, every later one came
from an arena, which keeps it (and the holes between them) after it is freed.
:func:`limit_arenas` therefore also fixes the threshold at :data:`MMAP_THRESHOLD` (8 MB: a 5 MP
uint8 frame, 5 MB, still comes from an arena and is reused without page faults; anything twice
that size is mapped and returned when freed) and the trim threshold at :data:`TRIM_THRESHOLD`
(free memory an arena keeps at its top: with a fixed mmap threshold glibc's default would be
128 KB, and each 5 MB temporary at the top would be returned and page-faulted again).
Measured on the full 5 MP station (docs/line-rate.md, fifth pass; load 10-38): peak RSS
344-362 MB in 19 of 19 runs against 348-415 MB (2 of 11 above 400) with glibc's dynamic
threshold; CPU per part 97.7 against 98.1 ms (medians of 11 alternated runs each; the pairs'
differences -9 to +22 ms, the machine's noise), about 280 more minor page faults per part (some
0.3 ms). 16 MB kept the upper mode (392-397 MB); 8 MB with glibc's 128 KB trim threshold, or
4 MB, cost 20-30 % more CPU per part (the temporaries returned and faulted again).
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the environment win over these, each on its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

ARENAS = 2
MMAP_THRESHOLD = 8 << 20
"""Blocks of this size or more are mapped on their own (and unmapped when freed)."""
TRIM_THRESHOLD = 32 << 20
"""Free memory an arena keeps at its top before giving it back."""

# glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def _mallopt() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Limit glibc's malloc to ``arenas`` arenas for the rest of the process (arenas made from
    now on), and fix its mmap and trim thresholds (:data:`MMAP_THRESHOLD`,
    :data:`TRIM_THRESHOLD`); ``False`` where the arena limit does not apply (not Linux/glibc,
    or ``MALLOC_ARENA_MAX`` set). Each setting the environment already makes is left as it is."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    for env, option, value in (
        ("MALLOC_MMAP_THRESHOLD_", _M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        ("MALLOC_TRIM_THRESHOLD_", _M_TRIM_THRESHOLD, TRIM_THRESHOLD),
    ):
        if not os.environ.get(env) and not mallopt(option, value):
            log.debug("mallopt(%d, %d) refused", option, value)
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    ok = bool(mallopt(_M_ARENA_MAX, arenas))
    if not ok:
        log.debug("mallopt(M_ARENA_MAX, %d) refused", arenas)
    return ok
