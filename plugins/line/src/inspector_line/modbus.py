"""Modbus TCP: the station serves a register map that the PLC polls and writes (pymodbus 3).

Every address below is a holding register (function codes 3 read, 6/16 write), counted from
``config.base`` (0 by default), one 16-bit word each; a 32-bit counter is two registers, high
word first. ``docs/line.md`` is the PLC programmer's copy of this map and the timing diagram.

Station -> PLC (the PLC reads; a write here is refused with ILLEGAL ADDRESS):

====== ================= ==========================================================
offset name              meaning
====== ================= ==========================================================
0      STATUS            bits: 0 Ready, 1 Busy, 2 ResultValid, 3 Error, 4 Halted,
                         5 Overrun, 6 MissedTrigger, 7 Default (5-7: of the latest result)
1      HEARTBEAT         +1 about every 0.5 s while the station's line runs
2-3    LAST_TRIGGER      the last trigger counter the station accepted
4-5    RESULT_COUNTER    the counter of the latest result
6      RESULT_CODE       its result code (line.codes: 1 OK, 2 NOK, 3 RECHECK)
7      DEFECT_CODE       its defect code (line.defect_codes; 0 none)
8      RESULT_FLAGS      bits: 0 valid, 1 default, 2 overrun, 3 missed trigger
9      RECIPE_STATE      answer to the last RECIPE write: 0 while the station changes over,
                         then the code written once that recipe is active, 65535 refused
10     OVERRUNS          overrun triggers so far (wraps at 65536)
11     MISSED            counter jumps so far
12     DEFAULTS          deadline defaults so far
20-339 RESULT_RING       64 slots of 5 registers; the result of counter C is in slot
                         C mod 64 at 20 + 5 * (C mod 64): counter hi, counter lo,
                         result code, defect code, flags (as RESULT_FLAGS)
====== ================= ==========================================================

PLC -> station (the PLC writes):

====== ================= ==========================================================
400-401 TRIGGER_COUNTER  writing a new non-zero value is the trigger (rewriting the same
                         value is not: a reconnecting PLC cannot trigger twice); the
                         trigger is the write that includes 401 (the low word): write
                         both in one FC16, or 400 before 401; a 16-bit counter writes
                         401 only and wraps 65535 -> 1 (0 is "no trigger")
402    PRODUCT           product code (0: none), taken with the trigger
403    RECIPE            writing a non-zero product code is a changeover to the recipe
                         listing it (recipes.NAME.products; docs/recipes.md): parts captured
                         before finish under theirs; RECIPE_STATE says when it is active
                         (a trigger's FC16 write of 400..423 with 0 here asks for nothing)
404-423 PART_ID          part serial / DMC, UTF-8 (or Latin-1 when not UTF-8), 2 bytes per
                         register (high byte first), NUL padded, up to 40 bytes, taken
                         with the trigger
424-425 ACK_COUNTER      the counter of the result the PLC has read: clears ResultValid
                         when it is the latest result's
====== ================= ==========================================================

Write PRODUCT and PART_ID before TRIGGER_COUNTER, or in the same request (one FC16 write of
400..423 is the simplest): the station reads them when the counter changes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from pydantic import Field

from inspector_core import PluginConfig
from inspector_core.contract import LineControl, LineResult, LineState, PlcLink

log = logging.getLogger(__name__)

STATUS, HEARTBEAT, LAST_TRIGGER, RESULT_COUNTER, RESULT_CODE, DEFECT_CODE, RESULT_FLAGS = 0, 1, 2, 4, 6, 7, 8
OVERRUNS, MISSED, DEFAULTS = 10, 11, 12
RING, RING_SLOTS, SLOT_SIZE = 20, 64, 5
RING_CHUNK = 16
"""Slots per read of the whole ring: 16 x 5 = 80 registers (a Modbus read takes at most 125)."""
TRIGGER_COUNTER, PRODUCT, PART_ID, PART_ID_REGS, ACK_COUNTER = 400, 402, 404, 20, 424
RECIPE, RECIPE_STATE, RECIPE_REFUSED = 403, 9, 0xFFFF
PLC_AREA = 400
SIZE = 426

READY, BUSY, RESULT_VALID, ERROR, HALTED, OVERRUN, MISSED_TRIGGER, DEFAULT = (1 << i for i in range(8))
STATE_BITS = {"READY": READY, "BUSY": BUSY, "ERROR": ERROR, "HALTED": HALTED}
FLAG_VALID, FLAG_DEFAULT, FLAG_OVERRUN, FLAG_MISSED = 1, 2, 4, 8


def split32(v: int) -> list[int]:
    return [(v >> 16) & 0xFFFF, v & 0xFFFF]


def join32(hi: int, lo: int) -> int:
    return ((hi & 0xFFFF) << 16) | (lo & 0xFFFF)


def encode_text(text: str, regs: int = PART_ID_REGS) -> list[int]:
    """UTF-8 (ASCII is UTF-8), two bytes per register, high byte first, NUL padded, cut at a
    character boundary to ``2 * regs`` bytes (what PART_ID holds)."""
    raw = text.encode("utf-8")[: 2 * regs]
    raw = raw.decode("utf-8", "ignore").encode("utf-8").ljust(2 * regs, b"\0")
    return [(raw[i] << 8) | raw[i + 1] for i in range(0, len(raw), 2)]


def decode_text(words: list[int]) -> str:
    """PART_ID's bytes up to the first NUL: UTF-8 when they are, else Latin-1 (a Windows-1252
    S7 STRING): every byte is kept as a character, none replaced by "?" (two part ids that differ
    in a byte beyond ASCII stay two part ids)."""
    raw = b"".join(bytes([(w >> 8) & 0xFF, w & 0xFF]) for w in words).split(b"\0", 1)[0]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.strip()


def flags_of(result: LineResult) -> int:
    return (
        FLAG_VALID
        | (FLAG_DEFAULT if result.is_default else 0)
        | (FLAG_OVERRUN if result.overrun else 0)
        | (FLAG_MISSED if result.missed_trigger else 0)
    )


class ModbusConfig(PluginConfig):
    host: str = Field("0.0.0.0", description="address to serve on (the PLC connects to it)")
    port: int = Field(502, ge=0, le=65535, description="TCP port; 0 picks a free one (tests)")
    base: int = Field(0, ge=0, le=65535 - SIZE, description="holding-register address of STATUS; the map follows")


class ModbusLink(PlcLink):
    """A Modbus TCP server (pymodbus) holding the register map in this module's docstring."""

    name = "modbus"
    Config = ModbusConfig

    def __init__(self, config: PluginConfig, *, station_dir: Any) -> None:
        super().__init__(config, station_dir=station_dir)
        assert isinstance(config, ModbusConfig)
        self.cfg = config
        self.port: int | None = None
        """The bound port once started (the configured one, or the free one for port 0)."""
        self._regs: list[int] = [0] * SIZE
        self._status_lock = threading.Lock()
        self._control: LineControl | None = None
        self._last_trigger = 0
        self._last_ack = 0
        self._latest_counter: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._counts = {OVERRUNS: 0, MISSED: 0, DEFAULTS: 0}
        self._last_recipe = 0

    # -------------------------------------------------------------- PlcLink

    def start(self, control: LineControl) -> None:
        self._control = control
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, args=(ready, failure), name="inspector-modbus", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"modbus: the server on {self.cfg.host}:{self.cfg.port} did not start within 10 s")
        if failure:
            raise RuntimeError(
                f"modbus: cannot serve on {self.cfg.host}:{self.cfg.port}: {failure[0]} "
                "(is another station or program using the port? set line.config.port)"
            ) from failure[0]

    def set_state(self, state: LineState) -> None:
        with self._status_lock:
            status = self._regs[STATUS] & ~(READY | BUSY | ERROR | HALTED)
            self._regs[STATUS] = status | STATE_BITS[state]

    def publish(self, result: LineResult) -> None:
        flags = flags_of(result)
        counter = result.counter & 0xFFFFFFFF
        slot = RING + SLOT_SIZE * (counter % RING_SLOTS)
        regs = self._regs
        # One slice assignment each: a PLC read (the server's thread) sees all of it or none.
        regs[slot : slot + SLOT_SIZE] = [*split32(counter), result.code & 0xFFFF, result.defect_code & 0xFFFF, flags]
        for reg, on in ((OVERRUNS, result.overrun), (MISSED, result.missed_trigger), (DEFAULTS, result.is_default)):
            if on:
                self._counts[reg] = (self._counts[reg] + 1) & 0xFFFF
        regs[RESULT_COUNTER : DEFAULTS + 1] = [
            *split32(counter),
            result.code & 0xFFFF,
            result.defect_code & 0xFFFF,
            flags,
            regs[RECIPE_STATE],
            self._counts[OVERRUNS],
            self._counts[MISSED],
            self._counts[DEFAULTS],
        ]
        with self._status_lock:
            self._latest_counter = counter
            status = regs[STATUS] & ~(OVERRUN | MISSED_TRIGGER | DEFAULT)
            status |= RESULT_VALID
            status |= (OVERRUN if result.overrun else 0) | (MISSED_TRIGGER if result.missed_trigger else 0)
            status |= DEFAULT if result.is_default else 0
            regs[STATUS] = status

    def show_recipe(self, name: str, products: tuple[str, ...]) -> None:
        """RECIPE_STATE follows every changeover (``inspector recipe`` too): the recipe's first
        numeric product code, 0 when it has none."""
        code = next((int(p) for p in products if p.isdigit() and 0 < int(p) < RECIPE_REFUSED), 0)
        self._regs[RECIPE_STATE] = code

    def heartbeat(self) -> None:
        self._regs[HEARTBEAT] = (self._regs[HEARTBEAT] + 1) & 0xFFFF

    def close(self) -> None:
        loop, server = self._loop, self._server
        if loop is not None and server is not None and loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(server.shutdown(), loop)
            try:
                fut.result(5)
            except Exception as exc:  # noqa: BLE001
                log.warning("modbus: shutdown: %s", exc)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    # -------------------------------------------------------------- the server's thread

    def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def begin() -> None:
            base = self.cfg.base
            device = SimDevice(
                id=0, simdata=[SimData(base, count=SIZE, values=0, datatype=DataType.REGISTERS)], action=self._action
            )
            self._server = ModbusTcpServer(
                device, address=(self.cfg.host, self.cfg.port), trace_connect=self._connected
            )
            await self._server.serve_forever(background=True)
            # The server's own copy of the registers: the link writes results into it directly.
            registers = self._server.context.devices[0].block["x"][2]
            registers[:] = self._regs
            self._regs = registers
            sockets = self._server.transport.sockets if self._server.transport is not None else []
            self.port = sockets[0].getsockname()[1] if sockets else self.cfg.port

        try:
            loop.run_until_complete(begin())
        except BaseException as exc:  # noqa: BLE001 - handed to start(), which raises it
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def _select_recipe(self, control: LineControl, code: int, request: int) -> None:
        try:
            control.select_recipe(str(code))
        except Exception as exc:  # noqa: BLE001 - the PLC reads 65535; the station's events say why
            log.warning("modbus: the PLC's recipe %d was refused: %s", code, exc)
            state = RECIPE_REFUSED
        else:
            state = code
        if self._last_recipe == request:  # no later request since
            self._regs[RECIPE_STATE] = state

    def _connected(self, connected: bool) -> None:
        if self._control is not None:
            self._control.connection(connected, f"modbus tcp :{self.port}")

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> Any:
        if set_values is None:
            return None
        from pymodbus.constants import ExcCodes

        base = self.cfg.base
        offset = address - base
        if offset < PLC_AREA:
            return ExcCodes.ILLEGAL_ADDRESS  # the station's registers are read-only to the PLC
        area = list(current_registers[base - start_address + PLC_AREA : base - start_address + SIZE])
        values = [int(v) for v in set_values]
        area[offset - PLC_AREA : offset - PLC_AREA + len(values)] = values

        def at(reg: int) -> int:
            return area[reg - PLC_AREA]

        control = self._control
        if control is None:
            return None
        counter = join32(at(TRIGGER_COUNTER), at(TRIGGER_COUNTER + 1))
        # The trigger is a write of the counter's low word (401): a PLC writing the two words
        # one by one (high first) does not trigger on the high word alone, whose counter would
        # be the new high word with the old low word (65535 -> 131071 -> 65536).
        writes_low = offset <= TRIGGER_COUNTER + 1 < offset + len(values)
        if writes_low and counter != 0 and counter != self._last_trigger:
            self._last_trigger = counter
            product = at(PRODUCT)
            part_id = decode_text(area[PART_ID - PLC_AREA : PART_ID - PLC_AREA + PART_ID_REGS])
            control.trigger(counter=counter, part_id=part_id or None, product=str(product) if product else None)
            self._regs[LAST_TRIGGER : LAST_TRIGGER + 2] = split32(counter)
        recipe = at(RECIPE)
        if offset <= RECIPE < offset + len(values) and recipe != 0:  # 0 (a trigger's write): no request
            self._last_recipe += 1
            self._regs[RECIPE_STATE] = 0
            # The changeover starts the recipe's detectors first (seconds): not on the server's loop.
            args = (control, recipe, self._last_recipe)
            threading.Thread(target=self._select_recipe, args=args, daemon=True).start()
        ack = join32(at(ACK_COUNTER), at(ACK_COUNTER + 1))
        if ack != 0 and ack != self._last_ack:
            self._last_ack = ack
            control.acknowledge(ack)
            with self._status_lock:
                if ack == self._latest_counter:
                    self._regs[STATUS] &= ~RESULT_VALID
        return None
