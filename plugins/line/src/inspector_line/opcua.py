"""OPC UA link: the station as an OPC UA server with the single-camera part of OPC 40100
(Machine Vision), served by asyncua.

A PLC (or any OPC UA client) starts a part by calling ``StartSingleJob`` (the specification's
method on ``VisionStateMachine/AutomaticModeStateMachine``) or the station's ``Trigger``
method, which also carries the PLC's counter; it learns the result from the
``InspectorResultReadyEventType`` event (a subtype of the specification's ResultReadyEventType)
or by reading the result variables under ``ResultManagement`` (Counter, ResultCode, DefectCode,
ResultValid, ...), and acknowledges by calling ``Acknowledge(counter)``, writing ``AckCounter``
or writing ``ResultValid = false``. ``docs/line-opcua.md`` has the address space and the sequence.

Threads: asyncua runs in its own thread with its own asyncio loop (``inspector-opcua``). The
host calls :meth:`OpcUaLink.publish` and :meth:`OpcUaLink.set_state` from its line thread; they
queue the work for the loop (``loop.call_soon_threadsafe``, one worker task) and return without
waiting, so a slow or stuck client never holds up the line. Writes keep their order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from inspector_core.contract import LineControl, LineResult, LineState, PlcLink, PluginConfig, Trigger

log = logging.getLogger(__name__)

_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"


class OpcUaConfig(PluginConfig):
    """``line.config`` of ``protocol: opcua``."""

    host: str = Field("127.0.0.1", description="Address the server binds (127.0.0.1: this PC only)")
    port: int = Field(4840, ge=0, le=65535, description="TCP port (4840 is OPC UA's; 0 picks a free one)")
    path: str = Field("/inspector", pattern=r"^/[A-Za-z0-9_./-]*$", description="Endpoint path after host:port")
    namespace_uri: str = Field(
        "urn:inspector:station", min_length=1, description="Namespace URI of the station's own nodes"
    )
    object_name: str = Field(
        "VisionSystem", pattern=_NAME_PATTERN, description="Browse name of the vision-system object under Objects"
    )
    server_name: str = Field("Inspector vision system", min_length=1, description="The server's application name")
    security: Literal["none"] = Field(
        "none", description="Message security; only 'none' (no signing, no encryption) is implemented"
    )
    allow_insecure_remote: bool = Field(
        False,
        description="Allow security 'none' on an address other than loopback (only on an isolated line network)",
    )
    start_timeout_s: float = Field(60.0, gt=0, description="How long start() waits for the server to listen")
    address_space_cache: bool = Field(
        True,
        description=(
            "Keep asyncua's standard address space in a per-user cache (docs/line-opcua.md): the first start "
            "writes it, later starts load it in a fraction of the time"
        ),
    )
    nodeset_file: str | None = Field(
        None,
        description=(
            "A NodeSet2 XML to import before the station's nodes, relative to the station file: the official "
            "Opc.Ua.MachineVision.NodeSet2.xml gives clients OPC 40100's full type definitions (seconds more at "
            "every start); unset: the station's own subset only"
        ),
    )

    @field_validator("nodeset_file")
    @classmethod
    def _nodeset_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        ctx = info.context or {}
        if value is not None and ctx.get("check_files") and ctx.get("station_dir") is not None:
            path = Path(ctx["station_dir"]) / value
            if not path.is_file():
                raise ValueError(f"no file {path} (the OPC 40100 nodeset to import); fix the path or remove the key")
        return value

    @model_validator(mode="after")
    def _insecure_only_on_loopback(self) -> OpcUaConfig:
        if self.security == "none" and not self.allow_insecure_remote and not _is_loopback(self.host):
            raise ValueError(
                f"host {self.host!r} with security 'none' lets anyone who reaches this port trigger parts and "
                "acknowledge results; bind 127.0.0.1, or set allow_insecure_remote: true if the PLC network is "
                "isolated"
            )
        return self


def _check_port_free(host: str, port: int) -> None:
    """Raise OSError now if ``host:port`` cannot be bound (the server binds it again after init)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpcUaLink(PlcLink):
    """The station's side of the PLC handshake over OPC UA (server, security none)."""

    name = "opcua"
    Config = OpcUaConfig

    def __init__(self, config: PluginConfig, *, station_dir: Path) -> None:
        super().__init__(config, station_dir=station_dir)
        assert isinstance(config, OpcUaConfig)
        self.cfg: OpcUaConfig = config
        self._control: LineControl | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._abandoned = False
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._jobs_queue: asyncio.Queue[tuple[Any, tuple[Any, ...]]] | None = None
        self._server: Any = None
        self._nodes: Any = None
        self._events: list[Any] = []
        self._ua: Any = None
        self._counter = 0
        """Counter of the result now on the PLC's side (0: none yet)."""
        self._heartbeat = 0
        self._valid = False
        """What ResultValid shows (the station's, whatever a client writes into it)."""
        self._last_trigger: Trigger | None = None
        self._jobs: collections.OrderedDict[int, tuple[str, str]] = collections.OrderedDict()
        """counter -> (MeasId, product) of recent triggers, for the event's MeasId and ProductId."""
        self._peers: dict[int, str] = {}
        """Open connections (by connection object) -> the client's address."""
        self.endpoint: str | None = None
        """The endpoint URL once serving (with the real port when ``port: 0``)."""
        self.port: int | None = None
        self.address_space_cached = False
        """Whether the standard address space came from the cache (see :mod:`opcua_cache`)."""
        self.startup_s: dict[str, float] = {}
        """How long start() took: ``init`` (asyncua's standard address space), ``nodeset`` (the
        imported ``nodeset_file``, 0 without), ``nodes`` (the OPC 40100 subset), ``listen`` and
        ``total``, in seconds."""

    # ------------------------------------------------------------------ host side (any thread)

    def start(self, control: LineControl) -> None:
        if self._thread is not None:
            raise RuntimeError("OpcUaLink.start() called twice")
        try:
            import asyncua  # noqa: F401
        except ModuleNotFoundError:
            raise RuntimeError(
                "line.protocol 'opcua' needs asyncua, which is not installed: pip install 'inspector-line[opcua]'"
            ) from None
        self._control = control
        self._thread = threading.Thread(target=self._run, name="inspector-opcua", daemon=True)
        self._thread.start()
        where = f"{self.cfg.host}:{self.cfg.port}"
        if not self._ready.wait(self.cfg.start_timeout_s):
            self._abandoned = True  # the server stops as soon as it is up
            raise RuntimeError(
                f"the OPC UA server on {where} did not start within {self.cfg.start_timeout_s:g} s "
                "(line.config.start_timeout_s); the machine may be overloaded"
            )
        if self._error is not None:
            self._thread.join(timeout=5)
            hint = (
                "; is another program using that port (line.config.port)?" if isinstance(self._error, OSError) else ""
            )
            raise RuntimeError(
                f"the OPC UA server could not serve on {where}: {type(self._error).__name__}: {self._error}{hint}"
            ) from self._error

    def set_state(self, state: LineState) -> None:
        self._submit(self._apply_state, state)

    def publish(self, result: LineResult) -> None:
        self._submit(self._apply_result, result)

    def show_recipe(self, name: str, products: tuple[str, ...]) -> None:
        """``ActiveRecipe`` follows every changeover (``inspector recipe`` too, not only the PLC's)."""
        self._submit(self._write, self._nodes.active_recipe, name, self._ua.VariantType.String)

    def heartbeat(self) -> None:
        """Called by the line thread every 0.5 s: ``Heartbeat`` counts up while the station lives."""
        self._submit(self._beat)

    def close(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                log.warning("the OPC UA server thread did not stop within 10 s")

    def _submit(self, job: Any, *args: Any) -> None:
        """Queue ``job(*args)`` (a coroutine function) for the server's loop, where one worker runs
        the jobs in order. The caller's thread only does a ``call_soon_threadsafe``."""
        loop, jobs = self._loop, self._jobs_queue
        if loop is None or jobs is None or loop.is_closed() or self._stop is None or self._stop.is_set():
            raise RuntimeError("the OPC UA link is not serving (not started, or closed)")
        try:
            loop.call_soon_threadsafe(jobs.put_nowait, (job, args))
        except RuntimeError:  # the loop closed in between
            raise RuntimeError("the OPC UA link is not serving (closed)") from None

    async def _work(self) -> None:
        """Run the queued jobs one after another: a result's writes never interleave with the next's."""
        assert self._jobs_queue is not None
        while True:
            job, args = await self._jobs_queue.get()
            try:
                await job(*args)
            except Exception:  # logged; the next result must still be served
                log.exception("OPC UA link: %s", getattr(job, "__name__", job))
            finally:
                self._jobs_queue.task_done()

    # ------------------------------------------------------------------ the server's loop

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            if not self._ready.is_set():
                self._error = exc
            else:
                log.exception("the OPC UA server stopped")
        finally:
            self._ready.set()
            self._loop = None
            # asyncua leaves session and subscription tasks behind after stop(): end them here.
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _serve(self) -> None:
        from asyncua import Server, ua
        from asyncua.common.callback import CallbackType

        from inspector_line import opcua_cache, opcua_nodes

        self._ua = ua
        t0 = time.perf_counter()
        _check_port_free(self.cfg.host, self.cfg.port)  # before asyncua's seconds of start-up
        server = Server()
        cached = new_shelf = None
        if self.cfg.address_space_cache:
            cached = opcua_cache.usable_shelf()
            if cached is None:
                new_shelf = opcua_cache.new_shelf()
        await server.init(shelf_file=cached or new_shelf)
        if new_shelf is not None:
            await asyncio.to_thread(opcua_cache.publish_shelf, new_shelf)
        self.address_space_cached = cached is not None
        t1 = time.perf_counter()
        server.set_endpoint(f"opc.tcp://{self.cfg.host}:{self.cfg.port}{self.cfg.path}")
        server.set_server_name(self.cfg.server_name)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        if self.cfg.nodeset_file is not None:
            nodeset = self.station_dir / self.cfg.nodeset_file
            if not nodeset.is_file():
                raise FileNotFoundError(f"line.config.nodeset_file: no file {nodeset}")
            await server.import_xml(str(nodeset))
        t_nodeset = time.perf_counter()
        self._nodes = nodes = await opcua_nodes.build(
            server,
            namespace_uri=self.cfg.namespace_uri,
            object_name=self.cfg.object_name,
            handlers={
                "start_single_job": self._on_start_single_job,
                "trigger": self._on_trigger,
                "acknowledge": self._on_acknowledge,
                "prepare_product": self._on_prepare_product,
                "select_recipe": self._on_select_recipe,
            },
        )
        # The event from the vision system (as OPC 40100 has it) and from the Server object (where
        # most generic clients subscribe).
        self._events = [
            await server.get_event_generator(nodes.event_type, emitting)
            for emitting in (nodes.vision_system.nodeid, opcua_nodes.nid(ua.ObjectIds.Server))
        ]
        # The encoding of each field the link fills: an imported nodeset's declarations may carry
        # structure types or no value at all.
        for gen in self._events:
            for name, vtype, *_ in (*opcua_nodes.MV_EVENT_FIELDS, *opcua_nodes.ST_EVENT_FIELDS):
                gen.event.data_types[name] = vtype
        server.subscribe_server_callback(CallbackType.PostWrite, self._on_write)
        t2 = time.perf_counter()
        await server.start()
        self._server = server
        assert server.bserver is not None
        self.port = server.bserver.port
        self.endpoint = f"opc.tcp://{self.cfg.host}:{self.port}{self.cfg.path}"
        t3 = time.perf_counter()
        self.startup_s = {
            "init": t1 - t0,
            "nodeset": t_nodeset - t1,
            "nodes": t2 - t_nodeset,
            "listen": t3 - t2,
            "total": t3 - t0,
        }
        self._stop = asyncio.Event()
        if self._abandoned:  # start() gave up waiting: nobody will close this server
            self._stop.set()
        self._jobs_queue = asyncio.Queue()
        worker = asyncio.create_task(self._work())
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        watcher = asyncio.create_task(self._watch_connections())
        try:
            await self._stop.wait()
        finally:
            watcher.cancel()
            try:  # what the host published before close() is still written
                await asyncio.wait_for(self._jobs_queue.join(), timeout=5)
            except TimeoutError:
                log.warning("the OPC UA link closed with %d writes not done", self._jobs_queue.qsize())
            worker.cancel()
            await self._set_state_nodes("HALTED")
            await server.stop()
            shelf = getattr(server.iserver.aspace._nodes, "source", None)  # a cached address space's file
            if shelf is not None:
                shelf.close()
            for peer in self._peers.values():
                self._tell_connection(False, peer)
            self._peers.clear()

    async def _watch_connections(self) -> None:
        """Report clients that connect and drop off (asyncua keeps the open connections)."""
        while True:
            bserver = self._server.bserver if self._server is not None else None
            clients = list(bserver.clients) if bserver is not None else []
            # Keyed by the connection object, not its address: a client that reconnects from the
            # same port before the server noticed the old connection drop is still two connections.
            now = {id(c): _peer(c.peer_name) for c in clients}
            for key in self._peers.keys() - now.keys():
                self._tell_connection(False, self._peers[key])
            for key in now.keys() - self._peers.keys():
                self._tell_connection(True, now[key])
            self._peers = now
            await asyncio.sleep(0.05)

    def _tell_connection(self, connected: bool, peer: str) -> None:
        assert self._control is not None
        try:
            self._control.connection(connected, peer)
        except Exception:
            log.exception("LineControl.connection")

    async def _write(self, node: Any, value: Any, vtype: Any) -> None:
        ua = self._ua
        await node.write_value(ua.DataValue(ua.Variant(value, vtype)))

    async def _set_state_nodes(self, state: LineState) -> None:
        from inspector_line.opcua_nodes import MV_AUTO_STATES, MV_STATES, STATE_OF_LINE, nid

        ua, n = self._ua, self._nodes
        outer, inner = STATE_OF_LINE[state]
        await self._write(n.state, ua.LocalizedText(outer), ua.VariantType.LocalizedText)
        await self._write(n.state_id, nid(MV_STATES[outer], n.mv), ua.VariantType.NodeId)
        await self._write(n.auto_state, ua.LocalizedText(inner), ua.VariantType.LocalizedText)
        await self._write(n.auto_state_id, nid(MV_AUTO_STATES[inner], n.mv), ua.VariantType.NodeId)
        await self._write(n.line_state, state, ua.VariantType.String)

    async def _apply_state(self, state: LineState) -> None:
        await self._set_state_nodes(state)

    async def _beat(self) -> None:
        self._heartbeat = (self._heartbeat + 1) % 2**32
        await self._write(self._nodes.heartbeat, self._heartbeat, self._ua.VariantType.UInt32)

    async def _apply_result(self, result: LineResult) -> None:
        ua, r = self._ua, self._nodes.results
        vt = ua.VariantType
        summary = defect_summary(result)
        verdict = result.verdict or "DEFAULT"
        meas_id, product = self._jobs.pop(result.counter, ("", ""))
        # ResultValid goes false first and true last: a client polling the variables never reads
        # a half-written result as valid (asyncua serves reads between these awaits).
        await self._set_valid(False)
        await self._write(r["ResultCode"], result.code, vt.Int16)
        await self._write(r["DefectCode"], result.defect_code, vt.Int16)
        await self._write(r["PartId"], result.part_id, vt.String)
        await self._write(r["Verdict"], verdict, vt.String)
        await self._write(r["DefectSummary"], summary, vt.String)
        await self._write(r["IsDefault"], result.is_default, vt.Boolean)
        await self._write(r["InspectionUid"], result.inspection_uid or "", vt.String)
        await self._write(r["Counter"], result.counter, vt.UInt32)
        self._counter = result.counter
        await self._set_valid(True)
        fields = {
            "CreationTime": datetime.now(UTC),
            "IsPartial": False,
            "IsSimulated": False,
            "JobId": str(result.counter),
            "MeasId": meas_id or str(result.counter),
            "PartId": result.part_id,
            "ProductId": product,
            "ResultId": result.inspection_uid or f"default-{result.counter}",
            "ResultState": result.code,
            "Counter": result.counter,
            "ResultCode": result.code,
            "DefectCode": result.defect_code,
            "Verdict": verdict,
            "DefectSummary": summary,
            "IsDefault": result.is_default,
            "Overrun": result.overrun,
            "MissedTrigger": result.missed_trigger,
            "InspectionUid": result.inspection_uid or "",
        }
        message = f"part {result.part_id}: {verdict} (code {result.code}, counter {result.counter})"
        for gen in self._events:
            for key, value in fields.items():
                setattr(gen.event, key, value)
            await gen.trigger(message=message)

    # ------------------------------------------------------------------ what the PLC calls

    def _variant(self, value: Any, vtype: Any) -> Any:
        return self._ua.Variant(value, vtype)

    def _do_trigger(self, counter: int | None, part_id: str, product: str, meas_id: str = "") -> tuple[int, float]:
        assert self._control is not None
        last = self._last_trigger
        if counter is not None and last is not None and last.counter == counter:
            # The same counter again is no new part (as a Modbus rewrite of the same value): a PLC
            # that lost the method's response and calls again must not trigger twice.
            trig = last
        else:
            trig = self._control.trigger(counter=counter, part_id=part_id or None, product=product or None)
            self._last_trigger = trig
            self._jobs[trig.counter] = (meas_id, product)
            while len(self._jobs) > 1024:
                self._jobs.popitem(last=False)
        left_ms = (trig.at_monotonic + trig.deadline_s - time.monotonic()) * 1000
        return trig.counter, left_ms

    async def _on_trigger(self, parent: Any, counter: Any, part_id: Any, product: Any) -> Any:
        ua = self._ua
        plc_counter = int(counter.Value or 0)
        got, left_ms = self._do_trigger(plc_counter or None, _text(part_id), _text(product))
        return [self._variant(got % 2**32, ua.VariantType.UInt32), self._variant(left_ms, ua.VariantType.Double)]

    async def _on_start_single_job(self, parent: Any, meas_id: Any, part_id: Any, recipe: Any, product: Any) -> Any:
        ua = self._ua
        got, _ = self._do_trigger(None, _text(part_id), _text(product) or _text(recipe), _text(meas_id))
        return [self._variant(str(got), ua.VariantType.String), self._variant(0, ua.VariantType.Int32)]

    async def _on_acknowledge(self, parent: Any, counter: Any) -> Any:
        await self._acknowledge(int(counter.Value or 0))
        return []

    async def _acknowledge(self, counter: int) -> None:
        assert self._control is not None
        if counter == self._counter and counter != 0:
            await self._set_valid(False)
        self._control.acknowledge(counter)

    async def _recipe(self, name: str) -> bool:
        assert self._control is not None
        try:
            # The changeover starts and warms the recipe's detectors first (seconds): off the server's loop.
            active = await asyncio.get_running_loop().run_in_executor(None, self._control.select_recipe, name)
        except Exception as exc:  # noqa: BLE001 - the PLC gets Error -1; the station's log says why
            log.warning("the PLC's recipe %r was refused: %s", name, exc)
            return False
        # The recipe now active (a product code asked for names its recipe).
        shown = active if isinstance(active, str) and active else name
        await self._write(self._nodes.active_recipe, shown, self._ua.VariantType.String)
        return True

    async def _on_prepare_product(self, parent: Any, product: Any) -> Any:
        ua = self._ua
        name = _text(product)
        ok = bool(name) and await self._recipe(name)
        return [
            self._variant(name if ok else "", ua.VariantType.String),
            self._variant(0 if ok else -1, ua.VariantType.Int32),
        ]

    async def _on_select_recipe(self, parent: Any, name: Any) -> Any:
        text = _text(name)
        ok = bool(text) and await self._recipe(text)
        return [self._variant(0 if ok else -1, self._ua.VariantType.Int32)]

    async def _on_write(self, event: Any, dispatcher: Any) -> None:
        """A client wrote: ``ResultValid = false`` or ``AckCounter = n`` acknowledge a result."""
        if not event.is_external:
            return
        r = self._nodes.results
        for item, status in zip(event.request_params.NodesToWrite, event.response_params or [], strict=False):
            if not status.is_good() or item.Value is None or item.Value.Value is None:
                continue
            value = item.Value.Value.Value
            if item.NodeId == r["ResultValid"].nodeid and value is False:
                self._valid = False
                if self._counter:
                    self._control_ack(self._counter)
            elif item.NodeId == r["ResultValid"].nodeid:
                await self._set_valid(self._valid)  # only the station makes a result valid
            elif item.NodeId == r["AckCounter"].nodeid and isinstance(value, int) and value:
                if value == self._counter:
                    await self._set_valid(False)
                self._control_ack(value)

    async def _set_valid(self, valid: bool) -> None:
        self._valid = valid
        await self._write(self._nodes.results["ResultValid"], valid, self._ua.VariantType.Boolean)

    def _control_ack(self, counter: int) -> None:
        assert self._control is not None
        self._control.acknowledge(counter)


def defect_summary(result: LineResult) -> str:
    """The failing findings in one line, for the PLC's HMI: ``scratch 0.93 (inspect-1); dent 0.71``."""
    if result.is_default:
        return f"no verdict by the deadline: default code {result.code}"
    parts = []
    for d in result.defects[:8]:
        kind = d.get("kind", "?")
        score = d.get("score")
        text = f"{kind} {score:.2f}" if isinstance(score, int | float) else str(kind)
        if d.get("step"):
            text += f" ({d['step']})"
        parts.append(text)
    if len(result.defects) > 8:
        parts.append(f"+{len(result.defects) - 8} more")
    return "; ".join(parts)


def _text(variant: Any) -> str:
    value = getattr(variant, "Value", variant)
    return value.strip() if isinstance(value, str) else ""


def _peer(peer_name: Any) -> str:
    if isinstance(peer_name, tuple) and len(peer_name) >= 2:
        return f"{peer_name[0]}:{peer_name[1]}"
    return str(peer_name)
