"""Trigger -> frame latency of the triggered sources (issue 13), idle and under CPU load.

For each source, N software triggers (``source.trigger(Trigger(...))`` from the main thread, as
the line does) at ``RATE_HZ``, while another thread iterates ``frames()``; the latency is from
``trigger.at_monotonic`` to the frame coming out of ``frames()`` (what the host sees), p50/p99.
Sources: ``triggered_camera`` on a video file paced at 30 fps (a camera that free-runs at
30 fps: the wait for the next frame is most of it), and ``pylon`` on pylon's camera emulator
(``PYLON_CAMEMU=1``, 640x480 Mono8, 1 ms exposure). "load" runs ``LOAD_PROCS`` processes that
spin the CPU beside it, in the same run. Prints ``os.getloadavg()`` beside every figure.

    .venv/bin/python bench/trigger_latency.py [N]
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from inspector_core import SourceContext
from inspector_core.contract import Frame, FrameSource, Trigger

RATE_HZ = 10.0
LOAD_PROCS = 2


def spin(stop: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    x = 0
    while not stop.is_set():
        for i in range(100_000):
            x ^= i


def measure(source: FrameSource, n: int) -> tuple[list[float], int, str]:
    got: dict[int, tuple[float, Frame]] = {}
    done = threading.Event()

    def capture() -> None:
        for frame in source.frames():
            assert frame.trigger is not None
            got[frame.trigger.counter] = (time.monotonic(), frame)
            if len(got) == n:
                done.set()

    t = threading.Thread(target=capture, daemon=True)
    t.start()
    time.sleep(1.0)  # opened
    triggers = []
    for i in range(1, n + 1):
        trig = Trigger(i, datetime.now(UTC), time.monotonic(), 1.0)
        triggers.append(trig)
        source.trigger(trig)
        time.sleep(1 / RATE_HZ)
    done.wait(10)
    source.close()
    t.join(10)
    lat = [(got[x.counter][0] - x.at_monotonic) * 1000 for x in triggers if got[x.counter][1].error is None]
    errors = sum(1 for _, f in got.values() if f.error is not None) + (n - len(got))
    parts = []
    for key in ("trigger_to_exposure_ms", "trigger_to_frame_ms"):
        values = [f.meta[key] for _, f in got.values() if key in f.meta]
        if values:
            parts.append(f"{key} p50 {pct(values, 50):.1f} p99 {pct(values, 99):.1f}")
    return lat, errors, "; ".join(parts)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    os.environ.setdefault("PYLON_CAMEMU", "1")
    from inspector_sources import PylonConfig, PylonSource, TriggeredCameraConfig, TriggeredCameraSource

    tmp = Path(tempfile.mkdtemp())
    video = tmp / "cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 480))
    for i in range(30 * 60):
        writer.write(np.full((480, 640, 3), i % 256, np.uint8))
    writer.release()
    ctx = SourceContext(tmp, lambda kind, msg: print(f"  event {kind}: {msg}"))

    def sources() -> list[tuple[str, FrameSource]]:
        return [
            (
                "triggered_camera 30 fps",
                TriggeredCameraSource(TriggeredCameraConfig(device=str(video), pace_fps=30), ctx),
            ),
            (
                "pylon emulator 640x480",
                PylonSource(PylonConfig(pixel_format="Mono8", width=640, height=480, exposure_us=1000), ctx),
            ),
        ]

    print(f"n={n} triggers per case at {RATE_HZ:g} Hz; latency = trigger -> frame out of frames(), ms")
    for label in ("idle", f"load ({LOAD_PROCS} spinning processes)"):
        stop = multiprocessing.Event()
        procs = []
        if label != "idle":
            procs = [multiprocessing.Process(target=spin, args=(stop,), daemon=True) for _ in range(LOAD_PROCS)]
            for p in procs:
                p.start()
        for name, src in sources():
            lat, errors, breakdown = measure(src, n)
            print(
                f"{label:32s} {name:26s} p50 {pct(lat, 50):6.1f}  p99 {pct(lat, 99):6.1f}  max {max(lat):6.1f}"
                f"  mean {statistics.fmean(lat):6.1f}  errors {errors}  loadavg {os.getloadavg()}"
            )
            print(f"{'':32s} meta: {breakdown}")
        stop.set()
        for p in procs:
            p.join(5)


if __name__ == "__main__":
    main()
