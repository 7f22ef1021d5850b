"""Live counts of a run, for the terminal and the end-of-run summary."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter, deque

import numpy as np

# ---------------------------------------------------------------------------- progress


@dataclasses.dataclass
class Tally:
    """Live counts of a run, for the terminal and the end-of-run summary.

    Thread-safe: the capture thread (parts dropped under ``drop-oldest``), the inspect thread,
    the sink workers and the terminal's progress line use one tally at once. Change it only
    through :meth:`add` and :meth:`add_reported`; read it through the methods and properties,
    each of which sees one consistent moment."""

    started: float = dataclasses.field(default_factory=time.monotonic)
    verdicts: Counter[str] = dataclasses.field(default_factory=Counter)
    latencies: deque[float] = dataclasses.field(default_factory=lambda: deque(maxlen=2000))
    recent: deque[float] = dataclasses.field(default_factory=lambda: deque(maxlen=200))
    reported: int = 0
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, verdict: str, latency_ms: float | None) -> None:
        with self._lock:
            self.verdicts[verdict] += 1
            self.recent.append(time.monotonic())
            if latency_ms is not None:
                self.latencies.append(latency_ms)

    def add_reported(self, n: int = 1) -> None:
        with self._lock:
            self.reported += n

    def counts(self) -> Counter[str]:
        """A copy of the verdict counts."""
        with self._lock:
            return Counter(self.verdicts)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.verdicts.values())

    def rate(self) -> float:
        with self._lock:
            if len(self.recent) < 2:
                return 0.0
            span = self.recent[-1] - self.recent[0]
            n = len(self.recent)
        return (n - 1) / span if span > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        with self._lock:
            latencies = np.fromiter(self.latencies, float, count=len(self.latencies))
        if not latencies.size:
            return None
        return float(np.percentile(latencies, q))

    def line(self) -> str:
        p50, p99 = self.percentile(50), self.percentile(99)
        lat = f"p50 {p50:.1f} ms  p99 {p99:.1f} ms" if p50 is not None else "p50 -  p99 -"
        v = self.counts()
        return (
            f"{sum(v.values())} parts  {self.rate():.1f} parts/s  {lat}  "
            f"PASS {v['PASS']}  FAIL {v['FAIL']}  ERROR {v['ERROR']}  NOT_INSPECTED {v['NOT_INSPECTED']}"
        )
