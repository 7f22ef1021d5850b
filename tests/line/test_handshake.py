"""The protocol-neutral handshake on its own: a link that records what it is told, frames from
a list, verdicts handed in as the recorder would after its commit."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from inspector_core.contract import EmptyConfig, Frame, FrameSource, LineResult, PlcLink, SourceContext, Trigger
from inspector_core.runtime.config import LineSpec
from inspector_core.runtime.line import Handshake
from inspector_core.store import DefectRecord, InspectionRecord


class Link(PlcLink):
    name = "fake"

    def __init__(self) -> None:
        super().__init__(PlcLink.Config(), station_dir=Path("."))
        self.results: list[LineResult] = []
        self.states: list[str] = []

    def start(self, control) -> None:
        pass

    def set_state(self, state) -> None:
        self.states.append(state)

    def publish(self, result: LineResult) -> None:
        self.results.append(result)

    def close(self) -> None:
        pass


def handshake(healthy=None, **spec) -> tuple[Handshake, Link]:
    link = Link()
    hs = Handshake(LineSpec(protocol="fake", **spec), link, run_uid="r1", line_log=None, on_event=lambda k, m: None)
    hs.healthy = healthy
    hs._thread.start()
    return hs, link


def frames(n: int):
    for i in range(n):
        yield Frame(f"f{i}", np.zeros((8, 8), np.uint8), datetime.now(UTC))


def verdict_of(frame: Frame, verdict: str, kind: str | None = None) -> InspectionRecord:
    defects = [DefectRecord("s", "d", kind, 0.9, True, (0, 0, 1, 1), None, None, {}, "")] if kind else []
    return InspectionRecord(
        uid=f"u{frame.meta['plc_seq']}", station_id=1, run_id=1, seq=frame.meta["plc_seq"], part_id=frame.part_id,
        captured_at=frame.captured_at, decided_at=datetime.now(UTC), verdict=verdict, latency_ms=1.0,
        source_meta=frame.meta, defects=defects,
    )  # fmt: skip


def wait_for(cond, timeout: float = 3.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_a_counter_jump_flags_missed_and_codes_follow_the_verdicts():
    hs, link = handshake(defect_codes={"dent": 9}, error="recheck")
    stop = threading.Event()
    got = hs.frames(frames(10), stop)
    hs.trigger(counter=5, part_id="A")
    a = next(got)
    hs.trigger(counter=8, part_id="B")  # 6 and 7 never came
    b = next(got)
    hs.trigger(counter=9)
    c = next(got)
    assert (a.part_id, b.part_id, c.part_id) == ("A", "B", "f2")  # the PLC's part id, else the source's
    hs.committed([verdict_of(a, "PASS"), verdict_of(b, "FAIL", "dent"), verdict_of(c, "ERROR")])
    wait_for(lambda: len(link.results) == 3)
    r = {x.counter: x for x in link.results}
    assert (r[5].code, r[5].missed_trigger, r[5].verdict) == (1, False, "PASS")
    assert (r[8].code, r[8].defect_code, r[8].missed_trigger) == (2, 9, True)
    assert (r[9].code, r[9].missed_trigger) == (3, False)  # ERROR -> line.error (recheck), never ok
    assert hs.stats["missed"] == 1
    stop.set()
    hs.close(timeout=1)
    assert link.states[-1] == "HALTED"


def test_the_plc_sees_error_while_the_station_cannot_commit_and_gets_defaults():
    healthy = threading.Event()
    hs, link = handshake(healthy=healthy.is_set, deadline_ms=150, margin_ms=20)
    wait_for(lambda: link.states and link.states[-1] == "ERROR")
    stop = threading.Event()
    got = hs.frames(frames(3), stop)
    t = hs.trigger(counter=1)
    next(got)  # captured, but its verdict is never committed (the database is away)
    wait_for(lambda: len(link.results) == 1)
    res = link.results[0]
    assert res.is_default and res.code == 2 and res.verdict is None
    assert hs._parts[1].record.trigger_to_result_ms < 150  # by the deadline
    assert t.deadline_s == 0.15
    healthy.set()
    wait_for(lambda: link.states[-1] == "READY")
    stop.set()
    hs.close(timeout=1)


def test_what_the_plc_sends_is_kept_storable():
    hs, link = handshake()
    stop = threading.Event()
    got = hs.frames(frames(2), stop)
    trig = hs.trigger(counter=1, part_id="SN\x00" + "9" * 300, product="P\x00")
    frame = next(got)
    assert "\x00" not in frame.part_id and len(frame.part_id) <= 300  # as inspections.part_id
    assert trig.product is not None and "\x00" not in trig.product
    assert hs._parts[1].record.part_id == frame.part_id
    stop.set()
    hs.close(timeout=1)


class Camera(FrameSource):
    """A triggerable source whose readiness the test sets."""

    name = "scripted_camera"
    triggerable = True

    def __init__(self) -> None:
        super().__init__(EmptyConfig(), SourceContext(Path("."), lambda kind, message: None))
        self.state = "opening"
        self.triggers: list[Trigger] = []

    def capture_state(self):
        if self.state == "broken":
            raise RuntimeError("driver gone")
        return self.state

    def trigger(self, trigger: Trigger) -> None:
        self.triggers.append(trigger)


def test_the_plc_sees_busy_until_the_camera_opens_and_error_while_it_is_down():
    cam = Camera()
    events: list[tuple[str, str]] = []
    link = Link()
    hs = Handshake(
        LineSpec(protocol="fake"),
        link,
        run_uid="r1",
        line_log=None,
        on_event=lambda k, m: events.append((k, m)),
        source=cam,
    )
    hs._thread.start()
    try:
        wait_for(lambda: link.states == ["BUSY"])
        time.sleep(0.1)
        assert link.states == ["BUSY"]  # never Ready while the camera is still opening
        t0 = time.monotonic()
        cam.state = "ready"
        wait_for(lambda: link.states[-1] == "READY")
        assert time.monotonic() - t0 < 0.25  # shown soon after the opening, not at the next heartbeat
        cam.state = "down"
        wait_for(lambda: link.states[-1] == "ERROR")
        time.sleep(0.1)
        assert link.states[-1] == "ERROR"  # held while the source says it is down, no part needed
        cam.state = "ready"
        wait_for(lambda: link.states[-1] == "READY")
        cam.state = "broken"
        wait_for(lambda: link.states[-1] == "ERROR")  # a source that cannot say is not taken as ready
        assert any(k == "line_source_state_failed" and "driver gone" in m for k, m in events)
    finally:
        hs.close(timeout=1)
    assert link.states[-1] == "HALTED"
