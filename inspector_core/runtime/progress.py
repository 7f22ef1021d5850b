"""Live counts of a run, for the terminal and the end-of-run summary."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter, deque

import numpy as np

# ---------------------------------------------------------------------------- progress


@dataclasses.dataclass
class Tally:
    """Live counts of a run, for the terminal and the end-of-run summary."""

    started: float = dataclasses.field(default_factory=time.monotonic)
    verdicts: Counter[str] = dataclasses.field(default_factory=Counter)
    latencies: deque[float] = dataclasses.field(default_factory=lambda: deque(maxlen=2000))
    recent: deque[float] = dataclasses.field(default_factory=lambda: deque(maxlen=200))
    reported: int = 0

    def add(self, verdict: str, latency_ms: float | None) -> None:
        self.verdicts[verdict] += 1
        self.recent.append(time.monotonic())
        if latency_ms is not None:
            self.latencies.append(latency_ms)

    @property
    def total(self) -> int:
        return sum(self.verdicts.values())

    def rate(self) -> float:
        if len(self.recent) < 2:
            return 0.0
        span = self.recent[-1] - self.recent[0]
        return (len(self.recent) - 1) / span if span > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        return float(np.percentile(np.fromiter(self.latencies, float), q))

    def line(self) -> str:
        p50, p99 = self.percentile(50), self.percentile(99)
        lat = f"p50 {p50:.1f} ms  p99 {p99:.1f} ms" if p50 is not None else "p50 -  p99 -"
        v = self.verdicts
        return (f"{self.total} parts  {self.rate():.1f} parts/s  {lat}  "
                f"PASS {v['PASS']}  FAIL {v['FAIL']}  ERROR {v['ERROR']}  NOT_INSPECTED {v['NOT_INSPECTED']}")
