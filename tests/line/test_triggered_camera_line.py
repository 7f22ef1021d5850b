"""A PLC (pymodbus's client) triggers a station whose source is the OpenCV ``triggered_camera``
(a video file delivered at 50 fps, as a free-running camera would): each trigger is the part
with the PLC's part id and the frame that came just after the trigger."""

from __future__ import annotations

import json

import cv2
import numpy as np
from inspector_line.simulate import ModbusPlc

from tests.line.conftest import camera_station, rows, trigger_each


def test_a_plc_triggers_an_opencv_camera_and_reads_each_parts_result(tmp_path, running):
    writer = cv2.VideoWriter(str(tmp_path / "cam.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 50, (320, 240))
    for i in range(500):  # 10 s of frames at 50 fps
        writer.write(np.full((240, 320, 3), i % 200, np.uint8))
    writer.release()
    config = "{device: cam.avi, pace_fps: 50, gray: true, settle_ms: 5}"
    st = running(camera_station(tmp_path, "cvline", "triggered_camera", config))
    plc = ModbusPlc("127.0.0.1", st.port)
    try:
        sent = trigger_each(plc, [f"CV-{i}{'F' if i == 2 else 'G'}" for i in range(1, 6)], pause_s=0.1)
    finally:
        plc.close()
        st.stop()
    got = rows(
        tmp_path / "line.db",
        "SELECT l.counter, l.code, l.is_default, i.part_id, i.verdict, i.error, i.source_meta"
        " FROM line_results l JOIN inspections i ON i.uid = l.inspection_uid ORDER BY l.counter",
    )
    assert [r[0] for r in got] == list(range(1, 6)), got
    seqs = []
    for counter, code, is_default, part_id, verdict, error, meta_json in got:
        meta = json.loads(meta_json)
        assert part_id == sent[counter] and error is None and not is_default
        assert verdict == ("FAIL" if part_id.endswith("F") else "PASS") and code == (2 if verdict == "FAIL" else 1)
        assert 5 <= meta["trigger_to_frame_ms"] < 1500  # at least settle_ms after the trigger
        seqs.append(meta["seq"])
    assert all(b - a >= 3 for a, b in zip(seqs, seqs[1:], strict=False)), seqs  # fresh frames, not buffered ones
