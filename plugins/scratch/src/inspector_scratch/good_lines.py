"""The lines good parts show, by direction: the bar a scratch must clear on parts that do not
sit in one place.

Ground, rolled or machined parts carry lines of their own (grinding marks, the part's edges
along the feed) that move from part to part, so no mask can hold them; their direction and
contrast, though, repeat. Taught from good images, each direction (15 degree bins, a line
counts in its own bin and both neighbours) gets the contrast that ``QUANTILE`` of the good
parts' lines in it stay under; a finding in that direction is kept only when its contrast
rises above it. Directions good parts never show keep the configured boundary.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["GoodLines"]

_BINS = 12  # 15 degrees each, over 0-180
# Of the good parts' lines in a direction, this share stay under the taught bar (the rest are
# the rare good part with a stronger mark: tuned on the even half of MT_Free).
QUANTILE = 0.95


class GoodLines:
    """Contrast bar per direction, from (angle_deg, contrast_gray) of lines on good parts."""

    def __init__(self, lines: Iterable[tuple[float, float]]) -> None:
        per_bin: list[list[float]] = [[] for _ in range(_BINS)]
        for angle, contrast in lines:
            b = int(angle % 180.0 // (180.0 / _BINS)) % _BINS
            for k in (b - 1, b, b + 1):
                per_bin[k % _BINS].append(contrast)
        self.bar = np.array([float(np.quantile(v, QUANTILE)) if v else 0.0 for v in per_bin])
        self.lines = sum(len(v) for v in per_bin) // 3

    def clears(self, angle_deg: float, contrast_gray: float) -> bool:
        """Whether a line of this direction and contrast rises above what good parts show."""
        return contrast_gray > self.bar[int(angle_deg % 180.0 // (180.0 / _BINS)) % _BINS]
