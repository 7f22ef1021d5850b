"""Yield, first-pass yield, rejects, latency and Pareto per period: from the roll-up or the
inspections. Both paths reduce the window to the same hourly groups (:class:`HourGroup`, one
per station, hour and verdict, with the first-part counts defined once by
:func:`first_pass_part`) and are finished by the same functions, so both define every figure
the same way."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    Engine,
    and_,
    case,
    exists,
    func,
    inspect,
    or_,
    select,
)
from sqlalchemy.sql.expression import ColumnElement

from inspector_core.qa.dialect import Buckets, _Hour, _hour_value
from inspector_core.qa.filters import HL, D, H, HistoryFilter, I, Period, S, _where
from inspector_core.qa.spc import PChartPoint, p_chart
from inspector_core.store import HourRollup, bucket_value, hour_of, schema

# ---------------------------------------------------------------------------- stats


@dataclasses.dataclass
class PeriodStats:
    station: str
    bucket: int
    label: str
    start: datetime
    parts: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    not_inspected: int = 0
    distinct_parts: int = 0
    first_pass: int = 0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    """Capture to verdict (``inspections.latency_ms``)."""
    commit_latency_p50_ms: float | None = None
    commit_latency_p99_ms: float | None = None
    """Capture to committed (``inspections.commit_latency_ms``, migration 0008), exact; ``None`` when
    the window holds more than :data:`COMMIT_LATENCY_MAX_ROWS` of them, or none (older rows)."""

    @property
    def judged(self) -> int:
        return self.parts - self.not_inspected

    @property
    def rejects(self) -> int:
        return self.failed + self.errors

    @property
    def yield_(self) -> float | None:
        return self.passed / self.judged if self.judged else None

    @property
    def first_pass_yield(self) -> float | None:
        return self.first_pass / self.distinct_parts if self.distinct_parts else None

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["start"] = self.start.isoformat() + "Z"
        d.update(judged=self.judged, rejects=self.rejects, yield_=self.yield_, first_pass_yield=self.first_pass_yield)
        d["yield"] = d.pop("yield_")
        return d


@dataclasses.dataclass(frozen=True)
class ParetoRow:
    kind: str
    defects: int
    parts: int
    share: float
    cumulative: float


@dataclasses.dataclass(frozen=True)
class DeliveryLatency:
    """Capture to delivered for one sink of a station, over the window's inspections the sink took
    (``sink_deliveries``, migration 0008), on the clock of ``latency_ms``. Sinks are those that have
    taken at least one verdict; an inspection is owed to a sink from its first saved range on. ``delivered_at`` is when
    the sink's cursor was saved after it accepted them: exact for the last inspection of each saved
    range, an upper bound (by at most a delivery batch or ``cursor_every_s``) for the others."""

    station: str
    sink: str
    delivered: int
    """Inspections of the window the sink has taken (of those with a latency)."""
    undelivered: int
    """Inspections of the window owed to the sink (after its cursor's start) not yet taken."""
    p50_ms: float | None
    p99_ms: float | None


@dataclasses.dataclass
class Stats:
    period: Period
    since: datetime | None
    until: datetime | None
    periods: list[PeriodStats]
    totals: list[PeriodStats]
    """One row per station over the whole window (``bucket`` -1)."""
    pareto: list[ParetoRow]
    pchart: list[PChartPoint]
    p_bar: dict[str, float]
    delivery: list[DeliveryLatency] = dataclasses.field(default_factory=list)
    """Capture to delivered per station and sink (totals over the window)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "since": self.since.isoformat() + "Z" if self.since else None,
            "until": self.until.isoformat() + "Z" if self.until else None,
            "totals": [p.as_dict() for p in self.totals],
            "periods": [p.as_dict() for p in self.periods],
            "pareto": [dataclasses.asdict(r) for r in self.pareto],
            "pchart": [{**dataclasses.asdict(p), "start": p.start.isoformat() + "Z"} for p in self.pchart],
            "p_bar": self.p_bar,
            "delivery": [dataclasses.asdict(d) for d in self.delivery],
        }


def _percentiles(
    conn: Any, conds: list[ColumnElement[bool]], part: Sequence[Any], ps: Sequence[int], column: Any = None
) -> dict[tuple[Any, ...], dict[int, float]]:
    """Nearest-rank percentiles of ``column`` (default ``latency_ms``) per partition ``part``, exact,
    in one query."""
    col = I.latency_ms if column is None else column
    rn = func.row_number().over(partition_by=part, order_by=col).label("rn")
    n = func.count().over(partition_by=part).label("n")
    inner = (
        select(*[p.label(f"k{i}") for i, p in enumerate(part)], col.label("latency_ms"), rn, n)
        .where(*conds, col.is_not(None))
        .subquery()
    )
    keys = [inner.c[f"k{i}"] for i in range(len(part))]
    # nearest rank: ceil(n * p / 100) in integer arithmetic (the same on both databases)
    wanted = or_(*[inner.c.rn == (inner.c.n * p + 99) // 100 for p in ps])
    out: dict[tuple[Any, ...], dict[int, float]] = defaultdict(dict)
    for row in conn.execute(select(*keys, inner.c.rn, inner.c.n, inner.c.latency_ms).where(wanted)):
        key = tuple(row[: len(keys)])
        for p in ps:
            if row.rn == (row.n * p + 99) // 100:
                out[key][p] = row.latency_ms
    return out


EXACT_PERIOD_LATENCY_MAX_ROWS = 100_000
COMMIT_LATENCY_MAX_ROWS = 1_000_000
"""Committed and delivered latencies are exact, read from the window's inspections (no index or
roll-up serves them: each would cost the writer on every row): computed when the window holds at
most this many, else left ``None``."""


def _commit_latency(
    conn: Any, conds: list[ColumnElement[bool]], buckets: Buckets
) -> tuple[dict[tuple[Any, ...], dict[int, float]], dict[int, dict[int, float]]]:
    """Exact p50/p99 of ``commit_latency_ms`` per (station, period) and per station: the same on
    both stats paths, whatever their latency path."""
    n = conn.scalar(select(func.count(I.commit_latency_ms)).where(*conds)) or 0
    if not n or n > COMMIT_LATENCY_MAX_ROWS:
        return {}, {}
    col = I.commit_latency_ms
    periods = _percentiles(conn, conds, [I.station_id, buckets.expr(I.captured_at)], (50, 99), col)
    totals = {k[0]: v for k, v in _percentiles(conn, conds, [I.station_id], (50, 99), col).items()}
    return periods, totals


def _delivery_latency(conn: Any, conds: list[ColumnElement[bool]], names: dict[int, str]) -> list[DeliveryLatency]:
    """Capture to delivered per station and sink over the window: for each inspection, the first
    saved range of the sink's cursor that holds it (``through_id >= id``, on the primary key)."""
    SD = schema.SinkDelivery
    if not inspect(conn).has_table(SD.__tablename__):
        return []
    n = conn.scalar(select(func.count(I.latency_ms)).where(*conds)) or 0
    if not n or n > COMMIT_LATENCY_MAX_ROWS:
        return []
    out = []
    sinks = conn.execute(select(SD.station_id, SD.sink).distinct().order_by(SD.station_id, SD.sink)).all()
    for sid, sink in sinks:
        if sid not in names:
            continue
        # The sink's first saved range ending at or after the inspection (a seek on the primary key).
        nx = SD.__table__.alias("nx")
        through = (
            select(func.min(nx.c.through_id))
            .where(nx.c.station_id == sid, nx.c.sink == sink, nx.c.through_id >= I.id)
            .correlate(I)
            .scalar_subquery()
        )
        start = conn.scalar(select(func.min(SD.after_id)).where(SD.station_id == sid, SD.sink == sink))
        lat: list[float] = []
        owed = 0
        for r in conn.execute(
            select(I.latency_ms, I.decided_at, SD.after_id, SD.delivered_at)
            .select_from(I)
            .outerjoin(SD, and_(SD.station_id == sid, SD.sink == sink, SD.through_id == through))
            .where(*conds, I.station_id == sid, I.latency_ms.is_not(None), I.id > start)
        ):
            if r.delivered_at is None or r.after_id is None:
                owed += 1
                continue
            lat.append(r.latency_ms + (r.delivered_at - r.decided_at).total_seconds() * 1000)
        if not lat and not owed:
            continue
        lat.sort()
        p50 = lat[(len(lat) * 50 + 99) // 100 - 1] if lat else None
        p99 = lat[(len(lat) * 99 + 99) // 100 - 1] if lat else None
        out.append(DeliveryLatency(names[sid], sink, len(lat), owed, p50, p99))
    return out


def uses_rollup(f: HistoryFilter) -> bool:
    """True when ``f`` filters only on station, time and verdict: stats then read the hourly
    roll-up (``inspection_hours``), not the inspections."""
    return not (f.has_defect_filter or f.part_id or f.run_id or f.recipes)


def stats(
    engine: Engine,
    f: HistoryFilter,
    *,
    buckets: Buckets,
    pareto_limit: int = 20,
    period_latency_max_rows: int = EXACT_PERIOD_LATENCY_MAX_ROWS,
) -> Stats:
    """Counts, yields, latency percentiles per station and period; the Pareto of defect
    kinds; the p-chart of the reject rate. Reads only; every figure comes from the store.

    A filter on station, time and verdict only (:func:`uses_rollup`) is answered from the
    hourly roll-up, which the writer keeps in the same transaction as the inspections: whole
    hours of the window from ``inspection_hours``, the partial hours at its ends from the
    inspections. Any other filter (defect kind, score, size, detector, part id, run) needs the
    inspections and defects themselves: :func:`stats_from_inspections`. Both give the same
    counts and first-pass figures for the same filter (one definition, :func:`first_pass_part`).

    Latency p50/p99 are exact (from the inspections) when the window holds at most
    ``period_latency_max_rows`` latencies; above that the roll-up path reads them off the
    roll-up's histogram (within 2.5%, ``sqrt(1.05) - 1``, of the exact nearest-rank value),
    while the inspections path gives exact totals and no per-period percentiles."""
    if uses_rollup(f):
        return _stats_rollup(
            engine, f, buckets=buckets, pareto_limit=pareto_limit, exact_latency_max_rows=period_latency_max_rows
        )
    return stats_from_inspections(
        engine, f, buckets=buckets, pareto_limit=pareto_limit, period_latency_max_rows=period_latency_max_rows
    )


# ---------------------------------------------------------------------------- first pass


def first_pass_part() -> ColumnElement[bool]:
    """True for an inspection that makes its part a first-pass part: the first inspection of
    its part id at its station (``first_of_part``, over the whole history, not the window),
    PASS, and the only inspection of that part id at that station. The writer keeps exactly
    this in the roll-up (``first_parts``, ``first_passed``); here it is the same rule for rows
    read from the inspections."""
    other = I.__table__.alias("other")
    again = exists().where(other.c.station_id == I.station_id, other.c.part_id == I.part_id, other.c.id != I.id)
    return and_(I.first_of_part.is_(True), I.verdict == "PASS", ~again)


class HourGroup(NamedTuple):
    """The window reduced to one row per station, UTC hour and verdict: what both paths
    compute (the roll-up stores it; the inspections path groups it in SQL)."""

    station_id: int
    hour: datetime
    verdict: str
    parts: int
    first_parts: int
    first_passed: int
    latency_count: int
    latency_min: float | None
    latency_max: float | None


def _hour_groups(conn: Any, conds: list[ColumnElement[bool]]) -> list[HourGroup]:
    """:class:`HourGroup` rows of the inspections matching ``conds``, grouped in SQL."""
    hour = _Hour(I.captured_at)
    rows = conn.execute(
        select(
            I.station_id,
            hour.label("h"),
            I.verdict,
            func.count(),
            func.sum(case((I.first_of_part.is_(True), 1), else_=0)),
            func.sum(case((first_pass_part(), 1), else_=0)),
            func.count(I.latency_ms),
            func.min(I.latency_ms),
            func.max(I.latency_ms),
        )
        .where(*conds)
        .group_by(I.station_id, hour, I.verdict)
    ).all()
    return [
        HourGroup(sid, _hour_value(h), v, int(n), int(fp or 0), int(fpp or 0), int(nl), lmin, lmax)
        for sid, h, v, n, fp, fpp, nl, lmin, lmax in rows
    ]


def _periods(
    groups: Sequence[HourGroup],
    names: dict[int, str],
    buckets: Buckets,
) -> tuple[dict[tuple[int, int], PeriodStats], dict[int, int], dict[tuple[int, int], list[Any]]]:
    """Hour groups summed into the period's buckets: the rows, latencies per station, and the
    latency min/max per (station, bucket)."""
    rows: dict[tuple[int, int], PeriodStats] = {}
    with_latency: dict[int, int] = defaultdict(int)
    bounds: dict[tuple[int, int], list[Any]] = {}
    for g in groups:
        bk = buckets.of(g.hour)
        ps = rows.get((g.station_id, bk))
        if ps is None:
            ps = rows[(g.station_id, bk)] = PeriodStats(names[g.station_id], bk, buckets.label(bk), buckets.start(bk))
        ps.parts += g.parts
        ps.distinct_parts += g.first_parts
        ps.first_pass += g.first_passed
        if g.verdict == "PASS":
            ps.passed += g.parts
        elif g.verdict == "FAIL":
            ps.failed += g.parts
        elif g.verdict == "ERROR":
            ps.errors += g.parts
        elif g.verdict == "NOT_INSPECTED":
            ps.not_inspected += g.parts
        with_latency[g.station_id] += g.latency_count
        if g.latency_count:
            b = bounds.setdefault((g.station_id, bk), [g.latency_min, g.latency_max])
            b[0] = g.latency_min if b[0] is None else min(b[0], g.latency_min)
            b[1] = g.latency_max if b[1] is None else max(b[1], g.latency_max)
    return {k: p for k, p in rows.items() if p.parts}, with_latency, bounds


# ---------------------------------------------------------------------------- the shared finish


def _pareto(conn: Any, f: HistoryFilter, conds: list[ColumnElement[bool]]) -> list[Any]:
    """Defects that counted in the verdict, by kind (the ``failed, kind`` index)."""
    dconds: list[ColumnElement[bool]] = [D.failed.is_(True)]
    if f.kinds:
        dconds.append(D.kind.in_(f.kinds))
    if f.detector:
        dconds.append(D.detector == f.detector)
    return conn.execute(
        select(D.kind, func.count().label("defects"), func.count(func.distinct(D.inspection_id)).label("parts"))
        .join(I, I.id == D.inspection_id)
        .where(*conds, *dconds)
        .group_by(D.kind)
        .order_by(func.count().desc(), D.kind)
    ).all()


def _finish(
    f: HistoryFilter,
    buckets: Buckets,
    rows: dict[tuple[int, int], PeriodStats],
    names: dict[int, str],
    lat_periods: dict[tuple[Any, ...], dict[int, float]],
    lat_total: dict[int, dict[int, float]],
    pareto_rows: list[Any],
    pareto_limit: int,
    commit: tuple[dict[tuple[Any, ...], dict[int, float]], dict[int, dict[int, float]]] = ({}, {}),
    delivery: list[DeliveryLatency] | None = None,
) -> Stats:
    """Totals per station, percentiles, Pareto shares and the p-chart: the same for both paths."""
    for (sid, bk), pcts in lat_periods.items():
        if (sid, bk) in rows:
            rows[(sid, bk)].latency_p50_ms, rows[(sid, bk)].latency_p99_ms = pcts.get(50), pcts.get(99)
    for (sid, bk), pcts in commit[0].items():
        if (sid, bk) in rows:
            rows[(sid, bk)].commit_latency_p50_ms = pcts.get(50)
            rows[(sid, bk)].commit_latency_p99_ms = pcts.get(99)
    periods = sorted(rows.values(), key=lambda p: (p.station, p.bucket))
    totals: dict[str, PeriodStats] = {}
    for p in periods:
        t = totals.setdefault(p.station, PeriodStats(p.station, -1, "total", p.start))
        for fld in ("parts", "passed", "failed", "errors", "not_inspected", "distinct_parts", "first_pass"):
            setattr(t, fld, getattr(t, fld) + getattr(p, fld))
    for sid, pcts in lat_total.items():
        if names[sid] in totals:
            totals[names[sid]].latency_p50_ms, totals[names[sid]].latency_p99_ms = pcts.get(50), pcts.get(99)
    for sid, pcts in commit[1].items():
        if names[sid] in totals:
            totals[names[sid]].commit_latency_p50_ms = pcts.get(50)
            totals[names[sid]].commit_latency_p99_ms = pcts.get(99)
    total_defects = sum(r.defects for r in pareto_rows) or 1
    pareto, cum = [], 0
    for r in pareto_rows[:pareto_limit]:
        cum += r.defects
        pareto.append(ParetoRow(r.kind, r.defects, r.parts, r.defects / total_defects, cum / total_defects))
    pchart, p_bar = p_chart(periods)
    return Stats(
        buckets.period,
        f.since,
        f.until,
        periods,
        sorted(totals.values(), key=lambda t: t.station),
        pareto,
        pchart,
        p_bar,
        delivery or [],
    )


def _exact_latency(
    conn: Any,
    conds: list[ColumnElement[bool]],
    with_latency: dict[int, int],
) -> dict[int, dict[int, float]]:
    """Exact nearest-rank p50/p99 per station over the window, on the (station, latency) index."""
    lat_total: dict[int, dict[int, float]] = defaultdict(dict)
    for sid, n in with_latency.items():
        if not n:
            continue
        for p in (50, 99):
            k = (n * p + 99) // 100 - 1  # nearest rank, 0-based
            # Walk the (station, latency) index from the nearer end: p99 reads 1% of it.
            desc = k > n // 2
            lat_total[sid][p] = conn.scalar(
                select(I.latency_ms)
                .where(*conds, I.station_id == sid, I.latency_ms.is_not(None))
                .order_by(I.latency_ms.desc() if desc else I.latency_ms)
                .limit(1)
                .offset(n - 1 - k if desc else k)
            )
    return lat_total


def _hist_percentiles(hist: dict[int, int], lo: float | None, hi: float | None) -> dict[int, float]:
    """Nearest-rank p50/p99 from a latency histogram: the geometric middle of the bucket the
    rank falls in, clamped to the group's exact min and max."""
    n = sum(hist.values())
    out: dict[int, float] = {}
    if not n:
        return out
    order = sorted(hist.items())
    for p in (50, 99):
        k = (n * p + 99) // 100  # 1-based rank
        seen = 0
        for b, c in order:
            seen += c
            if seen >= k:
                v = bucket_value(b)
                if lo is not None:
                    v = max(v, lo)
                if hi is not None:
                    v = min(v, hi)
                out[p] = v
                break
    return out


# ---------------------------------------------------------------------------- the two paths


def _ceil_hour(t: datetime) -> datetime:
    h = hour_of(t)
    return h if h == t else h + timedelta(hours=1)


def _stats_rollup(
    engine: Engine, f: HistoryFilter, *, buckets: Buckets, pareto_limit: int, exact_latency_max_rows: int
) -> Stats:
    dialect = engine.dialect.name
    conds = _where(f, dialect)
    # Whole hours [lo, hi) from the roll-up; the partial hours at the ends from inspections.
    lo = _ceil_hour(f.since) if f.since else None
    hi = hour_of(f.until) if f.until else None
    if lo is not None and hi is not None and lo > hi:
        hi = lo
    hconds: list[ColumnElement[bool]] = []
    lconds: list[ColumnElement[bool]] = []
    for T, out in ((H, hconds), (HL, lconds)):
        if f.stations:
            out.append(T.station_id.in_(select(S.id).where(S.name.in_(f.stations)).scalar_subquery()))
        if f.verdicts:
            out.append(T.verdict.in_(f.verdicts))
        if lo is not None:
            out.append(T.hour >= lo)
        if hi is not None:
            out.append(T.hour < hi)
    edge_conds: list[ColumnElement[bool]] = []
    if lo is not None and f.since is not None and f.since < lo:
        edge_conds.append(I.captured_at < lo)
    if hi is not None and f.until is not None and hi < f.until:
        edge_conds.append(I.captured_at >= hi)
    with engine.connect() as conn:
        names = dict(conn.execute(select(S.id, S.name)).all())
        groups = [
            HourGroup(*r)
            for r in conn.execute(
                select(
                    H.station_id,
                    H.hour,
                    H.verdict,
                    H.parts,
                    H.first_parts,
                    H.first_passed,
                    H.latency_count,
                    H.latency_min,
                    H.latency_max,
                ).where(*hconds)
            )
        ]
        # The partial hours at the ends, read row by row (their latency histogram is needed
        # for a large window), with the same first-pass rule as the writer.
        edge = HourRollup()
        if edge_conds:
            for r in conn.execute(
                select(
                    I.station_id, I.captured_at, I.verdict, I.latency_ms, I.first_of_part, first_pass_part().label("fp")
                ).where(*conds, or_(*edge_conds))
            ):
                edge.add(r.station_id, r.captured_at, r.verdict, r.latency_ms, bool(r.first_of_part), bool(r.fp))
        groups += [HourGroup(k[0], k[1], k[2], v[0], v[1], v[2], v[3], v[5], v[6]) for k, v in edge.hours.items()]
        rows, with_latency, bounds = _periods(groups, names, buckets)

        if sum(with_latency.values()) <= exact_latency_max_rows:
            lat_total = _exact_latency(conn, conds, with_latency)
            lat_periods = _percentiles(conn, conds, [I.station_id, buckets.expr(I.captured_at)], (50, 99))
        else:
            # Histograms summed per station and period in SQL, plus the ends' own.
            pb = buckets.expr(HL.hour)
            hists: dict[tuple[int, int], dict[int, int]] = defaultdict(lambda: defaultdict(int))
            for sid, bk, b, n in conn.execute(
                select(HL.station_id, pb.label("pb"), HL.bucket, func.sum(HL.n))
                .where(*lconds)
                .group_by(HL.station_id, pb, HL.bucket)
            ):
                hists[(sid, bk)][b] += int(n)
            for (sid, hour, _v, b), n in edge.latency.items():
                hists[(sid, buckets.of(hour))][b] += n
            lat_periods = {}
            station_hist: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
            station_bounds: dict[int, list[Any]] = {}
            for (sid, bk), hist in hists.items():
                lmin, lmax = bounds.get((sid, bk), (None, None))
                lat_periods[(sid, bk)] = _hist_percentiles(hist, lmin, lmax)
                for b, n in hist.items():
                    station_hist[sid][b] += n
                if lmin is not None:
                    sb = station_bounds.setdefault(sid, [lmin, lmax])
                    sb[0], sb[1] = min(sb[0], lmin), max(sb[1], lmax)
            lat_total = {
                sid: _hist_percentiles(hist, *station_bounds.get(sid, (None, None)))
                for sid, hist in station_hist.items()
            }
        pareto_rows = _pareto(conn, f, conds)
        commit = _commit_latency(conn, conds, buckets)
        delivery = _delivery_latency(conn, conds, names)
    return _finish(f, buckets, rows, names, lat_periods, lat_total, pareto_rows, pareto_limit, commit, delivery)


def stats_from_inspections(
    engine: Engine,
    f: HistoryFilter,
    *,
    buckets: Buckets,
    pareto_limit: int = 20,
    period_latency_max_rows: int = EXACT_PERIOD_LATENCY_MAX_ROWS,
) -> Stats:
    """Counts, yields, latency percentiles per station and period; the Pareto of defect
    kinds; the p-chart of the reject rate, read from the inspections (any filter).

    The inspections are grouped per station, UTC hour and verdict in SQL (:class:`HourGroup`,
    first-part counts by :func:`first_pass_part`), then summed into the period's buckets and
    finished exactly as the roll-up path is. Latency p50/p99 per station over the window are
    exact (read off the (station, latency) index); per period they are exact too, but only
    computed when the window holds at most ``period_latency_max_rows`` latencies (they need a
    sort of the whole window), else left ``None``."""
    conds = _where(f, engine.dialect.name)
    with engine.connect() as conn:
        names = dict(conn.execute(select(S.id, S.name)).all())
        rows, with_latency, _bounds = _periods(_hour_groups(conn, conds), names, buckets)
        lat_total = _exact_latency(conn, conds, with_latency)
        lat_periods: dict[tuple[Any, ...], dict[int, float]] = {}
        if sum(with_latency.values()) <= period_latency_max_rows:
            lat_periods = _percentiles(conn, conds, [I.station_id, buckets.expr(I.captured_at)], (50, 99))
        pareto_rows = _pareto(conn, f, conds)
        commit = _commit_latency(conn, conds, buckets)
        delivery = _delivery_latency(conn, conds, names)
    return _finish(f, buckets, rows, names, lat_periods, lat_total, pareto_rows, pareto_limit, commit, delivery)


# ---------------------------------------------------------------------------- per recipe (issue 14)


@dataclasses.dataclass
class RecipeStats:
    """One station recipe's parts in the window (``inspections.recipe``, migration 0012)."""

    station: str
    recipe: str | None
    """``None``: parts inspected without a recipe (a station without recipes, older rows)."""
    parts: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    not_inspected: int = 0
    versions: int = 0
    """Distinct ``recipe_hash`` values: more than 1 when the recipe's settings changed in the window."""

    @property
    def yield_(self) -> float | None:
        judged = self.passed + self.failed + self.errors
        return self.passed / judged if judged else None

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "yield_": self.yield_}


def recipe_split(engine: Engine, f: HistoryFilter) -> list[RecipeStats]:
    """The window's parts per station and recipe, with their verdicts and yield (from the
    inspections: the hourly roll-up does not keep recipes)."""
    conds = _where(f, engine.dialect.name)
    out: dict[tuple[str, str | None], RecipeStats] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(S.name, I.recipe, I.verdict, func.count())
            .join(S, S.id == I.station_id)
            .where(*conds)
            .group_by(S.name, I.recipe, I.verdict)
        ).all()
        versions = {
            (r[0], r[1]): r[2]
            for r in conn.execute(
                select(S.name, I.recipe, func.count(I.recipe_hash.distinct()))
                .join(S, S.id == I.station_id)
                .where(*conds)
                .group_by(S.name, I.recipe)
            ).all()
        }
    field = {"PASS": "passed", "FAIL": "failed", "ERROR": "errors", "NOT_INSPECTED": "not_inspected"}
    for station, recipe, verdict, n in rows:
        r = out.setdefault((station, recipe), RecipeStats(station, recipe, versions=versions.get((station, recipe), 0)))
        r.parts += n
        if verdict in field:
            setattr(r, field[verdict], getattr(r, field[verdict]) + n)
    return sorted(out.values(), key=lambda r: (r.station, r.recipe is None, r.recipe or ""))
