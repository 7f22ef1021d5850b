"""The cost of joining a multi-view part's views (runtime/join.py): CPU time per frame of
``ViewJoin.add`` for 2 and 4 views, parts arriving in order and interleaved, and of building
the part's views for the steps (``inspection.begin_views``, ROIs as numpy views) against
``inspection.begin`` of one frame, on 2448x2048 mono frames. Prints the 1-minute load beside
every figure; CPU time (``time.process_time``) is the figure that holds under load.

    .venv/bin/python bench/views_join.py [--parts 20000]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np

from inspector_core.contract import Frame
from inspector_core.runtime.inspection import begin, begin_views
from inspector_core.runtime.join import ViewJoin
from inspector_core.runtime.views import ViewPlan


def _load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def join_cost(n_views: int, parts: int, interleave: int) -> float:
    """CPU us per frame of ViewJoin.add; ``interleave`` parts are open at once."""
    names = tuple(f"v{i}" for i in range(n_views))
    join = ViewJoin(ViewPlan(names, 500.0, "view", {n: n for n in names}, None))
    item = SimpleNamespace(frame=None)
    order = []
    for start in range(0, parts, interleave):
        block = range(start, min(parts, start + interleave))
        order += [(f"p{p}", v) for v in names for p in block]
    t = time.process_time()
    now = 0.0
    for pid, v in order:
        now += 1e-5
        join.add(v, v, pid, item, now, now)
    return (time.process_time() - t) / len(order) * 1e6


def _station(n_views: int, roi: bool) -> SimpleNamespace:
    names = tuple(f"v{i}" for i in range(n_views))
    r = SimpleNamespace(x=100, y=100, width=1600, height=1600) if roi else None
    steps = [
        SimpleNamespace(index=i, name=f"s{i}", view=names[i % n_views], roi=r, fixture=None) for i in range(2 * n_views)
    ]
    spec = SimpleNamespace(calibration=SimpleNamespace(mm_per_px=None))
    return SimpleNamespace(
        views=ViewPlan(names, 500.0, "view", {}, names[0] if n_views == 1 else None), steps=steps, spec=spec
    )


def begin_cost(n_views: int, reps: int) -> tuple[float, float]:
    """CPU us per part of begin_views (n views) and of begin (one frame), two steps per view."""
    img = np.zeros((2048, 2448), np.uint8)
    frame = Frame("p", img, datetime.now(UTC), {})
    station = _station(n_views, roi=True)
    frames = {v: dataclasses.replace(frame) for v in station.views.names}
    t = time.process_time()
    for _ in range(reps):
        begin_views(frames, {}, station)
    multi = (time.process_time() - t) / reps * 1e6
    one = _station(1, roi=True)
    t = time.process_time()
    for _ in range(reps):
        begin(frame, one)
    return multi, (time.process_time() - t) / reps * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", type=int, default=20000)
    args = ap.parse_args()
    print("| what | n | CPU per frame / part | load 1/5/15 |")
    print("|---|---|---|---|")
    for n_views in (2, 4):
        for interleave in (1, 8):
            us = join_cost(n_views, args.parts, interleave)
            what = f"ViewJoin.add, {n_views} views, {interleave} part(s) open at once"
            print(f"| {what} | {args.parts * n_views} frames | {us:.1f} us | {_load()} |")
    for n_views in (2, 4):
        multi, one = begin_cost(n_views, 2000)
        what = f"begin_views, {n_views} views x 2 steps, 2448x2048 / begin, 1 frame x 2 steps"
        print(f"| {what} | 2000 parts | {multi:.1f} / {one:.1f} us | {_load()} |")


if __name__ == "__main__":
    main()
