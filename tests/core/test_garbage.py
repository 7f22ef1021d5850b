"""The station freezes its start-up objects before the first part (runtime/garbage.py): a full
garbage collection during the run then walks only what the run made (measured on the 5 MP
station: 293 ms -> 6 ms at load 4, bench/line_rate.py)."""

from __future__ import annotations

import subprocess
import sys

import inspector_core.runtime.station as station_module
from inspector_core.testing import run_station

FREEZE = r"""
import gc, weakref
from inspector_core.runtime.garbage import freeze_startup

class Node:
    pass

cycle = Node(); cycle.self = cycle  # garbage only a collection frees
dead = weakref.ref(cycle)
del cycle
live = [[i] for i in range(50_000)]  # the start-up's long-lived objects
walked_before = len(gc.get_objects())
frozen = freeze_startup()
assert dead() is None, "the garbage of the start-up was frozen instead of freed"
assert frozen == gc.get_freeze_count() >= 50_000, (frozen, gc.get_freeze_count())
print(walked_before, len(gc.get_objects()))
"""


def test_freezing_frees_the_start_ups_garbage_and_leaves_collections_only_the_new_objects():
    out = subprocess.run([sys.executable, "-c", FREEZE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    before, after = map(int, out.stdout.split())
    assert before > 50_000
    assert after < 1_000  # what a collection still walks: the objects made since


def test_the_station_freezes_before_its_first_part(tmp_path, monkeypatch):
    captured_at_freeze: list[int] = []
    real = station_module.freeze_startup

    def spy() -> int:
        runtime = sys._getframe(1).f_locals["self"]  # StationRuntime.run, the caller
        assert isinstance(runtime, station_module.StationRuntime)
        captured_at_freeze.append(runtime._seq)  # parts captured so far
        return real()

    monkeypatch.setattr(station_module, "freeze_startup", spy)
    cfg = {
        "source": {"type": "synthetic", "config": {"count": 3, "seed": 7}},
        "steps": [{"detector": "bright_spot", "config": {"threshold": 200}}],
    }
    result = run_station(cfg, tmp_path)
    assert len(result.inspections()) == 3
    assert captured_at_freeze == [0]
