"""Cost of crash isolation per part: the same step in-thread and with ``isolation: process``,
calls alternated on the same 2448x2048 mono frame, in one run.

For each detector, two step workers (runtime/steps.py StepWorker) are started, one per
isolation, warmed up, then called alternately ``--runs`` times each (so both see the same
load). Printed: median and p90 wall time of ``StepWorker.run`` (what the part waits for: for
the isolated one the copy into shared memory, the pipe both ways, the worker's wake-up and its
``inspect``), mean CPU per call (in-thread: the thread time of ``inspect``; isolated: the
station's side plus the worker's ``inspect``), and the difference of the medians, which is the
overhead. Detectors: the third-party test plugin's ``sleeper`` with 0 ms (``inspect`` does
nothing: pure overhead; only where tests/thirdparty_plugin is installed) and ``scratch``.
The load average is printed before and after.

    python bench/isolation.py [--runs 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FRAME = (2448, 2048)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100, help="calls per worker (alternated)")
    args = ap.parse_args(argv)

    from inspector_core.contract import View
    from inspector_core.plugins import load as load_plugins
    from inspector_core.runtime.config import Step
    from inspector_core.runtime.steps import StepWorker, close_steps

    registry = load_plugins()
    cases: list[tuple[str, dict[str, Any]]] = [("scratch", {})]
    if "sleeper" in registry.detectors:
        cases.insert(0, ("sleeper", {"sleep_ms": 0}))
    rng = np.random.default_rng(0)
    image = (100 + rng.normal(0, 5, (FRAME[1], FRAME[0]))).clip(0, 255).astype(np.uint8)
    print(f"# isolation overhead: {FRAME[0]}x{FRAME[1]} mono frame, {args.runs} calls per worker, alternated")
    print(f"load average before: {load()}")
    print("| detector | isolation | wall p50 ms | wall p90 ms | CPU ms per call | load 1m |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for name, config in cases:
            cls = registry.detectors[name]
            info = registry.plugin_of("detector", name)
            entry_point = info.name if info and info.distribution else None
            workers = {
                iso: StepWorker(
                    Step(0, name, cls, cls.Config.model_validate(config), None, 60_000.0, None, iso),
                    Path(d),
                    entry_point=entry_point,
                )
                for iso in ("thread", "process")
            }
            wall: dict[str, list[float]] = {k: [] for k in workers}
            try:
                for w in workers.values():
                    w.run(View(image, "warm"))
                cpu0 = {k: w.cpu_ms + w.worker_cpu_ms for k, w in workers.items()}
                for i in range(args.runs):
                    for iso, w in workers.items():
                        t0 = time.perf_counter()
                        out = w.run(View(image, f"p{i}"))
                        wall[iso].append((time.perf_counter() - t0) * 1000)
                        assert out.status == "ok", out.error
                for iso, w in workers.items():
                    cpu = (w.cpu_ms + w.worker_cpu_ms - cpu0[iso]) / args.runs
                    p90 = sorted(wall[iso])[int(0.9 * (len(wall[iso]) - 1))]
                    print(
                        f"| {name} | {iso} | {statistics.median(wall[iso]):.2f} | {p90:.2f} | {cpu:.2f} "
                        f"| {os.getloadavg()[0]:.2f} |"
                    )
                diff = statistics.median(wall["process"]) - statistics.median(wall["thread"])
                print(f"| {name} | overhead (p50 difference) | {diff:+.2f} | | | |")
            finally:
                close_steps(list(workers.values()))
    print(f"load average after: {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
