"""What one shared ``View.pyramid`` saves (issue 12): dent and misalignment on one 2448x2048 mono
frame, as two steps of a part without ROIs, each on a view of its own, with their two views given
one pyramid (as the station does) or each its own (as before: both computed levels 1-2).

The two variants alternate call by call (which one goes first alternates too), so that a loaded
machine's drift falls on both alike; the figure is the median of the paired differences of CPU
time (``time.thread_time``, one OpenCV thread), beside the medians and the cost of the levels
themselves (``cv2.pyrDown`` twice of the frame), with the load average.

    python bench/pyramid_share.py [--runs 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from detector_speed import _misalignment  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200, help="calls of each variant, alternated")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    from inspector_dent import DentConfig, DentDetector

    from inspector_core import View
    from inspector_core.runtime.pyramids import share_pyramids

    print(f"# dent + misalignment on one 2448x2048 mono frame, one thread, n={args.runs} alternated pairs")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as d:
        mis, frame = _misalignment(Path(d))
        dent = DentDetector(DentConfig(), station_dir=Path(d))
        dent.warm_up()

        def run(shared: bool) -> float:
            a, b = View(frame, "bench"), View(frame, "bench")
            if shared:
                share_pyramids([a, b])
            c0 = time.thread_time()
            mis.inspect(a)  # type: ignore[attr-defined]
            dent.inspect(b)
            return (time.thread_time() - c0) * 1000

        def levels() -> float:
            c0 = time.thread_time()
            cv2.pyrDown(cv2.pyrDown(frame))
            return (time.thread_time() - c0) * 1000

        run(True), run(False)
        own, shared, lv = [], [], []
        for i in range(args.runs):
            if i % 2:
                own.append(run(False))
                shared.append(run(True))
            else:
                shared.append(run(True))
                own.append(run(False))
            lv.append(levels())
    o, s = np.array(own), np.array(shared)
    diff = o - s
    q1, q3 = np.quantile(diff, [0.25, 0.75])
    print("| variant | CPU median ms | best ms |")
    print("|---|---|---|")
    print(f"| own pyramids (before) | {np.median(o):.2f} | {o.min():.2f} |")
    print(f"| one shared pyramid | {np.median(s):.2f} | {s.min():.2f} |")
    print(f"| levels 1-2 alone (cv2.pyrDown x2) | {np.median(lv):.2f} | {min(lv):.2f} |")
    print(
        f"paired saving per part: median {np.median(diff):.2f} ms (quartiles {q1:.2f} .. {q3:.2f}), "
        f"{np.median(diff) / np.median(o) * 100:.1f} % of the two steps"
    )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
