"""A PLC, simulated: it drives a station over the real protocol (a pymodbus client), as a PLC
programmed from ``docs/line.md`` would, and keeps what it saw.

Each trigger is one FC16 write of TRIGGER_COUNTER, PRODUCT and PART_ID; between triggers the
PLC polls the result ring (one read of 80 registers per 16 slots holding a result it waits for)
and acknowledges each result it finds
(ACK_COUNTER). Trigger -> result is measured on the PLC's side: from the write of the trigger
to the read that first showed the result of that counter.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections import Counter
from typing import Any

from inspector_line import modbus as m


@dataclasses.dataclass(slots=True)
class Seen:
    counter: int
    sent: float
    part_id: str
    result_at: float | None = None
    code: int | None = None
    defect_code: int | None = None
    flags: int = 0
    times_seen: int = 0

    @property
    def latency_ms(self) -> float | None:
        return None if self.result_at is None else (self.result_at - self.sent) * 1000


@dataclasses.dataclass
class PlcRun:
    """What the simulated PLC saw."""

    parts: dict[int, Seen]
    deadline_ms: float
    reconnects: int
    elapsed_s: float
    load: tuple[float, float, float]
    conflicting: int = 0
    """Results read for a counter that disagreed with the first one read (a duplicate)."""

    @property
    def answered(self) -> list[Seen]:
        return [p for p in self.parts.values() if p.result_at is not None]

    @property
    def lost(self) -> int:
        return sum(1 for p in self.parts.values() if p.result_at is None)

    @property
    def late(self) -> int:
        return sum(1 for p in self.answered if (p.latency_ms or 0) > self.deadline_ms)

    @property
    def defaults(self) -> int:
        return sum(1 for p in self.answered if p.flags & m.FLAG_DEFAULT)

    def percentile(self, q: float) -> float | None:
        lat = sorted(p.latency_ms for p in self.answered if p.latency_ms is not None)
        if not lat:
            return None
        if len(lat) == 1:
            return lat[0]
        return statistics.quantiles(lat, n=100, method="inclusive")[int(q) - 1] if q < 100 else lat[-1]

    def summary(self, codes: dict[int, str] | None = None) -> str:
        codes = codes or {}
        by_code = Counter(codes.get(p.code or 0, str(p.code)) for p in self.answered)
        p50, p99 = self.percentile(50), self.percentile(99)
        load = " ".join(f"{x:.2f}" for x in self.load)
        n = len(self.parts)
        lines = [
            f"triggers {n} in {self.elapsed_s:.1f} s ({n / max(self.elapsed_s, 1e-9):.1f}/s), "
            f"reconnects {self.reconnects}, load average {load}",
            f"answered {len(self.answered)}, lost {self.lost}, conflicting {self.conflicting}, "
            f"after the deadline ({self.deadline_ms:g} ms) {self.late}, defaults {self.defaults}",
            "trigger -> result on the PLC: "
            + (f"p50 {p50:.1f} ms, p99 {p99:.1f} ms" if p50 is not None and p99 is not None else "none"),
            "results: " + (", ".join(f"{k} {v}" for k, v in sorted(by_code.items())) or "none"),
        ]
        return "\n".join(lines)


class ModbusPlc:
    """A PLC on the station's Modbus TCP map (a pymodbus client)."""

    def __init__(self, host: str, port: int, *, base: int = 0, start_counter: int = 1) -> None:
        self.host, self.port, self.base = host, port, base
        self.counter = start_counter - 1
        self.client = self._connect()

    def _connect(self):
        from pymodbus.client import ModbusTcpClient

        client = ModbusTcpClient(self.host, port=self.port, timeout=2, retries=1)
        for _ in range(50):
            if client.connect():
                return client
            time.sleep(0.1)
        raise ConnectionError(f"no Modbus TCP server at {self.host}:{self.port} (is the station running?)")

    def reconnect(self) -> None:
        self.client.close()
        self.client = self._connect()

    def close(self) -> None:
        self.client.close()

    def read(self, address: int, count: int) -> list[int]:
        rr = self.client.read_holding_registers(self.base + address, count=count)
        if rr.isError():
            raise ConnectionError(f"read {address}..{address + count - 1}: {rr}")
        return list(rr.registers)

    def write(self, address: int, values: list[int]) -> None:
        rr = self.client.write_registers(self.base + address, values)
        if rr.isError():
            raise ConnectionError(f"write {address}: {rr}")

    def trigger(self, part_id: str = "", product: int = 0) -> int:
        self.counter = (self.counter % 0xFFFFFFFF) + 1
        self.write(m.TRIGGER_COUNTER, [*m.split32(self.counter), product, 0, *m.encode_text(part_id)])
        return self.counter

    def acknowledge(self, counter: int) -> None:
        self.write(m.ACK_COUNTER, m.split32(counter))

    def ring(self, waiting: set[int] | None = None) -> dict[int, tuple[int, int, int]]:
        """The results the ring holds now: counter -> (code, defect code, flags). With
        ``waiting``, only the parts of the ring (16 slots per read) that hold those counters."""
        return {c: v[:3] for c, v in self.ring_timed(waiting).items()}

    def ring_timed(self, waiting: set[int] | None = None) -> dict[int, tuple[int, int, int, float]]:
        """As :meth:`ring`, each result with the monotonic time its read returned."""
        if waiting is None:
            chunks = list(range(m.RING_SLOTS // m.RING_CHUNK))
        else:
            chunks = sorted({(c % m.RING_SLOTS) // m.RING_CHUNK for c in waiting})
        out = {}
        for chunk in chunks:
            first = chunk * m.RING_CHUNK
            regs = self.read(m.RING + first * m.SLOT_SIZE, m.RING_CHUNK * m.SLOT_SIZE)
            at = time.monotonic()
            for i in range(m.RING_CHUNK):
                hi, lo, code, defect, flags = regs[i * m.SLOT_SIZE : (i + 1) * m.SLOT_SIZE]
                if flags & m.FLAG_VALID:
                    out[m.join32(hi, lo)] = (code, defect, flags, at)
        return out

    def status(self) -> int:
        return self.read(m.STATUS, 1)[0]


def drive(
    plc: Any,
    *,
    rate: float,
    count: int,
    deadline_ms: float,
    reconnect_every: int = 0,
    part_ids: bool = True,
    settle_s: float | None = None,
    ack: bool = True,
) -> PlcRun:
    """Send ``count`` triggers at ``rate`` per second, reading and acknowledging results as they
    come; then wait up to ``settle_s`` (default: twice the deadline) for the last ones."""
    parts: dict[int, Seen] = {}
    period = 1.0 / rate
    start = time.monotonic()
    settle = settle_s if settle_s is not None else 2 * deadline_ms / 1000 + 0.5
    reconnects = 0
    conflicting = 0
    sent = 0
    end: float | None = None
    while True:
        now = time.monotonic()
        if sent < count and now >= start + sent * period:
            if reconnect_every and sent and sent % reconnect_every == 0:
                plc.reconnect()
                reconnects += 1
            pid = f"SN{plc.counter + 1:08d}" if part_ids else ""
            t = time.monotonic()
            c = plc.trigger(pid)
            parts[c] = Seen(c, t, pid)
            sent += 1
            if sent == count:
                end = time.monotonic() + settle
            continue
        waiting = {c for c, p in parts.items() if p.result_at is None}
        ring = plc.ring_timed(waiting) if waiting else {}
        acked = None
        for c, (code, defect, flags, seen_at) in ring.items():
            p = parts.get(c)
            if p is None:
                continue
            if p.result_at is None:
                p.result_at, p.code, p.defect_code, p.flags = seen_at, code, defect, flags
                acked = c if acked is None or c > acked else acked
            elif (p.code, p.defect_code, p.flags) != (code, defect, flags):
                conflicting += 1
            p.times_seen += 1
        if ack and acked is not None:
            plc.acknowledge(acked)
        if end is not None and (time.monotonic() > end or all(p.result_at is not None for p in parts.values())):
            break
        if sent < count:
            wait = start + sent * period - time.monotonic()
            if wait > 0.002:
                time.sleep(0.001)
        else:
            time.sleep(0.001)
    return PlcRun(parts, deadline_ms, reconnects, time.monotonic() - start, os.getloadavg(), conflicting)


def drive_elsewhere(
    host: str,
    port: int,
    *,
    rate: float,
    count: int,
    deadline_ms: float,
    base: int = 0,
    reconnect_every: int = 0,
    ack: bool = True,
    opcua: dict[str, str] | None = None,
) -> PlcRun:
    """:func:`drive` in a process of its own, as a real PLC is: in the station's process the
    PLC's polling would share the station's interpreter lock and its delays. A Modbus PLC on
    ``host:port`` (``base``), or, with ``opcua`` (``endpoint``, ``namespace_uri``,
    ``object_name``), the OPC UA PLC of :mod:`inspector_line.opcua_plc`."""
    import json
    import subprocess
    import sys

    job = {"host": host, "port": port, "base": base, "opcua": opcua}
    job |= {"rate": rate, "count": count, "deadline_ms": deadline_ms, "reconnect_every": reconnect_every, "ack": ack}
    args = [sys.executable, "-m", "inspector_line.simulate", json.dumps(job)]
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"the simulated PLC failed: {out.stderr.strip()[-2000:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    parts = {p[0]: Seen(*p) for p in data["parts"]}
    load = (float(data["load"][0]), float(data["load"][1]), float(data["load"][2]))
    return PlcRun(parts, deadline_ms, data["reconnects"], data["elapsed_s"], load, data["conflicting"])


def _main(argv: list[str]) -> None:
    import json

    job = json.loads(argv[0])
    plc: Any
    if job["opcua"]:
        from inspector_line.opcua_plc import OpcUaPlc

        ua = job["opcua"]
        plc = OpcUaPlc(ua["endpoint"], namespace_uri=ua["namespace_uri"], object_name=ua["object_name"])
    else:
        plc = ModbusPlc(job["host"], int(job["port"]), base=int(job["base"]))
    try:
        run = drive(
            plc,
            rate=float(job["rate"]),
            count=int(job["count"]),
            deadline_ms=float(job["deadline_ms"]),
            reconnect_every=int(job["reconnect_every"]),
            ack=bool(job["ack"]),
        )
    finally:
        plc.close()
    parts = [dataclasses.astuple(p) for p in run.parts.values()]
    summary = {"reconnects": run.reconnects, "elapsed_s": run.elapsed_s, "load": list(run.load)}
    print(json.dumps({"parts": parts, "conflicting": run.conflicting, **summary}))


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
