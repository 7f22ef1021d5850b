"""Deadlines, overruns, a PLC that never acknowledges, a PLC that reconnects mid-run: every
trigger still gets exactly one result on the PLC, and the store says what happened."""

from __future__ import annotations

import time

from inspector_line import modbus as m
from inspector_line.simulate import ModbusPlc, drive, drive_elsewhere

from inspector_core.qa.line import plc_mismatches
from tests.line.conftest import rows, write_station


def line(**extra: object) -> str:
    body = "line:\n  protocol: modbus\n  config: {host: 127.0.0.1, port: 0}\n"
    return body + "".join(f"  {k}: {v}\n" for k, v in extra.items())


def test_a_slow_part_gets_the_default_by_its_deadline_and_its_late_verdict_is_recorded(tmp_path, running):
    # Every 3rd part takes 800 ms; the deadline is 600 ms: those get the default (RECHECK, 3),
    # sent 150 ms early (margin_ms) so that a loaded machine still delivers it in time. The PLC
    # runs in its own process, as a real one does.
    path = write_station(
        tmp_path,
        line=line(deadline_ms=600, default="recheck", margin_ms=150),
        detector="{delay_ms: 2, slow_every: 3, slow_ms: 800}",
    )
    st = running(path)
    seen = drive_elsewhere("127.0.0.1", st.port, rate=1.5, count=6, deadline_ms=600)
    st.stop()
    assert seen.lost == 0 and seen.late == 0, seen.summary()
    defaults = sorted(c for c, p in seen.parts.items() if p.flags & m.FLAG_DEFAULT)
    assert defaults == [3, 6]
    assert all(seen.parts[c].code == 3 for c in defaults)
    assert all(p.code == 1 for c, p in seen.parts.items() if c not in defaults)
    db = tmp_path / "line.db"
    got = rows(db, "SELECT counter, code, is_default, late, verdict, verdict_code FROM line_results ORDER BY counter")
    assert len(got) == 6
    for counter, code, is_default, late, verdict, verdict_code in got:
        if counter in defaults:  # the real verdict came after the default: kept, marked late
            assert (code, is_default, late, verdict, verdict_code) == (3, 1, 1, "PASS", 1)
        else:
            assert (code, is_default, late, verdict) == (1, 0, 0, "PASS")
    mism = plc_mismatches(f"sqlite:///{db}", "linetest")
    assert sorted(x.counter for x in mism) == defaults


def test_triggers_while_busy_are_overruns_answered_by_the_reject_policy(tmp_path, running):
    # One frame may wait for inspection; a part takes 250 ms: the capture is held, so the
    # triggers sent 20 ms apart find the station BUSY.
    path = write_station(tmp_path, line=line(deadline_ms=5000, overrun="reject"), detector="{delay_ms: 400}")
    path.write_text(path.read_text() + "overload: {policy: wait, queue_size: 1}\n")
    st = running(path)
    plc = ModbusPlc("127.0.0.1", st.port)
    sent = []
    for _ in range(10):
        sent.append(plc.trigger("P"))
        time.sleep(0.02)
    ring = {}
    end = time.monotonic() + 12
    while time.monotonic() < end and not all(c in ring for c in sent):
        ring.update(plc.ring())
        time.sleep(0.01)
    plc.close()
    st.stop()
    assert all(c in ring for c in sent), ring
    overruns = [c for c in sent if ring[c][2] & m.FLAG_OVERRUN]
    assert overruns, ring
    # Rejected overruns get the default (NOK, 2) at once and are not inspected.
    assert all(ring[c][0] == 2 and ring[c][2] & m.FLAG_DEFAULT for c in overruns)
    db = tmp_path / "line.db"
    sql = "SELECT counter, overrun, is_default, inspection_uid, trigger_to_result_ms FROM line_results"
    got = {r[0]: r[1:] for r in rows(db, sql)}
    assert sorted(got) == sent
    for c in overruns:
        overrun, is_default, uid, ms = got[c]
        assert overrun == 1 and is_default == 1 and uid is None and ms < 1000  # long before its deadline (5 s)
    inspected = rows(db, "SELECT count(*) FROM inspections")[0][0]
    assert inspected == len(sent) - len(overruns)


def test_a_plc_that_never_acknowledges_is_recorded_and_does_not_stop_the_line(tmp_path, running):
    st = running(write_station(tmp_path, line=line(deadline_ms=500, ack_timeout_ms=100), detector="{}"))
    plc = ModbusPlc("127.0.0.1", st.port)
    seen = drive(plc, rate=20, count=10, deadline_ms=500, ack=False)
    time.sleep(0.3)
    plc.close()
    st.stop()
    assert seen.lost == 0 and len(seen.answered) == 10
    got = rows(tmp_path / "line.db", "SELECT ack_timeout, ack_ms FROM line_results")
    assert len(got) == 10 and all(r == (1, None) for r in got)
    events = rows(tmp_path / "line.db", "SELECT kind FROM events WHERE kind = 'plc_ack_timeout'")
    assert events


def test_a_plc_that_reconnects_mid_run_loses_and_duplicates_no_result(tmp_path, running):
    st = running(write_station(tmp_path, line=line(deadline_ms=1000), detector="{}"))
    plc = ModbusPlc("127.0.0.1", st.port)
    seen = drive(plc, rate=25, count=150, deadline_ms=1000, reconnect_every=15)
    plc.close()
    st.stop()
    assert seen.reconnects == 9
    assert seen.lost == 0 and seen.conflicting == 0, seen.summary()
    db = tmp_path / "line.db"
    n, distinct = rows(db, "SELECT count(*), count(DISTINCT counter) FROM line_results")[0]
    assert n == distinct == 150
    # Each inspection is one trigger's (a part not captured before the stop has none).
    inspected, linked = rows(
        db, "SELECT (SELECT count(*) FROM inspections), count(DISTINCT inspection_uid) FROM line_results"
    )[0]
    assert inspected == linked > 0
    connects = rows(db, "SELECT count(*) FROM events WHERE kind = 'plc_connected'")[0][0]
    assert connects == 10
