"""Statistical process control over the periods of :mod:`inspector_core.qa.stats`."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inspector_core.qa.stats import PeriodStats


@dataclasses.dataclass(frozen=True)
class PChartPoint:
    station: str
    label: str
    start: datetime
    n: int
    rejects: int
    p: float
    ucl: float
    lcl: float
    out_of_control: bool


def p_chart(periods: Sequence[PeriodStats]) -> tuple[list[PChartPoint], dict[str, float]]:
    """Reject-rate p-chart per station: 3-sigma limits around the window's mean rate,
    varying with each bucket's size."""
    by_station: dict[str, list[PeriodStats]] = defaultdict(list)
    for p in periods:
        if p.judged:
            by_station[p.station].append(p)
    points, p_bars = [], {}
    for station, ps in sorted(by_station.items()):
        n_all = sum(p.judged for p in ps)
        p_bar = sum(p.rejects for p in ps) / n_all
        p_bars[station] = p_bar
        for p in ps:
            sigma = math.sqrt(p_bar * (1 - p_bar) / p.judged)
            ucl, lcl = min(1.0, p_bar + 3 * sigma), max(0.0, p_bar - 3 * sigma)
            rate = p.rejects / p.judged
            points.append(
                PChartPoint(station, p.label, p.start, p.judged, p.rejects, rate, ucl, lcl, rate > ucl or rate < lcl)
            )
    return points, p_bars
