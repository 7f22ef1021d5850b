"""The station limits glibc's malloc arenas and fixes its mmap threshold (runtime/memory.py):
counted with malloc_info / mallinfo2 in a fresh process."""

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


MAPPED_AFTER_A_FREE = r"""
import ctypes, ctypes.util, sys
from inspector_core.runtime.memory import limit_arenas
if sys.argv[1] == "limit":
    limit_arenas()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
libc.free(libc.malloc(12 << 20))  # a 5 MP frame as int16, freed
big = libc.malloc(12 << 20)        # the next one
frame = libc.malloc(5 << 20)       # a 5 MP uint8 frame
print(libc.mallinfo2().hblkhd >> 20)
"""


def _mapped_mb(mode: str, **environ: str) -> int:
    env = {"PATH": "/usr/bin:/bin", **environ}
    out = subprocess.run([sys.executable, "-c", MAPPED_AFTER_A_FREE, mode], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_freed_large_temporary_does_not_move_the_next_ones_into_the_arenas():
    # glibc's default raises its mmap threshold to a freed mapped block's size: the next 12 MB block
    # comes from an arena (and stays there once freed). The station's fixed 8 MB threshold maps it
    # again, while a 5 MB frame still comes from an arena (no page faults when it is reused).
    assert _mapped_mb("default") == 0
    assert _mapped_mb("limit") == 12
    assert _mapped_mb("limit", MALLOC_MMAP_THRESHOLD_=str(32 << 20)) == 0  # the user's threshold wins
