"""The runtime under faults of its plugins and of the operator: each part gets its own verdict,
every captured frame is recorded, threads and shutdown are bounded, what a detector returns is
checked, and every part id reaches the store."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime

import numpy as np
import pytest
import yaml
from pydantic import Field
from sqlalchemy import select

from inspector_core import Detector, Finding, Frame, FrameSource, PluginConfig, hookimpl
from inspector_core.plugins import load
from inspector_core.runtime import station as station_module
from inspector_core.runtime import steps as steps_module
from inspector_core.runtime.config import Step, load_station
from inspector_core.runtime.station import StationRuntime
from inspector_core.runtime.steps import StepWorker, check_findings, close_steps
from inspector_core.store import Store, schema
from inspector_core.testing import run_station

IMAGE = np.full((120, 160), 100, np.uint8)


# ---------------------------------------------------------------------------- test plugins


class PartsConfig(PluginConfig):
    ids: list[str] = Field(description="part ids, in order")
    pause_before: dict[str, float] = Field(default_factory=dict, description="seconds to wait before a part")
    block_after: bool = Field(False, description="block in frames() after the last part, ignoring close()")


STOP_BEFORE: dict[str, StationRuntime] = {}
"""part id -> runtime to stop just before the source yields that part (a Ctrl-C at that moment)."""
HOSTILE_IDS: list[object] = []


class Parts(FrameSource):
    name = "parts"
    Config = PartsConfig

    def frames(self):
        for pid in self.config.ids:
            time.sleep(self.config.pause_before.get(pid, 0.0))
            if pid in STOP_BEFORE:
                STOP_BEFORE[pid].stop()
            yield Frame(pid, IMAGE, datetime.now(UTC), {"n": pid})
        if self.config.block_after:
            threading.Event().wait()


class HostileIds(FrameSource):
    name = "hostile_ids"

    def frames(self):
        for pid in HOSTILE_IDS:
            yield Frame(
                pid,
                IMAGE,
                datetime.now(UTC),
                {"path": f"/parts/{pid}" if isinstance(pid, str) else pid, "nan": math.nan, "k\x00": "v\x00"},
            )


class TardyConfig(PluginConfig):
    hang_on: str = Field("", description="the part the first instance hangs on")
    hang_s: float = Field(0.6, description="how long it hangs")
    fail_instances: list[int] = Field(default_factory=list, description="instance numbers whose start fails")
    slow_instances: list[int] = Field(default_factory=list, description="instance numbers that start slowly")
    slow_start_s: float = Field(0.0, description="how long a slow instance takes to start")


class Tardy(Detector):
    """Finds one defect per part whose message names the part it was found on."""

    name = "tardy"
    kinds = ("tardy",)
    Config = TardyConfig
    instances = 0

    def __init__(self, config, *, station_dir):
        super().__init__(config, station_dir=station_dir)
        type(self).instances += 1
        self.number = type(self).instances
        if self.number in config.fail_instances:
            raise RuntimeError(f"no licence for instance {self.number}")
        if self.number in config.slow_instances:
            time.sleep(config.slow_start_s)

    def inspect(self, view):
        if view.part_id == self.config.hang_on:
            time.sleep(self.config.hang_s)
        return [Finding("tardy", 0.9, (1, 1, 4, 4), f"defect of {view.part_id}")]


RELEASE = threading.Event()


class Hang(Detector):
    name = "hang"
    kinds = ("hang",)

    def inspect(self, view):
        RELEASE.wait(30)
        return []


class SlowClose(Detector):
    name = "slow_close"
    kinds = ("slow_close",)

    def inspect(self, view):
        return []

    def close(self):
        RELEASE.wait(30)


FAULT: dict[str, object] = {}


class Faulty(Detector):
    """Returns one finding with one field set to ``FAULT[field]`` after it was built."""

    name = "faulty"
    kinds = ("faulty",)

    def inspect(self, view):
        if "result" in FAULT:
            return FAULT["result"]
        f = Finding("faulty", 0.9, (10, 10, 20, 20), "a defect", size_px=20.0, measurements={"length_px": 20.0})
        for field, value in FAULT.items():
            object.__setattr__(f, field, value)
        return [f]


class TestPlugin:
    @staticmethod
    @hookimpl
    def inspector_register_sources(register):
        register(Parts)
        register(HostileIds)

    @staticmethod
    @hookimpl
    def inspector_register_detectors(register):
        for cls in (Tardy, Hang, SlowClose, Faulty):
            register(cls)


def registry():
    return load(entry_points=[], extra=[("runtime_faults", TestPlugin)])


def parts(*ids, **kw):
    return {"type": "parts", "config": {"ids": list(ids), **kw}}


@pytest.fixture(autouse=True)
def _reset():
    Tardy.instances = 0
    RELEASE.clear()
    FAULT.clear()
    STOP_BEFORE.clear()
    yield
    RELEASE.set()  # let every stuck detector thread of the test finish


# ---------------------------------------------------------------------------- item 2: own verdicts


def test_late_answer_of_an_overrun_never_reaches_another_part(tmp_path, monkeypatch):
    """Instance 1 hangs on p1 past its budget; instance 2 cannot start; instance 3 can. No part
    reads another's answer: p2 is ERROR with the start failure, later parts their own defect."""
    monkeypatch.setattr(steps_module, "RESTART_BACKOFF_S", (0.4, 0.4))
    cfg = {
        "source": parts("p0", "p1", "p2", "p3", "p4", pause_before={"p3": 1.2}),
        "steps": [
            {"detector": "tardy", "budget_ms": 200, "config": {"hang_on": "p1", "hang_s": 0.6, "fail_instances": [2]}}
        ],
    }
    result = run_station(cfg, tmp_path, registry=registry())
    rows = {r.part_id: r for r in result.inspections()}
    assert [rows[p].verdict for p in ("p0", "p1", "p2", "p3", "p4")] == ["FAIL", "ERROR", "ERROR", "FAIL", "FAIL"]
    with result.session() as s:
        events = dict(s.execute(select(schema.Event.kind, schema.Event.message)).all())
    assert "no licence for instance 2" in events["step_unavailable"]
    assert "started again after 1 failed attempt" in events["step_recovered"]
    assert rows["p1"].error == "step tardy: overran its time budget of 200 ms"
    assert "failed to start: RuntimeError: no licence for instance 2" in rows["p2"].error
    assert "next attempt in" in rows["p2"].error and not rows["p2"].defects
    for pid, r in rows.items():
        assert all(d.message == f"defect of {r.part_id}" for d in r.defects), (pid, [d.message for d in r.defects])
    assert Tardy.instances == 3


def _step(detector, budget_ms=500.0, config=None):
    return Step(0, detector.name, detector, config or detector.Config(), None, budget_ms)


def test_step_protocol_discards_an_answer_for_another_request(tmp_path):
    worker = StepWorker(_step(Tardy), tmp_path)
    try:
        # A stale answer (another request's token) waiting in the queue is not this part's.
        worker._live.answers.put((999, "ok", [Finding("tardy", 0.9, (0, 0, 1, 1), "defect of someone else")]))
        from inspector_core.contract import View

        out = worker.run(View(IMAGE, "mine"))
        assert out.status == "ok" and [f.message for f in out.findings] == ["defect of mine"]
    finally:
        worker.close()


def test_a_slow_replacement_costs_parts_within_their_budget_not_the_line(tmp_path):
    from inspector_core.contract import View

    config = TardyConfig(hang_on="p0", hang_s=0.5, slow_instances=[2], slow_start_s=0.6)
    worker = StepWorker(_step(Tardy, budget_ms=200, config=config), tmp_path)
    try:
        t0 = time.monotonic()
        first = worker.run(View(IMAGE, "p0"))
        second = worker.run(View(IMAGE, "p1"))
        assert first.status == "timeout"
        # The second part did not wait for the 0.6 s start: only for its own budget.
        assert second.status == "error" and "is still starting" in second.error
        assert second.latency_ms is not None and second.latency_ms < 450
        assert time.monotonic() - t0 < 2
        time.sleep(1.0)
        third = worker.run(View(IMAGE, "p2"))
        assert third.status == "ok" and third.findings[0].message == "defect of p2"
    finally:
        RELEASE.set()
        worker.close()


def test_a_non_finite_budget_means_no_limit_not_a_crash(tmp_path):
    from inspector_core.contract import View

    worker = StepWorker(_step(Tardy, budget_ms=math.inf), tmp_path)
    try:
        out = worker.run(View(IMAGE, "p"))
        assert out.status == "ok" and out.findings[0].message == "defect of p"
    finally:
        worker.close()


# ---------------------------------------------------------------------------- item 19: bounded threads


def test_a_step_that_keeps_hanging_holds_at_most_two_threads(tmp_path):
    from inspector_core.contract import View

    before = {t.ident for t in threading.enumerate()}
    worker = StepWorker(_step(Hang, budget_ms=50), tmp_path)
    outcomes = [worker.run(View(IMAGE, f"p{i}")) for i in range(8)]
    assert [o.status for o in outcomes[:2]] == ["timeout", "timeout"]
    assert all(
        o.status == "error" and o.error.startswith("still stuck: 2 earlier instances of detector 'hang'")
        for o in outcomes[2:]
    ), [o.error for o in outcomes]
    assert "on part 'p0'" in outcomes[2].error
    new = [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("step-hang")]
    assert len(new) == 2 and worker.threads == 2
    RELEASE.set()  # the stuck instances return: the step recovers
    deadline = time.monotonic() + 5
    while worker.threads and time.monotonic() < deadline:
        time.sleep(0.02)
    assert worker.run(View(IMAGE, "later")).status == "ok"
    assert not worker.close()


def test_detector_close_has_a_time_limit(tmp_path):
    worker = StepWorker(_step(SlowClose), tmp_path)
    t0 = time.monotonic()
    problems = close_steps([worker], timeout=0.3)
    assert time.monotonic() - t0 < 2
    assert problems == ["step slow_close: detector 'slow_close' did not finish (in close())"]


def test_station_exit_is_not_delayed_by_a_slow_close(tmp_path, monkeypatch):
    monkeypatch.setattr(steps_module, "CLOSE_TIMEOUT_S", 0.3)
    cfg = {"source": parts("a", "b"), "steps": [{"detector": "slow_close"}]}
    t0 = time.monotonic()
    result = run_station(cfg, tmp_path, registry=registry())
    assert time.monotonic() - t0 < 5
    assert result.verdicts() == {"PASS": 2}
    with result.session() as s:
        events = s.execute(select(schema.Event.kind, schema.Event.message)).all()
    assert any(k == "detector_close_overran" and "slow_close" in m for k, m in events), events


# ---------------------------------------------------------------------------- item 18: output checks


BAD_OUTPUTS = {
    "nan score": ({"score": math.nan}, "Finding.score must be a finite number"),
    "infinite score": ({"score": math.inf}, "Finding.score must be a finite number"),
    "negative score": ({"score": -0.1}, "Finding.score must be in [0, 1]"),
    "score above 1": ({"score": 1.5}, "Finding.score must be in [0, 1]"),
    "score as text": ({"score": "0.9"}, "Finding.score must be a number"),
    "negative box": ({"box": (10, 10, -5, 20)}, "width and height must be >= 0"),
    "huge box": ({"box": (10**30, 10, 5, 5)}, "within +-2147483647"),
    "nan in box": ({"box": (math.nan, 10, 5, 5)}, "Finding.box must be a finite number"),
    "box outside": ({"box": (500, 500, 5, 5)}, "lies wholly outside the 160x120 view"),
    "box of three": ({"box": (1, 2, 3)}, "Finding.box must be (x, y, width, height)"),
    "mask shape": ({"mask": np.ones((3, 3), np.uint8)}, "Finding.mask must have the box's shape (20, 20)"),
    "mask dtype": ({"mask": np.ones((20, 20), np.float32)}, "Finding.mask must be a uint8 or bool array"),
    "dict message": ({"message": {"a": 1}}, "Finding.message must be a str"),
    "bytes message": ({"message": b"bytes"}, "Finding.message must be a str"),
    "nan size": ({"size_px": math.nan}, "Finding.size_px must be a finite number"),
    "text size": ({"size_px": "big"}, "Finding.size_px must be a number"),
    "negative size": ({"size_px": -3.0}, "Finding.size_px must be >= 0"),
    "nan measurement": ({"measurements": {"length_px": math.nan}}, "must be a finite number"),
    "text measurement": ({"measurements": {"length_px": "3"}}, "must be a number"),
    "measurements list": ({"measurements": [1, 2]}, "Finding.measurements must be a dict"),
    "undeclared kind": ({"kind": "other"}, "not among its declared kinds"),
    "not a list": ({"result": "nothing"}, "inspect() must return a list of Finding"),
    "not a finding": ({"result": [{"kind": "faulty"}]}, "finding [0] is a dict, not a Finding"),
}


@pytest.mark.parametrize("fault", list(BAD_OUTPUTS))
def test_what_a_detector_returns_is_checked(tmp_path, fault):
    change, reason = BAD_OUTPUTS[fault]
    FAULT.update(change)
    cfg = {"source": parts("p0", "p1"), "steps": [{"detector": "faulty"}]}
    rows = run_station(cfg, tmp_path, registry=registry()).inspections()
    assert [r.verdict for r in rows] == ["ERROR", "ERROR"]
    for r in rows:
        assert r.error.startswith(
            "step faulty: detector 'faulty' (plugin 'runtime_faults') returned an invalid result: "
        ), r.error
        assert reason in r.error, r.error
        assert r.error_step == "faulty" and not r.defects


def test_a_box_partly_outside_the_view_is_clipped_to_it(tmp_path):
    FAULT.update({"box": (150, -5, 30, 20), "mask": np.ones((20, 30), np.uint8)})
    cfg = {
        "source": parts("p0"),
        "steps": [{"detector": "faulty", "roi": {"x": 0, "y": 10, "width": 160, "height": 100}}],
    }
    (row,) = run_station(cfg, tmp_path, registry=registry()).inspections()
    assert row.verdict == "FAIL"
    (d,) = row.defects
    # The view is 160x100 at (0, 10): clipped to x 150..160, y 0..15 of the view, then moved.
    assert (d.x, d.y, d.w, d.h) == (150, 10, 10, 15)


def test_check_findings_never_changes_the_detectors_objects():
    f = Finding("faulty", 0.9, (150, -5, 30, 20), "m")
    (g,) = check_findings([f], _step(Faulty), (100, 160))
    assert f.box == (150, -5, 30, 20) and g.box == (150, 0, 10, 15) and g is not f


# ---------------------------------------------------------------------------- item 5 and 12: stopping


def _station(tmp_path, cfg):
    cfg = {"name": "t", "store": {"url": f"sqlite:///{tmp_path / 't.db'}"}, **cfg}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    reg = registry()
    return load_station(path, reg), reg


def _inspections(tmp_path):
    con = sqlite3.connect(tmp_path / "t.db")
    try:
        return (
            con.execute("SELECT part_id, verdict, error FROM inspections ORDER BY seq").fetchall(),
            con.execute("SELECT parts_seen FROM runs").fetchone()[0],
            con.execute("SELECT kind, message FROM events").fetchall(),
        )
    finally:
        con.close()


def test_the_frame_yielded_when_the_stop_arrives_is_recorded(tmp_path):
    st, reg = _station(tmp_path, {"source": parts("a", "b", "c", "d"), "steps": [{"detector": "tardy"}]})
    runtime = StationRuntime(st, reg)
    STOP_BEFORE["c"] = runtime  # Ctrl-C arrives while the source is producing c
    tally = runtime.run()
    rows, seen, _ = _inspections(tmp_path)
    assert [(p, v) for p, v, _ in rows] == [("a", "FAIL"), ("b", "FAIL"), ("c", "FAIL")]
    assert seen == 3 and tally.total == 3


def test_a_source_blocked_in_frames_does_not_keep_the_station_alive(tmp_path, monkeypatch):
    monkeypatch.setattr(station_module, "SOURCE_STOP_TIMEOUT_S", 0.5)
    st, reg = _station(tmp_path, {"source": parts("a", "b", block_after=True), "steps": [{"detector": "tardy"}]})
    runtime = StationRuntime(st, reg)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (runtime.run(), done.set()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while runtime.tally.total < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    runtime.stop()
    assert done.wait(8), "run() did not return after a stop with the source blocked in frames()"
    rows, seen, events = _inspections(tmp_path)
    assert [p for p, _, _ in rows] == ["a", "b"] and seen == 2
    assert any(k == "source_stuck" and "did not return from frames()" in m for k, m in events), events


def test_a_recorder_that_does_not_finish_is_a_failure_not_silence(tmp_path, monkeypatch):
    real = station_module.Recorder

    class Unfinished(real):
        """Commits, but says it could not within the time it was given."""

        def flush(self, timeout=None):
            assert timeout is not None and timeout < 1e6, "the station must bound the wait"
            super().flush(timeout)
            self.close_problem = "simulated: 1 verdict left"
            return False

    monkeypatch.setattr(station_module, "Recorder", Unfinished)
    st, reg = _station(tmp_path, {"source": parts("a"), "steps": [{"detector": "tardy"}]})
    runtime = StationRuntime(st, reg)
    runtime.run()
    assert runtime.failure and "the recorder did not finish within" in runtime.failure


SLOW_STATION = """\
name: slow
source: {{type: synthetic, config: {{count: 40, width: 320, height: 240}}}}
steps: [{{detector: sleeper, budget_ms: 60000, config: {{sleep_ms: 3000}}}}]
store: {{url: 'sqlite:///{db}'}}
"""


def test_a_second_interrupt_stops_waiting_and_records_every_captured_part(tmp_path):
    db = tmp_path / "slow.db"
    path = tmp_path / "slow.yaml"
    path.write_text(SLOW_STATION.format(db=db))
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector_core.cli", "run", str(path), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if db.exists():
                con = sqlite3.connect(db)
                try:
                    if con.execute("SELECT count(*) FROM runs").fetchone()[0]:
                        break
                except sqlite3.OperationalError:
                    pass
                finally:
                    con.close()
            time.sleep(0.05)
        time.sleep(0.8)  # the first part is being inspected (3 s), the queue is full (8)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
        # Without the escalation the station would finish ~9 parts at 3 s each.
        assert time.monotonic() - t0 < 8, err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    con = sqlite3.connect(db)
    rows = con.execute("SELECT verdict, error FROM inspections ORDER BY seq").fetchall()
    seen = con.execute("SELECT parts_seen FROM runs").fetchone()[0]
    assert len(rows) == seen and seen >= 2
    verdicts = [v for v, _ in rows]
    assert "NOT_INSPECTED" in verdicts and verdicts.count("ERROR") == 1, rows
    assert all("second interrupt" in e for v, e in rows if v == "NOT_INSPECTED")
    assert any("stopped while this step was inspecting" in e for v, e in rows if v == "ERROR")
    kinds = {k for (k,) in con.execute("SELECT kind FROM events")}
    assert "interrupted" in kinds, kinds


# ---------------------------------------------------------------------------- item 20/15: part ids


def test_every_part_id_reaches_postgresql(tmp_path, pg_url):
    HOSTILE_IDS[:] = ["plain", "nul\x00inside", os.fsdecode(b"caf\xe9.png"), "\ud800lone", 12, "x" * 500]
    cfg = {"source": {"type": "hostile_ids"}, "steps": [{"detector": "tardy"}]}
    result = run_station(cfg, tmp_path, registry=registry(), db_url=pg_url)
    rows = result.inspections()
    assert len(rows) == 6 and all(r.verdict == "FAIL" for r in rows), [(r.part_id, r.verdict, r.error) for r in rows]
    ids = [r.part_id for r in rows]
    assert ids[:5] == ["plain", "nul\\x00inside", "caf\\xe9.png", "\\ud800lone", "12"]
    assert len(ids[5]) <= 300 and ids[5].startswith("x" * 280)
    assert "part_id_problem" not in rows[0].source_meta
    assert "contains NUL" in rows[1].source_meta["part_id_problem"]
    assert "is not valid UTF-8" in rows[2].source_meta["part_id_problem"]
    assert "is of type int" in rows[4].source_meta["part_id_problem"]
    assert "500 characters long" in rows[5].source_meta["part_id_problem"]
    # The detector saw the stored id; its message (with the id) is stored too.
    assert rows[1].defects[0].message == "defect of nul\\x00inside"
    assert rows[0].source_meta["nan"] == "nan" and rows[0].source_meta["k\\x00"] == "v\\x00"
    Store(pg_url).close()


# ---------------------------------------------------------------------------- item 14: no parts


def test_a_run_that_finds_no_parts_says_so_and_exits_3(tmp_path):
    empty = tmp_path / "parts"
    empty.mkdir()
    path = tmp_path / "s.yaml"
    path.write_text(
        f"name: s\nsource: {{type: folder, config: {{path: '{empty}', pattern: '*.png'}}}}\n"
        f"steps: [{{detector: bright_spot}}]\nstore: {{url: 'sqlite:///{tmp_path}/s.db'}}\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "inspector_core.cli", "run", str(path), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 3, out.stderr
    err = " ".join(out.stderr.split())
    assert "the source folder gave no parts" in err and str(empty) in err and "'*.png'" in err, out.stderr


# ---------------------------------------------------------------------------- item 13: counters, names


def test_tally_counts_every_part_from_many_threads():
    from inspector_core.runtime.progress import Tally

    tally = Tally()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    errors: list[BaseException] = []
    stop = threading.Event()

    def read():
        while not stop.is_set():
            try:
                tally.line()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

    def add(verdicts):
        for i in range(20_000):
            tally.add(verdicts[i % len(verdicts)], 1.0)

    try:
        reader = threading.Thread(target=read)
        reader.start()
        writers = [
            threading.Thread(target=add, args=(v,))
            for v in (["PASS"], ["FAIL", "kind-a"], ["NOT_INSPECTED", "kind-b"], ["ERROR", "kind-c"])
        ]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        stop.set()
        reader.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors[:1]
    assert tally.total == 80_000 and tally.counts()["PASS"] == 20_000


def _registers(*classes):
    class P:
        @staticmethod
        @hookimpl
        def inspector_register_detectors(register):
            for cls in classes:
                register(cls)

    return P


class ThirdPartyScratch(Detector):
    name = "scratch"
    kinds = ("scratch",)


class BuiltinScratch(Detector):
    name = "scratch"
    kinds = ("scratch",)


class OnlyThirdParty(Detector):
    name = "only_third_party"
    kinds = ("x",)


def test_a_detector_name_registered_twice_is_a_load_error_for_both(tmp_path):
    reg = load(
        entry_points=[],
        extra=[
            ("aaa_thirdparty", _registers(ThirdPartyScratch, OnlyThirdParty)),
            ("scratch", _registers(BuiltinScratch)),
            ("sources", TestPlugin),
        ],
    )
    # Neither plugin's "scratch" is used; what else the plugins register is.
    assert "scratch" not in reg.detectors and "only_third_party" in reg.detectors
    assert "detector 'scratch' is also registered by plugin 'scratch'" in reg.plugins["aaa_thirdparty"].error
    assert "detector 'scratch' is also registered by plugin 'aaa_thirdparty'" in reg.plugins["scratch"].error
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nsource: {type: parts, config: {ids: [a]}}\nsteps: [{detector: scratch}]\n")
    from inspector_core.runtime.config import ConfigError

    with pytest.raises(ConfigError) as exc:
        load_station(path, reg)
    assert "unknown detector 'scratch'" in str(exc.value) and "aaa_thirdparty" in str(exc.value)


def test_a_plugin_name_used_twice_is_refused():
    reg = load(entry_points=[], extra=[("p", _registers(Tardy)), ("p", _registers(Hang))])
    assert "plugin name 'p' is used twice" in reg.plugins["p"].error
    assert "hang" not in reg.detectors


# ---------------------------------------------------------------------------- item 19: plugin imports


def _plugin_site(tmp_path, plugins: dict[str, str]):
    site = tmp_path / "site"
    for name, code in plugins.items():
        info = site / f"inspector_{name}-1.0.dist-info"
        info.mkdir(parents=True)
        (site / f"inspector_{name}.py").write_text(textwrap.dedent(code))
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: inspector-{name}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[inspector.plugins]\n{name} = inspector_{name}\n")
    return dict(
        os.environ,
        PYTHONPATH=str(site) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        INSPECTOR_PLUGIN_IMPORT_TIMEOUT="1",
    )


def test_plugins_that_block_or_exit_at_import_do_not_stop_validate(tmp_path):
    env = _plugin_site(tmp_path, {"blocker": "import time\ntime.sleep(60)\n", "exiter": "import os\nos._exit(3)\n"})
    good = tmp_path / "good.yaml"
    good.write_text(
        f"name: s\nsource: {{type: synthetic, config: {{count: 3}}}}\n"
        f"steps: [{{detector: bright_spot}}]\nstore: {{url: 'sqlite:///{tmp_path}/s.db'}}\n"
    )
    cli = [sys.executable, "-m", "inspector_core.cli"]
    t0 = time.monotonic()
    out = subprocess.run(cli + ["validate", str(good)], env=env, capture_output=True, text=True, timeout=50)
    assert out.returncode == 0 and ": ok (station 's'" in out.stdout, (out.returncode, out.stdout, out.stderr)
    assert time.monotonic() - t0 < 30
    out = subprocess.run(cli + ["plugins", "--json"], env=env, capture_output=True, text=True, timeout=50)
    import json

    plugins = {p["name"]: p for p in json.loads(out.stdout)}
    assert "did not finish importing within 1 s" in plugins["blocker"]["error"]
    assert "called os._exit(3) while being imported" in plugins["exiter"]["error"]


def test_a_detector_kind_the_store_cannot_keep_is_a_load_error():
    class NulKind(Detector):
        name = "nul_kind"
        kinds = ("dent\x00",)

    reg = load(entry_points=[], extra=[("p", _registers(NulKind))])
    assert "nul_kind" not in reg.detectors
    assert "kind 'dent\\x00' must be printable UTF-8 text" in reg.plugins["p"].error


def test_detector_class_attributes_the_host_relies_on_are_checked_at_load():
    class KindsAsText(Detector):
        name = "kinds_as_text"
        kinds = "scratch"  # would accept the kind "scr" by substring

    class NanFloor(Detector):
        name = "nan_floor"
        kinds = ("x",)
        report_floor = math.nan  # would make every score comparison false

    reg = load(entry_points=[], extra=[("a", _registers(KindsAsText)), ("b", _registers(NanFloor))])
    assert not reg.detectors
    assert "`kinds` must be a non-empty tuple of strings (got 'scratch')" in reg.plugins["a"].error
    assert "`report_floor` must be a number in [0, 1] (got nan)" in reg.plugins["b"].error


def test_a_station_whose_step_keeps_hanging_holds_a_bounded_number_of_threads(tmp_path):
    cfg = {"source": parts(*(f"p{i}" for i in range(20))), "steps": [{"detector": "hang", "budget_ms": 50}]}
    rows = run_station(cfg, tmp_path, registry=registry()).inspections()
    assert len(rows) == 20 and all(r.verdict == "ERROR" for r in rows)
    assert [r.steps[0].status for r in rows[:2]] == ["timeout", "timeout"]
    assert all(r.error.startswith("step hang: still stuck: 2 earlier instances") for r in rows[2:])
    # The old runtime left one thread per overrun (20 here).
    assert len([t for t in threading.enumerate() if t.name.startswith("step-hang")]) <= 2
