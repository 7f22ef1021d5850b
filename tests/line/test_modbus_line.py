"""A PLC (pymodbus's client over loopback) drives a station through the Modbus TCP map of
docs/line.md; the tests read what the PLC saw and what the store holds."""

from __future__ import annotations

from inspector_line.simulate import ModbusPlc

from tests.line.conftest import rows, write_station

LINE = """\
line:
  protocol: modbus
  config: {host: 127.0.0.1, port: 0}
  deadline_ms: 400
  defect_codes: {flaw: 7}
"""


def test_a_plc_triggers_and_reads_every_result_after_its_verdict_is_committed(tmp_path, running):
    st = running(write_station(tmp_path, line=LINE, detector="{delay_ms: 5}"))
    plc = ModbusPlc("127.0.0.1", st.port)
    # Part ids from the PLC: every third one ends in F (the test detector fails it).
    seen = {}
    import time

    for i in range(1, 13):
        pid = f"DMC-{i:04d}{'F' if i % 3 == 0 else 'G'}"
        c = plc.trigger(pid, product=42)
        seen[c] = pid
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            ring = plc.ring()
            if c in ring:
                break
            time.sleep(0.002)
        plc.acknowledge(c)
    ring = plc.ring()
    status = plc.status()
    plc.close()
    st.stop()
    db = tmp_path / "line.db"
    got = rows(
        db,
        "SELECT l.counter, l.part_id, l.code, l.defect_code, l.verdict, l.is_default, l.ack_ms, i.part_id, i.verdict,"
        " l.product FROM line_results l JOIN inspections i ON i.uid = l.inspection_uid ORDER BY l.counter",
    )
    assert [r[0] for r in got] == list(range(1, 13))
    for counter, part_id, code, defect, verdict, is_default, ack_ms, ins_part, ins_verdict, product in got:
        want_fail = seen[counter].endswith("F")
        assert part_id == ins_part == seen[counter]  # the PLC's part id is the inspection's
        assert ins_verdict == verdict == ("FAIL" if want_fail else "PASS")
        assert (code, defect) == ((2, 7) if want_fail else (1, 0))
        assert not is_default and ack_ms is not None and product == "42"
    # The ring still holds the last results as the PLC read them.
    assert ring[12] == (2, 7, 1) and ring[11] == (1, 0, 1)
    assert status & 1  # Ready while waiting for the next trigger (read before the stop)


def test_validate_names_the_installed_protocols_for_an_unknown_one(tmp_path, line_registry):
    import pytest

    from inspector_core.runtime.config import ConfigError, load_station

    bad = LINE.replace("protocol: modbus", "protocol: profinet")
    with pytest.raises(ConfigError) as err:
        load_station(write_station(tmp_path, line=bad), line_registry)
    assert "line: unknown PLC link 'profinet' (installed: modbus" in str(err.value)
    bad = LINE.replace("deadline_ms: 400", "deadline_ms: 0")
    with pytest.raises(ConfigError) as err:
        load_station(write_station(tmp_path, line=bad), line_registry)
    assert "line.deadline_ms: Input should be greater than 0 (got 0)" in str(err.value)
