"""A PLC (pymodbus's client) triggers a station whose source is the pylon camera emulator
(PYLON_CAMEMU, software trigger) serving real photographs: every trigger is a part with the
PLC's part id and the photograph the camera grabbed for it, answered on the PLC."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest
from inspector_line.modbus import ERROR, READY
from inspector_line.simulate import ModbusPlc

from tests.conftest import unavailable
from tests.line.conftest import camera_station, rows, trigger_each

TRANSISTORS = "mvtec_ad/transistor/train/good"


@pytest.mark.data
def test_a_plc_triggers_the_pylon_emulator_and_reads_each_parts_result(tmp_path, running, data_dir, monkeypatch):
    if importlib.util.find_spec("pypylon") is None:
        unavailable("pypylon is not installed (make test installs it): pip install -e 'plugins/sources[pylon]'")
    monkeypatch.setenv("PYLON_CAMEMU", "1")
    folder = data_dir / TRANSISTORS
    features = f'{{TestImageSelector: "Off", ImageFileMode: "On", ImageFilename: "{folder}"}}'
    config = f"{{pixel_format: RGB8Packed, width: 512, height: 512, exposure_us: 1000, features: {features}}}"
    st = running(camera_station(tmp_path, "pylonline", "pylon", config))
    # The emulator opens in its own thread (once, on a slow machine, after a part's 1 s grab
    # timeout: an ERROR part, failed closed). A PLC triggers on Ready, and the station shows Busy,
    # not Ready, until its camera is open: this PLC waits for Ready, as a real one does.
    plc = ModbusPlc("127.0.0.1", st.port)
    try:
        end, opened = time.monotonic() + 60, None
        while not plc.status() & READY:
            if opened is None and st.runtime._source.capture_state() == "ready":
                opened = time.monotonic()
            assert time.monotonic() < end, f"no Ready within 60 s (status {plc.status():#x})"
            time.sleep(0.01)
        assert opened is None or time.monotonic() - opened < 0.5, "the camera was open, the PLC saw no Ready"
        sent = trigger_each(plc, [f"SN-{i:03d}{'F' if i == 4 else 'G'}" for i in range(1, 7)])
        ring = plc.ring()
    finally:
        plc.close()
        st.stop()
    got = rows(
        tmp_path / "line.db",
        "SELECT l.counter, l.part_id, l.code, l.is_default, i.part_id, i.verdict, i.error, i.source_meta"
        " FROM line_results l JOIN inspections i ON i.uid = l.inspection_uid ORDER BY l.counter",
    )
    assert [r[0] for r in got] == list(range(1, 7)), got
    for counter, line_part, code, is_default, part_id, verdict, error, meta_json in got:
        meta = json.loads(meta_json)
        assert error is None and not is_default, (counter, error, meta)
        assert meta["serial"] == "0815-0000" and meta["block_id"] == counter - 1  # one exposure per trigger
        assert 0 < meta["trigger_to_exposure_ms"] <= meta["trigger_to_frame_ms"] < 1500
        assert line_part == part_id == sent[counter]  # the PLC's part id is the inspection's
        assert verdict == ("FAIL" if part_id.endswith("F") else "PASS")
        assert code == (2 if verdict == "FAIL" else 1)
        assert counter in ring


def test_a_camera_that_is_not_there_makes_every_triggered_part_error_never_ok(tmp_path, running, monkeypatch):
    if importlib.util.find_spec("pypylon") is None:
        unavailable("pypylon is not installed (make test installs it): pip install -e 'plugins/sources[pylon]'")
    monkeypatch.setenv("PYLON_CAMEMU", "1")
    config = '{serial: "no-such-camera", reconnect_initial_ms: 50, reconnect_max_ms: 200}'
    st = running(camera_station(tmp_path, "nocamera", "pylon", config))
    plc = ModbusPlc("127.0.0.1", st.port)
    try:
        end = time.monotonic() + 30
        while not plc.status() & ERROR:  # before any trigger: the camera is not open
            assert time.monotonic() < end, f"no Error within 30 s (status {plc.status():#x})"
            time.sleep(0.01)
        assert not plc.status() & READY
        trigger_each(plc, [f"SN-{i}" for i in range(1, 4)])
        time.sleep(2.5)  # past the 2 s an error part holds Error for: the camera still says down
        assert plc.status() & ERROR and not plc.status() & READY
    finally:
        plc.close()
        st.stop()
    got = rows(
        tmp_path / "line.db",
        "SELECT l.code, i.part_id, i.verdict, i.error FROM line_results l"
        " JOIN inspections i ON i.uid = l.inspection_uid ORDER BY l.counter",
    )
    assert [r[1] for r in got] == ["SN-1", "SN-2", "SN-3"], got
    for code, _, verdict, error in got:
        assert verdict == "ERROR" and code == 2  # the line's error code: nok, never ok
        assert "camera no-such-camera not found" in error
    events = [r[0] for r in rows(tmp_path / "line.db", "SELECT kind FROM events")]
    assert "camera_unavailable" in events
