"""A multi-view part on a line (docs/views.md, docs/line.md): one camera at two positions, a PLC
(pymodbus's client on loopback) triggers each position with the part's id; the k-th trigger of a
part id is the k-th view declared. The part is one inspection with both views, and the PLC reads
ONE verdict per part, written at each of its triggers once the verdict is committed (the last
trigger's counter last); a part whose second trigger never comes is ERROR with the view named, and
its answer is the line's error code, never OK. A verdict slower than the deadline: the default at
every trigger of the part, the real verdict recorded late."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from inspector_line import modbus as m
from inspector_line.simulate import ModbusPlc

from tests.line.conftest import rows


def _station(tmp_path: Path, *, delay_ms: float = 0, deadline_ms: float = 1500, join_ms: float = 400) -> Path:
    path = tmp_path / "line.yaml"
    path.write_text(
        f"""\
name: viewsline
source:
  type: synthetic
  config: {{count: 100000, width: 320, height: 240, color: false}}
views:
  top: {{}}
  side: {{tag: pos2}}
join: {{deadline_ms: {join_ms}}}
steps:
  - {{detector: paced, name: top_look, view: top, config: {{delay_ms: {delay_ms}}}}}
  - {{detector: paced, name: side_look, view: side, config: {{delay_ms: {delay_ms}}}}}
store:
  url: sqlite:///line.db
line:
  protocol: modbus
  config: {{host: 127.0.0.1, port: 0}}
  deadline_ms: {deadline_ms}
  margin_ms: 50
"""
    )
    return path


def _ready(plc: ModbusPlc, counter: int, wait_s: float = 3.0) -> None:
    """Before moving the camera on: wait until LAST_TRIGGER is ``counter`` and STATUS shows Ready,
    not Busy. Not proof that the frame is taken (Busy is set a few ms after the trigger, by the line
    thread; docs/views.md): the views stay right either way, a view being its trigger's place."""
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        regs = plc.read(m.STATUS, 4)
        if m.join32(regs[2], regs[3]) == counter and regs[0] & m.READY and not regs[0] & m.BUSY:
            return
        time.sleep(0.005)
    raise AssertionError(f"the station did not take trigger {counter} within {wait_s:g} s")


def _result(plc: Any, counter: int, wait_s: float = 4.0) -> tuple[int, int, int] | None:
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        got = plc.ring({counter}).get(counter)
        if got is not None:
            return got
        time.sleep(0.005)
    return None


def test_a_plc_triggers_each_view_and_reads_one_verdict_per_part(tmp_path, running):
    st = running(_station(tmp_path))
    plc = ModbusPlc("127.0.0.1", st.port)
    counters: dict[str, list[int]] = {}
    try:
        for pid in ("V-1G", "V-2F", "V-3G", "V-4F"):
            counters[pid] = [plc.trigger(pid)]  # the camera at its first position: view top
            # Before the last view of its part, no result is written for the part's first trigger.
            _ready(plc, counters[pid][0])
            assert counters[pid][0] not in plc.ring({counters[pid][0]})
            if pid == "V-3G":
                continue  # the part leaves before the second position: its side view never comes
            counters[pid].append(plc.trigger(pid))  # second position: view side
            got = _result(plc, counters[pid][-1])
            assert got is not None, f"no result for {pid}"
            plc.acknowledge(counters[pid][-1])
        short = _result(plc, counters["V-3G"][0])  # answered after the join's deadline (400 ms)
        assert short is not None
        plc.acknowledge(counters["V-3G"][0])
        ring = plc.ring()
    finally:
        plc.close()
        st.stop()

    ok, nok = 1, 2
    expected = {"V-1G": ok, "V-2F": nok, "V-3G": nok, "V-4F": nok}  # V-3G: ERROR -> line.error (nok)
    for pid, cs in counters.items():
        for c in cs:
            code, defect, flags = ring[c]
            assert code == expected[pid], (pid, c, ring[c])
            assert flags & m.FLAG_VALID and not flags & m.FLAG_DEFAULT, (pid, c, flags)

    db = tmp_path / "line.db"
    ins = rows(db, "SELECT part_id, verdict, error, error_step, source_meta, uid FROM inspections ORDER BY seq")
    # In the order decided: V-4F was complete before V-3G's join deadline passed.
    assert [(r[0], r[1]) for r in ins] == [("V-1G", "PASS"), ("V-2F", "FAIL"), ("V-4F", "FAIL"), ("V-3G", "ERROR")]
    [short_part] = [r for r in ins if r[0] == "V-3G"]
    assert short_part[3] == "view:side" and "view 'side' missing: no frame within 400 ms" in short_part[2]
    assert json.loads(ins[0][4])["views"] == ["top", "side"]
    views = rows(
        db,
        "SELECT i.part_id, v.view, v.status, v.source_meta FROM inspection_views v "
        "JOIN inspections i ON i.id = v.inspection_id ORDER BY i.seq, v.id",
    )
    assert [(r[0], r[1], r[2]) for r in views] == [
        (p, v, "missing" if (p, v) == ("V-3G", "side") else "ok")
        for p in ("V-1G", "V-2F", "V-4F", "V-3G")
        for v in ("top", "side")
    ]
    for part_id, view, status, meta_json in views:
        if status == "ok":
            meta = json.loads(meta_json)
            assert meta["plc_view"] == view and meta["view"] == {"top": "top", "side": "pos2"}[view]
            assert meta["plc_counter"] == counters[part_id][("top", "side").index(view)]
    # One line_results row per trigger, each tied to its part's one inspection, none a default.
    uid_of = {r[0]: r[5] for r in ins}
    lines = rows(db, "SELECT counter, part_id, code, is_default, late, verdict, inspection_uid FROM line_results")
    assert sorted(r[0] for r in lines) == sorted(c for cs in counters.values() for c in cs)
    for counter, part_id, code, is_default, late, verdict, uid in lines:
        assert verdict == {"V-1G": "PASS", "V-3G": "ERROR"}.get(part_id, "FAIL")
        assert uid == uid_of[part_id] and not is_default and not late and code == expected[part_id]
        assert counter in counters[part_id]
    [(events,)] = rows(db, "SELECT count(*) FROM events WHERE kind LIKE 'view_%'")
    assert events == 0


def test_a_verdict_slower_than_the_deadline_is_the_default_at_every_trigger_of_the_part(tmp_path, running):
    st = running(_station(tmp_path, delay_ms=900, deadline_ms=400, join_ms=1000))
    plc = ModbusPlc("127.0.0.1", st.port)
    try:
        first = plc.trigger("S-1G")
        _ready(plc, first)
        last = plc.trigger("S-1G")
        t = time.monotonic()
        got = _result(plc, last)
        seen_after = time.monotonic() - t
        assert got is not None
        assert plc.ring({first}).get(first) is not None
        plc.acknowledge(last)
        ring = plc.ring()
        time.sleep(1.5)  # the real verdict (900 ms a step) comes after the defaults
    finally:
        plc.close()
        st.stop()
    for c in (first, last):
        code, _, flags = ring[c]
        assert code == 2 and flags & m.FLAG_DEFAULT, (c, ring[c])  # the default (nok), never ok
    assert seen_after < 0.4 + 0.3  # by the last trigger's deadline (plus this loaded machine's slack)
    db = tmp_path / "line.db"
    lines = rows(db, "SELECT counter, code, is_default, late, verdict FROM line_results ORDER BY counter")
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in lines] == [(first, 2, 1, 1, "PASS"), (last, 2, 1, 1, "PASS")]
    [(verdict, n_views)] = rows(
        db,
        "SELECT i.verdict, (SELECT count(*) FROM inspection_views v WHERE v.inspection_id = i.id) FROM inspections i",
    )
    assert (verdict, n_views) == ("PASS", 2)


def test_a_triggered_camera_grabs_each_view_at_its_trigger(tmp_path, running):
    writer = cv2.VideoWriter(str(tmp_path / "cam.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 50, (320, 240))
    for i in range(300):
        writer.write(np.full((240, 320, 3), i % 200, np.uint8))
    writer.release()
    path = _station(tmp_path)
    path.write_text(
        path.read_text().replace(
            "  type: synthetic\n  config: {count: 100000, width: 320, height: 240, color: false}",
            "  type: triggered_camera\n  config: {device: cam.avi, pace_fps: 50, gray: true, settle_ms: 5}",
        )
    )
    assert "triggered_camera" in path.read_text()
    st = running(path)
    plc = ModbusPlc("127.0.0.1", st.port)
    sent = []
    try:
        for pid in ("C-1G", "C-2F"):
            first = plc.trigger(pid)
            _ready(plc, first)
            last = plc.trigger(pid)
            assert _result(plc, last) is not None
            plc.acknowledge(last)
            sent.append((pid, first, last))
        ring = plc.ring()
    finally:
        plc.close()
        st.stop()
    for pid, first, last in sent:
        want = 2 if pid.endswith("F") else 1
        assert ring[first][0] == ring[last][0] == want, (pid, ring[first], ring[last])
    db = tmp_path / "line.db"
    got = rows(
        db,
        "SELECT i.part_id, i.verdict, v.view, v.status, v.source_meta FROM inspection_views v "
        "JOIN inspections i ON i.id = v.inspection_id ORDER BY i.seq, v.id",
    )
    assert [(r[0], r[1], r[2], r[3]) for r in got] == [
        ("C-1G", "PASS", "top", "ok"),
        ("C-1G", "PASS", "side", "ok"),
        ("C-2F", "FAIL", "top", "ok"),
        ("C-2F", "FAIL", "side", "ok"),
    ]
    counters = {(pid, "top"): f for pid, f, _ in sent} | {(pid, "side"): la for pid, _, la in sent}
    for part_id, _, view, _, meta_json in got:
        meta = json.loads(meta_json)
        assert meta["plc_counter"] == counters[(part_id, view)] and meta["trigger_to_frame_ms"] >= 5


def test_triggers_without_a_part_id_are_grouped_in_turn(tmp_path, running):
    st = running(_station(tmp_path))
    plc = ModbusPlc("127.0.0.1", st.port)
    try:
        cs = []
        for _ in range(4):  # two parts of two views each, no PART_ID sent
            cs.append(plc.trigger(""))
            _ready(plc, cs[-1])
        for c in (cs[1], cs[3]):
            assert _result(plc, c) is not None
        plc.acknowledge(cs[3])
        ring = plc.ring()
    finally:
        plc.close()
        st.stop()
    assert all(ring[c][0] == 1 for c in cs), ring  # PASS (no id ends in F) at every trigger
    got = rows(
        tmp_path / "line.db",
        "SELECT i.part_id, i.verdict, v.view, json_extract(v.source_meta, '$.plc_counter') FROM inspection_views v "
        "JOIN inspections i ON i.id = v.inspection_id ORDER BY i.seq, v.id",
    )
    assert got == [
        (f"plc-{cs[0]}", "PASS", "top", cs[0]),
        (f"plc-{cs[0]}", "PASS", "side", cs[1]),
        (f"plc-{cs[2]}", "PASS", "top", cs[2]),
        (f"plc-{cs[2]}", "PASS", "side", cs[3]),
    ]


def test_the_same_handshake_over_opcua(tmp_path, running):
    from inspector_line.opcua_plc import OpcUaPlc

    path = _station(tmp_path)
    path.write_text(
        path.read_text().replace(
            "  protocol: modbus\n  config: {host: 127.0.0.1, port: 0}",
            '  protocol: opcua\n  config: {host: 127.0.0.1, port: 0, namespace_uri: "urn:inspector:views"}',
        )
    )
    st = running(path)
    plc = OpcUaPlc(st.runtime._line.link.endpoint, namespace_uri="urn:inspector:views")
    sent = []
    try:
        for pid in ("U-1F", "U-2G"):
            first = plc.trigger(pid)
            time.sleep(0.2)  # the camera moves to the second position
            last = plc.trigger(pid)
            assert _result(plc, last) is not None, pid
            plc.acknowledge(last)
            sent.append((pid, first, last))
        ring = plc.ring()
    finally:
        plc.close()
        st.stop()
    for pid, first, last in sent:
        want = 2 if pid.endswith("F") else 1
        assert ring[first][0] == ring[last][0] == want, (pid, ring.get(first), ring.get(last))
    got = rows(tmp_path / "line.db", "SELECT part_id, verdict FROM inspections ORDER BY seq")
    assert got == [("U-1F", "FAIL"), ("U-2G", "PASS")]
