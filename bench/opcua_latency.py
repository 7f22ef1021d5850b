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
        results = await vs.get_child(f"{mv}:ResultManagement")
        ack = await results.get_child(f"{st}:Acknowledge")
        base = int(time.time()) % 1_000_000 * 1000
        latencies = []
        for i in range(n):
            counter = base + i + 1
            t0 = time.perf_counter()
            await vs.call_method(trigger, ua.Variant(counter, ua.VariantType.UInt32), f"P{counter}", "")
            while counter not in got:
                await asyncio.sleep(0.0005)
            latencies.append(got[counter] - t0)
            await results.call_method(ack, ua.Variant(counter, ua.VariantType.UInt32))
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
    ap.add_argument("--station", action="store_true", help="also a real station (stations/demo-line.yaml)")
    ap.add_argument("--station-n", type=int, default=100)
    args = ap.parse_args()

    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        os.environ["INSPECTOR_CACHE_DIR"] = cache  # a cold cache of this run's own
        kinds = [("no cache", False)] + [("cache", True)] * args.starts
        for i, (label, use_cache) in enumerate(kinds):
            cfg = OpcUaConfig(port=0, namespace_uri=NS, address_space_cache=use_cache)
            link = OpcUaLink(cfg, station_dir=Path("."))
            t0 = time.perf_counter()
            link.start(LineThread())
            wall = time.perf_counter() - t0
            split = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in link.startup_s.items())
            how = f"{label}, {'loaded from it' if link.address_space_cached else 'built'}"
            print(f"start-up {i + 1} ({how}): start() {wall * 1000:.0f} ms ({split}); load {os.getloadavg()}")
            link.close()
        del os.environ["INSPECTOR_CACHE_DIR"]
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
    if args.station:
        station_latency(args.station_n, args.interval_ms)


def modbus_measure(port: int, n: int) -> list[float]:
    """The same over Modbus (the simulator's PLC): trigger write -> result in the ring, polled."""
    from inspector_line.simulate import ModbusPlc

    plc = ModbusPlc("127.0.0.1", port)
    latencies = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            counter = plc.trigger("", product=1)
            while counter not in plc.ring():
                time.sleep(0.0005)
            latencies.append(time.perf_counter() - t0)
            plc.acknowledge(counter)
            time.sleep(0.002)
    finally:
        plc.close()
    return latencies


def station_latency(n: int, interval_ms: float) -> None:
    """stations/demo-line.yaml (three detectors, 1024x768 plates) on OPC UA, then on Modbus, in
    the same run: trigger -> result seen by the client, inspection and commit included; one part
    at a time."""
    import tempfile

    import yaml
    from inspector_line.cli import run_station_in_thread

    from inspector_core.plugins import load
    from inspector_core.runtime.config import load_station

    root = Path(__file__).resolve().parents[1]
    spec = yaml.safe_load((root / "stations" / "demo-line.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        for step in spec["steps"]:
            ref = step.get("config", {}).get("reference")
            if ref:
                step["config"]["reference"] = str(root / "stations" / ref)
        spec["store"] = {"url": "sqlite:///bench.db"}
        spec.pop("sinks", None)
        registry = load()
        lines = {
            "opcua": {"protocol": "opcua", "config": {"port": 0, "namespace_uri": NS}, "deadline_ms": 2000},
            "modbus": {"protocol": "modbus", "config": {"host": "127.0.0.1", "port": 0}, "deadline_ms": 2000},
        }
        for protocol, line in lines.items():
            spec["line"] = line
            spec["store"] = {"url": f"sqlite:///bench-{protocol}.db"}
            path = Path(tmp) / f"demo-{protocol}.yaml"
            path.write_text(yaml.safe_dump(spec))
            station = load_station(path, registry)
            runtime, thread, failure = run_station_in_thread(station, registry, 0)
            if failure or runtime._line is None:
                raise SystemExit(f"the station did not start: {failure}")
            link = runtime._line.link
            try:
                if protocol == "opcua":
                    lat = asyncio.run(measure(link.endpoint, n, interval_ms))
                else:
                    lat = modbus_measure(link.port, n)
            finally:
                runtime.stop()
                thread.join(60)
            ms = [x * 1000 for x in lat]
            print(
                f"demo-line station over {protocol}: trigger -> result seen (inspection and commit included), "
                f"n={len(ms)}: p50 {statistics.median(ms):.1f} ms, p99 {pct(ms, 0.99):.1f} ms, max {max(ms):.1f} ms; "
                f"load {os.getloadavg()}"
            )


if __name__ == "__main__":
    main()
