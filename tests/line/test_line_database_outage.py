"""The plant database goes away while a PLC drives the station: the PLC sees Error and gets the
default for every part whose verdict cannot be committed (a spooled verdict is durable but not
committed, docs/line.md), by its deadline; when the database is back, real results again, and the
line's rows of the outage reach the database."""

from __future__ import annotations

import time

import psycopg
import pytest
from inspector_line import modbus as m
from inspector_line.simulate import ModbusPlc

from tests.line.conftest import write_station
from tests.tcp_proxy import TcpProxy


def answer(plc: ModbusPlc, counter: int, timeout: float = 5.0) -> tuple[int, int, int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ring = plc.ring()
        if counter in ring:
            plc.acknowledge(counter)
            return ring[counter]
        time.sleep(0.005)
    raise AssertionError(f"no result for counter {counter}")


@pytest.mark.postgres
def test_a_database_outage_gives_error_and_defaults_then_real_results_again(tmp_path, pg_url, running):
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.start()
    url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    line = "line:\n  protocol: modbus\n  config: {host: 127.0.0.1, port: 0}\n  deadline_ms: 1500\n  margin_ms: 200\n"
    path = write_station(tmp_path, line=line, detector="{delay_ms: 2}")
    text = path.read_text().replace("url: sqlite:///line.db", f"url: '{url}'\n  spool: '{tmp_path / 'spool'}'")
    path.write_text(text)
    try:
        st = running(path)
        plc = ModbusPlc("127.0.0.1", st.port)
        before = [answer(plc, plc.trigger(f"A{i}")) for i in range(3)]
        assert all(code == 1 and not flags & m.FLAG_DEFAULT for code, _, flags in before)
        proxy.cut()
        during = []
        saw_error = False
        for i in range(4):
            c = plc.trigger(f"B{i}")
            t = time.monotonic()
            during.append(answer(plc, c))
            assert time.monotonic() - t < 1.5 + 0.3  # by the deadline, give or take the PLC's poll
            saw_error = saw_error or bool(plc.status() & m.ERROR)
        # The first part may still commit before the writer notices; the rest are defaults.
        assert sum(1 for code, _, flags in during if code == 2 and flags & m.FLAG_DEFAULT) >= 3
        assert saw_error or plc.status() & m.ERROR
        proxy.start()
        end = time.monotonic() + 30
        while plc.status() & m.ERROR and time.monotonic() < end:
            time.sleep(0.1)
        after = [answer(plc, plc.trigger(f"C{i}")) for i in range(2)]
        assert all(code == 1 and not flags & m.FLAG_DEFAULT for code, _, flags in after)
        plc.close()
        st.stop()
    finally:
        proxy.stop()
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as con:
        rows = con.execute(
            "SELECT counter, is_default, part_id, late, verdict FROM line_results ORDER BY counter"
        ).fetchall()
        inspected = con.execute("SELECT count(*) FROM inspections").fetchone()[0]
    assert [r[0] for r in rows] == list(range(1, 10))  # every trigger's row, the outage's too
    assert sum(1 for r in rows if r[1]) >= 3
    # Spooled, then written when the database came back: each default's real verdict, marked late.
    assert all(r[3] and r[4] == "PASS" for r in rows if r[1])
    assert inspected == 9  # the spooled verdicts were written once the database was back
