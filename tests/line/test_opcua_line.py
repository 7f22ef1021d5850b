"""A real station on a line driven over OPC UA: an asyncua client plays the PLC (Trigger method,
ResultReady event, Acknowledge) against ``line: {protocol: opcua}``; the test then reads what
the store holds."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

pytest.importorskip("asyncua", reason="the OPC UA link needs the plugins/line[opcua] extra (make install-test)")

from asyncua import Client, ua
from inspector_line.opcua_nodes import MV_URI

from tests.line.conftest import rows, write_station

LINE = """\
line:
  protocol: opcua
  config: {host: 127.0.0.1, port: 0, namespace_uri: "urn:inspector:e2e"}
  deadline_ms: 5000  # long: these tests are about the link, not the station's speed on a loaded CI
  defect_codes: {flaw: 7}
"""


class _Events:
    def __init__(self) -> None:
        self.by_counter: dict[int, Any] = {}

    def event_notification(self, event: Any) -> None:
        self.by_counter[event.Counter] = event


def test_an_opcua_client_triggers_reads_the_event_and_acknowledges_every_part_across_a_reconnect(tmp_path, running):
    st = running(write_station(tmp_path, line=LINE, detector="{delay_ms: 5}"))
    link = st.runtime._line.link
    assert link.endpoint is not None
    parts = {counter: f"DMC-{counter:04d}{'F' if counter % 3 == 0 else 'G'}" for counter in range(1, 10)}
    seen: dict[int, Any] = {}
    valid_after_ack: dict[int, bool] = {}

    async def plc(counters: list[int], *, pull_the_cable: bool) -> None:
        client = Client(link.endpoint, timeout=10)
        await client.connect()
        try:
            mv = await client.get_namespace_index(MV_URI)
            ns = await client.get_namespace_index("urn:inspector:e2e")
            vs = await client.nodes.objects.get_child(f"{ns}:VisionSystem")
            results = await vs.get_child(f"{mv}:ResultManagement")
            trigger = await vs.get_child(f"{ns}:Trigger")
            ack = await results.get_child(f"{ns}:Acknowledge")
            valid = await results.get_child(f"{ns}:ResultValid")
            state = await vs.get_child(f"{ns}:LineState")
            etype = await client.nodes.root.get_child(
                ["0:Types", "0:EventTypes", "0:BaseEventType", f"{mv}:ResultReadyEventType"]
                + [f"{ns}:InspectorResultReadyEventType"]
            )
            handler = _Events()
            sub = await client.create_subscription(5, handler)
            await sub.subscribe_events(vs, etype)
            deadline = time.monotonic() + 10
            while await state.read_value() != "READY":
                assert time.monotonic() < deadline, "the station never became READY"
                await asyncio.sleep(0.01)
            for counter in counters:
                part = parts[counter]
                got, left_ms = await vs.call_method(trigger, ua.Variant(counter, ua.VariantType.UInt32), part, "42")
                assert got == counter and left_ms > 0
                deadline = time.monotonic() + 5
                while counter not in handler.by_counter:
                    assert time.monotonic() < deadline, f"no ResultReady event for counter {counter}"
                    await asyncio.sleep(0.002)
                seen[counter] = handler.by_counter[counter]
                await results.call_method(ack, ua.Variant(counter, ua.VariantType.UInt32))
                valid_after_ack[counter] = await valid.read_value()
        finally:
            if pull_the_cable:
                client.disconnect_socket()  # no CloseSession: the session is left behind
            else:
                await client.disconnect()

    # The PLC drops off mid-run without closing its session, reconnects and goes on.
    asyncio.run(plc([1, 2, 3, 4, 5], pull_the_cable=True))
    asyncio.run(plc([6, 7, 8, 9], pull_the_cable=False))
    deadline = time.monotonic() + 5
    stats = st.runtime._line.stats
    while stats["disconnects"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    connects, disconnects = stats["connects"], stats["disconnects"]
    st.stop()
    for counter, part in parts.items():
        e = seen[counter]
        fail = part.endswith("F")
        assert (e.PartId, e.Verdict, e.IsDefault) == (part, "FAIL" if fail else "PASS", False)
        assert (e.ResultCode, e.DefectCode) == ((2, 7) if fail else (1, 0))
        assert e.InspectionUid and (("flaw" in e.DefectSummary) if fail else e.DefectSummary == "")
        assert valid_after_ack[counter] is False  # the acknowledge cleared ResultValid
    got = rows(
        tmp_path / "line.db",
        "SELECT l.counter, l.part_id, l.code, l.verdict, l.is_default, l.ack_ms, l.product, i.uid, i.verdict"
        " FROM line_results l JOIN inspections i ON i.uid = l.inspection_uid ORDER BY l.counter",
    )
    assert [r[0] for r in got] == list(parts), (
        rows(tmp_path / "line.db", "SELECT kind, message FROM events WHERE kind NOT LIKE 'plc_%'"),
        rows(tmp_path / "line.db", "SELECT counter, inspection_uid FROM line_results"),
    )
    for counter, part_id, code, verdict, is_default, ack_ms, product, uid, ins_verdict in got:
        # The event named the committed inspection: the PLC never saw a result the store lacks.
        assert uid == seen[counter].InspectionUid and part_id == parts[counter]
        assert verdict == ins_verdict == seen[counter].Verdict and code == seen[counter].ResultCode
        assert not is_default and ack_ms is not None and product == "42"
    assert (connects, disconnects) == (2, 2)  # the link told the line of both clients
    events = [k for (k,) in rows(tmp_path / "line.db", "SELECT kind FROM events")]
    assert "plc_connected" in events and "plc_disconnected" in events, events


def test_the_simulators_driver_runs_a_line_over_opcua_with_reconnects(tmp_path, running):
    """inspector_line.simulate.drive (the Modbus simulator's driver) with the OPC UA PLC: 40
    triggers at 10/s, the PLC dropping its connection every 15: every trigger answered once."""
    from inspector_line.opcua_plc import OpcUaPlc
    from inspector_line.simulate import drive

    st = running(write_station(tmp_path, line=LINE, detector="{delay_ms: 5}"))
    plc = OpcUaPlc(st.runtime._line.link.endpoint, namespace_uri="urn:inspector:e2e")
    try:
        deadline = time.monotonic() + 10
        while not plc.status() & 1:  # READY
            assert time.monotonic() < deadline
            time.sleep(0.01)
        seen = drive(plc, rate=10, count=40, deadline_ms=5000, reconnect_every=15)
    finally:
        plc.close()
    st.stop()
    assert seen.reconnects == 2 and seen.lost == 0 and seen.conflicting == 0, seen.summary()
    # Defaults are the station's business (a loaded machine); each is still an answer, recorded.
    assert len(seen.answered) == 40, seen.summary()
    got = rows(tmp_path / "line.db", "SELECT counter, COUNT(*), MIN(is_default) FROM line_results GROUP BY counter")
    assert [(c, n) for c, n, _ in got] == [(c, 1) for c in range(1, 41)]  # one row per trigger
    real = {c: p.code for c, p in seen.parts.items() if not p.flags & 2}
    assert set(real.values()) <= {1}  # the driver's part ids end in digits: PASS, code 1
