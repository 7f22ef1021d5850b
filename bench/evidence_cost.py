"""What keeping whole frames costs a station: the same synthetic station run with evidence off
and on (every part fails, so every frame is kept), alternately, in the same process.

Prints figures; it is not a test. Run: ``.venv/bin/python bench/evidence_cost.py [--n 60] [--rounds 2]``.

Per run: parts/s, ``latency_ms`` (capture to verdict: the inspect thread's cost) and
``commit_latency_ms`` (capture to committed: the writer encodes and fsyncs the frames before
the transaction) p50 / p99, and the writer's encode time per frame. The frame is the synthetic
1024x768 plate; ``fail: downscaled`` (``max_side`` 1600: not scaled) JPEG 90 and ``full`` PNG.
``os.getloadavg()`` beside every figure.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspector_core.testing import run_station


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def one(n: int, evidence: dict | None) -> str:
    with tempfile.TemporaryDirectory(prefix="evidence-cost-") as tmp:
        store: dict = {}
        if evidence is not None:
            store["evidence"] = {**evidence, "min_free_bytes": 0}
        cfg = {
            "source": {"type": "synthetic", "config": {"count": n, "seed": 1, "defect_rate": 0.3}},
            "steps": [{"detector": "bright_spot", "config": {"threshold": 200, "min_area_px": 30}}],
            "store": store,
        }
        t0 = time.perf_counter()
        run_station(cfg, Path(tmp))
        took = time.perf_counter() - t0
        db = sqlite3.connect(Path(tmp) / "inspector.db")
        lat = [r[0] for r in db.execute("SELECT latency_ms FROM inspections")]
        com = [r[0] for r in db.execute("SELECT commit_latency_ms FROM inspections")]
        ev = db.execute("SELECT count(*), coalesce(avg(bytes), 0) FROM evidence WHERE status = 'stored'").fetchone()
        return (
            f"{n / took:5.1f} parts/s, latency p50 {statistics.median(lat):6.1f} p99 {pct(lat, 0.99):6.1f} ms, "
            f"committed p50 {statistics.median(com):6.1f} p99 {pct(com, 0.99):6.1f} ms, "
            f"{ev[0]} frames of {ev[1] / 1e3:.0f} kB; load {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    cases = {
        "off": None,
        "jpeg": {"fail": "downscaled", "format": "jpeg", "quality": 90},
        "png full": {"fail": "full", "format": "png"},
    }
    for r in range(args.rounds):
        for name, ev in cases.items():
            print(f"round {r + 1} evidence {name:8s}: {one(args.n, ev)}", flush=True)


if __name__ == "__main__":
    main()
