"""The review roll-ups: ``review_outcomes`` (migration 0014): per reviewed part, what its current
reviews say about the machine, by the counting rules of :mod:`inspector_core.qa.review` (see
:class:`~inspector_core.store.review_records.ReviewOutcome` for the rows); and ``review_parts``
(migration 0015): per reviewed part, what the dashboard's review tiles add up
(:class:`~inspector_core.store.review_records.ReviewPart`).

:func:`refresh` rewrites the ``review_outcomes`` rows of some parts from the log and the machine's
findings, in the caller's transaction; :func:`refresh_parts` those of ``review_parts``;
:func:`refresh_all` both. :func:`inspector_core.qa.review.add_review` calls :func:`refresh_all` for
the part it reviews, after appending the row, so the roll-ups are exact after every commit; a bulk
load of reviews (``bench/review_queue.py``) calls it for every reviewed part, as migrations 0014
(:func:`refresh`) and 0015 (:func:`refresh_parts`) do. The rows are derived only from
``reviews``, ``defects`` (``failed`` findings) and ``inspections``, none of which changes after
it is written (an inspection deleted takes its rows along: ``ON DELETE CASCADE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, case, delete, exists, false, func, insert, literal, null, select

from inspector_core.store.review_records import LABELS, Review, ReviewOutcome, ReviewPart
from inspector_core.store.schema import Defect, Inspection

WHOLE = ("confirmed", "false_alarm", "missed")
"""A part's own review with one of these labels says the reviewer judged the whole part
(``unsure`` does not)."""
COLUMNS = ("inspection_id", "station_id", "captured_at", "step", "kind", "tp", "fp", "fn", "whole")
CHUNK = 500
D, I = Defect, Inspection


def _failed() -> Any:
    # Written so that no index on ``failed`` is taken for it (see qa.review._failed).
    return func.coalesce(D.failed, false()).is_(True)


def _selects(ids: Sequence[int] | None) -> list[Any]:
    """The three ``INSERT ... SELECT`` sources (pair rows, missed rows, part rows) for the parts
    ``ids`` (every reviewed part when ``None``)."""
    r = Review.__table__.alias("rv")

    def latest(subject: Any, col: Any) -> Any:
        return select(col).where(subject).order_by(r.c.id.desc()).limit(1).scalar_subquery()

    whole = and_(r.c.inspection_id == I.id, r.c.defect_id.is_(None))
    parts_q = select(
        I.id.label("iid"),
        I.station_id.label("sid"),
        I.captured_at.label("at"),
        I.verdict.label("verdict"),
        latest(whole, r.c.label).label("plabel"),
        func.coalesce(latest(whole, r.c.step), "").label("mstep"),
        latest(whole, r.c.kind).label("mkind"),
    )
    if ids is None:
        reviewed = select(Review.inspection_id).distinct().subquery("reviewed")
        parts_q = parts_q.join(reviewed, reviewed.c.inspection_id == I.id)
    else:
        parts_q = parts_q.where(I.id.in_(list(ids)), exists().where(Review.inspection_id == I.id))

    def parts() -> Any:
        return parts_q.subquery("parts")

    p = parts()
    own = latest(and_(r.c.inspection_id == D.inspection_id, r.c.defect_id == D.id), r.c.label)
    lab = case(
        (own.is_not(None), own),
        (p.c.plabel == "false_alarm", "false_alarm"),
        (and_(p.c.plabel == "confirmed", p.c.verdict == "FAIL"), "confirmed"),
        else_=None,
    )
    tp = func.max(case((and_(p.c.mkind == D.kind, p.c.mstep == D.step), 1), (lab == "confirmed", 1), else_=0))
    all_fa = func.min(case((lab == "false_alarm", 1), else_=0))
    is_whole = case((p.c.plabel.in_(WHOLE), 1), else_=0)
    pairs = (
        select(
            p.c.iid,
            p.c.sid,
            p.c.at,
            D.step,
            D.kind,
            tp,
            case((and_(tp == 0, all_fa == 1), 1), else_=0),
            literal(0),
            func.max(is_whole),
        )
        .join(D, D.inspection_id == p.c.iid)
        .where(_failed())
        .group_by(p.c.iid, p.c.sid, p.c.at, D.step, D.kind)
    )
    m = parts()
    one, zero = literal(1), literal(0)
    missed = select(m.c.iid, m.c.sid, m.c.at, m.c.mstep, m.c.mkind, zero, zero, one, one).where(
        m.c.plabel == "missed",
        m.c.mkind.is_not(None),
        ~exists().where(D.inspection_id == m.c.iid, _failed(), D.step == m.c.mstep, D.kind == m.c.mkind),
    )
    w = parts()
    whole_rows = select(w.c.iid, w.c.sid, w.c.at, null(), null(), zero, zero, zero, one).where(w.c.plabel.in_(WHOLE))
    return [pairs, missed, whole_rows]


def refresh(conn: Connection, ids: Sequence[int] | None) -> None:
    """Rewrite the roll-up rows of the parts ``ids`` (all of them when ``None``) from the review
    log, in ``conn``'s transaction."""
    if ids is None:
        conn.execute(delete(ReviewOutcome))
        for sel in _selects(None):
            conn.execute(insert(ReviewOutcome).from_select(COLUMNS, sel))
        return
    ids = sorted(set(ids))
    for k in range(0, len(ids), CHUNK):
        chunk = ids[k : k + CHUNK]
        conn.execute(delete(ReviewOutcome).where(ReviewOutcome.inspection_id.in_(chunk)))
        for sel in _selects(chunk):
            conn.execute(insert(ReviewOutcome).from_select(COLUMNS, sel))


def refresh_parts(conn: Connection, ids: Sequence[int] | None) -> None:
    """Rewrite the ``review_parts`` rows of the parts ``ids`` (every reviewed part when ``None``)
    from the review log and the parts' failed findings, in ``conn``'s transaction."""
    if ids is None:
        conn.execute(delete(ReviewPart))
        ids = list(conn.scalars(select(Review.inspection_id).distinct()))
    ids = sorted(set(ids))
    for k in range(0, len(ids), CHUNK):
        chunk = ids[k : k + CHUNK]
        conn.execute(delete(ReviewPart).where(ReviewPart.inspection_id.in_(chunk)))
        latest: dict[int, dict[int | None, str]] = {}  # part -> subject (defect id, None: the part) -> label
        logged: dict[int, int] = {}
        for iid, did, label in conn.execute(
            select(Review.inspection_id, Review.defect_id, Review.label)
            .where(Review.inspection_id.in_(chunk))
            .order_by(Review.id)
        ):
            latest.setdefault(iid, {})[did] = label  # the latest row of a subject is its current state
            logged[iid] = logged.get(iid, 0) + 1
        if not logged:
            continue
        parts = conn.execute(select(I.id, I.station_id, I.captured_at, I.verdict).where(I.id.in_(sorted(logged)))).all()
        failed: dict[int, list[int]] = {}
        fail_ids = [p.id for p in parts if p.verdict == "FAIL"]
        if fail_ids:
            for iid, did in conn.execute(select(D.inspection_id, D.id).where(D.inspection_id.in_(fail_ids), _failed())):
                failed.setdefault(iid, []).append(did)
        rows = []
        for p in parts:
            said = latest[p.id]
            row: dict[str, Any] = {
                "inspection_id": p.id,
                "station_id": p.station_id,
                "captured_at": p.captured_at,
                "reviews": logged[p.id],
                "findings_reviewed": sum(1 for d in failed.get(p.id, ()) if None in said or d in said),
            }
            labels = list(said.values())
            row.update({lab: labels.count(lab) for lab in LABELS})
            rows.append(row)
        if rows:
            conn.execute(insert(ReviewPart), rows)


def refresh_all(conn: Connection, ids: Sequence[int] | None) -> None:
    """Both roll-ups (:func:`refresh`, :func:`refresh_parts`) for the parts ``ids``."""
    refresh(conn, ids)
    refresh_parts(conn, ids)
