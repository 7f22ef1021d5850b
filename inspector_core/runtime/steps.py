"""Step workers: each step's detector in its own thread, with a time budget, and the check of
what it returns."""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from inspector_core.contract import Detector, Finding, View
from inspector_core.runtime.config import Step

log = logging.getLogger(__name__)

MAX_FINDINGS_PER_STEP = 50

# ---------------------------------------------------------------------------- steps


class _StepWorker:
    """Runs one step's detector in its own thread, so that a step that hangs past its budget
    costs the part it hangs on, not the station: the stuck thread is abandoned and the step
    gets a fresh detector instance."""

    def __init__(self, step: Step, station_dir: Path) -> None:
        self.step = step
        self.station_dir = station_dir
        self.detector: Detector = step.detector(step.config, station_dir=station_dir)
        self.detector.warm_up(None)
        self._start_thread()

    def _start_thread(self) -> None:
        self._in: queue.Queue[View | None] = queue.Queue(maxsize=1)
        self._out: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
        detector, inq, outq = self.detector, self._in, self._out

        def loop() -> None:
            while (view := inq.get()) is not None:
                try:
                    outq.put(("ok", detector.inspect(view)))
                except BaseException as exc:  # noqa: BLE001 - the plugin's failure is the part's ERROR
                    outq.put(("error", f"{type(exc).__name__}: {exc}"))

        self._thread = threading.Thread(target=loop, name=f"step-{self.step.name}", daemon=True)
        self._thread.start()

    def run(self, view: View) -> tuple[str, Any, float]:
        t0 = time.perf_counter()
        self._in.put(view)
        try:
            status, value = self._out.get(timeout=self.step.budget_ms / 1000.0)
        except queue.Empty:
            elapsed = (time.perf_counter() - t0) * 1000
            self._replace()
            return "timeout", f"overran its time budget of {self.step.budget_ms:g} ms", elapsed
        return status, value, (time.perf_counter() - t0) * 1000

    def _replace(self) -> None:
        log.warning("step %s overran its budget; starting a fresh detector instance", self.step.name)
        old = self.detector
        self.detector = self.step.detector(self.step.config, station_dir=self.station_dir)
        self.detector.warm_up(None)
        self._start_thread()
        # The old thread is left to finish (or not) on its own; its result is never read.
        threading.Thread(target=old.close, daemon=True).start()

    def close(self) -> None:
        self._in.put(None)
        self.detector.close()


def _findings(value: Any, step: Step) -> list[Finding]:
    if not isinstance(value, list | tuple) or not all(isinstance(f, Finding) for f in value):
        raise TypeError(f"inspect() must return a list of Finding (got {type(value).__name__})")
    kinds = step.detector.kinds
    for f in value:
        if f.kind not in kinds:
            raise ValueError(f"returned a finding of kind {f.kind!r}, not among its declared kinds {kinds}")
    floor = step.detector.report_floor
    kept = sorted((f for f in value if f.score >= floor), key=lambda f: -f.score)
    return kept[:MAX_FINDINGS_PER_STEP]
