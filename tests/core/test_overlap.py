"""Steps of consecutive parts overlap on the station's cores (runtime/pipeline.py), and the
promises of the sequential runtime still hold: each step sees the parts in order, one at a
time; verdicts reach the store in capture order, one per frame; at most ``workers`` detector
calls run at once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import numpy as np
import pytest
import yaml
from pydantic import Field

from inspector_core import Detector, Finding, Frame, FrameSource, PluginConfig, hookimpl
from inspector_core.contract import View
from inspector_core.plugins import load
from inspector_core.runtime.config import ConfigError, Step, load_station
from inspector_core.runtime.pipeline import NOT_RUN, CoreGate, Pipeline, default_workers
from inspector_core.runtime.steps import StepWorker, close_steps
from inspector_core.testing import run_station

IMAGE = np.full((60, 80), 100, np.uint8)
CALLS: list[tuple[str, str, float, float]] = []
"""(step, part, start, end) of every detector call."""
_lock = threading.Lock()
_running = [0, 0]  # now, most at once
BY_INSTANCE: dict[int, list[str]] = {}
"""Detector instance -> the parts it inspected, in the order it did."""
CLOSED: list[int] = []


class Ids(PluginConfig):
    count: int = 8


class Numbered(FrameSource):
    name = "numbered"
    Config = Ids

    def frames(self):
        for i in range(self.config.count):
            yield Frame(f"p{i:02d}", IMAGE, datetime.now(UTC))


class NapConfig(PluginConfig):
    ms: float = Field(60, description="how long each call takes")
    slow_parts: dict[str, float] = Field(default_factory=dict, description="part -> ms instead")
    fail_on: str = ""


class Nap(Detector):
    """Sleeps (releasing the GIL, as OpenCV and onnxruntime do) and finds one defect naming the part."""

    name = "nap"
    kinds = ("nap",)
    Config = NapConfig

    def inspect(self, view):
        with _lock:
            _running[0] += 1
            _running[1] = max(_running[1], _running[0])
        t0 = time.perf_counter()
        time.sleep(self.config.slow_parts.get(view.part_id, self.config.ms) / 1000)
        with _lock:
            _running[0] -= 1
            CALLS.append((self.config.fail_on or "nap", view.part_id, t0, time.perf_counter()))
            BY_INSTANCE.setdefault(id(self), []).append(view.part_id)
        return [Finding("nap", 0.9, (1, 1, 4, 4), f"defect of {view.part_id}")]

    def close(self):
        with _lock:
            CLOSED.append(id(self))


class P:
    @staticmethod
    @hookimpl
    def inspector_register_sources(register):
        register(Numbered)

    @staticmethod
    @hookimpl
    def inspector_register_detectors(register):
        register(Nap)


@pytest.fixture(autouse=True)
def _reset():
    CALLS.clear()
    _running[:] = [0, 0]
    BY_INSTANCE.clear()
    CLOSED.clear()


def registry():
    return load(entry_points=[], extra=[("overlap", P)])


def _span() -> float:
    """From the first detector call's start to the last one's end, s."""
    return max(e for *_, e in CALLS) - min(s for _, _, s, _ in CALLS)


def _two_steps(count=8, workers=None, a=None, b=None):
    cfg = {
        "source": {"type": "numbered", "config": {"count": count}},
        # fail_on is only a label here: it names the step in CALLS.
        "steps": [
            {"detector": "nap", "name": "a", "config": {"fail_on": "a", **(a or {})}},
            {"detector": "nap", "name": "b", "config": {"fail_on": "b", **(b or {})}},
        ],
    }
    if workers is not None:
        cfg["workers"] = workers
    return cfg


def test_a_step_of_the_next_part_runs_while_a_later_step_of_this_part_runs(tmp_path):
    (tmp_path / "two").mkdir()
    (tmp_path / "one").mkdir()
    # Step b is the slow one: with two cores, step a of the next parts runs beside it.
    cfg = _two_steps(workers=2, a={"ms": 30}, b={"ms": 90})
    rows = run_station(cfg, tmp_path / "two", registry=registry()).inspections()
    overlapped = _span()
    assert [r.verdict for r in rows] == ["FAIL"] * 8
    a = {p: (s, e) for step, p, s, e in CALLS if step == "a"}
    b = {p: (s, e) for step, p, s, e in CALLS if step == "b"}
    # Step a of part n+1 ran while step b of part n did, for some n.
    assert any(
        a[f"p{n + 1:02d}"][0] < b[f"p{n:02d}"][1] and b[f"p{n:02d}"][0] < a[f"p{n + 1:02d}"][1] for n in range(7)
    )
    assert _running[1] == 2

    CALLS.clear()
    _running[:] = [0, 0]
    cfg = _two_steps(workers=1, a={"ms": 30}, b={"ms": 90})
    rows = run_station(cfg, tmp_path / "one", registry=registry()).inspections()
    sequential = _span()
    assert [r.verdict for r in rows] == ["FAIL"] * 8
    assert _running[1] == 1  # workers: 1 is the old runtime: one detector call at a time
    # One at a time: 8 x (30 + 90) ms = 0.96 s; overlapped: about 8 x 90 + 30 ms = 0.75 s.
    assert sequential > 0.9 and overlapped < 0.88 * sequential, (overlapped, sequential)


def test_verdicts_reach_the_store_in_capture_order_each_with_its_own_findings(tmp_path):
    # Part p01 is slow in step a: later parts finish their steps first, and must wait for it.
    cfg = _two_steps(count=10, workers=3, a={"ms": 5, "slow_parts": {"p01": 300}}, b={"ms": 5})
    rows = run_station(cfg, tmp_path, registry=registry()).inspections()
    assert [r.part_id for r in rows] == [f"p{i:02d}" for i in range(10)]  # ordered by id: commit order
    assert [r.seq for r in rows] == list(range(10))
    for r in rows:
        assert r.verdict == "FAIL" and [d.message for d in r.defects] == [f"defect of {r.part_id}"] * 2
        assert [s.step for s in r.steps] == ["a", "b"]
    # Each step saw the parts in capture order, one call at a time.
    for step in ("a", "b"):
        calls = [(p, s, e) for st, p, s, e in CALLS if st == step]
        assert [p for p, _, _ in calls] == [f"p{i:02d}" for i in range(10)]
        assert all(calls[i][2] <= calls[i + 1][1] for i in range(9))
    # Part p02's step b finished before p01's step a: the overlap was there, the order kept.
    ends = {(st, p): e for st, p, s, e in CALLS}
    assert ends[("b", "p02")] < ends[("a", "p01")]


def test_workers_is_a_station_setting_defaulting_to_the_cores(tmp_path):
    assert default_workers() >= 1
    path = tmp_path / "s.yaml"
    cfg = {"name": "s", **_two_steps(), "store": {"url": f"sqlite:///{tmp_path / 's.db'}"}}
    path.write_text(yaml.safe_dump(cfg))
    assert load_station(path, registry()).spec.workers is None
    path.write_text(yaml.safe_dump({**cfg, "workers": 0}))
    with pytest.raises(ConfigError) as exc:
        load_station(path, registry())
    assert "workers: Input should be greater than or equal to 1 (got 0)" in str(exc.value)


def _one_step(parallel, count=8, workers=2, ms=80, slow_parts=None):
    step = {"detector": "nap", "name": "m", "parallel": parallel, "config": {"ms": ms, "slow_parts": slow_parts or {}}}
    return {"source": {"type": "numbered", "config": {"count": count}}, "workers": workers, "steps": [step]}


def test_a_parallel_step_inspects_consecutive_parts_at_once_each_instance_in_capture_order(tmp_path):
    (tmp_path / "two").mkdir()
    (tmp_path / "one").mkdir()
    rows = run_station(_one_step(2), tmp_path / "two", registry=registry()).inspections()
    together = _span()
    assert [r.part_id for r in rows] == [f"p{i:02d}" for i in range(8)] and [r.seq for r in rows] == list(range(8))
    assert all(r.verdict == "FAIL" and [d.message for d in r.defects] == [f"defect of {r.part_id}"] for r in rows)
    assert _running[1] == 2  # two parts of the one step at once
    seen = sorted(BY_INSTANCE.values())
    assert seen == [["p00", "p02", "p04", "p06"], ["p01", "p03", "p05", "p07"]]  # each in capture order
    assert sorted(CLOSED) == sorted(BY_INSTANCE)  # both instances closed with the station

    CALLS.clear()
    _running[:] = [0, 0]
    BY_INSTANCE.clear()
    run_station(_one_step(1), tmp_path / "one", registry=registry()).inspections()
    alone = _span()
    assert _running[1] == 1 and len(BY_INSTANCE) == 1
    # 8 x 80 ms one at a time (0.64 s); two at once about half.
    assert alone > 0.6 and together < 0.75 * alone, (together, alone)


def test_a_slow_part_on_one_runner_does_not_reorder_the_verdicts(tmp_path):
    cfg = _one_step(2, count=10, workers=3, ms=5, slow_parts={"p01": 300})
    rows = run_station(cfg, tmp_path, registry=registry()).inspections()
    assert [r.part_id for r in rows] == [f"p{i:02d}" for i in range(10)] and [r.seq for r in rows] == list(range(10))
    ends = {p: e for _, p, _, e in CALLS}
    assert ends["p02"] < ends["p01"]  # the other runner went on meanwhile


def test_a_parallel_step_under_one_core_runs_one_call_at_a_time(tmp_path):
    rows = run_station(_one_step(3, count=6, workers=1, ms=10), tmp_path, registry=registry()).inspections()
    assert [r.part_id for r in rows] == [f"p{i:02d}" for i in range(6)]
    assert _running[1] == 1 and len(BY_INSTANCE) == 3


@pytest.mark.parametrize("parallel", [0, 9, 1.5])
def test_parallel_is_checked(tmp_path, parallel):
    path = tmp_path / "s.yaml"
    cfg = {"name": "s", **_one_step(parallel), "store": {"url": f"sqlite:///{tmp_path / 's.db'}"}}
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as exc:
        load_station(path, registry())
    assert "steps[0].parallel: Input should be" in str(exc.value), str(exc.value)


def _worker(tmp_path, name, ms, abort):
    return StepWorker(Step(0, name, Nap, NapConfig(ms=ms, fail_on=name), None, 5000.0), tmp_path, abort=abort)


def test_after_an_abort_parts_no_step_started_are_reported_unstarted(tmp_path):
    abort = threading.Event()
    worker = _worker(tmp_path, "slow", 400, abort)
    pipeline = Pipeline([worker], cores=1, abort=abort, window=3)
    try:
        for i in range(3):
            assert pipeline.put(i, [View(IMAGE, f"q{i}")])
        pipeline.end()
        time.sleep(0.1)  # q0 is being inspected, q1 and q2 wait for the step
        abort.set()
        jobs = list(pipeline.results())
        assert [j.payload for j in jobs] == [0, 1, 2]
        assert [j.started for j in jobs] == [True, False, False]
        assert jobs[0].outcomes[0].status == "error" and "stopped while this step" in jobs[0].outcomes[0].error
        assert all(j.outcomes[0].error == NOT_RUN for j in jobs[1:])
    finally:
        pipeline.close()
        close_steps([worker])


def test_a_free_core_goes_to_the_oldest_part_waiting():
    gate = CoreGate(1)
    never = threading.Event()
    assert gate.acquire(5, never)
    got: list[int] = []

    def take(key):
        assert gate.acquire(key, never)
        got.append(key)
        gate.release()

    threads = [threading.Thread(target=take, args=(k,)) for k in (9, 7, 8)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    gate.release()
    for t in threads:
        t.join(5)
    assert got == [7, 8, 9]


def test_within_a_part_the_longest_step_gets_the_core_first(tmp_path):
    # One core, a short step a and a long step b. Before, a asked first (b was still busy with the
    # part before) and b, the part's critical path, started last. Now the gate ranks a part's steps
    # by their lanes' running latency, and b keeps its core for the next part when that part comes
    # first: from the third part on, b starts each part before a does.
    cfg = _two_steps(count=8, workers=1, a={"ms": 10}, b={"ms": 60})
    rows = run_station(cfg, tmp_path, registry=registry()).inspections()
    assert [r.part_id for r in rows] == [f"p{i:02d}" for i in range(8)]
    assert all(r.verdict == "FAIL" and len(r.defects) == 2 for r in rows)
    assert _running[1] == 1
    start = {(step, p): s for step, p, s, _ in CALLS}
    later = [f"p{n:02d}" for n in range(2, 8)]
    assert all(start[("b", p)] < start[("a", p)] for p in later), sorted(start.items(), key=lambda kv: kv[1])


def test_a_core_kept_for_the_next_part_goes_to_an_older_waiter_first():
    gate = CoreGate(1)
    never = threading.Event()
    assert gate.acquire(3, never)
    assert gate.keep(4)  # nobody waits: the holder keeps it
    got: list[int] = []

    def take(key):
        assert gate.acquire(key, never)
        got.append(key)
        gate.release()

    older = threading.Thread(target=take, args=(2,))
    older.start()
    time.sleep(0.05)
    assert not gate.keep(4)  # part 2 waits: the core goes to it, the holder asks again
    older.join(5)
    assert got == [2]
    assert gate.acquire(4, never)
    younger = threading.Thread(target=take, args=(6,))
    younger.start()
    time.sleep(0.05)
    assert gate.keep(5)  # part 6 is younger than the holder's next part: kept
    assert gate.keep(5, -10.0)
    gate.release()
    younger.join(5)
    assert got == [2, 6]
