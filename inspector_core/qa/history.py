"""The history: pages of inspections, one inspection with its evidence, crops."""

from __future__ import annotations

import base64
import dataclasses
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Engine,
    and_,
    func,
    or_,
    select,
)

from inspector_core.qa.filters import (
    MAX_ID,
    MAX_PAGE,
    SR,
    C,
    D,
    HistoryFilter,
    I,
    QueryError,
    R,
    S,
    _defect_conditions,
    _where,
)
from inspector_core.store.records import StepRecord
from inspector_core.store.view_records import InspectionView as IV

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
    commit_latency_ms: float | None = None
    """Capture to committed (migration 0008; ``None`` on older rows and NOT_INSPECTED parts)."""
    uid: str | None = None
    """The inspection's globally unique id (``inspections.uid``; ``Report.inspection_uid`` in sinks)."""
    steps: tuple[StepScore, ...] | None = None
    """With ``evidence=True``: every step's outcome with its scores (normalised and raw)."""
    findings: tuple[FindingScore, ...] | None = None
    """With ``evidence=True``: every stored finding (failed and candidates) with its scores and box."""
    recipe: str | None = None
    """The station recipe the part was inspected under (migration 0012; ``None``: none)."""
    views: tuple[ViewSummary, ...] = ()
    """A multi-view part's views (migration 0013; docs/views.md), in the order declared; empty for
    a single-view station."""

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["captured_at"] = self.captured_at.isoformat() + "Z"
        d["kinds"] = list(self.kinds)
        for key in ("steps", "findings"):
            if d[key] is None:
                del d[key]
            else:
                d[key] = [_no_view(x) for x in d[key]]
        if self.views:
            d["views"] = [v.as_dict() for v in self.views]
        else:
            del d["views"]
        return d


def _no_view(d: dict[str, Any]) -> dict[str, Any]:
    # A single-view station's steps and findings keep the shape they had before views (no null key).
    if d.get("view") is None:
        d.pop("view", None)
    return d


@dataclasses.dataclass(frozen=True)
class ViewSummary:
    """One view of a multi-view part, as the history carries it (``inspection_views``)."""

    view: str
    status: str
    """``ok``, ``missing`` (no frame by the join's deadline) or ``error`` (a frame not inspectable)."""
    captured_at: datetime | None
    error: str | None
    kinds: tuple[str, ...]
    """Kinds of this view's defects that counted in the verdict."""
    n_defects: int
    crop_ids: tuple[int, ...]
    """The crops of this view's counted defects (``inspector crops``, ``/crops/ID``)."""
    note: str | None = None
    path: str | None = None
    """The view frame's file (``source_meta.path``), when its source gave one."""

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["captured_at"] = self.captured_at.isoformat() + "Z" if self.captured_at else None
        d["kinds"], d["crop_ids"] = list(self.kinds), list(self.crop_ids)
        return d


@dataclasses.dataclass(frozen=True)
class StepScore:
    """One step's outcome on a part, as the history carries it for QA (scores for AUROC)."""

    step_index: int
    step: str
    detector: str
    status: str
    score: float | None
    """The highest normalised finding score in [0, 1] (0 with none above the report floor)."""
    raw_score: float | None
    """The detector's own unclipped score (``Finding.raw_score``), ``None`` if it gives none."""
    view: str | None = None
    """The view of the part the step looked at (migration 0013); ``None``: a single-view station."""


@dataclasses.dataclass(frozen=True)
class FindingScore:
    """One stored finding of a part: its scores and its box in frame pixels (x, y, w, h)."""

    step: str
    kind: str
    score: float
    raw_score: float | None
    failed: bool
    box: tuple[int, int, int, int]
    measurements: dict[str, float] = dataclasses.field(default_factory=dict)
    """The detector's measurements (``length_mm``, ``delta_e``, ...), as stored in ``defects.measurements``."""
    message: str = ""
    view: str | None = None
    """The view of the part the finding is on (migration 0013); ``None``: a single-view station."""


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
        at, last = datetime.fromisoformat(t), int(i)
        if at.tzinfo is not None or not 0 <= last <= MAX_ID:
            raise ValueError("out of range")
        return at, last
    except Exception as exc:
        raise QueryError(f"cursor: not a cursor from a previous page ({cursor[:40]!r})") from exc


def history(
    engine: Engine,
    f: HistoryFilter,
    *,
    limit: int = 50,
    cursor: str | None = None,
    offset: int = 0,
    evidence: bool = False,
) -> Page:
    """Inspections matching ``f``, newest first (``captured_at``, then ``id``, descending).

    Page with ``cursor`` (keyset: constant cost however deep) or ``offset``. ``evidence=True``
    adds each row's steps and stored findings with their scores (normalised and raw) and boxes:
    two more queries per page, on the (inspection) indexes."""
    if not 1 <= limit <= MAX_PAGE:
        raise QueryError(f"limit: must be between 1 and {MAX_PAGE} (got {limit})")
    if not 0 <= offset <= MAX_ID:
        raise QueryError(f"offset: must be between 0 and {MAX_ID} (got {offset})")
    dialect = engine.dialect.name
    conds = _where(f, dialect)
    if cursor:
        t, last = _parse_cursor(cursor)
        conds.append(or_(I.captured_at < t, and_(I.captured_at == t, I.id < last)))
    q = (
        select(
            I.id,
            S.name,
            I.run_id,
            I.part_id,
            I.captured_at,
            I.verdict,
            I.latency_ms,
            I.n_defects,
            I.error,
            I.commit_latency_ms,
            I.uid,
            I.recipe,
        )
        .join(S, S.id == I.station_id)
        .where(*conds)
        .order_by(I.captured_at.desc(), I.id.desc())
        .limit(limit + 1)
        .offset(offset)
    )
    with engine.connect() as conn:
        rows = conn.execute(q).all()
        more = len(rows) > limit
        rows = rows[:limit]
        ids = [r.id for r in rows]
        by_part: dict[int, list[Any]] = defaultdict(list)
        if ids:
            dq = (
                select(D.inspection_id, D.kind, D.score, C.id.label("crop_id"), D.view)
                .outerjoin(C, C.defect_id == D.id)
                .where(D.inspection_id.in_(ids), D.failed.is_(True))
                .order_by(D.inspection_id, D.score.desc(), D.id)
            )
            for d in conn.execute(dq):
                by_part[d.inspection_id].append(d)
        views = _views(conn, ids, by_part)
        steps: dict[int, list[StepScore]] = defaultdict(list)
        findings: dict[int, list[FindingScore]] = defaultdict(list)
        if evidence and ids:
            for s in conn.execute(
                select(
                    SR.inspection_id, SR.step_index, SR.step, SR.detector, SR.status, SR.score, SR.raw_score, SR.view
                )
                .where(SR.inspection_id.in_(ids))
                .order_by(SR.inspection_id, SR.step_index)
            ):
                steps[s.inspection_id].append(
                    StepScore(s.step_index, s.step, s.detector, s.status, s.score, s.raw_score, s.view)
                )
            for x in conn.execute(
                select(
                    D.inspection_id,
                    D.step,
                    D.kind,
                    D.score,
                    D.raw_score,
                    D.failed,
                    D.x,
                    D.y,
                    D.w,
                    D.h,
                    D.measurements,
                    D.message,
                    D.view,
                )
                .where(D.inspection_id.in_(ids))
                .order_by(D.inspection_id, D.failed.desc(), D.score.desc(), D.id)
            ):
                findings[x.inspection_id].append(
                    FindingScore(
                        x.step,
                        x.kind,
                        x.score,
                        x.raw_score,
                        bool(x.failed),
                        (x.x, x.y, x.w, x.h),
                        dict(x.measurements or {}),
                        x.message or "",
                        x.view,
                    )
                )
    out = []
    for r in rows:
        ds = by_part.get(r.id, [])
        kinds = tuple(dict.fromkeys(d.kind for d in ds))
        out.append(
            InspectionRow(
                id=r.id,
                station=r.name,
                run_id=r.run_id,
                part_id=r.part_id,
                captured_at=r.captured_at,
                verdict=r.verdict,
                latency_ms=r.latency_ms,
                n_defects=r.n_defects,
                kinds=kinds,
                max_score=ds[0].score if ds else None,
                error=r.error,
                thumbnail_crop_id=next((d.crop_id for d in ds if d.crop_id is not None), None),
                commit_latency_ms=r.commit_latency_ms,
                uid=r.uid,
                steps=tuple(steps.get(r.id, ())) if evidence else None,
                findings=tuple(findings.get(r.id, ())) if evidence else None,
                recipe=r.recipe,
                views=views.get(r.id, ()),
            )
        )
    nxt = _cursor(rows[-1].captured_at, rows[-1].id) if more and rows else None
    return Page(out, nxt)


def _views(conn: Any, ids: list[int], failed: dict[int, list[Any]]) -> dict[int, tuple[ViewSummary, ...]]:
    """The views of the inspections ``ids`` that have any (one query), with each view's counted
    defects from ``failed`` (the page's failed defects, by inspection)."""
    if not ids:
        return {}
    out: dict[int, list[ViewSummary]] = defaultdict(list)
    for v in conn.execute(select(IV).where(IV.inspection_id.in_(ids)).order_by(IV.inspection_id, IV.id)):
        ds = [d for d in failed.get(v.inspection_id, []) if d.view == v.view]
        meta = v.source_meta if isinstance(v.source_meta, dict) else {}
        out[v.inspection_id].append(
            ViewSummary(
                v.view,
                v.status,
                v.captured_at,
                v.error,
                tuple(dict.fromkeys(d.kind for d in ds)),
                len(ds),
                tuple(d.crop_id for d in ds if d.crop_id is not None),
                v.note,
                meta.get("path") if isinstance(meta.get("path"), str) else None,
            )
        )
    return {k: tuple(x) for k, x in out.items()}


def iter_history(
    engine: Engine, f: HistoryFilter, *, batch: int = 500, evidence: bool = False
) -> Iterator[InspectionRow]:
    """Every matching inspection, newest first, read page by page (for exports)."""
    cursor = None
    while True:
        page = history(engine, f, limit=batch, cursor=cursor, evidence=evidence)
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
    detector: str
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
    raw_score: float | None = None
    """The detector's own unclipped score (migration 0008)."""
    view: str | None = None
    """The view of the part it is on (migration 0013); its box is in that view's frame pixels."""


@dataclasses.dataclass(frozen=True)
class PartView:
    """One view of a multi-view inspection (``inspection_views``, docs/views.md)."""

    view: str
    status: str
    captured_at: datetime | None
    source_meta: dict[str, Any] | None
    error: str | None
    note: str | None
    evidence_x: int | None
    """Where the view starts (frame px) in the part's evidence image (its views side by side)."""
    width: int | None
    height: int | None


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
    steps: list[StepRecord]
    defects: list[DefectView]
    run: dict[str, Any]
    """Provenance: run id, host, software version, plugins with versions, config hash, models."""
    committed_at: datetime | None = None
    commit_latency_ms: float | None = None
    """When the writer committed it, and capture to committed (migration 0008)."""
    views: list[PartView] = dataclasses.field(default_factory=list)
    """A multi-view part's views, in the order declared (empty: a single-view station)."""
    recipe: str | None = None
    recipe_hash: str | None = None
    """The station recipe the part was inspected under and its hash (migration 0012; ``None``: none)."""

    @property
    def view_x(self) -> dict[str | None, int]:
        """Each view's x in the part's evidence image (a finding's box is in its view's frame)."""
        return {v.view: v.evidence_x for v in self.views if v.evidence_x is not None}

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["captured_at"] = self.captured_at.isoformat() + "Z"
        d["decided_at"] = self.decided_at.isoformat() + "Z"
        d["committed_at"] = self.committed_at.isoformat() + "Z" if self.committed_at else None
        if self.views:
            for v in d["views"]:
                v["captured_at"] = v["captured_at"].isoformat() + "Z" if v["captured_at"] else None
        else:
            del d["views"]
            d["steps"] = [_no_view(x) for x in d["steps"]]
            d["defects"] = [_no_view(x) for x in d["defects"]]
        return d


def inspection(engine: Engine, inspection_id: int) -> InspectionDetail | None:
    """One inspection with every step, every stored finding (with its crop's geometry) and
    the provenance of the run that produced it; ``None`` if there is no such id."""
    if not 0 <= inspection_id <= MAX_ID:
        return None
    with engine.connect() as conn:
        r = conn.execute(
            select(I, S.name.label("station_name")).join(S, S.id == I.station_id).where(I.id == inspection_id)
        ).one_or_none()
        if r is None:
            return None
        steps = [
            StepRecord(
                s.step_index,
                s.step,
                s.detector,
                s.status,
                s.score,
                s.latency_ms,
                s.n_findings,
                s.error,
                raw_score=s.raw_score,
                view=s.view,
            )
            for s in conn.execute(select(SR).where(SR.inspection_id == inspection_id).order_by(SR.step_index))
        ]
        defects = []
        dq = (
            select(
                D,
                C.id.label("crop_id"),
                C.format,
                C.x.label("cx"),
                C.y.label("cy"),
                C.scale,
                C.width.label("cw"),
                C.height.label("ch"),
            )
            .outerjoin(C, C.defect_id == D.id)
            .where(D.inspection_id == inspection_id)
            .order_by(D.failed.desc(), D.score.desc(), D.id)
        )
        for d in conn.execute(dq):
            crop_box = None
            if d.crop_id is not None:
                crop_box = ((d.x - d.cx) * d.scale, (d.y - d.cy) * d.scale, d.w * d.scale, d.h * d.scale)
            defects.append(
                DefectView(
                    d.id,
                    d.step,
                    d.detector,
                    d.kind,
                    d.score,
                    d.failed,
                    (d.x, d.y, d.w, d.h),
                    d.size_px,
                    d.size_mm,
                    dict(d.measurements or {}),
                    d.message,
                    d.crop_id,
                    d.format,
                    crop_box,
                    (d.cw, d.ch) if d.crop_id is not None else None,
                    d.raw_score,
                    d.view,
                )
            )
        views = [
            PartView(v.view, v.status, v.captured_at, v.source_meta, v.error, v.note, v.evidence_x, v.width, v.height)
            for v in conn.execute(select(IV).where(IV.inspection_id == inspection_id).order_by(IV.id))
        ]
        run = conn.execute(select(R).where(R.id == r.run_id)).one()
    return InspectionDetail(
        id=r.id,
        uid=r.uid,
        station=r.station_name,
        part_id=r.part_id,
        seq=r.seq,
        captured_at=r.captured_at,
        decided_at=r.decided_at,
        verdict=r.verdict,
        latency_ms=r.latency_ms,
        error=r.error,
        error_step=r.error_step,
        source_meta=r.source_meta,
        steps=steps,
        defects=defects,
        committed_at=r.committed_at,
        commit_latency_ms=r.commit_latency_ms,
        views=views,
        recipe=r.recipe,
        recipe_hash=r.recipe_hash,
        run={
            "id": run.id,
            "started_at": run.started_at.isoformat() + "Z",
            "hostname": run.hostname,
            "software_version": run.software_version,
            "plugins": run.plugins,
            "config_hash": run.config_hash,
            "models": run.models,
            "ended_at": run.ended_at.isoformat() + "Z" if run.ended_at else None,
        },
    )


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
    detector: str
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


def crops(
    engine: Engine,
    f: HistoryFilter,
    *,
    limit: int | None = 100,
    cursor: int | None = None,
) -> list[CropRow]:
    """Crops of the inspections matching ``f`` whose defect also meets ``f``'s defect
    conditions, newest first (by crop id, descending). ``cursor``: the last crop id seen."""
    dialect = engine.dialect.name
    q = (
        select(
            C.id.label("crop_id"),
            C.defect_id,
            C.inspection_id,
            S.name.label("station"),
            I.part_id,
            I.captured_at,
            I.verdict,
            D.step,
            D.detector,
            D.kind,
            D.score,
            D.failed,
            D.x,
            D.y,
            D.w,
            D.h,
            D.size_px,
            D.size_mm,
            D.measurements,
            C.format,
            C.width,
            C.height,
        )
        .join(D, D.id == C.defect_id)
        .join(I, I.id == C.inspection_id)
        .join(S, S.id == I.station_id)
        .where(
            *list(
                _where(
                    f.model_copy(update={"kinds": (), "min_score": None, "min_size_mm": None, "detector": None}),
                    dialect,
                )
            ),
            *_defect_conditions(f),
        )
        .order_by(C.id.desc())
    )
    if cursor is not None:
        if not 0 <= cursor <= MAX_ID:
            raise QueryError(f"cursor: not a crop id (got {cursor})")
        q = q.where(C.id < cursor)
    if limit is not None:
        q = q.limit(limit)
    with engine.connect() as conn:
        return [
            CropRow(
                r.crop_id,
                r.defect_id,
                r.inspection_id,
                r.station,
                r.part_id,
                r.captured_at,
                r.verdict,
                r.step,
                r.detector,
                r.kind,
                r.score,
                r.failed,
                (r.x, r.y, r.w, r.h),
                r.size_px,
                r.size_mm,
                dict(r.measurements or {}),
                r.format,
                r.width,
                r.height,
            )
            for r in conn.execute(q)
        ]


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
    if not 0 <= crop_id <= MAX_ID:
        return None
    with engine.connect() as conn:
        r = conn.execute(select(C.format, C.data).where(C.id == crop_id)).one_or_none()
    return (r.format, bytes(r.data)) if r else None
