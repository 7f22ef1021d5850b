"""The OPC UA link on its own: a real asyncua server (the link) and a real asyncua client over
loopback; the host's side is a small LineControl that records what the link calls.

One server serves the module (asyncua's start-up is seconds); each test uses its own counters.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("asyncua", reason="the OPC UA link needs the plugins/line[opcua] extra (make install-test)")

from asyncua import Client, ua
from inspector_line.opcua import OpcUaConfig, OpcUaLink, defect_summary
from inspector_line.opcua_nodes import MV_AUTO_STATES, MV_STATES, MV_URI
from pydantic import ValidationError

from inspector_core.contract import LineControl, LineResult, Trigger

ST_URI = "urn:inspector:test"


class Recorder(LineControl):
    """Records every call; ``trigger`` counts like the host when the PLC sends no counter."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.n = 0
        self.refuse_recipes: set[str] = set()
        self.lock = threading.Lock()

    def trigger(self, *, counter: int | None = None, part_id: str | None = None, product: str | None = None) -> Trigger:
        with self.lock:
            self.n += 1
            c = counter if counter is not None else 1000 + self.n
            self.calls.append(("trigger", counter, part_id, product))
        return Trigger(counter=c, at=datetime.now(UTC), at_monotonic=time.monotonic(), deadline_s=1.5, part_id=part_id)

    def acknowledge(self, counter: int) -> None:
        with self.lock:
            self.calls.append(("ack", counter))

    def connection(self, connected: bool, peer: str = "") -> None:
        with self.lock:
            self.calls.append(("connection", connected, peer))

    def select_recipe(self, name: str) -> None:
        if name in self.refuse_recipes:
            raise ValueError(f"no recipe {name!r}")
        with self.lock:
            self.calls.append(("recipe", name))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        with self.lock:
            return [c for c in self.calls if c[0] == kind]


@pytest.fixture(scope="module", autouse=True)
def own_cache(tmp_path_factory):
    """This module's OPC UA address-space cache (not the user's): the first start here builds it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INSPECTOR_CACHE_DIR", str(tmp_path_factory.mktemp("opcua-cache")))
        yield


@pytest.fixture(scope="module")
def served(own_cache):
    control = Recorder()
    link = OpcUaLink(OpcUaConfig(port=0, namespace_uri=ST_URI, object_name="Cam1"), station_dir=Path("."))
    link.start(control)
    link.set_state("READY")
    yield link, control
    link.close()


@dataclass
class Ua:
    """A connected client and the nodes the tests use."""

    client: Client
    mv: int
    st: int
    vs: Any
    results: Any
    events: list[Any] = field(default_factory=list)

    async def child(self, *path: str) -> Any:
        return await self.vs.get_child(list(path))

    async def result(self, name: str) -> Any:
        return await (await self.results.get_child(f"{self.st}:{name}")).read_value()

    async def wait_event(self, counter: int, timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if getattr(e, "Counter", None) == counter:
                    return e
            await asyncio.sleep(0.005)
        raise AssertionError(f"no ResultReady event with Counter {counter} within {timeout} s: {self.events}")


class _Events:
    def __init__(self, sink: list[Any]) -> None:
        self.sink = sink

    def event_notification(self, event: Any) -> None:
        self.sink.append(event)


async def connect(link: OpcUaLink, *, subscribe_to: str = "vision_system", handler: Any = None) -> Ua:
    assert link.endpoint is not None
    client = Client(link.endpoint, timeout=10)
    await client.connect()
    mv = await client.get_namespace_index(MV_URI)
    st = await client.get_namespace_index(ST_URI)
    vs = await client.nodes.objects.get_child(f"{st}:Cam1")
    results = await vs.get_child(f"{mv}:ResultManagement")
    ua_ = Ua(client, mv, st, vs, results)
    etype = await client.nodes.root.get_child(
        [
            "0:Types",
            "0:EventTypes",
            "0:BaseEventType",
            f"{mv}:ResultReadyEventType",
            f"{st}:InspectorResultReadyEventType",
        ]
    )
    sub = await client.create_subscription(5, handler or _Events(ua_.events))
    source = vs if subscribe_to == "vision_system" else client.nodes.server
    await sub.subscribe_events(source, etype)
    return ua_


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def fail_result(counter: int, part: str) -> LineResult:
    return LineResult(
        counter=counter,
        part_id=part,
        code=2,
        verdict="FAIL",
        defect_code=7,
        inspection_uid=f"uid-{counter}",
        defects=({"kind": "scratch", "score": 0.93, "step": "inspect"}, {"kind": "dent", "score": 0.71}),
    )


def test_trigger_method_reaches_the_host_and_the_result_comes_back_as_event_and_variables(served):
    link, control = served

    async def main() -> None:
        c = await connect(link)
        try:
            trigger = await c.child(f"{c.st}:Trigger")
            counter, left_ms = await c.vs.call_method(trigger, ua.Variant(41, ua.VariantType.UInt32), "DMC-41", "B7")
            assert counter == 41 and 0 < left_ms <= 1500
            assert control.of("trigger")[-1] == ("trigger", 41, "DMC-41", "B7")
            assert await c.result("Counter") != 41  # nothing published for 41 yet
            link.publish(fail_result(41, "DMC-41"))
            e = await c.wait_event(41)
            assert (e.PartId, e.Verdict, e.ResultCode, e.DefectCode, e.ResultState) == ("DMC-41", "FAIL", 2, 7, 2)
            assert e.DefectSummary == "scratch 0.93 (inspect); dent 0.71"
            assert (e.InspectionUid, e.IsDefault, e.JobId) == ("uid-41", False, "41")
            assert e.EventType == ua.NodeId("InspectorResultReadyEventType", c.st)
            got = [
                await c.result(n) for n in ("Counter", "ResultCode", "DefectCode", "ResultValid", "PartId", "Verdict")
            ]
            assert got == [41, 2, 7, True, "DMC-41", "FAIL"]
            assert e.ProductId == "B7" and e.MeasId == "41"
            # The node ids docs/line-opcua.md gives (PLCs often address nodes by id, not by path).
            by_id = c.client.get_node(ua.NodeId("Cam1.ResultManagement.Counter", c.st))
            assert await by_id.read_value() == 41
        finally:
            await c.client.disconnect()

    run(main())


def test_the_same_counter_again_is_no_new_trigger(served):
    link, control = served

    async def main() -> None:
        c = await connect(link)
        try:
            trigger = await c.child(f"{c.st}:Trigger")
            before = len(control.of("trigger"))
            for _ in range(2):  # a PLC that lost the first response calls again
                counter, _left = await c.vs.call_method(trigger, ua.Variant(71, ua.VariantType.UInt32), "P71", "")
                assert counter == 71
            await c.vs.call_method(trigger, ua.Variant(72, ua.VariantType.UInt32), "P72", "")
            assert [t[1] for t in control.of("trigger")[before:]] == [71, 72]
        finally:
            await c.client.disconnect()

    run(main())


def test_a_default_result_says_so_in_the_event_and_variables(served):
    link, _ = served

    async def main() -> None:
        c = await connect(link, subscribe_to="server")  # the Server object carries the event too
        try:
            link.publish(LineResult(counter=42, part_id="P42", code=3, verdict=None, is_default=True, overrun=True))
            e = await c.wait_event(42)
            assert (e.Verdict, e.IsDefault, e.Overrun, e.ResultCode) == ("DEFAULT", True, True, 3)
            assert "deadline" in e.DefectSummary
            assert await c.result("IsDefault") is True and await c.result("Verdict") == "DEFAULT"
        finally:
            await c.client.disconnect()

    run(main())


def test_start_single_job_triggers_with_the_part_and_product_and_returns_the_job_id(served):
    link, control = served

    async def main() -> None:
        c = await connect(link)
        try:
            auto = await c.child(f"{c.mv}:VisionStateMachine", f"{c.mv}:AutomaticModeStateMachine")
            method = await auto.get_child(f"{c.mv}:StartSingleJob")
            job_id, error = await auto.call_method(method, "meas-1", "SN-9", "", "PROD-X")
            assert error == 0
            link.publish(LineResult(counter=int(job_id), part_id="SN-9", code=1, verdict="PASS"))
            e = await c.wait_event(int(job_id))
            assert (e.MeasId, e.ProductId, e.JobId, e.Verdict) == ("meas-1", "PROD-X", job_id, "PASS")
            assert control.of("trigger")[-1] == ("trigger", None, "SN-9", "PROD-X")  # the host counts
            assert job_id == str(1000 + control.n)
            # The recipe id stands for the product when no product is sent.
            await auto.call_method(method, "", "", "RECIPE-Y", "")
            assert control.of("trigger")[-1] == ("trigger", None, None, "RECIPE-Y")
        finally:
            await c.client.disconnect()

    run(main())


def test_the_plc_acknowledges_by_method_by_ack_counter_or_by_clearing_result_valid(served):
    link, control = served

    async def main() -> None:
        c = await connect(link)
        try:
            valid = await c.results.get_child(f"{c.st}:ResultValid")
            ack_counter = await c.results.get_child(f"{c.st}:AckCounter")
            ack = await c.results.get_child(f"{c.st}:Acknowledge")
            for counter, how in ((51, "method"), (52, "ack_counter"), (53, "result_valid")):
                link.publish(fail_result(counter, f"P{counter}"))
                await c.wait_event(counter)
                assert await valid.read_value() is True
                before = len(control.of("ack"))
                if how == "method":
                    await c.results.call_method(ack, ua.Variant(counter, ua.VariantType.UInt32))
                elif how == "ack_counter":
                    await ack_counter.write_value(ua.Variant(counter, ua.VariantType.UInt32))
                else:
                    await valid.write_value(False)
                for _ in range(200):
                    if len(control.of("ack")) > before:
                        break
                    await asyncio.sleep(0.005)
                assert control.of("ack")[before:] == [("ack", counter)], how
                assert await valid.read_value() is False, how
            # A client cannot make a result valid: the station writes its own value back.
            before = len(control.of("ack"))
            await valid.write_value(True)
            for _ in range(200):
                if await valid.read_value() is False:
                    break
                await asyncio.sleep(0.005)
            assert await valid.read_value() is False and len(control.of("ack")) == before
            # An acknowledge of an older counter is passed on but leaves the current result valid.
            link.publish(fail_result(54, "P54"))
            await c.wait_event(54)
            await c.results.call_method(ack, ua.Variant(53, ua.VariantType.UInt32))
            assert control.of("ack")[-1] == ("ack", 53) and await valid.read_value() is True
        finally:
            await c.client.disconnect()

    run(main())


@pytest.mark.parametrize(
    ("state", "outer", "inner"),
    [
        ("READY", "Operational", "Ready"),
        ("BUSY", "Operational", "SingleExecution"),
        ("ERROR", "Error", "Initialized"),
        ("HALTED", "Halted", "Initialized"),
    ],
)
def test_line_state_is_shown_on_the_vision_state_machine(served, state, outer, inner):
    link, _ = served

    async def main() -> None:
        c = await connect(link)
        try:
            link.set_state(state)
            machine = f"{c.mv}:VisionStateMachine"
            auto = f"{c.mv}:AutomaticModeStateMachine"
            deadline = time.monotonic() + 3
            while (await (await c.child(f"{c.st}:LineState")).read_value()) != state:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.005)
            current = await (await c.child(machine, "0:CurrentState")).read_value()
            current_id = await (await c.child(machine, "0:CurrentState", "0:Id")).read_value()
            auto_current = await (await c.child(machine, auto, "0:CurrentState")).read_value()
            auto_id = await (await c.child(machine, auto, "0:CurrentState", "0:Id")).read_value()
            assert current.Text == outer and current_id == ua.NodeId(MV_STATES[outer], c.mv)
            assert auto_current.Text == inner and auto_id == ua.NodeId(MV_AUTO_STATES[inner], c.mv)
            # The state's node id is the specification's state object, browsable on the type.
            state_node = c.client.get_node(current_id)
            assert (await state_node.read_browse_name()).Name == outer
        finally:
            link.set_state("READY")
            await c.client.disconnect()

    run(main())


def test_recipe_selection_reaches_the_host_and_a_refused_one_returns_an_error(served):
    link, control = served
    control.refuse_recipes.add("NOPE")

    async def main() -> None:
        c = await connect(link)
        try:
            recipes = await c.vs.get_child(f"{c.mv}:RecipeManagement")
            select = await recipes.get_child(f"{c.st}:SelectRecipe")
            prepare = await recipes.get_child(f"{c.mv}:PrepareProduct")
            active = await recipes.get_child(f"{c.st}:ActiveRecipe")
            assert await recipes.call_method(select, "TYPE-B") == 0
            assert control.of("recipe")[-1] == ("recipe", "TYPE-B") and await active.read_value() == "TYPE-B"
            assert await recipes.call_method(select, "NOPE") == -1
            assert await active.read_value() == "TYPE-B"  # unchanged
            assert await recipes.call_method(prepare, "TYPE-C") == ["TYPE-C", 0]
            assert control.of("recipe")[-1] == ("recipe", "TYPE-C")
            assert await recipes.call_method(prepare, "") == ["", -1]
        finally:
            await c.client.disconnect()

    run(main())


def test_a_client_that_drops_off_and_reconnects_is_reported_and_served(served):
    link, control = served

    async def main() -> None:
        first = await connect(link)
        host, port = first.client.uaclient.protocol.transport.get_extra_info("sockname")[:2]
        peer = f"{host}:{port}"  # the link names the client by its address
        await _wait(lambda: ("connection", True, peer) in control.of("connection"))
        trigger = await first.child(f"{first.st}:Trigger")
        await first.vs.call_method(trigger, ua.Variant(61, ua.VariantType.UInt32), "P61", "")
        first.client.disconnect_socket()  # the cable is pulled: no CloseSession
        await _wait(lambda: ("connection", False, peer) in control.of("connection"))
        link.publish(fail_result(61, "P61"))  # published while no client is there
        second = await connect(link)
        try:
            assert await second.result("Counter") == 61 and await second.result("ResultValid") is True
            trigger2 = await second.child(f"{second.st}:Trigger")
            await second.vs.call_method(trigger2, ua.Variant(62, ua.VariantType.UInt32), "P62", "")
            link.publish(fail_result(62, "P62"))
            assert (await second.wait_event(62)).PartId == "P62"
        finally:
            await second.client.disconnect()

    run(main())


def test_publish_returns_at_once_and_other_clients_are_served_while_one_client_is_stuck(served):
    link, _ = served
    ready, done = threading.Event(), threading.Event()
    seen: list[int] = []

    class Slow:
        def event_notification(self, event: Any) -> None:
            seen.append(event.Counter)
            done.wait(20)  # the client's loop is stuck until the test has published everything

    def slow_client() -> None:
        async def main() -> None:
            c = await connect(link, handler=Slow())
            ready.set()
            while not done.is_set():
                await asyncio.sleep(0.01)
            c.client.disconnect_socket()  # its backlog of events would take seconds to drain

        asyncio.run(main())

    t = threading.Thread(target=slow_client, daemon=True)
    t.start()
    assert ready.wait(20)
    link.publish(fail_result(999, "P999"))
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:  # the client is now stuck in its handler
        time.sleep(0.005)
    durations = []
    for counter in range(1000, 1300):
        t0 = time.perf_counter()
        link.publish(fail_result(counter, f"P{counter}"))
        durations.append(time.perf_counter() - t0)
    durations.sort()
    p50_ms, max_ms = durations[len(durations) // 2] * 1000, durations[-1] * 1000

    async def another_client() -> None:  # served while the stuck one still holds its session
        c = await connect(link)
        try:
            link.publish(fail_result(1400, "P1400"))
            assert (await c.wait_event(1400)).PartId == "P1400"
        finally:
            await c.client.disconnect()

    try:
        run(another_client())
    finally:
        done.set()
    t.join(20)
    assert seen, "the slow client got no event at all"
    # A publish() that waited for the stuck client would not return before it is released, which
    # is only after these calls; the tail bound is loose for a loaded 2-core CI machine (seen: one
    # call of 300 took 971 ms at load 4; bench/opcua_latency.py measures the tail).
    assert p50_ms < 2 and max_ms < 5000, f"publish() p50 {p50_ms:.2f} ms, max {max_ms:.1f} ms (load {os.getloadavg()})"


def test_insecure_remote_binding_is_refused_unless_asked_for():
    with pytest.raises(ValidationError, match="allow_insecure_remote"):
        OpcUaConfig(host="0.0.0.0")
    assert OpcUaConfig(host="0.0.0.0", allow_insecure_remote=True).host == "0.0.0.0"
    assert OpcUaConfig(host="::1").host == "::1"
    with pytest.raises(ValidationError):
        OpcUaConfig(object_name="has space")


def test_a_port_in_use_stops_start_with_the_port_named():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        link = OpcUaLink(OpcUaConfig(port=port), station_dir=Path("."))
        with pytest.raises(RuntimeError, match=f"127.0.0.1:{port}.*line.config.port"):
            link.start(Recorder())
        with pytest.raises(RuntimeError, match="not serving"):
            link.publish(fail_result(1, "P1"))


def test_defect_summary_is_short_and_readable():
    many = tuple({"kind": f"k{i}", "score": 0.5 + i / 100} for i in range(10))
    text = defect_summary(LineResult(counter=1, part_id="p", code=2, verdict="FAIL", defects=many))
    assert text.startswith("k0 0.50; k1 0.51") and text.endswith("+2 more")
    assert defect_summary(LineResult(counter=1, part_id="p", code=1, verdict="PASS")) == ""


async def _wait(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


MINI_NODESET = """<?xml version="1.0" encoding="utf-8"?>
<UANodeSet xmlns="http://opcfoundation.org/UA/2011/03/UANodeSet.xsd">
  <NamespaceUris><Uri>http://opcfoundation.org/UA/MachineVision</Uri></NamespaceUris>
  <Aliases><Alias Alias="HasSubtype">i=45</Alias><Alias Alias="HasProperty">i=46</Alias>
    <Alias Alias="HasComponent">i=47</Alias><Alias Alias="String">i=12</Alias></Aliases>
  <UAObjectType NodeId="ns=1;i=1003" BrowseName="1:VisionSystemType">
    <DisplayName>VisionSystemType</DisplayName>
    <References><Reference ReferenceType="HasSubtype" IsForward="false">i=58</Reference>
      <Reference ReferenceType="HasComponent">ns=1;i=6048</Reference></References>
  </UAObjectType>
  <UAVariable NodeId="ns=1;i=6048" BrowseName="1:DiagnosticLevel" ParentNodeId="ns=1;i=1003" DataType="String">
    <DisplayName>DiagnosticLevel</DisplayName>
    <References><Reference ReferenceType="HasComponent" IsForward="false">ns=1;i=1003</Reference></References>
  </UAVariable>
  <UAObjectType NodeId="ns=1;i=1024" BrowseName="1:ResultReadyEventType">
    <DisplayName>ResultReadyEventType</DisplayName>
    <References><Reference ReferenceType="HasSubtype" IsForward="false">i=2041</Reference>
      <Reference ReferenceType="HasProperty">ns=1;i=6304</Reference></References>
  </UAObjectType>
  <UAVariable NodeId="ns=1;i=6304" BrowseName="1:PartId" ParentNodeId="ns=1;i=1024" DataType="String">
    <DisplayName>PartId</DisplayName>
    <References><Reference ReferenceType="HasProperty" IsForward="false">ns=1;i=1024</Reference></References>
  </UAVariable>
</UANodeSet>
"""


def test_an_imported_nodeset_declares_the_types_and_the_station_serves_on_them(tmp_path):
    """``nodeset_file`` (the official OPC 40100 file in production; a two-type stand-in here):
    the station's nodes use the imported types instead of declaring their own, and the event's
    fields keep their encoding although the imported PartId declaration has no value."""
    (tmp_path / "mv.xml").write_text(MINI_NODESET)
    link = OpcUaLink(
        OpcUaConfig(port=0, namespace_uri=ST_URI, object_name="Cam1", nodeset_file="mv.xml"), station_dir=tmp_path
    )
    control = Recorder()
    link.start(control)
    try:
        assert link.startup_s["nodeset"] > 0

        async def main() -> None:
            c = await connect(link)
            try:
                vst = c.client.get_node(ua.NodeId(1003, c.mv))
                names = {(await n.read_browse_name()).Name for n in await vst.get_children()}
                assert "DiagnosticLevel" in names  # the imported declaration, not the subset's
                trigger = await c.child(f"{c.st}:Trigger")
                await c.vs.call_method(trigger, ua.Variant(5, ua.VariantType.UInt32), "P5", "")
                link.publish(fail_result(5, "P5"))
                e = await c.wait_event(5)
                assert (e.PartId, e.Verdict, e.Counter) == ("P5", "FAIL", 5)
            finally:
                await c.client.disconnect()

        run(main())
    finally:
        link.close()


def test_a_missing_nodeset_file_is_refused_at_validation(tmp_path):
    ctx = {"station_dir": tmp_path, "check_files": True}
    with pytest.raises(ValidationError, match="no file .*mv.xml"):
        OpcUaConfig.model_validate({"nodeset_file": "mv.xml"}, context=ctx)
    (tmp_path / "mv.xml").write_text(MINI_NODESET)
    assert OpcUaConfig.model_validate({"nodeset_file": "mv.xml"}, context=ctx).nodeset_file == "mv.xml"


def test_the_standard_address_space_is_cached_after_the_first_start(served):
    from inspector_line import opcua_cache

    first, _ = served  # the module's first start, into this module's own, empty cache
    link = OpcUaLink(OpcUaConfig(port=0, namespace_uri=ST_URI, object_name="Cam2"), station_dir=Path("."))
    link.start(Recorder())
    try:

        async def main() -> None:
            assert link.endpoint is not None
            async with Client(link.endpoint, timeout=10) as client:
                status = await client.nodes.server.get_child("0:ServerStatus")
                assert (await status.read_value()).State == ua.ServerState.Running
                st = await client.get_namespace_index(ST_URI)
                assert await (await client.nodes.objects.get_child(f"{st}:Cam2")).get_children()

        run(main())
    finally:
        link.close()
    print("init s (cached):", first.startup_s["init"], first.address_space_cached, link.startup_s["init"])
    assert link.address_space_cached
    if not first.address_space_cached:  # (another test on this worker may have started first)
        assert link.startup_s["init"] < first.startup_s["init"]
    folder = opcua_cache.cache_dir()
    assert folder.is_dir() and not list(folder.parent.glob(".aspace-*"))  # no temporary folder left
    assert opcua_cache.usable_shelf() is not None
    mode = folder.stat().st_mode
    try:
        folder.chmod(0o777)  # anyone could swap the pickled nodes: not loaded
        assert opcua_cache.usable_shelf() is None
    finally:
        folder.chmod(mode)
