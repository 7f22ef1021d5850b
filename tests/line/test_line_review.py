"""Review of the handshake (issue 13): a link whose publish fails, 16-bit counter wrap, a recipe
the station cannot select, a camera that is down. Fake link and frames, as test_handshake.py."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import numpy as np
import pytest

from inspector_core.contract import Frame, LineResult, Trigger
from inspector_core.runtime.config import LineSpec
from inspector_core.runtime.line import Handshake, RecipeRefused
from tests.line.test_handshake import Link, frames, handshake, verdict_of, wait_for


class FlakyLink(Link):
    """A link whose publish fails ``fail`` times (an OPC UA link between sessions, a socket reset)."""

    def __init__(self, fail: int) -> None:
        super().__init__()
        self.fail = fail
        self.tries = 0

    def publish(self, result: LineResult) -> None:
        self.tries += 1
        if self.fail > 0:
            self.fail -= 1
            raise RuntimeError("the OPC UA link is not serving (closed)")
        super().publish(result)


def flaky_handshake(fail: int, **spec) -> tuple[Handshake, FlakyLink, list]:
    link, events = FlakyLink(fail), []
    hs = Handshake(
        LineSpec(protocol="fake", **spec),
        link, run_uid="r1", line_log=None, on_event=lambda k, m: events.append((k, m)),
    )  # fmt: skip
    hs._thread.start()
    return hs, link, events


def test_a_real_result_whose_publish_fails_is_published_again_not_lost():
    hs, link, events = flaky_handshake(fail=2, deadline_ms=2000)
    stop = threading.Event()
    got = hs.frames(frames(3), stop)
    hs.trigger(counter=1)
    f = next(got)
    hs.committed([verdict_of(f, "FAIL")])
    wait_for(lambda: len(link.results) == 1, timeout=1.5)  # well before the 2 s deadline
    assert link.results[0].code == 2 and not link.results[0].is_default
    assert any(k == "line_publish_failed" for k, _ in events)
    stop.set()
    hs.close(timeout=1)


def test_a_default_whose_publish_fails_is_published_again_by_the_deadline():
    hs, link, _ = flaky_handshake(fail=1, deadline_ms=300, margin_ms=50)
    stop = threading.Event()
    got = hs.frames(frames(3), stop)
    hs.trigger(counter=1)
    next(got)  # captured, never committed
    wait_for(lambda: len(link.results) == 1, timeout=1.0)
    r = link.results[0]
    assert r.is_default and r.code == 2 and r.counter == 1
    assert hs.stats["defaults"] == 1 and hs.stats["results"] == 1  # counted once, not per try
    stop.set()
    hs.close(timeout=1)


def test_a_16_bit_plc_counter_that_wraps_is_not_a_restart_nor_a_missed_trigger():
    events: list = []
    hs, link = handshake()
    hs.on_event = lambda k, m: events.append(k)
    for c in (65534, 65535, 1):  # a 16-bit counter skipping 0 ("no trigger")
        hs.trigger(counter=c)
    assert hs.stats["missed"] == 0
    assert "line_counter_restarted" not in events
    assert not hs._parts[3].missed
    hs.close(timeout=0.5)

    hs, link = handshake()
    for c in (65533, 3):  # 65534, 65535, 1 and 2 never came
        hs.trigger(counter=c)
    assert hs.stats["missed"] == 1 and hs._parts[2].missed
    hs.close(timeout=0.5)


def test_a_recipe_the_station_does_not_have_is_refused_with_a_documented_exception():
    events: list = []
    hs, link = handshake()
    hs.on_event = lambda k, m: events.append((k, m))
    with pytest.raises(RecipeRefused) as err:
        hs.select_recipe("P-42")
    assert "'P-42'" in str(err.value) and "no recipes" in str(err.value)
    assert events and events[0][0] == "line_recipe_refused"
    hs.close(timeout=0.5)


def test_a_camera_that_is_down_shows_error_to_the_plc_until_it_delivers_again():
    hs, link = handshake(deadline_ms=2000)
    stop = threading.Event()

    def source():
        yield Frame("bad", None, datetime.now(UTC), error="camera timeout: no image within 500 ms")
        yield Frame("good", np.zeros((8, 8), np.uint8), datetime.now(UTC))

    got = hs.frames(source(), stop)
    wait_for(lambda: link.states and link.states[-1] == "READY")
    hs.trigger(counter=1)
    bad = next(got)
    assert bad.error is not None
    wait_for(lambda: link.states[-1] == "ERROR")
    hs.committed([verdict_of(bad, "ERROR")])
    wait_for(lambda: len(link.results) == 1)
    assert link.results[0].code == 2  # line.error: nok, never ok
    hs.trigger(counter=2)
    next(got)
    wait_for(lambda: link.states[-1] in ("READY", "BUSY") and "ERROR" in link.states)
    wait_for(lambda: link.states[-1] == "READY")
    stop.set()
    hs.close(timeout=1)


def test_a_camera_fault_does_not_latch_error_when_no_frame_follows(monkeypatch):
    from inspector_core.runtime import line

    monkeypatch.setattr(line, "CAMERA_ERROR_HOLD_S", 0.3)
    hs, link = handshake(deadline_ms=2000)
    stop = threading.Event()
    got = hs.frames(iter([Frame("bad", None, datetime.now(UTC), error="camera timeout")]), stop)
    hs.trigger(counter=1)
    next(got)
    wait_for(lambda: link.states[-1] == "ERROR")
    wait_for(lambda: link.states[-1] == "READY", timeout=2.0)  # a PLC gating on Ready may try again
    stop.set()
    hs.close(timeout=0.5)


def test_a_source_whose_trigger_fails_shows_error():
    hs, link = handshake(deadline_ms=2000)

    class DeadCamera:
        triggerable = True

        def trigger(self, trig: Trigger) -> None:
            raise OSError("camera 0: device removed")

    hs.source = DeadCamera()  # type: ignore[assignment]
    wait_for(lambda: link.states and link.states[-1] == "READY")
    hs.trigger(counter=1)
    wait_for(lambda: link.states[-1] == "ERROR")
    hs.close(timeout=0.1)


def test_a_station_stopping_answers_every_trigger_never_captured_at_once_not_at_its_deadline():
    hs, link = handshake(deadline_ms=30000)  # a slow line: longer than close()'s wait
    hs.trigger(counter=1)
    hs.trigger(counter=2)  # an overrun, queued
    # The station stops (SIGINT): the recorder has committed all it will; nothing captures these.
    hs.close(timeout=1.5)
    got = {r.counter: r for r in link.results}
    assert sorted(got) == [1, 2]
    assert all(r.is_default and r.code == 2 for r in got.values())
    assert link.states[-1] == "HALTED"


def _write_words(port: int, address: int, values: list[int]) -> None:
    from pymodbus.client import ModbusTcpClient

    c = ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=1)
    assert c.connect()
    try:
        for i, v in enumerate(values):  # one FC6 write per register, as a simple PLC program does
            assert not c.write_register(address + i, v).isError()
    finally:
        c.close()


class _Control:
    def __init__(self) -> None:
        self.triggers: list[tuple[int | None, str | None]] = []

    def trigger(self, *, counter=None, part_id=None, product=None):
        self.triggers.append((counter, part_id))

    def acknowledge(self, counter: int) -> None:
        pass

    def connection(self, connected: bool, peer: str = "") -> None:
        pass

    def select_recipe(self, name: str) -> None:
        pass


def _modbus_link():
    from inspector_line.modbus import ModbusConfig, ModbusLink

    link = ModbusLink(ModbusConfig(host="127.0.0.1", port=0), station_dir=".")
    control = _Control()
    link.start(control)  # type: ignore[arg-type]
    return link, control


def test_modbus_a_32_bit_counter_written_word_by_word_triggers_once_with_its_real_value():
    from inspector_line import modbus as m

    link, control = _modbus_link()
    try:
        assert link.port is not None
        _write_words(link.port, m.TRIGGER_COUNTER, [0, 0xFFFF])  # counter 65535
        _write_words(link.port, m.TRIGGER_COUNTER, [1, 0])  # 65536: hi word first, then lo
        wait_for(lambda: len(control.triggers) >= 2)
        assert [c for c, _ in control.triggers] == [65535, 65536]  # not 131071 (hi 1, lo still 0xFFFF) in between
    finally:
        link.close()


def test_modbus_a_part_id_with_bytes_beyond_ascii_is_kept_not_replaced():
    from inspector_line import modbus as m

    assert m.decode_text(m.encode_text("SN-Ä-é")) == "SN-Ä-é"  # UTF-8 round trip
    latin1 = b"SN-\xc4\xd6\x00"  # a Latin-1 / Windows-1252 STRING from an S7
    words = [(latin1[i] << 8) | latin1[i + 1] for i in range(0, len(latin1), 2)]
    assert m.decode_text(words) == "SN-ÄÖ"
    assert "\ufffd" not in m.decode_text(words)
    assert len(m.encode_text("Ä" * 40)) == m.PART_ID_REGS  # never more than the 20 registers


def test_a_station_stopped_mid_part_answers_and_records_every_open_trigger(tmp_path, running):
    """Station level (passes before and after b4f2e4c: the station inspects the triggers it has
    taken before it stops; the handshake-level test above is the one that shows the gap)."""
    from inspector_line.simulate import ModbusPlc

    from tests.line.conftest import rows, write_station

    line = (
        "overload: {policy: wait, queue_size: 1}\n"  # as docs/line.md advises: triggers wait uncaptured
        "line:\n  protocol: modbus\n  config: {host: 127.0.0.1, port: 0}\n  deadline_ms: 20000\n"
    )
    st = running(write_station(tmp_path, line=line, detector="{delay_ms: 300}"))
    plc = ModbusPlc("127.0.0.1", st.port)
    counters = [plc.trigger(f"P{i}") for i in range(6)]  # one inspecting, one queued, four waiting
    plc.close()
    import time

    time.sleep(0.2)
    t0 = time.monotonic()
    st.stop()  # as Ctrl-C: long before the 20 s deadline
    assert time.monotonic() - t0 < 8
    got = rows(tmp_path / "line.db", "SELECT counter, code, is_default, trigger_to_result_ms FROM line_results")
    assert sorted(r[0] for r in got) == counters  # every trigger has its row
    assert all(r[3] is not None for r in got)  # and was answered on the PLC
    assert all(r[1] != 1 or not r[2] for r in got)  # a default is never OK
