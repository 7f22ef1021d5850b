"""The one way QA reads the store: typed filters in, plain records out.

The command line (:mod:`inspector_core.qa_cli`) and the dashboard (:mod:`inspector_core.web`)
both sit on this module. No SQL is assembled from strings: every user value reaches the
database as a bound parameter, part-id globs are translated to a pattern with escaping, and
the only dialect-specific SQL (time buckets, glob matching) is compiled from typed integers.

Times: the store keeps naive UTC. A filter's ``since``/``until`` may be aware (converted) or
naive (taken as UTC). Stats buckets (hour, shift, day) are computed in SQL on UTC shifted by a
fixed ``utc_offset_h`` (whole-hour offsets; a DST change moves one bucket boundary by an hour).

Definitions a caller may rely on:

- *parts*: inspections in the window (every frame is one inspection, NOT_INSPECTED included).
- *rejects*: FAIL + ERROR (ERROR is a reject: the station fails closed).
- *yield*: PASS / (parts - NOT_INSPECTED), i.e. over the parts that were judged.
- *first-pass yield*: over distinct part ids per station whose first inspection falls in the
  bucket: the share that were inspected exactly once (in the window) and passed.
- *latency p50/p99*: nearest-rank percentiles of ``inspections.latency_ms`` (exact; window
  functions, which SQLite >= 3.25 and PostgreSQL both have).
- *p-chart*: per bucket, p = rejects / judged parts; centre line p-bar over the window;
  limits p-bar +- 3 sqrt(p-bar (1 - p-bar) / n) (lower clipped at 0); points outside flagged.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import (
    Engine,
    Integer,
    and_,
    case,
    exists,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from inspector_core import schema
from inspector_core.store import HourRollup, bucket_value, hour_of, latency_bucket
from inspector_core.verdict import Rule
from inspector_core.verdict import failing as _failing
from inspector_core.verdict import verdict as _verdict

I, D, C, S, R, SR = (schema.Inspection, schema.Defect, schema.Crop, schema.Station, schema.Run,
                     schema.StepResult)
H, HL = schema.InspectionHour, schema.InspectionHourLatency
Verdict = Literal["PASS", "FAIL", "ERROR", "NOT_INSPECTED"]
Period = Literal["hour", "shift", "day"]
REJECTS = ("FAIL", "ERROR")
MAX_PAGE = 1000


class QueryError(ValueError):
    """A filter or request that cannot be answered; the message says which field and why."""


def _naive_utc(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


# ---------------------------------------------------------------------------- filters


class HistoryFilter(BaseModel):
    """Which inspections to read. Every field is optional; given fields must all hold.

    ``kind``, ``min_score``, ``min_size_mm`` and ``plugin`` select parts having at least one
    defect that satisfies all of them together; by default only defects that counted in the
    verdict (``failed``), or every stored finding with ``include_candidates``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stations: tuple[str, ...] = Field((), description="station names; any of them")
    since: datetime | None = Field(None, description="captured at or after (UTC if naive)")
    until: datetime | None = Field(None, description="captured before (UTC if naive)")
    verdicts: tuple[Verdict, ...] = Field((), description="any of these verdicts")
    kinds: tuple[str, ...] = Field((), description="has a defect of any of these kinds")
    part_id: str | None = Field(None, max_length=300, description="glob: * any run, ? one character")
    min_score: float | None = Field(None, ge=0, le=1, description="has a defect scoring at least this")
    min_size_mm: float | None = Field(None, ge=0, description="has a defect at least this large, mm")
    plugin: str | None = Field(None, max_length=200, description="has a defect found by this detector")
    run_id: int | None = Field(None, ge=1)
    include_candidates: bool = Field(False, description="defect filters also match findings below the rules")

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, t: datetime | None) -> datetime | None:
        return _naive_utc(t)

    @model_validator(mode="after")
    def _window(self) -> HistoryFilter:
        if self.since and self.until and self.since >= self.until:
            raise ValueError(f"since ({self.since.isoformat()}) must be before until ({self.until.isoformat()})")
        return self

    @property
    def has_defect_filter(self) -> bool:
        return bool(self.kinds) or self.min_score is not None or self.min_size_mm is not None or bool(self.plugin)


def make_filter(**fields: Any) -> HistoryFilter:
    """:class:`HistoryFilter` from loose values (CLI, query string), or :class:`QueryError`."""
    try:
        return HistoryFilter.model_validate({k: v for k, v in fields.items() if v not in (None, (), [], "")})
    except ValidationError as exc:
        raise QueryError("; ".join(f"{'.'.join(map(str, e['loc'])) or 'filter'}: {e['msg'].removeprefix('Value error, ')}"
                                   for e in exc.errors())) from exc


def glob_to_like(pattern: str) -> str:
    """A glob (``*``, ``?``) as a LIKE pattern with ``\\`` escaping every other character
    LIKE would treat specially, so ``%``, ``_`` and ``\\`` in part ids match only themselves."""
    out = []
    for ch in pattern:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in "%_\\":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _glob_clause(column: ColumnElement[str], pattern: str, dialect: str) -> ColumnElement[bool]:
    if "*" not in pattern and "?" not in pattern:
        return column == pattern  # exact id: the part_id index answers it
    if dialect == "sqlite":
        # SQLite's LIKE ignores ASCII case; GLOB is case-sensitive, as PostgreSQL's LIKE is.
        # GLOB has no escape character: a literal [ * ? is written as a one-character set.
        escaped = "".join(f"[{ch}]" if ch == "[" else ch for ch in pattern)
        return column.op("GLOB")(escaped)
    return column.like(glob_to_like(pattern), escape="\\")


def _defect_conditions(f: HistoryFilter) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if not f.include_candidates:
        conds.append(D.failed.is_(True))
    if f.kinds:
        conds.append(D.kind.in_(f.kinds))
    if f.min_score is not None:
        conds.append(D.score >= f.min_score)
    if f.min_size_mm is not None:
        conds.append(D.size_mm >= f.min_size_mm)
    if f.plugin:
        conds.append(D.plugin == f.plugin)
    return conds


def _where(f: HistoryFilter, dialect: str) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if f.stations:
        conds.append(I.station_id.in_(select(S.id).where(S.name.in_(f.stations)).scalar_subquery()))
    if f.since:
        conds.append(I.captured_at >= f.since)
    if f.until:
        conds.append(I.captured_at < f.until)
    if f.verdicts:
        conds.append(I.verdict.in_(f.verdicts))
    if f.part_id:
        conds.append(_glob_clause(I.part_id, f.part_id, dialect))
    if f.run_id:
        conds.append(I.run_id == f.run_id)
    if f.has_defect_filter:
        conds.append(exists().where(D.inspection_id == I.id, *_defect_conditions(f)))
    return conds


# ---------------------------------------------------------------------------- history


@dataclasses.dataclass(frozen=True)
class InspectionRow:
    id: int
    station: str
    run_id: int
    part_id: str
    captured_at: datetime
    verdict: str
    latency_ms: float | None
    n_defects: int
    kinds: tuple[str, ...]
    """Kinds of the defects that counted in the verdict, most severe first."""
    max_score: float | None
    error: str | None
    thumbnail_crop_id: int | None
    """The crop of the highest-scoring counted defect, if one was stored."""

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["captured_at"] = self.captured_at.isoformat() + "Z"
        d["kinds"] = list(self.kinds)
        return d


@dataclasses.dataclass(frozen=True)
class Page:
    rows: list[InspectionRow]
    next_cursor: str | None
    """Pass as ``cursor`` for the next (older) page; ``None`` on the last page."""


def _cursor(t: datetime, i: int) -> str:
    return base64.urlsafe_b64encode(f"{t.isoformat()}|{i}".encode()).decode()


def _parse_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        t, i = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(t), int(i)
    except Exception as exc:  # noqa: BLE001
        raise QueryError(f"cursor: not a cursor from a previous page ({cursor[:40]!r})") from exc


def history(engine: Engine, f: HistoryFilter, *, limit: int = 50, cursor: str | None = None,
            offset: int = 0) -> Page:
    """Inspections matching ``f``, newest first (``captured_at``, then ``id``, descending).

    Page with ``cursor`` (keyset: constant cost however deep) or ``offset``."""
    if not 1 <= limit <= MAX_PAGE:
        raise QueryError(f"limit: must be between 1 and {MAX_PAGE} (got {limit})")
    if offset < 0:
        raise QueryError(f"offset: must be >= 0 (got {offset})")
    dialect = engine.dialect.name
    conds = _where(f, dialect)
    if cursor:
        t, last = _parse_cursor(cursor)
        conds.append(or_(I.captured_at < t, and_(I.captured_at == t, I.id < last)))
    q = (select(I.id, S.name, I.run_id, I.part_id, I.captured_at, I.verdict, I.latency_ms, I.n_defects, I.error)
         .join(S, S.id == I.station_id).where(*conds)
         .order_by(I.captured_at.desc(), I.id.desc()).limit(limit + 1).offset(offset))
    with engine.connect() as conn:
        rows = conn.execute(q).all()
        more = len(rows) > limit
        rows = rows[:limit]
        ids = [r.id for r in rows]
        by_part: dict[int, list[Any]] = defaultdict(list)
        if ids:
            dq = (select(D.inspection_id, D.kind, D.score, C.id.label("crop_id"))
                  .outerjoin(C, C.defect_id == D.id)
                  .where(D.inspection_id.in_(ids), D.failed.is_(True))
                  .order_by(D.inspection_id, D.score.desc(), D.id))
            for d in conn.execute(dq):
                by_part[d.inspection_id].append(d)
    out = []
    for r in rows:
        ds = by_part.get(r.id, [])
        kinds = tuple(dict.fromkeys(d.kind for d in ds))
        out.append(InspectionRow(
            id=r.id, station=r.name, run_id=r.run_id, part_id=r.part_id, captured_at=r.captured_at,
            verdict=r.verdict, latency_ms=r.latency_ms, n_defects=r.n_defects, kinds=kinds,
            max_score=ds[0].score if ds else None, error=r.error,
            thumbnail_crop_id=next((d.crop_id for d in ds if d.crop_id is not None), None)))
    nxt = _cursor(rows[-1].captured_at, rows[-1].id) if more and rows else None
    return Page(out, nxt)


def iter_history(engine: Engine, f: HistoryFilter, *, batch: int = 500) -> Iterator[InspectionRow]:
    """Every matching inspection, newest first, read page by page (for exports)."""
    cursor = None
    while True:
        page = history(engine, f, limit=batch, cursor=cursor)
        yield from page.rows
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def count(engine: Engine, f: HistoryFilter) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(I).where(*_where(f, engine.dialect.name))) or 0


# ---------------------------------------------------------------------------- one inspection


@dataclasses.dataclass(frozen=True)
class DefectView:
    id: int
    step: str
    plugin: str
    kind: str
    score: float
    failed: bool
    box: tuple[int, int, int, int]
    size_px: float | None
    size_mm: float | None
    measurements: dict[str, Any]
    message: str
    crop_id: int | None
    crop_format: str | None
    crop_box: tuple[float, float, float, float] | None
    """The defect's box in the crop's pixels (x, y, w, h), to draw over the crop."""
    crop_size: tuple[int, int] | None


@dataclasses.dataclass(frozen=True)
class StepView:
    index: int
    step: str
    plugin: str
    status: str
    score: float | None
    latency_ms: float | None
    n_findings: int
    error: str | None


@dataclasses.dataclass(frozen=True)
class InspectionDetail:
    id: int
    uid: str
    station: str
    part_id: str
    seq: int
    captured_at: datetime
    decided_at: datetime
    verdict: str
    latency_ms: float | None
    error: str | None
    error_step: str | None
    source_meta: dict[str, Any] | None
    steps: list[StepView]
    defects: list[DefectView]
    run: dict[str, Any]
    """Provenance: run id, host, software version, plugins with versions, config hash, models."""

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["captured_at"] = self.captured_at.isoformat() + "Z"
        d["decided_at"] = self.decided_at.isoformat() + "Z"
        return d


def inspection(engine: Engine, inspection_id: int) -> InspectionDetail | None:
    """One inspection with every step, every stored finding (with its crop's geometry) and
    the provenance of the run that produced it; ``None`` if there is no such id."""
    with engine.connect() as conn:
        r = conn.execute(select(I, S.name.label("station_name")).join(S, S.id == I.station_id)
                         .where(I.id == inspection_id)).one_or_none()
        if r is None:
            return None
        steps = [StepView(s.step_index, s.step, s.plugin, s.status, s.score, s.latency_ms, s.n_findings, s.error)
                 for s in conn.execute(select(SR).where(SR.inspection_id == inspection_id).order_by(SR.step_index))]
        defects = []
        dq = (select(D, C.id.label("crop_id"), C.format, C.x.label("cx"), C.y.label("cy"), C.scale,
                     C.width.label("cw"), C.height.label("ch"))
              .outerjoin(C, C.defect_id == D.id).where(D.inspection_id == inspection_id)
              .order_by(D.failed.desc(), D.score.desc(), D.id))
        for d in conn.execute(dq):
            crop_box = None
            if d.crop_id is not None:
                crop_box = ((d.x - d.cx) * d.scale, (d.y - d.cy) * d.scale, d.w * d.scale, d.h * d.scale)
            defects.append(DefectView(
                d.id, d.step, d.plugin, d.kind, d.score, d.failed, (d.x, d.y, d.w, d.h), d.size_px, d.size_mm,
                dict(d.measurements or {}), d.message, d.crop_id, d.format, crop_box,
                (d.cw, d.ch) if d.crop_id is not None else None))
        run = conn.execute(select(R).where(R.id == r.run_id)).one()
    return InspectionDetail(
        id=r.id, uid=r.uid, station=r.station_name, part_id=r.part_id, seq=r.seq, captured_at=r.captured_at,
        decided_at=r.decided_at, verdict=r.verdict, latency_ms=r.latency_ms, error=r.error,
        error_step=r.error_step, source_meta=r.source_meta, steps=steps, defects=defects,
        run={"id": run.id, "started_at": run.started_at.isoformat() + "Z", "hostname": run.hostname,
             "software_version": run.software_version, "plugins": run.plugins, "config_hash": run.config_hash,
             "models": run.models, "ended_at": run.ended_at.isoformat() + "Z" if run.ended_at else None})


def stations(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(select(S.name).order_by(S.name)))


def kinds(engine: Engine) -> list[str]:
    """Every defect kind in the store (for filter menus)."""
    with engine.connect() as conn:
        return list(conn.scalars(select(D.kind).distinct().order_by(D.kind)))


# ---------------------------------------------------------------------------- crops


@dataclasses.dataclass(frozen=True)
class CropRow:
    crop_id: int
    defect_id: int
    inspection_id: int
    station: str
    part_id: str
    captured_at: datetime
    verdict: str
    step: str
    plugin: str
    kind: str
    score: float
    failed: bool
    box: tuple[int, int, int, int]
    size_px: float | None
    size_mm: float | None
    measurements: dict[str, Any]
    format: str
    width: int
    height: int


def crops(engine: Engine, f: HistoryFilter, *, limit: int | None = 100, cursor: int | None = None,
          ) -> list[CropRow]:
    """Crops of the inspections matching ``f`` whose defect also meets ``f``'s defect
    conditions, newest first (by crop id, descending). ``cursor``: the last crop id seen."""
    dialect = engine.dialect.name
    q = (select(C.id.label("crop_id"), C.defect_id, C.inspection_id, S.name.label("station"), I.part_id,
                I.captured_at, I.verdict, D.step, D.plugin, D.kind, D.score, D.failed, D.x, D.y, D.w, D.h,
                D.size_px, D.size_mm, D.measurements, C.format, C.width, C.height)
         .join(D, D.id == C.defect_id).join(I, I.id == C.inspection_id).join(S, S.id == I.station_id)
         .where(*[c for c in _where(f.model_copy(update={"kinds": (), "min_score": None, "min_size_mm": None,
                                                          "plugin": None}), dialect)],
                *_defect_conditions(f))
         .order_by(C.id.desc()))
    if cursor is not None:
        q = q.where(C.id < cursor)
    if limit is not None:
        q = q.limit(limit)
    with engine.connect() as conn:
        return [CropRow(r.crop_id, r.defect_id, r.inspection_id, r.station, r.part_id, r.captured_at, r.verdict,
                        r.step, r.plugin, r.kind, r.score, r.failed, (r.x, r.y, r.w, r.h), r.size_px, r.size_mm,
                        dict(r.measurements or {}), r.format, r.width, r.height)
                for r in conn.execute(q)]


def iter_crops(engine: Engine, f: HistoryFilter, *, batch: int = 500) -> Iterator[CropRow]:
    cursor = None
    while True:
        rows = crops(engine, f, limit=batch, cursor=cursor)
        yield from rows
        if len(rows) < batch:
            return
        cursor = rows[-1].crop_id


def crop_image(engine: Engine, crop_id: int) -> tuple[str, bytes] | None:
    """``(format, encoded bytes)`` of one crop, or ``None``."""
    with engine.connect() as conn:
        r = conn.execute(select(C.format, C.data).where(C.id == crop_id)).one_or_none()
    return (r.format, bytes(r.data)) if r else None


# ---------------------------------------------------------------------------- time buckets


class _Bucket(FunctionElement):
    """``floor((epoch seconds of col + offset_s) / period_s)``, an integer, per dialect."""

    type = Integer()
    inherit_cache = False

    def __init__(self, col: ColumnElement[Any], period_s: int, offset_s: int) -> None:
        self.period_s, self.offset_s = int(period_s), int(offset_s)
        super().__init__(col)


@compiles(_Bucket, "sqlite")
def _bucket_sqlite(el: _Bucket, compiler: Any, **kw: Any) -> str:
    col = compiler.process(list(el.clauses)[0], **kw)
    # Integer division of non-negative integers floors (epochs here are all positive).
    return f"((CAST(strftime('%s', {col}) AS INTEGER) + {el.offset_s}) / {el.period_s})"


@compiles(_Bucket, "postgresql")
def _bucket_pg(el: _Bucket, compiler: Any, **kw: Any) -> str:
    col = compiler.process(list(el.clauses)[0], **kw)
    return f"CAST(FLOOR((EXTRACT(EPOCH FROM {col}) + {el.offset_s}) / {el.period_s}) AS BIGINT)"


@dataclasses.dataclass(frozen=True)
class Buckets:
    """How a period maps to fixed-length buckets of UTC time."""

    period: Period
    utc_offset_h: int = 0
    shift_start_h: int = 6
    shift_hours: int = 8

    @property
    def seconds(self) -> int:
        return {"hour": 3600, "day": 86400, "shift": self.shift_hours * 3600}[self.period]

    @property
    def offset_s(self) -> int:
        # A bucket starts at local midnight (day), local shift start (shift) or the hour.
        start = self.shift_start_h if self.period == "shift" else 0
        return (self.utc_offset_h - start) * 3600

    def expr(self, col: ColumnElement[Any]) -> _Bucket:
        return _Bucket(col, self.seconds, self.offset_s)

    def of(self, t: datetime) -> int:
        """The bucket of a (naive UTC) time; the same as :meth:`expr` computes in SQL."""
        return int(((t - datetime(1970, 1, 1)).total_seconds() + self.offset_s) // self.seconds)

    def start(self, bucket: int) -> datetime:
        """Start of a bucket, UTC."""
        return datetime(1970, 1, 1) + timedelta(seconds=bucket * self.seconds - self.offset_s)

    def label(self, bucket: int) -> str:
        local = self.start(bucket) + timedelta(hours=self.utc_offset_h)
        if self.period == "day":
            return local.strftime("%Y-%m-%d")
        if self.period == "hour":
            return local.strftime("%Y-%m-%d %H:00")
        n = int(((local.hour - self.shift_start_h) % 24) // self.shift_hours) + 1
        return local.strftime("%Y-%m-%d %H:00") + f" shift {n}"


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
        }


def _percentiles(conn: Any, conds: list[ColumnElement[bool]], part: list[ColumnElement[Any]],
                 ps: Sequence[int]) -> dict[tuple[Any, ...], dict[int, float]]:
    """Nearest-rank percentiles of latency per partition ``part``, exact, in one query."""
    rn = func.row_number().over(partition_by=part, order_by=I.latency_ms).label("rn")
    n = func.count().over(partition_by=part).label("n")
    inner = (select(*[p.label(f"k{i}") for i, p in enumerate(part)], I.latency_ms, rn, n)
             .where(*conds, I.latency_ms.is_not(None)).subquery())
    keys = [inner.c[f"k{i}"] for i in range(len(part))]
    # nearest rank: ceil(n * p / 100) in integer arithmetic (the same on both databases)
    wanted = or_(*[inner.c.rn == (inner.c.n * p + 99) // 100 for p in ps])
    out: dict[tuple[Any, ...], dict[int, float]] = defaultdict(dict)
    for row in conn.execute(select(*keys, inner.c.rn, inner.c.n, inner.c.latency_ms).where(wanted)):
        key = tuple(row[:len(keys)])
        for p in ps:
            if row.rn == (row.n * p + 99) // 100:
                out[key][p] = row.latency_ms
    return out


class _Hour(FunctionElement):
    """The capture hour, as the expression the hour index (migration 0002) is built on:
    ``substr(col, 1, 13)`` on SQLite (text ``YYYY-MM-DD HH``), ``date_trunc('hour', col)`` on
    PostgreSQL. Grouping by it walks that covering index in order, with no sort."""

    inherit_cache = True

    def __init__(self, col: ColumnElement[Any]) -> None:
        super().__init__(col)


@compiles(_Hour, "sqlite")
def _hour_sqlite(el: _Hour, compiler: Any, **kw: Any) -> str:
    return f"substr({compiler.process(list(el.clauses)[0], **kw)}, 1, 13)"


@compiles(_Hour, "postgresql")
def _hour_pg(el: _Hour, compiler: Any, **kw: Any) -> str:
    return f"date_trunc('hour', {compiler.process(list(el.clauses)[0], **kw)})"


def _hour_value(v: Any) -> datetime:
    return v if isinstance(v, datetime) else datetime.strptime(v, "%Y-%m-%d %H")


EXACT_PERIOD_LATENCY_MAX_ROWS = 100_000
SMALL_WINDOW_ROWS = 100_000


def uses_rollup(f: HistoryFilter) -> bool:
    """True when ``f`` filters only on station, time and verdict: stats then read the hourly
    roll-up (``inspection_hours``), not the inspections."""
    return not (f.has_defect_filter or f.part_id or f.run_id)


def stats(engine: Engine, f: HistoryFilter, *, buckets: Buckets, pareto_limit: int = 20,
          period_latency_max_rows: int = EXACT_PERIOD_LATENCY_MAX_ROWS,
          small_window_rows: int = SMALL_WINDOW_ROWS) -> Stats:
    """Counts, yields, latency percentiles per station and period; the Pareto of defect
    kinds; the p-chart of the reject rate. Reads only; every figure comes from the store.

    A filter on station, time and verdict only (:func:`uses_rollup`) is answered from the
    hourly roll-up, which the writer keeps in the same transaction as the inspections: whole
    hours of the window from ``inspection_hours``, the partial hours at its ends from the
    inspections. First-pass figures there count a part at its first inspection ever at the
    station (``first_of_part``). Latency p50/p99 are exact (from the inspections) when the
    window holds at most ``period_latency_max_rows`` latencies, else read off the roll-up's
    histogram: within 2.5% (``sqrt(1.05) - 1``) of the exact nearest-rank value.

    Any other filter (defect kind, score, size, plugin, part id, run) needs the inspections
    and defects themselves: :func:`stats_from_inspections`."""
    if uses_rollup(f):
        return _stats_rollup(engine, f, buckets=buckets, pareto_limit=pareto_limit,
                             exact_latency_max_rows=period_latency_max_rows)
    return stats_from_inspections(engine, f, buckets=buckets, pareto_limit=pareto_limit,
                                  period_latency_max_rows=period_latency_max_rows,
                                  small_window_rows=small_window_rows)


def _pareto(conn: Any, f: HistoryFilter, conds: list[ColumnElement[bool]]) -> list[Any]:
    """Defects that counted in the verdict, by kind (the ``failed, kind`` index)."""
    dconds = [D.failed.is_(True)]
    if f.kinds:
        dconds.append(D.kind.in_(f.kinds))
    if f.plugin:
        dconds.append(D.plugin == f.plugin)
    return conn.execute(
        select(D.kind, func.count().label("defects"), func.count(func.distinct(D.inspection_id)).label("parts"))
        .join(I, I.id == D.inspection_id).where(*conds, *dconds)
        .group_by(D.kind).order_by(func.count().desc(), D.kind)).all()


def _finish(f: HistoryFilter, buckets: Buckets, rows: dict[tuple[int, int], PeriodStats], names: dict[int, str],
            lat_periods: dict[tuple[Any, ...], dict[int, float]], lat_total: dict[int, dict[int, float]],
            pareto_rows: list[Any], pareto_limit: int) -> Stats:
    for (sid, bk), pcts in lat_periods.items():
        if (sid, bk) in rows:
            rows[(sid, bk)].latency_p50_ms, rows[(sid, bk)].latency_p99_ms = pcts.get(50), pcts.get(99)
    periods = sorted(rows.values(), key=lambda p: (p.station, p.bucket))
    totals: dict[str, PeriodStats] = {}
    for p in periods:
        t = totals.setdefault(p.station, PeriodStats(p.station, -1, "total", p.start))
        for fld in ("parts", "passed", "failed", "errors", "not_inspected", "distinct_parts", "first_pass"):
            setattr(t, fld, getattr(t, fld) + getattr(p, fld))
    for sid, pcts in lat_total.items():
        if names[sid] in totals:
            totals[names[sid]].latency_p50_ms, totals[names[sid]].latency_p99_ms = pcts.get(50), pcts.get(99)
    total_defects = sum(r.defects for r in pareto_rows) or 1
    pareto, cum = [], 0
    for r in pareto_rows[:pareto_limit]:
        cum += r.defects
        pareto.append(ParetoRow(r.kind, r.defects, r.parts, r.defects / total_defects, cum / total_defects))
    pchart, p_bar = p_chart(periods)
    return Stats(buckets.period, f.since, f.until, periods, sorted(totals.values(), key=lambda t: t.station),
                 pareto, pchart, p_bar)


def _exact_latency(conn: Any, conds: list[ColumnElement[bool]], with_latency: dict[int, int],
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
                select(I.latency_ms).where(*conds, I.station_id == sid, I.latency_ms.is_not(None))
                .order_by(I.latency_ms.desc() if desc else I.latency_ms).limit(1)
                .offset(n - 1 - k if desc else k))
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


def _ceil_hour(t: datetime) -> datetime:
    h = hour_of(t)
    return h if h == t else h + timedelta(hours=1)


def _stats_rollup(engine: Engine, f: HistoryFilter, *, buckets: Buckets, pareto_limit: int,
                  exact_latency_max_rows: int) -> Stats:
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
    if lo is not None and f.since < lo:
        edge_conds.append(I.captured_at < lo)
    if hi is not None and hi < f.until:
        edge_conds.append(I.captured_at >= hi)
    with engine.connect() as conn:
        names = dict(conn.execute(select(S.id, S.name)).all())
        hours = conn.execute(select(H.station_id, H.hour, H.verdict, H.parts, H.first_parts, H.first_passed,
                                    H.latency_count, H.latency_min, H.latency_max).where(*hconds)).all()
        edge = HourRollup()
        if edge_conds:
            other = I.__table__.alias("other")
            again = exists().where(other.c.station_id == I.station_id, other.c.part_id == I.part_id,
                                   other.c.id != I.id)
            for r in conn.execute(select(I.station_id, I.captured_at, I.verdict, I.latency_ms, I.first_of_part,
                                         and_(I.first_of_part, I.verdict == "PASS", ~again).label("fp"))
                                  .where(*conds, or_(*edge_conds))):
                edge.add(r.station_id, r.captured_at, r.verdict, r.latency_ms, bool(r.first_of_part), bool(r.fp))
        groups = [(r.station_id, r.hour, r.verdict, r.parts, r.first_parts, r.first_passed, r.latency_count,
                   r.latency_min, r.latency_max) for r in hours]
        groups += [(k[0], k[1], k[2], v[0], v[1], v[2], v[3], v[5], v[6]) for k, v in edge.hours.items()]

        rows: dict[tuple[int, int], PeriodStats] = {}
        with_latency: dict[int, int] = defaultdict(int)
        bounds: dict[tuple[int, int], list[float | None]] = {}
        for sid, hour, verdict, n, fparts, fpassed, nl, lmin, lmax in groups:
            bk = buckets.of(hour)
            ps = rows.get((sid, bk))
            if ps is None:
                ps = rows[(sid, bk)] = PeriodStats(names[sid], bk, buckets.label(bk), buckets.start(bk))
            ps.parts += n
            ps.distinct_parts += fparts
            ps.first_pass += fpassed
            if verdict == "PASS":
                ps.passed += n
            elif verdict == "FAIL":
                ps.failed += n
            elif verdict == "ERROR":
                ps.errors += n
            elif verdict == "NOT_INSPECTED":
                ps.not_inspected += n
            with_latency[sid] += nl
            if nl:
                b = bounds.setdefault((sid, bk), [lmin, lmax])
                b[0] = lmin if b[0] is None else min(b[0], lmin)
                b[1] = lmax if b[1] is None else max(b[1], lmax)
        rows = {k: p for k, p in rows.items() if p.parts}

        if sum(with_latency.values()) <= exact_latency_max_rows:
            lat_total = _exact_latency(conn, conds, with_latency)
            lat_periods = _percentiles(conn, conds, [I.station_id, buckets.expr(I.captured_at)], (50, 99))
        else:
            # Histograms summed per station and period in SQL, plus the ends' own.
            pb = buckets.expr(HL.hour)
            hists: dict[tuple[int, int], dict[int, int]] = defaultdict(lambda: defaultdict(int))
            for sid, bk, b, n in conn.execute(
                    select(HL.station_id, pb.label("pb"), HL.bucket, func.sum(HL.n))
                    .where(*lconds).group_by(HL.station_id, pb, HL.bucket)):
                hists[(sid, bk)][b] += int(n)
            for (sid, hour, _v, b), n in edge.latency.items():
                hists[(sid, buckets.of(hour))][b] += n
            lat_periods = {}
            station_hist: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
            station_bounds: dict[int, list[float]] = {}
            for (sid, bk), hist in hists.items():
                lmin, lmax = bounds.get((sid, bk), (None, None))
                lat_periods[(sid, bk)] = _hist_percentiles(hist, lmin, lmax)
                for b, n in hist.items():
                    station_hist[sid][b] += n
                if lmin is not None:
                    sb = station_bounds.setdefault(sid, [lmin, lmax])
                    sb[0], sb[1] = min(sb[0], lmin), max(sb[1], lmax)
            lat_total = {sid: _hist_percentiles(hist, *station_bounds.get(sid, (None, None)))
                         for sid, hist in station_hist.items()}
        pareto_rows = _pareto(conn, f, conds)
    return _finish(f, buckets, rows, names, lat_periods, lat_total, pareto_rows, pareto_limit)


def stats_from_inspections(engine: Engine, f: HistoryFilter, *, buckets: Buckets, pareto_limit: int = 20,
                           period_latency_max_rows: int = EXACT_PERIOD_LATENCY_MAX_ROWS,
                           small_window_rows: int = SMALL_WINDOW_ROWS) -> Stats:
    """Counts, yields, latency percentiles per station and period; the Pareto of defect
    kinds; the p-chart of the reject rate. Reads only; every figure comes from the store.

    Counts are grouped per station and UTC hour in SQL (on the hour index), then summed into
    the period's buckets here. Latency p50/p99 per station over the window are exact (read
    off the (station, latency) index); per period they are exact too, but only computed when
    the window holds at most ``period_latency_max_rows`` parts (they need a sort of the whole
    window), else left ``None``."""
    dialect = engine.dialect.name
    conds = _where(f, dialect)
    v = I.verdict
    hour = _Hour(I.captured_at)
    with engine.connect() as conn:
        names = dict(conn.execute(select(S.id, S.name)).all())
        hours = conn.execute(
            select(I.station_id, hour.label("h"), v, func.count().label("n"), func.count(I.latency_ms).label("nl"))
            .where(*conds).group_by(I.station_id, hour, v)).all()
        # Pareto: defects that counted in the verdict, by kind.
        dconds = [D.failed.is_(True)]
        if f.kinds:
            dconds.append(D.kind.in_(f.kinds))
        if f.plugin:
            dconds.append(D.plugin == f.plugin)
        pareto_rows = conn.execute(
            select(D.kind, func.count().label("defects"), func.count(func.distinct(D.inspection_id)).label("parts"))
            .join(I, I.id == D.inspection_id).where(*conds, *dconds)
            .group_by(D.kind).order_by(func.count().desc(), D.kind)).all()

        # First-pass yield needs the inspections of part ids seen more than once in the window
        # (few). A small window is read whole (one index range); a large one is grouped on the
        # (station, part id, time) index, which costs one pass over that index.
        n_window = sum(r.n for r in hours)
        if n_window <= small_window_rows:
            seen: dict[tuple[int, str], list[Any]] = defaultdict(list)
            for r in conn.execute(select(I.station_id, I.part_id, I.captured_at, I.verdict).where(*conds)):
                seen[(r.station_id, r.part_id)].append(r)
            repeats = [r for rs in seen.values() if len(rs) > 1 for r in rs]
        else:
            repeated = (select(I.station_id.label("sid"), I.part_id.label("pid"))
                        .where(*conds).group_by(I.station_id, I.part_id).having(func.count() > 1).subquery())
            repeats = conn.execute(
                select(I.station_id, I.part_id, I.captured_at, I.verdict)
                .join(repeated, and_(repeated.c.sid == I.station_id, repeated.c.pid == I.part_id))
                .where(*conds)).all()

        rows: dict[tuple[int, int], PeriodStats] = {}
        with_latency: dict[int, int] = defaultdict(int)
        for r in hours:
            start = _hour_value(r.h)
            bk = buckets.of(start)
            ps = rows.get((r.station_id, bk))
            if ps is None:
                ps = rows[(r.station_id, bk)] = PeriodStats(names[r.station_id], bk, buckets.label(bk),
                                                            buckets.start(bk))
            ps.parts += r.n
            ps.distinct_parts += r.n
            if r.verdict == "PASS":
                ps.passed += r.n
                ps.first_pass += r.n
            elif r.verdict == "FAIL":
                ps.failed += r.n
            elif r.verdict == "ERROR":
                ps.errors += r.n
            elif r.verdict == "NOT_INSPECTED":
                ps.not_inspected += r.n
            with_latency[r.station_id] += r.nl
        # A part id inspected more than once is one part (in the bucket of its first
        # inspection) and never first-pass.
        firsts: dict[tuple[int, str], datetime] = {}
        for r in repeats:
            key = (r.station_id, r.part_id)
            firsts[key] = min(firsts.get(key, r.captured_at), r.captured_at)
            ps = rows[(r.station_id, buckets.of(r.captured_at))]
            ps.distinct_parts -= 1
            if r.verdict == "PASS":
                ps.first_pass -= 1
        for (sid, _), t in firsts.items():
            rows[(sid, buckets.of(t))].distinct_parts += 1

        lat_total: dict[int, dict[int, float]] = defaultdict(dict)
        for sid, n in with_latency.items():
            for p in (50, 99):
                k = (n * p + 99) // 100 - 1  # nearest rank, 0-based
                # Walk the (station, latency) index from the nearer end: p99 reads 1% of it.
                desc = k > n // 2
                lat_total[sid][p] = conn.scalar(
                    select(I.latency_ms).where(*conds, I.station_id == sid, I.latency_ms.is_not(None))
                    .order_by(I.latency_ms.desc() if desc else I.latency_ms).limit(1)
                    .offset(n - 1 - k if desc else k))
        lat_periods: dict[tuple[Any, ...], dict[int, float]] = {}
        if sum(with_latency.values()) <= period_latency_max_rows:
            lat_periods = _percentiles(conn, conds, [I.station_id, buckets.expr(I.captured_at)], (50, 99))

    for (sid, bk), pcts in lat_periods.items():
        if (sid, bk) in rows:
            rows[(sid, bk)].latency_p50_ms, rows[(sid, bk)].latency_p99_ms = pcts.get(50), pcts.get(99)
    periods = sorted(rows.values(), key=lambda p: (p.station, p.bucket))

    totals: dict[str, PeriodStats] = {}
    for p in periods:
        t = totals.setdefault(p.station, PeriodStats(p.station, -1, "total", p.start))
        for fld in ("parts", "passed", "failed", "errors", "not_inspected", "distinct_parts", "first_pass"):
            setattr(t, fld, getattr(t, fld) + getattr(p, fld))
    for sid, pcts in lat_total.items():
        if names[sid] in totals:
            totals[names[sid]].latency_p50_ms, totals[names[sid]].latency_p99_ms = pcts.get(50), pcts.get(99)

    total_defects = sum(r.defects for r in pareto_rows) or 1
    pareto, cum = [], 0
    for r in pareto_rows[:pareto_limit]:
        cum += r.defects
        pareto.append(ParetoRow(r.kind, r.defects, r.parts, r.defects / total_defects, cum / total_defects))

    pchart, p_bar = p_chart(periods)
    return Stats(buckets.period, f.since, f.until, periods, sorted(totals.values(), key=lambda t: t.station),
                 pareto, pchart, p_bar)


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
            points.append(PChartPoint(station, p.label, p.start, p.judged, p.rejects, rate, ucl, lcl,
                                      rate > ucl or rate < lcl))
    return points, p_bars


# ---------------------------------------------------------------------------- what if


RULE_FIELDS = tuple(Rule.model_fields)


def parse_overrides(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["scratch.min_score=0.7", "default.min_size_mm=2"]`` as ``{kind: {field: value}}``.
    ``default`` is the rule for kinds without their own; ``none`` clears a size limit."""
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for item in items:
        m = re.fullmatch(r"([^=.\s]+)\.([a-z_]+)=(.*)", item.strip())
        if not m:
            raise QueryError(f"--set {item!r}: expected KIND.FIELD=VALUE, e.g. scratch.min_score=0.7")
        kind, fld, value = m.groups()
        if fld not in RULE_FIELDS:
            raise QueryError(f"--set {item!r}: unknown rule field {fld!r} (fields: {', '.join(RULE_FIELDS)})")
        out[kind][fld] = None if value.strip().lower() in ("none", "null", "") else value.strip()
    # Validate each one now, so a typo fails before any reading.
    for kind, fields in out.items():
        try:
            Rule.model_validate(fields)
        except ValidationError as exc:
            e = exc.errors()[0]
            raise QueryError(f"--set {kind}.{'.'.join(map(str, e['loc']))}: {e['msg']} "
                             f"(got {e.get('input')!r})") from exc
    return dict(out)


@dataclasses.dataclass(frozen=True)
class RuleSet:
    rules: dict[str, Rule]
    default: Rule

    def apply(self, overrides: dict[str, dict[str, Any]]) -> RuleSet:
        rules = dict(self.rules)
        default = self.default
        for kind, fields in overrides.items():
            if kind == "default":
                default = Rule.model_validate({**default.model_dump(), **fields})
            else:
                base = rules.get(kind, default)
                rules[kind] = Rule.model_validate({**base.model_dump(), **fields})
        return RuleSet(rules, default)

    def describe(self) -> dict[str, Any]:
        return {"default": self.default.model_dump(), **{k: r.model_dump() for k, r in sorted(self.rules.items())}}


def run_rules(config_yaml: str) -> RuleSet:
    """The verdict rules a run was recorded with (from its stored config)."""
    try:
        data = yaml.safe_load(config_yaml) or {}
        rules = {k: Rule.model_validate(v) for k, v in (data.get("rules") or {}).items()}
        default = Rule.model_validate(data["default_rule"]) if data.get("default_rule") else Rule()
    except (yaml.YAMLError, ValidationError, AttributeError, TypeError) as exc:
        raise QueryError(f"a run's stored config has no readable verdict rules ({exc})") from exc
    return RuleSet(rules, default)


@dataclasses.dataclass(frozen=True)
class Change:
    inspection_id: int
    station: str
    part_id: str
    captured_at: datetime
    before: str
    after: str
    kinds: tuple[str, ...]
    """Kinds of the findings that fail the part under the new rules (PASS->FAIL), or that
    failed it before (FAIL->PASS)."""


@dataclasses.dataclass
class WhatIf:
    parts: int
    """Parts judged in the window (PASS, FAIL or ERROR); NOT_INSPECTED have no findings."""
    rejects_before: int
    unchanged: int
    to_fail: list[Change]
    to_pass: list[Change]
    errors: int
    """ERROR parts stay ERROR: a step that could not judge the part fails it under any rules."""
    rules_before: dict[int, dict[str, Any]]
    rules_after: dict[int, dict[str, Any]]
    """Per run id."""

    @property
    def rejects_after(self) -> int:
        return self.rejects_before + len(self.to_fail) - len(self.to_pass)

    def as_dict(self) -> dict[str, Any]:
        def ch(c: Change) -> dict[str, Any]:
            return {**dataclasses.asdict(c), "captured_at": c.captured_at.isoformat() + "Z", "kinds": list(c.kinds)}
        return {"parts": self.parts, "unchanged": self.unchanged, "errors": self.errors,
                "rejects_before": self.rejects_before, "rejects_after": self.rejects_after,
                "pass_to_fail": [ch(c) for c in self.to_fail], "fail_to_pass": [ch(c) for c in self.to_pass],
                "rules_before": {str(k): v for k, v in self.rules_before.items()},
                "rules_after": {str(k): v for k, v in self.rules_after.items()}}


def whatif(engine: Engine, f: HistoryFilter, overrides: dict[str, dict[str, Any]]) -> WhatIf:
    """Re-decide every stored part matching ``f`` from its stored findings, under each run's
    recorded rules with ``overrides`` applied, through the same :func:`inspector_core.verdict`
    functions the station uses. Reads only.

    Findings below a detector's ``report_floor`` were never stored: lowering a ``min_score``
    below that floor cannot find them."""
    dialect = engine.dialect.name
    base = f.model_copy(update={"verdicts": tuple(v for v in (f.verdicts or ("PASS", "FAIL", "ERROR"))
                                                 if v != "NOT_INSPECTED")})
    conds = _where(base, dialect)
    with engine.connect() as conn:
        per_verdict = dict(conn.execute(select(I.verdict, func.count()).where(*conds).group_by(I.verdict)).all())
        run_ids = list(conn.scalars(select(I.run_id).where(*conds).distinct()))
        before: dict[int, RuleSet] = {}
        for rid, text in conn.execute(select(R.id, R.config_yaml).where(R.id.in_(run_ids))):
            before[rid] = run_rules(text)
        after = {rid: rs.apply(overrides) for rid, rs in before.items()}
        # Only parts with stored findings can change; the rest pass under any rules.
        q = (select(I.id, I.run_id, I.part_id, I.captured_at, I.verdict, S.name.label("station"),
                    D.kind, D.score, D.size_px, D.size_mm, D.failed)
             .join(S, S.id == I.station_id).join(D, D.inspection_id == I.id)
             .where(*conds, I.verdict.in_(("PASS", "FAIL")))
             .order_by(I.id))
        to_fail, to_pass = [], []
        checked = 0

        def decide(group: list[Any]) -> None:
            nonlocal checked
            head = group[0]
            rs = after[head.run_id]
            now = _failing(group, rs.rules, rs.default)
            new = _verdict(now, 0)
            checked += 1
            if new == head.verdict:
                return
            if new == "FAIL":
                ks = tuple(dict.fromkeys(g.kind for g, x in zip(group, now, strict=True) if x))
                to_fail.append(Change(head.id, head.station, head.part_id, head.captured_at, head.verdict, new, ks))
            else:
                ks = tuple(dict.fromkeys(g.kind for g in group if g.failed))
                to_pass.append(Change(head.id, head.station, head.part_id, head.captured_at, head.verdict, new, ks))

        group: list[Any] = []
        for row in conn.execution_options(yield_per=2000).execute(q):
            if group and row.id != group[0].id:
                decide(group)
                group = []
            group.append(row)
        if group:
            decide(group)
    parts = sum(per_verdict.values())
    return WhatIf(parts=parts, rejects_before=per_verdict.get("FAIL", 0) + per_verdict.get("ERROR", 0),
                  unchanged=parts - len(to_fail) - len(to_pass), to_fail=to_fail, to_pass=to_pass,
                  errors=per_verdict.get("ERROR", 0),
                  rules_before={k: v.describe() for k, v in before.items()},
                  rules_after={k: v.describe() for k, v in after.items()})
