"""Python's garbage collector in the station process: the objects of the start-up are frozen.

A collection holds the GIL, so while it runs every thread that runs Python waits: the lanes
between detector calls, the recorder about to COMMIT, the sinks. A full (generation 2)
collection walks every object the process holds, and by the time a station runs that is the
start-up's hundreds of thousands (onnxruntime's and OpenCV's bindings, SQLAlchemy, pydantic,
the plugins, the steps' models and tables), which live as long as the run and are never
garbage. Measured on the full 5 MP station (bench/line_rate.py prints the collections of each
run): two full collections in 110 parts, the longest 134 ms at load 3 - a part caught behind one
is the latency tail. :func:`freeze_startup` collects once and then moves what is left into the
collector's permanent generation (:func:`gc.freeze`): later collections, full ones included,
walk only what the run made since. Objects frozen are still freed by reference counting when
the last reference goes; only cycles among them wait for the process's end (a replaced
detector's, after a changeover).
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)


def freeze_startup() -> int:
    """Collect, then freeze every object the process holds now (call it when the station has
    started and warmed its steps, before the first part); the number of objects frozen."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("froze %d start-up objects in %.1f ms", frozen, (time.perf_counter() - started) * 1000)
    return frozen
