"""OPC UA link: start-up time and trigger -> ResultReady latency as a client sees it.

    .venv/bin/python bench/opcua_latency.py [--n 300] [--interval-ms 10] [--burners 2]

Start-up: the link's own split (asyncua's standard address space, the OPC 40100 subset, listen),
over a few starts; with ``OPC40100_NODESET=/path/Opc.Ua.MachineVision.NodeSet2.xml`` also the
time to import the official nodeset into a fresh server, in the same run, for comparison.

Latency: an asyncua client calls the ``Trigger`` method; the host side (a LineControl) hands the
trigger to a "line thread" that calls ``publish()`` at once (no inspection: this is the link's
own share), and the client timestamps the ResultReady event. Measured without extra load and
with ``--burners`` CPU-bound processes running, in the same run. Also ``publish()``'s own time.
Every figure is printed beside ``os.getloadavg()``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import queue
import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Client, Server, ua
from inspector_line.opcua import OpcUaConfig, OpcUaLink
from inspector_line.opcua_nodes import MV_URI

from inspector_core.contract import LineControl, LineResult, Trigger

NS = "urn:inspector:bench"


class LineThread(LineControl):
    """Answers each trigger from its own thread, as the host's line thread would."""

    def __init__(self) -> None:
        self.link: OpcUaLink | None = None
        self.jobs: queue.Queue[Trigger | None] = queue.Queue()
        self.publish_s: list[float] = []
        self.handoff_s: list[float] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def trigger(self, *, counter: int | None = None, part_id: str | None = None, product: str | None = None) -> Trigger:
        t = Trigger(counter=counter or 0, at=datetime.now(UTC), at_monotonic=time.monotonic(), deadline_s=1.0)
        self.jobs.put(t)
        return t

    def _run(self) -> None:
        while (t := self.jobs.get()) is not None:
            assert self.link is not None
            result = LineResult(counter=t.counter, part_id=f"P{t.counter}", code=1, verdict="PASS")
            t0 = time.perf_counter()
            self.link.publish(result)
            t1 = time.perf_counter()
            self.publish_s.append(t1 - t0)
            # Baseline in the same thread and moment: a bare hand-off of nothing to the same loop.
            loop = self.link._loop
            if loop is not None:
                loop.call_soon_threadsafe(_noop)
                self.handoff_s.append(time.perf_counter() - t1)

    def acknowledge(self, counter: int) -> None:
        pass

    def connection(self, connected: bool, peer: str = "") -> None:
        pass

    def select_recipe(self, name: str) -> None:
        pass


def _noop() -> None:
    pass


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))]


def burn(stop: Any) -> None:
    x = 0
    while not stop.is_set():
        for i in range(100_000):
            x ^= i


async def measure(endpoint: str, n: int, interval_ms: float) -> list[float]:
    got: dict[int, float] = {}

    class Handler:
        def event_notification(self, event: Any) -> None:
            got[event.Counter] = time.perf_counter()

    async with Client(endpoint, timeout=10) as client:
        mv = await client.get_namespace_index(MV_URI)
        st = await client.get_namespace_index(NS)
        vs = await client.nodes.objects.get_child(f"{st}:VisionSystem")
        types = ["0:Types", "0:EventTypes", "0:BaseEventType", f"{mv}:ResultReadyEventType"]
        etype = await client.nodes.root.get_child([*types, f"{st}:InspectorResultReadyEventType"])
        sub = await client.create_subscription(interval_ms, Handler())
        await sub.subscribe_events(vs, etype)
        trigger = await vs.get_child(f"{st}:Trigger")
        base = int(time.time()) % 1_000_000 * 1000
        latencies = []
        for i in range(n):
            counter = base + i + 1
            t0 = time.perf_counter()
            await vs.call_method(trigger, ua.Variant(counter, ua.VariantType.UInt32), f"P{counter}", "")
            while counter not in got:
                await asyncio.sleep(0.0005)
            latencies.append(got[counter] - t0)
            await asyncio.sleep(0.002)
        return latencies


async def official_nodeset_import(path: Path) -> float:
    server = Server()
    await server.init()
    t0 = time.perf_counter()
    await server.import_xml(str(path))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--interval-ms", type=float, default=10.0, help="the client's subscription publishing interval")
    ap.add_argument("--burners", type=int, default=2, help="CPU-bound processes for the loaded run")
    ap.add_argument("--starts", type=int, default=3)
    args = ap.parse_args()

    for i in range(args.starts):
        link = OpcUaLink(OpcUaConfig(port=0, namespace_uri=NS), station_dir=Path("."))
        t0 = time.perf_counter()
        link.start(LineThread())
        wall = time.perf_counter() - t0
        split = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in link.startup_s.items())
        print(f"start-up {i + 1}: start() {wall * 1000:.0f} ms ({split}); load {os.getloadavg()}")
        link.close()
    nodeset = os.environ.get("OPC40100_NODESET")
    if nodeset:
        s = asyncio.run(official_nodeset_import(Path(nodeset)))
        print(f"official OPC 40100 nodeset import (on top of init): {s * 1000:.0f} ms; load {os.getloadavg()}")

    control = LineThread()
    link = OpcUaLink(OpcUaConfig(port=0, namespace_uri=NS), station_dir=Path("."))
    control.link = link
    link.start(control)
    link.set_state("READY")
    assert link.endpoint is not None
    for label, burners in (("no extra load", 0), (f"{args.burners} CPU burners", args.burners)):
        stop = multiprocessing.Event()
        procs = [multiprocessing.Process(target=burn, args=(stop,), daemon=True) for _ in range(burners)]
        for p in procs:
            p.start()
        control.publish_s.clear()
        control.handoff_s.clear()
        try:
            lat = asyncio.run(measure(link.endpoint, args.n, args.interval_ms))
        finally:
            stop.set()
            for p in procs:
                p.join(5)
        ms = [x * 1000 for x in lat]
        pub = [x * 1000 for x in control.publish_s]
        bare = [x * 1000 for x in control.handoff_s]
        print(
            f"{label}: trigger call -> event seen, n={len(ms)}, interval {args.interval_ms:g} ms: "
            f"p50 {statistics.median(ms):.1f} ms, p99 {pct(ms, 0.99):.1f} ms, max {max(ms):.1f} ms; "
            f"publish() p50 {statistics.median(pub) * 1000:.0f} us, p99 {pct(pub, 0.99) * 1000:.0f} us "
            f"(a bare call_soon_threadsafe: p50 {statistics.median(bare) * 1000:.0f} us, "
            f"p99 {pct(bare, 0.99) * 1000:.0f} us); "
            f"load {os.getloadavg()}"
        )
    control.jobs.put(None)
    link.close()


if __name__ == "__main__":
    main()
