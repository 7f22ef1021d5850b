"""Speed of the classical detectors (scratch, dent, misalignment) on a 5 MP mono frame, one core.

Each detector inspects a generated 2448x2048 mono frame (the demo's synthetic part scaled up, a
rendered dent panel for dent) warm, ``--runs`` times with ``cv2.setNumThreads(1)``. Beside each
it prints a plain reference measured in the same run on the same frame: a Gaussian blur
(sigma 1.5) followed by Canny (50, 150), so that a figure taken on a loaded machine can still
be read as a ratio. Wall-clock and CPU time (``time.thread_time``: what the call costs on a free
core, which a loaded machine barely changes) are both printed, with the load average.

``dent+misalignment:own`` and ``:shared``: the two on one frame, each on a view of its own, with
their views given one ``View.pyramid`` (``shared``, as a station does) or not; the difference is
the pyrDown levels the second detector no longer computes.

    python bench/detector_speed.py [--runs 30] [--only scratch,dent,misalignment]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRAME = (2448, 2048)  # width, height


def _ms(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU (this thread's) milliseconds of one call. With one OpenCV thread all
    the work runs on this thread, so the CPU figure is what the call costs on one free core;
    the wall figure also holds the time other processes took the core away."""
    w0, c0 = time.perf_counter(), time.thread_time()
    fn()
    return (time.perf_counter() - w0) * 1000, (time.thread_time() - c0) * 1000


def _reference(gray: np.ndarray) -> Callable[[], object]:
    def run() -> object:
        return cv2.Canny(cv2.GaussianBlur(gray, (0, 0), 1.5), 50, 150)

    return run


def _synthetic_frame(
    seed: int, i: int, truth: Literal["good", "scratch", "misalignment"], interpolation: int = cv2.INTER_LINEAR
) -> np.ndarray:
    """The demo's part, scaled up as bench/eval_scratch.py (linear) and eval_misalignment.py (cubic) do."""
    from inspector_sources.synthetic import render_part

    return cv2.resize(render_part(seed, i, truth, color=False).image, FRAME, interpolation=interpolation)


def scratch_case(tmp: Path) -> tuple[Callable[[], object], np.ndarray]:
    from inspector_scratch import ScratchConfig, ScratchDetector

    from inspector_core import View

    det = ScratchDetector(ScratchConfig(), station_dir=tmp)
    det.warm_up()
    frame = _synthetic_frame(3, 0, "scratch")
    # A new view per call, as the station makes per part: a view's pyramid (View.pyramid) is kept
    # with it, so one view inspected again would time its levels once only.
    return (lambda: det.inspect(View(image=frame, part_id="bench"))), frame


def dent_case(tmp: Path) -> tuple[Callable[[], object], np.ndarray]:
    from inspector_dent import DentConfig, DentDetector
    from inspector_sources.synthetic import render_dent_panel

    from inspector_core import View

    det = DentDetector(DentConfig(), station_dir=tmp)
    det.warm_up()
    frame = render_dent_panel(
        np.random.default_rng(0), (FRAME[1], FRAME[0]), diameter_px=200, depth_px=6, noise_sigma=2
    ).image
    if frame.ndim == 3:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    return (lambda: det.inspect(View(image=frame, part_id="bench"))), frame


def _misalignment(tmp: Path) -> tuple[object, np.ndarray]:
    from inspector_misalignment import MisalignmentConfig, MisalignmentDetector

    goods = [_synthetic_frame(7, i, "good", cv2.INTER_CUBIC) for i in range(3)]
    reference = np.median(np.stack(goods), axis=0).astype(np.uint8)
    cv2.imwrite(str(tmp / "reference.png"), reference)
    det = MisalignmentDetector(MisalignmentConfig(reference="reference.png"), station_dir=tmp)
    det.warm_up()
    return det, _synthetic_frame(11, 2, "misalignment", cv2.INTER_CUBIC)


def misalignment_case(tmp: Path) -> tuple[Callable[[], object], np.ndarray]:
    from inspector_core import View

    det, frame = _misalignment(tmp)
    return (lambda: det.inspect(View(image=frame, part_id="bench"))), frame  # type: ignore[attr-defined]


def _pair(tmp: Path, shared: bool) -> tuple[Callable[[], object], np.ndarray]:
    """Dent and misalignment on one part's frame, one after the other, as two steps of a station
    without ROIs: each on a view of its own, the two views given one pyramid (``shared``, as the
    station does since issue 12) or not (each computes its own levels, as before)."""
    from inspector_dent import DentConfig, DentDetector

    from inspector_core import View

    try:
        from inspector_core.runtime.pyramids import share_pyramids
    except ImportError:  # before View.pyramid
        share_pyramids = None  # type: ignore[assignment]
    mis_det, frame = _misalignment(tmp)
    dent = DentDetector(DentConfig(), station_dir=tmp)
    dent.warm_up()

    def run() -> object:
        a, b = View(image=frame, part_id="bench"), View(image=frame, part_id="bench")
        if shared and share_pyramids is not None:
            share_pyramids([a, b])
        return mis_det.inspect(a), dent.inspect(b)  # type: ignore[attr-defined]

    return run, frame


def pair_own_case(tmp: Path) -> tuple[Callable[[], object], np.ndarray]:
    return _pair(tmp, shared=False)


def pair_shared_case(tmp: Path) -> tuple[Callable[[], object], np.ndarray]:
    return _pair(tmp, shared=True)


CASES = {
    "scratch": scratch_case,
    "dent": dent_case,
    "misalignment": misalignment_case,
    "dent+misalignment:own": pair_own_case,
    "dent+misalignment:shared": pair_shared_case,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30, help="timed runs per detector (after one warm run)")
    ap.add_argument("--only", default=",".join(CASES), help="comma-separated detectors")
    ap.add_argument("--profile", action="store_true", help="also print a pyinstrument profile per detector")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise SystemExit(f"detector_speed: unknown detector(s) {unknown}; choose from {list(CASES)}")
    print(f"# classical detectors on a {FRAME[0]}x{FRAME[1]} mono frame, one thread, n={args.runs} each")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        "| detector | clock | median ms | best ms | blur+Canny median ms | best ms "
        "| ratio median | ratio best | load 1m |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for name in names:
            tmp = Path(d) / name.replace(":", "-")
            tmp.mkdir()
            run, frame = CASES[name](tmp)
            ref = _reference(frame)
            # Interleave detector and reference runs so that both see the same load.
            det_t: list[tuple[float, float]] = []
            ref_t: list[tuple[float, float]] = []
            run()
            ref()
            for _ in range(args.runs):
                det_t.append(_ms(run))
                ref_t.append(_ms(ref))
            for col, clock in enumerate(("wall", "CPU")):
                dt, rt = [t[col] for t in det_t], [t[col] for t in ref_t]
                dm, db = float(np.median(dt)), min(dt)
                rm, rb = float(np.median(rt)), min(rt)
                print(
                    f"| {name} | {clock} | {dm:.1f} | {db:.1f} | {rm:.1f} | {rb:.1f} | {dm / rm:.2f} | {db / rb:.2f} "
                    f"| {os.getloadavg()[0]:.2f} |"
                )
            sys.stdout.flush()
            if args.profile:
                from pyinstrument import Profiler

                prof = Profiler(interval=0.0005)
                prof.start()
                for _ in range(args.runs):
                    run()
                prof.stop()
                print(prof.output_text(unicode=False, color=False, show_all=False))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
