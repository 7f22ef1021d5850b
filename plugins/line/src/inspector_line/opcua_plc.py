"""A simulated PLC on the station's OPC UA link (an asyncua client), for commissioning and tests.

It has the interface :func:`inspector_line.simulate.drive` uses with the Modbus PLC (``counter``,
``trigger``, ``ring``, ``acknowledge``, ``reconnect``, ``close``, ``status``), so the same driver
runs a line over OPC UA. It triggers with the ``Trigger`` method (its own counter), learns results
from the ResultReady event, and acknowledges with ``Acknowledge``; ``docs/line-opcua.md``.

The client runs in a thread of its own with its own asyncio loop; the methods here block until
the server answered (a few milliseconds on loopback).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

MODBUS_STATUS_BITS = {"READY": 1, "BUSY": 2, "ERROR": 8, "HALTED": 16}
"""LineState as the Modbus STATUS bits (docs/line.md), for :meth:`OpcUaPlc.status`."""
FLAG_VALID, FLAG_DEFAULT, FLAG_OVERRUN, FLAG_MISSED = 1, 2, 4, 8
"""RESULT_FLAGS bits as on Modbus."""


class OpcUaPlc:
    """A PLC on the OPC UA address space of docs/line-opcua.md."""

    def __init__(
        self,
        endpoint: str,
        *,
        namespace_uri: str = "urn:inspector:station",
        object_name: str = "VisionSystem",
        start_counter: int = 1,
        interval_ms: float = 5.0,
        timeout_s: float = 10.0,
        keep: int = 4096,
    ) -> None:
        self.endpoint, self.namespace_uri, self.object_name = endpoint, namespace_uri, object_name
        self.counter = start_counter - 1
        self.interval_ms, self.timeout_s, self.keep = interval_ms, timeout_s, keep
        self._results: dict[int, tuple[int, int, int, float]] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="opcua-plc", daemon=True)
        self._thread.start()
        self._client: Any = None
        self._nodes: dict[str, Any] = {}
        try:
            self._call(self._connect())
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            raise

    # ------------------------------------------------------------------ what drive() uses

    def trigger(self, part_id: str = "", product: int | str = 0) -> int:
        self.counter = (self.counter % 0xFFFFFFFF) + 1
        text = "" if product in (0, "") else str(product)
        got = self._call(self._trigger(self.counter, part_id, text))
        if got != self.counter:
            raise RuntimeError(f"the station answered Trigger({self.counter}) with counter {got}")
        return self.counter

    def ring(self, waiting: set[int] | None = None) -> dict[int, tuple[int, int, int]]:
        """The results seen so far (events, and the latest result read after a reconnect):
        counter -> (code, defect code, flags as Modbus RESULT_FLAGS)."""
        return {c: v[:3] for c, v in self.ring_timed(waiting).items()}

    def ring_timed(self, waiting: set[int] | None = None) -> dict[int, tuple[int, int, int, float]]:
        """As :meth:`ring`, each result with the monotonic time this client received it."""
        with self._lock:
            if waiting is None:
                return dict(self._results)
            return {c: self._results[c] for c in waiting if c in self._results}

    def acknowledge(self, counter: int) -> None:
        self._call(self._acknowledge(counter))

    def reconnect(self) -> None:
        """Drop the connection (no CloseSession, as a pulled cable) and connect again; the latest
        result is read from ResultManagement (events while away are not replayed)."""
        self._call(self._reconnect())

    def status(self) -> int:
        """LineState as Modbus STATUS bits (bit 2, ResultValid, from the result variable)."""
        state, valid = self._call(self._status())
        return MODBUS_STATUS_BITS.get(state, 0) | (4 if valid else 0)

    def close(self) -> None:
        try:
            self._call(self._disconnect())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()

    # ------------------------------------------------------------------ the client's loop

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.timeout_s)

    async def _connect(self) -> None:
        from asyncua import Client

        client = Client(self.endpoint, timeout=self.timeout_s)
        try:
            await client.connect()
        except OSError as exc:
            raise ConnectionError(f"no OPC UA server at {self.endpoint} (is the station running?): {exc}") from exc
        self._client = client
        mv = await client.get_namespace_index("http://opcfoundation.org/UA/MachineVision")
        st = await client.get_namespace_index(self.namespace_uri)
        vs = await client.nodes.objects.get_child(f"{st}:{self.object_name}")
        results = await vs.get_child(f"{mv}:ResultManagement")
        names = ("Counter", "ResultCode", "DefectCode", "IsDefault", "ResultValid", "Acknowledge")
        self._nodes = {"vs": vs, "results": results, "trigger": await vs.get_child(f"{st}:Trigger")}
        self._nodes["state"] = await vs.get_child(f"{st}:LineState")
        for name in names:
            self._nodes[name] = await results.get_child(f"{st}:{name}")
        types = ["0:Types", "0:EventTypes", "0:BaseEventType", f"{mv}:ResultReadyEventType"]
        etype = await client.nodes.root.get_child([*types, f"{st}:InspectorResultReadyEventType"])
        sub = await client.create_subscription(self.interval_ms, self)
        await sub.subscribe_events(vs, etype)

    def event_notification(self, event: Any) -> None:
        """asyncua's subscription handler: one ResultReady event."""
        flags = FLAG_VALID
        flags |= FLAG_DEFAULT if event.IsDefault else 0
        flags |= FLAG_OVERRUN if event.Overrun else 0
        flags |= FLAG_MISSED if event.MissedTrigger else 0
        self._remember(int(event.Counter), (int(event.ResultCode), int(event.DefectCode), flags))

    def _remember(self, counter: int, result: tuple[int, int, int]) -> None:
        now = time.monotonic()
        with self._lock:
            before = self._results.get(counter)  # the first sighting is when the PLC had it; a
            at = before[3] if before is not None else now  # different result later shows as a conflict
            self._results[counter] = (*result, at)
            while len(self._results) > self.keep:
                del self._results[next(iter(self._results))]

    async def _trigger(self, counter: int, part_id: str, product: str) -> int:
        from asyncua import ua

        got, _left_ms = await self._nodes["vs"].call_method(
            self._nodes["trigger"], ua.Variant(counter, ua.VariantType.UInt32), part_id, product
        )
        return int(got)

    async def _acknowledge(self, counter: int) -> None:
        from asyncua import ua

        await self._nodes["results"].call_method(self._nodes["Acknowledge"], ua.Variant(counter, ua.VariantType.UInt32))

    async def _reconnect(self) -> None:
        if self._client is not None:
            self._client.disconnect_socket()
        await self._connect()
        n = self._nodes
        counter, code, defect, is_default, valid = [
            await n[k].read_value() for k in ("Counter", "ResultCode", "DefectCode", "IsDefault", "ResultValid")
        ]
        if counter and valid:
            self._remember(int(counter), (int(code), int(defect), FLAG_VALID | (FLAG_DEFAULT if is_default else 0)))

    async def _status(self) -> tuple[str, bool]:
        return await self._nodes["state"].read_value(), await self._nodes["ResultValid"].read_value()

    async def _disconnect(self) -> None:
        if self._client is not None:
            await self._client.disconnect()
            self._client = None
