"""SPC on measurements: control charts over what detectors measure (a finding's ``measurements``
JSON: scratch ``length_mm``, misalignment ``shift_mm``, a plugin's own numbers).

A *series* is one measurement of one finding kind at one station (``scratch.length_mm``), in
capture order. Two charts (Montgomery, *Introduction to Statistical Quality Control*, ch. 6):

- **individuals / moving range** (subgroup size 1): centre x-bar, limits x-bar +- 3 MR-bar / d2
  (d2 = 1.128, i.e. +- 2.66 MR-bar); MR chart UCL = D4 MR-bar = 3.267 MR-bar, LCL 0.
- **X-bar / R** (consecutive subgroups of n = 2..10 values): limits x-double-bar +- A2 R-bar; R
  chart D3 R-bar .. D4 R-bar.

Limits are **frozen** from a baseline (phase I: the first ``baseline`` points, or those captured
before ``baseline_until``) and applied to every point after it (phase II); points in the
baseline are judged against the limits they made. Rules (:data:`RULES`): Western Electric
1-4 and Nelson's trend rule, on the X / X-bar chart; a range point above its UCL is flagged too.

Capability against the spec limits of the station file's ``measurements:`` section: **Cpk** uses
the *within* sigma of the baseline, sigma-hat = R-bar / d2 (MR-bar / 1.128 for individuals);
**Ppk** the *overall* sample standard deviation (n - 1) of the baseline. Both over the baseline
only, the process as it was when the limits were frozen.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from inspector_core.qa.filters import D, I, QueryError, S

# Montgomery, Appendix VI: factors for constructing variables control charts.
D2 = {2: 1.128, 3: 1.693, 4: 2.059, 5: 2.326, 6: 2.534, 7: 2.704, 8: 2.847, 9: 2.970, 10: 3.078}
A2 = {2: 1.880, 3: 1.023, 4: 0.729, 5: 0.577, 6: 0.483, 7: 0.419, 8: 0.373, 9: 0.337, 10: 0.308}
D3 = {2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0, 6: 0.0, 7: 0.076, 8: 0.136, 9: 0.184, 10: 0.223}
D4 = {2: 3.267, 3: 2.574, 4: 2.282, 5: 2.114, 6: 2.004, 7: 1.924, 8: 1.864, 9: 1.816, 10: 1.777}

RULES = {
    "WE1": "one point beyond 3 sigma",
    "WE2": "2 of 3 consecutive points beyond 2 sigma, same side",
    "WE3": "4 of 5 consecutive points beyond 1 sigma, same side",
    "WE4": "8 consecutive points on one side of the centre line",
    "N3": "6 points in a row steadily increasing or decreasing (Nelson 3)",
    "R": "range above its upper limit",
}


@dataclasses.dataclass(frozen=True)
class Limits:
    centre: float
    ucl: float
    lcl: float
    sigma: float
    """Sigma of a plotted point (X or X-bar): (ucl - centre) / 3."""
    r_centre: float
    r_ucl: float
    r_lcl: float
    within_sigma: float
    """sigma-hat of one value: R-bar / d2 (MR-bar / 1.128 for individuals)."""
    overall_sigma: float
    """Sample standard deviation of the baseline's values."""
    n: int
    """Subgroup size (1: individuals)."""
    baseline_points: int


@dataclasses.dataclass(frozen=True)
class ChartPoint:
    index: int
    at: datetime | None
    value: float
    """X (individuals) or the subgroup's mean."""
    range: float | None
    """Moving range to the previous value, or the subgroup's range (None for the first individual)."""
    phase: str
    """``I`` (baseline) or ``II``."""
    rules: tuple[str, ...]
    inspection_ids: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class Capability:
    lsl: float | None
    usl: float | None
    cpk: float | None
    ppk: float | None
    cp: float | None
    pp: float | None


@dataclasses.dataclass(frozen=True)
class Chart:
    series: str
    station: str
    limits: Limits
    points: list[ChartPoint]
    capability: Capability | None

    @property
    def alarms(self) -> list[ChartPoint]:
        return [p for p in self.points if p.rules]

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for p in d["points"]:
            p["at"] = p["at"].isoformat() + "Z" if p["at"] else None
        return d


def limits(values: Sequence[float] | Sequence[Sequence[float]], n: int) -> Limits:
    """Phase I limits from baseline ``values`` (plain values for n = 1, else subgroups of n)."""
    if n == 1:
        xs = [float(v) for v in values]  # type: ignore[arg-type]
        if len(xs) < 2:
            raise QueryError("an individuals chart needs at least 2 baseline values")
        mrs = [abs(b - a) for a, b in zip(xs, xs[1:], strict=False)]
        xbar, mrbar = statistics.fmean(xs), statistics.fmean(mrs)
        within = mrbar / D2[2]
        return Limits(
            xbar, xbar + 3 * within, xbar - 3 * within, within, mrbar, D4[2] * mrbar, 0.0, within, _sd(xs), 1, len(xs)
        )
    if n not in D2:
        raise QueryError(f"subgroup size {n}: 1 (individuals) or 2..10 (X-bar / R)")
    groups = [[float(v) for v in g] for g in values]  # type: ignore[union-attr]
    if len(groups) < 2 or any(len(g) != n for g in groups):
        raise QueryError(f"an X-bar / R chart needs at least 2 baseline subgroups of {n}")
    means = [statistics.fmean(g) for g in groups]
    rbar = statistics.fmean(max(g) - min(g) for g in groups)
    xbb = statistics.fmean(means)
    within = rbar / D2[n]
    flat = [v for g in groups for v in g]
    return Limits(
        xbb,
        xbb + A2[n] * rbar,
        xbb - A2[n] * rbar,
        A2[n] * rbar / 3,
        rbar,
        D4[n] * rbar,
        D3[n] * rbar,
        within,
        _sd(flat),
        n,
        len(groups),
    )


def _sd(xs: Sequence[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def capability(lim: Limits, lsl: float | None, usl: float | None) -> Capability | None:
    """Cpk (within sigma) and Ppk (overall sigma) of the baseline against the spec limits."""
    if lsl is None and usl is None:
        return None

    def index(sigma: float) -> tuple[float | None, float | None]:
        if sigma <= 0:
            return None, None
        sides = [(usl - lim.centre) if usl is not None else None, (lim.centre - lsl) if lsl is not None else None]
        k = min(s for s in sides if s is not None) / (3 * sigma)
        both = (usl - lsl) / (6 * sigma) if usl is not None and lsl is not None else None
        return k, both

    cpk, cp = index(lim.within_sigma)
    ppk, pp = index(lim.overall_sigma)
    return Capability(lsl, usl, cpk, ppk, cp, pp)


def rules_hit(values: Sequence[float], lim: Limits) -> list[tuple[str, ...]]:
    """Which rules each point trips (the point that completes a pattern carries it)."""
    c, s = lim.centre, lim.sigma
    out: list[list[str]] = [[] for _ in values]
    z = [(v - c) / s if s > 0 else 0.0 for v in values]
    for i, zi in enumerate(z):
        if abs(zi) > 3:
            out[i].append("WE1")
        for rule, width, need, beyond in (("WE2", 3, 2, 2), ("WE3", 5, 4, 1)):
            w = z[max(0, i - width + 1) : i + 1]
            if len(w) == width and abs(zi) > beyond:
                side = 1 if zi > 0 else -1
                if sum(1 for x in w if x * side > beyond) >= need:
                    out[i].append(rule)
        w8 = z[max(0, i - 7) : i + 1]
        if len(w8) == 8 and (all(x > 0 for x in w8) or all(x < 0 for x in w8)):
            out[i].append("WE4")
        w6 = values[max(0, i - 5) : i + 1]
        if len(w6) == 6:
            d = [b - a for a, b in zip(w6, w6[1:], strict=False)]
            if all(x > 0 for x in d) or all(x < 0 for x in d):
                out[i].append("N3")
    return [tuple(r) for r in out]


def chart(
    values: Sequence[float],
    *,
    n: int = 1,
    baseline: int | None = None,
    times: Sequence[datetime | None] | None = None,
    ids: Sequence[int] | None = None,
    lsl: float | None = None,
    usl: float | None = None,
    series: str = "",
    station: str = "",
) -> Chart:
    """The chart of ``values`` in order: limits from the first ``baseline`` points (values for
    n = 1, subgroups otherwise; default: all complete ones, i.e. phase I only), applied to all."""
    ts = list(times) if times is not None else [None] * len(values)
    iid = list(ids) if ids is not None else [0] * len(values)
    if n == 1:
        pts_v = [float(v) for v in values]
        ranges: list[float | None] = [None] + [abs(b - a) for a, b in zip(pts_v, pts_v[1:], strict=False)]
        pts_t = ts
        pts_ids: list[tuple[int, ...]] = [(i,) for i in iid]
        base_n = len(pts_v) if baseline is None else baseline
        lim = limits(pts_v[:base_n], 1)
    else:
        k = len(values) // n
        groups = [[float(v) for v in values[j * n : (j + 1) * n]] for j in range(k)]
        pts_v = [statistics.fmean(g) for g in groups]
        ranges = [max(g) - min(g) for g in groups]
        pts_t = [ts[j * n + n - 1] for j in range(k)]
        pts_ids = [tuple(iid[j * n : (j + 1) * n]) for j in range(k)]
        base_n = k if baseline is None else baseline
        lim = limits(groups[:base_n], n)
    hits = rules_hit(pts_v, lim)
    points = []
    for j, v in enumerate(pts_v):
        r = list(hits[j])
        rg = ranges[j]
        if rg is not None and rg > lim.r_ucl:
            r.append("R")
        points.append(ChartPoint(j, pts_t[j], v, rg, "I" if j < base_n else "II", tuple(r), pts_ids[j]))
    return Chart(series, station, lim, points, capability(lim, lsl, usl))


# ---------------------------------------------------------------------------- from the store


def series_names(engine: Engine, station: str) -> list[str]:
    """``kind.name`` of every numeric measurement stored for the station's findings."""
    seen: set[str] = set()
    with engine.connect() as conn:
        q = (
            select(D.kind, D.measurements)
            .join(I, I.id == D.inspection_id)
            .join(S, S.id == I.station_id)
            .where(S.name == station)
        )
        for kind, m in conn.execute(q):
            for k, v in (m or {}).items():
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                    seen.add(f"{kind}.{k}")
    return sorted(seen)


def read_series(
    engine: Engine,
    station: str,
    series: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    failed_only: bool = False,
) -> list[tuple[datetime, int, float]]:
    """``(captured_at, inspection_id, value)`` of ``kind.name`` in capture order, one per stored
    finding that has the value (non-numeric and non-finite values are left out)."""
    kind, _, name = series.partition(".")
    if not kind or not name:
        raise QueryError(f"series {series!r}: KIND.MEASUREMENT, e.g. scratch.length_mm")
    q = (
        select(I.captured_at, I.id, D.id.label("did"), D.measurements)
        .join(I, I.id == D.inspection_id)
        .join(S, S.id == I.station_id)
        .where(S.name == station, D.kind == kind)
        .order_by(I.captured_at, I.id, D.id)
    )
    if since is not None:
        q = q.where(I.captured_at >= since)
    if until is not None:
        q = q.where(I.captured_at < until)
    if failed_only:
        q = q.where(D.failed.is_(True))
    out = []
    with engine.connect() as conn:
        for r in conn.execute(q):
            v = (r.measurements or {}).get(name)
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                out.append((r.captured_at, r.id, float(v)))
    return out


def store_chart(
    engine: Engine,
    station: str,
    series: str,
    *,
    n: int = 1,
    baseline: int | None = None,
    baseline_until: datetime | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    lsl: float | None = None,
    usl: float | None = None,
) -> Chart:
    """The chart of one stored series. The baseline: the first ``baseline`` points, or the
    points captured before ``baseline_until``, else all (phase I only)."""
    rows = read_series(engine, station, series, since=since, until=until)
    if not rows:
        raise QueryError(f"station {station!r} has no stored values of {series!r} in the window")
    if baseline_until is not None:
        before = sum(1 for t, _, _ in rows if t < baseline_until)
        baseline = before if n == 1 else before // n
    return chart(
        [v for _, _, v in rows],
        n=n,
        baseline=baseline,
        times=[t for t, _, _ in rows],
        ids=[i for _, i, _ in rows],
        lsl=lsl,
        usl=usl,
        series=series,
        station=station,
    )
