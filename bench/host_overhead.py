"""Host overhead per frame and the store's committed inspections per second.

Prints figures; it is not a test. Run: ``.venv/bin/python bench/host_overhead.py``.

1. A station whose only step is a detector that does nothing, fed 2448x2048 mono frames from
   memory (the same array each time: no capture cost), SQLite store with synchronous FULL.
   Wall time per frame = what the host costs (sources, dispatch, verdict, store, sinks).
2. The same with a 'bright spot' finding on every part (a defect row and a JPEG crop each).
3. The recorder alone: inspections committed per second with synchronous FULL (group commit).
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspector_core import Detector, Finding, Frame, FrameSource, PluginConfig, hookimpl
from inspector_core.plugins import load
from inspector_core.runtime.config import load_station
from inspector_core.runtime.station import StationRuntime
from inspector_core.store import (
    DefectRecord,
    InspectionRecord,
    Recorder,
    RunRecord,
    StepRecord,
    Store,
    utcnow,
)

W, H = 2448, 2048
N = 1000


class MemoryConfig(PluginConfig):
    count: int = 100


class MemorySource(FrameSource):
    name = "memory"
    Config = MemoryConfig
    frame = np.full((H, W), 128, np.uint8)

    def frames(self):
        for i in range(self.config.count):
            yield Frame(f"p{i:06d}", self.frame, datetime.now(UTC))


class Nothing(Detector):
    name = "nothing"
    kinds = ("nothing",)

    def inspect(self, view):
        return []


class OneFinding(Detector):
    name = "one_finding"
    kinds = ("spot",)

    def inspect(self, view):
        return [Finding("spot", 0.9, (1000, 800, 40, 30), "spot", size_px=40.0)]


class BenchPlugin:
    @staticmethod
    @hookimpl
    def inspector_register_sources(register):
        register(MemorySource)

    @staticmethod
    @hookimpl
    def inspector_register_detectors(register):
        register(Nothing)
        register(OneFinding)


def station_run(tmp: Path, detector: str, n: int) -> tuple[float, float, float]:
    path = tmp / f"{detector}.yaml"
    path.write_text(
        f"name: bench-{detector}\nsource: {{type: memory, config: {{count: {n}}}}}\n"
        f"steps: [{{detector: {detector}}}]\nstore: {{url: 'sqlite:///{tmp}/{detector}.db'}}\n"
    )
    reg = load(entry_points=[], extra=[("bench", BenchPlugin)])
    st = load_station(path, reg)
    t0 = time.perf_counter()
    tally = StationRuntime(st, reg).run()
    wall = time.perf_counter() - t0
    assert tally.total == n
    return wall / n * 1000, tally.percentile(50), tally.percentile(99)


def recorder_rate(tmp: Path, n: int) -> float:
    store = Store(f"sqlite:///{tmp}/rec.db")
    run = RunRecord("rec", hostname="b", software_version="0", plugins={}, config_yaml="", config_hash="x", models={})
    sid, rid = store.ensure_run(run)
    done = []
    rec = Recorder(store, run=run, on_committed=done.extend)
    records = [
        InspectionRecord(
            uuid.uuid4().hex,
            sid,
            rid,
            i,
            f"p{i}",
            utcnow(),
            utcnow(),
            "PASS",
            1.0,
            steps=[StepRecord(0, "s", "nothing", "ok", 0.1, 0.5, 0)],
            defects=[DefectRecord("s", "d", "spot", 0.2, False, (1, 2, 3, 4), 3.0, None, {}, "")],
        )
        for i in range(n)
    ]
    t0 = time.perf_counter()
    rec.start()
    for r in records:
        rec.submit(r)
    assert rec.close(60, parts_seen=n), rec.close_problem
    dt = time.perf_counter() - t0
    assert len(done) == n
    return n / dt


def main() -> dict:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        station_run(tmp, "nothing", 50)  # warm imports and caches
        per_frame, p50, p99 = station_run(tmp, "nothing", N)
        per_frame_defect, p50d, p99d = station_run(tmp, "one_finding", N)
        rate = recorder_rate(tmp, 20000)
    print(
        f"host overhead, {W}x{H} mono, null detector, SQLite FULL: {per_frame:.3f} ms/frame "
        f"({1000 / per_frame:.0f} frames/s); latency p50 {p50:.2f} ms, p99 {p99:.2f} ms  [goal <= 2 ms]"
    )
    print(
        f"host overhead with one defect + JPEG crop per part: {per_frame_defect:.3f} ms/frame; "
        f"latency p50 {p50d:.2f} ms, p99 {p99d:.2f} ms"
    )
    print(f"recorder, group commit, SQLite synchronous FULL: {rate:,.0f} inspections/s committed  [goal >= 1,000/s]")
    return {
        "host_ms_per_frame": per_frame,
        "host_ms_per_frame_with_defect": per_frame_defect,
        "store_inspections_per_s": rate,
    }


if __name__ == "__main__":
    main()
