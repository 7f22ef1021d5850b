"""Numerical helpers shared by the built-in detectors (and free for any plugin to use).

Only what more than one detector computes the same way lives here, so that a speed-up or a fix
is made once and the detectors' figures stay identical to each other's.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fast_median"]


def fast_median(x: np.ndarray) -> float:
    """``np.median`` of ``x``, exactly (the same float), without partitioning all of it: the
    middle order statistics lie between two quantiles of a small sample (checked by counting),
    so only the values between those are partitioned; anything else falls back to the full
    ``np.median``. About 2x faster than ``np.median`` from 2,000 values up (the scratch and dent
    detectors' noise and texture levels)."""
    x = x.ravel()
    n = x.size
    if n < 2048:
        return float(np.median(x))
    sample = np.sort(x[:: n // 512])
    mid = len(sample) // 2
    lo, hi = sample[mid - 40], sample[mid + 40]
    below = int(np.count_nonzero(x < lo))
    inside = x[(x >= lo) & (x <= hi)]
    k1, k2 = (n - 1) // 2 - below, n // 2 - below
    if k1 < 0 or k2 >= inside.size:
        return float(np.median(x))
    part = np.partition(inside, (k1, k2))
    # np.median's own reduction of the two middle values: their sum in x's type, halved.
    return float((part[k1] + part[k2]) / x.dtype.type(2))
