"""Recipe changeover on the demo station with two products (stations/demo-recipes.yaml).

Runs the real chain (misalignment, scratch, dent) on synthetic plates, free-running, and asks for
a changeover every ``--every`` parts, alternating plate-b / plate-a. Per changeover it prints:

- request -> active: the time ``select_recipe`` took (the next recipe's detectors started and
  warmed first; the first switch to plate-b starts its scratch step, later ones find it running);
- request -> first part under the new recipe decided (its verdict), and that part's capture;
- parts in flight at the request and how many of them were decided after it under the old
  recipe (they must keep it: the check fails loudly otherwise);

with the 1-minute load average beside each figure. Usage::

    .venv/bin/python bench/recipe_changeover.py [--parts 80] [--every 15] [--source folder] [--slow-start-ms 2000]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sqlite3
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from inspector_core import Detector, Finding, PluginConfig, View, hookimpl
from inspector_core.plugins import load
from inspector_core.runtime.config import load_station
from inspector_core.runtime.station import StationRuntime

ROOT = Path(__file__).resolve().parents[1]


class _SlowStartConfig(PluginConfig):
    warm_ms: float = 0


class _SlowStart(Detector):
    """Finds nothing; takes ``warm_ms`` to start (sleeping: the start of a large model, off the cores)."""

    name = "slowstart"
    kinds = ("slowstart",)
    Config = _SlowStartConfig

    def warm_up(self, example: Any = None) -> None:
        assert isinstance(self.config, _SlowStartConfig)
        time.sleep(self.config.warm_ms / 1000)

    def inspect(self, view: View) -> list[Finding]:
        return []


class _SlowStartPlugin:
    @staticmethod
    @hookimpl
    def inspector_register_detectors(register: Any) -> None:
        register(_SlowStart)


@dataclasses.dataclass
class Ask:
    to: str
    at: datetime
    select_s: float
    cpu_s: float
    in_flight: int
    load: float


def load1() -> float:
    return os.getloadavg()[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", type=int, default=80)
    ap.add_argument("--every", type=int, default=15, help="parts captured between changeovers")
    ap.add_argument(
        "--source",
        choices=["synthetic", "folder"],
        default="synthetic",
        help="synthetic: plates generated as they are captured (the source sets the pace); folder: the "
        "same plates rendered first, read as fast as the station takes them (a full queue at each request)",
    )
    ap.add_argument(
        "--slow-start-ms",
        type=float,
        default=0,
        help="plate-b gets one more step whose detector takes this long to start (a large model's "
        "load and warm-up): the request waits for it, the parts meanwhile run under plate-a",
    )
    args = ap.parse_args()
    registry = load(extra=[("bench-slow-start", _SlowStartPlugin)])
    tmp = Path(tempfile.mkdtemp(prefix="recipe-bench-"))
    path = ROOT / "stations" / "demo-recipes.yaml"
    if args.slow_start_ms:
        data = yaml.safe_load(path.read_text())
        data["steps"][0]["config"]["reference"] = str(path.parent / data["steps"][0]["config"]["reference"])
        data["recipes"]["plate-b"]["steps"]["model"] = {
            "detector": "slowstart",
            "config": {"warm_ms": args.slow_start_ms},
        }
        path = tmp / "demo-recipes.yaml"
        path.write_text(yaml.safe_dump(data))
    st = load_station(path, registry)
    cfg = st.source_config.model_copy(update={"count": args.parts})
    st = dataclasses.replace(st, store_url=f"sqlite:///{tmp / 'bench.db'}", source_config=cfg)
    if args.source == "folder":
        import cv2
        import numpy as np
        from inspector_sources.synthetic import render_part, truth_for

        frames = tmp / "frames"
        frames.mkdir()
        rng = np.random.default_rng(1)
        for i in range(args.parts):
            cv2.imwrite(str(frames / f"{i:05d}.png"), render_part(1, i, truth_for(i, 0.3, rng)).image)
        folder = registry.sources["folder"]
        fcfg = folder.Config.model_validate({"path": str(frames)}, context={"station_dir": tmp, "check_files": True})
        st = dataclasses.replace(st, source=folder, source_config=fcfg)
    spec = st.spec.model_copy(update={"store": st.spec.store.model_copy(update={"spool": str(tmp / "spool")})})
    st = dataclasses.replace(st, spec=spec)
    rt = StationRuntime(st, registry)
    done = threading.Event()

    def run() -> None:
        try:
            rt.run()
        finally:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    print(
        f"demo-recipes, {args.source} source, {args.parts} parts, a changeover every {args.every}; load {load1():.2f}"
    )
    thread.start()
    while not hasattr(rt, "_control"):  # recipes started, control channel served
        time.sleep(0.01)
    asks: list[Ask] = []
    target = "plate-b"
    while not done.is_set():
        if rt._seq >= (len(asks) + 1) * args.every and rt._seq < args.parts - 5:
            in_flight = rt._pipeline.in_flight() + rt._queue.qsize()
            at = datetime.now(UTC).replace(tzinfo=None)
            c0 = time.thread_time()
            took = rt.select_recipe(target, by="bench")
            asks.append(Ask(target, at, took, time.thread_time() - c0, in_flight, load1()))
            target = "plate-a" if target == "plate-b" else "plate-b"
        time.sleep(0.002)
    thread.join()
    with sqlite3.connect(tmp / "bench.db") as c:
        rows = c.execute(
            "SELECT seq, recipe, captured_at, decided_at, latency_ms FROM inspections ORDER BY id"
        ).fetchall()
    assert [r[0] for r in rows] == list(range(args.parts)), "one inspection per frame, in capture order"
    switches = [i for i in range(1, len(rows)) if rows[i][1] != rows[i - 1][1]]
    assert len(switches) == len(asks), (len(switches), len(asks))
    firsts = []
    for ask, i in zip(asks, switches, strict=True):
        seq, recipe, _captured, decided, latency = rows[i]
        assert recipe == ask.to
        old = rows[i - 1][1]
        kept = sum(1 for r in rows[:i] if r[1] == old and datetime.fromisoformat(r[3]) > ask.at)
        during = sum(1 for r in rows[:i] if datetime.fromisoformat(r[2]) > ask.at)  # captured while it started
        first_ms = (datetime.fromisoformat(decided) - ask.at).total_seconds() * 1000
        firsts.append(first_ms)
        active_at = ask.at + timedelta(seconds=ask.select_s)
        # Bound at capture: the first frame captured once the recipe was active is the new recipe's first part.
        assert next(r[0] for r in rows if datetime.fromisoformat(r[2]) > active_at) == seq
        wait_ms = (datetime.fromisoformat(_captured) - ask.at).total_seconds() * 1000
        print(
            f"{old} -> {recipe}: request -> active {1000 * ask.select_s:.1f} ms (caller CPU "
            f"{1000 * ask.cpu_s:.1f} ms); request -> first {recipe} part (seq {seq}) decided {first_ms:.1f} ms "
            f"(captured {wait_ms:.1f} ms after the request; its own capture -> verdict "
            f"{latency:.1f} ms); in flight at the request {ask.in_flight}, {kept} "
            f"of them decided after it under {old}, {during} captured and inspected under {old} while it started; "
            f"load {ask.load:.2f}"
        )
    lat = statistics.median(r[4] for r in rows if r[4] is not None)
    times = [datetime.fromisoformat(r[2]) for r in rows]
    gap = statistics.median((b - a).total_seconds() * 1000 for a, b in zip(times, times[1:], strict=False))
    print(
        f"every part of the run: capture -> verdict median {lat:.1f} ms, frame interval median {gap:.1f} ms "
        f"(n={len(rows)}); load {load1():.2f}"
    )
    print(
        f"n={len(asks)} changeovers: request -> first part under the new recipe median "
        f"{statistics.median(firsts):.1f} ms, max {max(firsts):.1f} ms; every part kept the recipe it was "
        f"captured with (no part of the old recipe after the first of the new); load {load1():.2f}"
    )


if __name__ == "__main__":
    main()
