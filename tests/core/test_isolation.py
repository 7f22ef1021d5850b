"""Crash isolation (``steps[i].isolation: process``, runtime/isolation.py): a detector that
segfaults or calls ``os._exit`` costs the part it was inspecting, recorded as ERROR naming the
detector, its plugin and how its worker died; the worker is restarted and the station goes on.
The detector is the third-party test plugin's ``crasher``, loaded in the worker by its entry
point, as a plugin from outside would be."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from inspector_core import Detector, Finding, hookimpl
from inspector_core.contract import View
from inspector_core.plugins import load
from inspector_core.runtime.config import Step
from inspector_core.runtime.isolation import IsolatedDetector
from inspector_core.runtime.steps import StepWorker, close_steps
from inspector_core.testing import run_station

SOURCE = {"type": "synthetic", "config": {"count": 40, "width": 320, "height": 240, "color": False}}


def _pid(message: str) -> int:
    return int(message.rsplit(" ", 1)[1])


@pytest.mark.parametrize(("how", "died"), [("segfault", "signal SIGSEGV"), ("exit", "exit code 7")])
def test_a_plugin_that_crashes_its_process_costs_one_part_not_the_station(tmp_path, how, died):
    cfg = {
        "source": SOURCE,
        "steps": [
            # The generous budget leaves room for the restart on a loaded machine.
            {
                "detector": "crasher",
                "isolation": "process",
                "budget_ms": 20000,
                "config": {"how": how, "part_suffix": "-00015"},
            },
            {"detector": "bright_spot"},
        ],
    }
    result = run_station(cfg, tmp_path)
    rows = result.inspections()
    assert len(rows) == 40  # without isolation the station process ends at part 15
    crashed = rows[15]
    assert crashed.part_id.endswith("-00015") and crashed.verdict == "ERROR"
    assert crashed.error_step == "crasher"
    assert crashed.error.startswith(
        "step crasher: detector 'crasher' (plugin 'example_thirdparty'): its worker process died "
        f"({died}) while inspecting part '{crashed.part_id}'"
    ), crashed.error
    assert [s.status for s in crashed.step_results] == ["error", "ok"]  # bright_spot still ran on it
    others = [r for r in rows if r is not crashed]
    assert all(r.verdict == "FAIL" and r.error is None for r in others), [(r.part_id, r.error) for r in others]
    for r in others:
        (d,) = [d for d in r.defects if d.kind == "crasher"]
        assert d.message.startswith(f"defect of {r.part_id} in pid ")
    before = {_pid(d.message) for r in rows[:15] for d in r.defects if d.kind == "crasher"}
    after = {_pid(d.message) for r in rows[16:] for d in r.defects if d.kind == "crasher"}
    # One worker before the crash, a fresh one after it; neither is the station's process.
    assert len(before) == 1 and len(after) == 1 and before != after and os.getpid() not in before | after
    events = [e for e in result.events() if e.kind == "step_worker_died"]
    assert len(events) == 1 and died in events[0].message and "example_thirdparty" in events[0].message


def _registry():
    return load()


def _step(name: str, config: dict, budget_ms: float = 5000.0) -> Step:
    cls = _registry().detectors[name]
    return Step(0, name, cls, cls.Config.model_validate(config), None, budget_ms, None, "process")


IMAGE = np.full((60, 80), 100, np.uint8)


def test_an_isolated_step_that_overruns_has_its_worker_killed_and_replaced(tmp_path):
    worker = StepWorker(
        _step("sleeper", {"sleep_ms": 30000, "part_suffix": "hang"}, budget_ms=300),
        tmp_path,
        plugin="example_thirdparty",
        entry_point="example_thirdparty",
    )
    try:
        first = worker._live.detector
        assert isinstance(first, IsolatedDetector) and first.process.pid != os.getpid()
        out = worker.run(View(IMAGE, "p-hang"))
        assert out.status == "timeout"
        # A thread would be left hanging for 30 s; the worker process is killed at once.
        first.process.join(5)
        assert first.process.exitcode == -9
        deadline = time.monotonic() + 20
        while (out := worker.run(View(IMAGE, "p-next"))).status != "ok" and time.monotonic() < deadline:
            assert "is still starting" in out.error, out.error
        assert out.status == "ok" and worker._live.detector.process.pid != first.process.pid
        assert worker.threads == 1  # the killed instance's thread has returned
    finally:
        assert not close_steps([worker])


def test_an_isolated_step_reports_the_plugins_errors_as_in_thread(tmp_path):
    worker = StepWorker(_step("raiser", {"every_nth": 2}), tmp_path, entry_point="example_thirdparty")
    try:
        outs = [worker.run(View(IMAGE[10:50, 5:70], f"p{i}")) for i in range(3)]  # a non-contiguous ROI view
        assert [o.status for o in outs] == ["ok", "error", "ok"]
        assert outs[1].error == "RuntimeError: simulated failure on part p1"
        assert worker.calls == 3 and worker.worker_cpu_ms >= 0
    finally:
        assert not close_steps([worker])


class Local(Detector):
    """A detector registered without an entry point (as tests register theirs): the worker
    imports it by its class's module. It reports the mean of the pixels it was sent."""

    name = "local_mean"
    kinds = ("local_mean",)

    def inspect(self, view):
        return [Finding("local_mean", 0.5, (0, 0, 1, 1), f"mean {float(view.image.mean()):.1f} pid {os.getpid()}")]


class LocalPlugin:
    @staticmethod
    @hookimpl
    def inspector_register_detectors(register):
        register(Local)


def test_a_detector_without_an_entry_point_is_imported_by_its_module(tmp_path):
    image = np.zeros((240, 320), np.uint8)
    image[:, 160:] = 200
    result = run_station(
        {
            "steps": [
                {
                    "detector": "local_mean",
                    "isolation": "process",
                    "roi": {"x": 120, "y": 0, "width": 80, "height": 240},
                }
            ]
        },
        tmp_path,
        images=[image, image],
        plugins=[("local", LocalPlugin)],
    )
    rows = result.inspections()
    assert [r.verdict for r in rows] == ["FAIL", "FAIL"]
    (d,) = rows[0].defects
    # The worker saw the ROI's pixels (half 0, half 200), in another process.
    assert d.message.startswith("mean 100.0 pid ") and _pid(d.message) != os.getpid()


STATION = """\
name: crash
source: {{type: synthetic, config: {{count: 6, width: 320, height: 240, color: false}}}}
steps: [{{detector: crasher, isolation: {isolation}, budget_ms: 20000, config: {{part_suffix: "-00003"}}}}]
store: {{url: 'sqlite:///{db}'}}
"""


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_inspector_run_survives_a_segfault_only_when_the_step_is_isolated(tmp_path, isolation):
    import signal
    import sqlite3
    import subprocess
    import sys

    db = tmp_path / "crash.db"
    path = tmp_path / "crash.yaml"
    path.write_text(STATION.format(isolation=isolation, db=db))
    out = subprocess.run(
        [sys.executable, "-m", "inspector_core.cli", "run", str(path), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT part_id, verdict, error FROM inspections ORDER BY seq").fetchall()
    finally:
        con.close()
    if isolation == "thread":
        # The plugin's segfault is the station's: the run ends at part 3, its verdict never recorded.
        assert out.returncode == -signal.SIGSEGV, (out.returncode, out.stderr[-2000:])
        assert len(rows) < 4
    else:
        assert out.returncode == 0, out.stderr[-2000:]
        assert [v for _, v, _ in rows] == ["FAIL", "FAIL", "FAIL", "ERROR", "FAIL", "FAIL"]
        assert "its worker process died (signal SIGSEGV)" in rows[3][2]
