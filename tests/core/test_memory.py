"""The station limits glibc's malloc arenas (runtime/memory.py): counted with malloc_info in a
fresh process whose threads allocate at the same time."""

from __future__ import annotations

import subprocess
import sys

import pytest

from inspector_core.runtime.memory import ARENAS, limit_arenas

COUNT_ARENAS = r"""
import ctypes, ctypes.util, sys, threading
from inspector_core.runtime.memory import limit_arenas
if sys.argv[1] == "limit":
    assert limit_arenas()
barrier = threading.Barrier(8)
keep = []
def work():
    barrier.wait()
    keep.append([bytearray(200) for _ in range(20000)])  # concurrent small allocations
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.open_memstream.restype = ctypes.c_void_p
buf, size = ctypes.c_char_p(), ctypes.c_size_t()
stream = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
libc.malloc_info(0, ctypes.c_void_p(stream))
libc.fclose(ctypes.c_void_p(stream))
print(buf.value.decode().count("<heap nr="))
"""


def _arenas(mode: str) -> int:
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", COUNT_ARENAS, mode], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_station_process_keeps_at_most_two_malloc_arenas():
    assert _arenas("limit") <= ARENAS
    assert _arenas("default") > ARENAS  # the same threads without the limit take more


def test_the_users_malloc_arena_max_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert limit_arenas() is False
