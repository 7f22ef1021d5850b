"""The review log: people's word on the machine's verdicts, written beside them, read back.

A **review** is about a *subject*: a part (an inspection, ``defect_id`` ``None``) or one
finding on it (a ``defects`` row). Labels (:data:`LABELS`):

- on a finding: ``confirmed`` (a real defect), ``false_alarm`` (not one), ``unsure``;
- on a part: ``confirmed`` (the machine's verdict is right), ``false_alarm`` (a FAIL part that
  is good), ``missed`` (a defect the machine did not report, with the box the reviewer drew in
  frame pixels, its step and kind), ``unsure``.

The log is append-only (``reviews``): a change of mind is a new row, and the current state of a
subject is its latest row (highest ``id``). Nothing here updates or deletes a row of
``inspections`` or ``defects``: the machine verdict is evidence.

The **queue** is what is left to review: every failed finding of a FAIL part, newest first,
interleaved with a sample of PASS parts near the threshold (a stored candidate finding whose
score is within ``near`` below its rule's ``min_score`` under the run's own rules), so that
misses can be found.

**Stats** (:func:`review_stats`), per station, step and kind, over the reviewed parts:
precision, recall, false alarms per 1,000 reviewed parts, each with a Wilson 95 % interval and
the counts behind it. A part counts for a (step, kind) when:

- the machine failed it for that (step, kind) and a reviewer confirmed one of those findings
  (true positive) or called all of them false alarms (false positive), directly or by a
  review of the whole part; or
- the machine did not, and the part has a review of its own (the reviewer looked at the whole
  part): ``missed`` with that step and kind is a false negative, ``confirmed`` /
  ``false_alarm`` / a missed of another kind a true negative.

``unsure`` counts nowhere. Reviewed parts are not a random sample (FAIL parts first, PASS parts
near the threshold): recall is an estimate over the parts reviewed, not the line's.

Writing goes through :func:`open_writer`, a store opened **without migrating** that refuses a
schema without the review tables (remedy: ``inspector upgrade``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import weakref
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, exists, false, func, insert, inspect, literal, or_, select, union_all
from sqlalchemy.sql.expression import ColumnElement

from inspector_core.qa.accounts import Account
from inspector_core.qa.filters import MAX_ID, D, I, QueryError, R, S
from inspector_core.store import Store, review_outcomes, schema, utcnow
from inspector_core.store.review_records import LABELS, PassCandidate, Review, ReviewOutcome, ReviewPart, User

C = schema.Crop
SR = schema.StepResult
TABLES = ("reviews", "users", "user_sessions")
NEAR = 0.15
"""Default band below a rule's ``min_score`` in which a PASS part is offered for review."""
PASS_EVERY = 4
"""In the queue, one near-threshold PASS part after every this many FAIL findings."""
MAX_REASON = 2000


class ReviewError(QueryError):
    """A review that cannot be written or read; the message names the subject and the remedy."""


# ---------------------------------------------------------------------------- opening the writer


def open_writer(url: str, *, source: str | None = None) -> Store:
    """The store at ``url`` for writing reviews and accounts: never migrated, checked to be at
    this release's schema (:func:`inspector_core.qa.reader.check_schema`) and to hold the review
    tables; else :class:`~inspector_core.qa.reader.ReaderError` / :class:`ReviewError` naming
    ``inspector upgrade``."""
    from inspector_core.qa.reader import check_schema, upgrade_command

    source = source or f"--db {url}"
    store = Store(url, migrate=False)
    try:
        check_schema(store, source)
        with store.transaction() as conn:
            missing = [t for t in TABLES if not inspect(conn).has_table(t)]
        if missing:
            raise ReviewError(
                f"store {store.display_url} has no {', '.join(missing)} table(s) (schema revision 0010): "
                f"reviews are never written by migrating here; upgrade the store with `{upgrade_command(source)}`"
            )
    except BaseException:
        store.close()
        raise
    return store


# ---------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True)
class ReviewRow:
    """One row of the log, with its author's name."""

    id: int
    inspection_id: int
    defect_id: int | None
    label: str
    reason: str
    user: str
    via: str
    created_at: datetime
    step: str | None = None
    kind: str | None = None
    box: tuple[int, int, int, int] | None = None
    """For ``missed``: (x, y, w, h) in frame pixels."""

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["created_at"] = self.created_at.isoformat() + "Z"
        d["box"] = list(self.box) if self.box else None
        return d


def _row(r: Any) -> ReviewRow:
    box = (r.x, r.y, r.w, r.h) if r.x is not None else None
    return ReviewRow(
        r.id, r.inspection_id, r.defect_id, r.label, r.reason, r.user, r.via, r.created_at, r.step, r.kind, box
    )


def _review_columns() -> tuple[Any, ...]:
    return (
        Review.id,
        Review.inspection_id,
        Review.defect_id,
        Review.label,
        Review.reason,
        User.name.label("user"),
        Review.via,
        Review.created_at,
        Review.step,
        Review.kind,
        Review.x,
        Review.y,
        Review.w,
        Review.h,
    )


# ---------------------------------------------------------------------------- writing


def add_review(
    store: Store,
    *,
    inspection_id: int,
    label: str,
    user: Account,
    defect_id: int | None = None,
    reason: str = "",
    box: Sequence[int] | None = None,
    step: str | None = None,
    kind: str | None = None,
    via: str = "web",
) -> ReviewRow:
    """Append a review of a part (``defect_id`` None) or of one of its findings. Checks that
    the subject exists, that the label fits it, that ``user`` may review; never changes the
    machine's rows. Raises :class:`ReviewError`."""
    if not user.can_review:
        why = "is disabled" if user.disabled_at is not None else f"has role {user.role!r}"
        raise ReviewError(
            f"user {user.name!r} {why} and may not review; an admin can change that with "
            f"`inspector users set {user.name} --role reviewer`"
        )
    if label not in LABELS:
        raise ReviewError(f"label {label!r}: must be one of {', '.join(LABELS)}")
    if not 1 <= inspection_id <= MAX_ID or (defect_id is not None and not 1 <= defect_id <= MAX_ID):
        raise ReviewError("inspection and defect ids are positive 64-bit integers")
    reason = reason.strip()
    if len(reason) > MAX_REASON:
        raise ReviewError(f"the reason is {len(reason)} characters long; at most {MAX_REASON}")
    if label != "missed" and (box is not None or step or kind):
        raise ReviewError("a box, step and kind are given only with label missed (the defect the machine missed)")
    with store.transaction(write=True) as conn:
        # The part's row locked until the commit (PostgreSQL; SQLite's BEGIN IMMEDIATE already
        # serialises writers): two reviews of one part rewrite its roll-up one after the other.
        verdict = conn.scalar(select(I.verdict).where(I.id == inspection_id).with_for_update())
        if verdict is None:
            raise ReviewError(f"no inspection {inspection_id} in store {store.display_url}")
        if defect_id is not None:
            owner = conn.scalar(select(D.inspection_id).where(D.id == defect_id))
            if owner != inspection_id:
                raise ReviewError(f"inspection {inspection_id} has no finding (defect) {defect_id}")
            if label == "missed":
                raise ReviewError(
                    "missed is said of a part, not of a finding: review the part (no defect id) with the "
                    "box of the defect the machine missed"
                )
        elif label == "false_alarm" and verdict != "FAIL":
            raise ReviewError(
                f"inspection {inspection_id} is {verdict}, not FAIL: false_alarm is said of a FAIL part or of "
                "a finding; a good part the machine passed is confirmed"
            )
        x = y = w = h = None
        if label == "missed":
            if not kind:
                raise ReviewError("missed: name the kind of the defect the machine missed (e.g. scratch)")
            step = step or _step_for(conn, inspection_id, kind)
            if box is not None:
                if len(box) != 4 or any(not isinstance(v, int) or isinstance(v, bool) for v in box):
                    raise ReviewError("box: four whole numbers x, y, w, h in frame pixels")
                x, y, w, h = box
                if x < 0 or y < 0 or w < 1 or h < 1 or max(x + w, y + h) > 1_000_000:
                    raise ReviewError(f"box {list(box)}: x, y >= 0 and w, h >= 1 in frame pixels")
        rid = conn.execute(
            insert(Review)
            .values(
                inspection_id=inspection_id,
                defect_id=defect_id,
                label=label,
                step=step,
                kind=kind,
                x=x,
                y=y,
                w=w,
                h=h,
                reason=reason,
                user_id=user.id,
                via=via,
                created_at=utcnow(),
            )
            .returning(Review.id)
        ).scalar_one()
        review_outcomes.refresh_all(conn, [inspection_id])
        row = conn.execute(
            select(*_review_columns()).join(User, User.id == Review.user_id).where(Review.id == rid)
        ).one()
    return _row(row)


def _step_for(conn: Connection, inspection_id: int, kind: str) -> str:
    """The step a missed defect of ``kind`` belongs to, when the reviewer did not say: the step
    that reported that kind on the part, else the part's only step, else the step whose detector
    is named like the kind."""
    found = list(conn.scalars(select(D.step).where(D.inspection_id == inspection_id, D.kind == kind).distinct()))
    if len(found) == 1:
        return found[0]
    steps = conn.execute(select(SR.step, SR.detector).where(SR.inspection_id == inspection_id)).all()
    if len(steps) == 1:
        return str(steps[0].step)
    named = [s.step for s in steps if s.detector == kind]
    if len(named) == 1:
        return str(named[0])
    raise ReviewError(
        f"missed {kind}: say which step should have found it (step); this part's steps are "
        + (", ".join(sorted(s.step for s in steps)) or "none")
    )


# ---------------------------------------------------------------------------- reading


def log(engine: Engine, inspection_id: int) -> list[ReviewRow]:
    """Every review of an inspection and its findings, oldest first (the whole log)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(*_review_columns())
            .join(User, User.id == Review.user_id)
            .where(Review.inspection_id == inspection_id)
            .order_by(Review.id)
        ).all()
    return [_row(r) for r in rows]


def _latest_ids() -> Any:
    """The id of each subject's latest review."""
    return select(func.max(Review.id).label("id")).group_by(Review.inspection_id, Review.defect_id).subquery()


def current(engine: Engine, inspection_ids: Iterable[int]) -> dict[tuple[int, int | None], ReviewRow]:
    """The current state of every reviewed subject of these inspections:
    ``{(inspection_id, defect_id or None): latest row}``."""
    ids = sorted(set(inspection_ids))
    out: dict[tuple[int, int | None], ReviewRow] = {}
    with engine.connect() as conn:
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for r in conn.execute(
                select(*_review_columns())
                .join(User, User.id == Review.user_id)
                .where(Review.inspection_id.in_(chunk))
                .order_by(Review.id)
            ):
                out[(r.inspection_id, r.defect_id)] = _row(r)
    return out


# ---------------------------------------------------------------------------- the queue


@dataclasses.dataclass(frozen=True)
class QueueItem:
    """One thing to review: a failed finding (``defect_id`` set) or a PASS part near the
    threshold (``defect_id`` None; ``score``/``box`` are its top candidate's)."""

    inspection_id: int
    defect_id: int | None
    station: str
    part_id: str
    captured_at: datetime
    verdict: str
    step: str
    kind: str
    score: float
    min_score: float | None
    box: tuple[int, int, int, int]
    crop_id: int | None
    crop: tuple[int, int, float, int, int] | None
    """Where the crop lies in the frame and its size: (x, y, scale, width, height)."""
    current: str | None = None
    """The subject's current label, when it has one (only with ``include_reviewed``)."""

    @property
    def key(self) -> str:
        return f"d{self.defect_id}" if self.defect_id is not None else f"p{self.inspection_id}"

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["key"] = self.key
        d["subject"] = "finding" if self.defect_id is not None else "part"
        d["captured_at"] = self.captured_at.isoformat() + "Z"
        d["box"] = list(self.box)
        d["crop"] = (
            None
            if self.crop is None or self.crop_id is None
            else {
                "url": f"/crops/{self.crop_id}",
                "x": self.crop[0],
                "y": self.crop[1],
                "scale": self.crop[2],
                "width": self.crop[3],
                "height": self.crop[4],
            }
        )
        return d


def _window(stations: Sequence[str], since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if stations:
        where.append(S.name.in_(list(stations)))
    if since is not None:
        where.append(I.captured_at >= since)
    if until is not None:
        where.append(I.captured_at < until)
    return where


def _failed(value: bool) -> ColumnElement[bool]:
    """``defects.failed IS value``, written so that no index on ``failed`` can serve it: SQLite's
    planner otherwise walks ``ix_defects_failed_kind`` (all failed defects) once per inspection
    instead of ``ix_defects_inspection`` (counts took 23 s instead of 0.07 s on 200,000 parts)."""
    return func.coalesce(D.failed, false()).is_(value)


def _unreviewed_finding() -> ColumnElement[bool]:
    return ~exists().where(
        Review.inspection_id == D.inspection_id, or_(Review.defect_id == D.id, Review.defect_id.is_(None))
    )


def _unreviewed_part() -> ColumnElement[bool]:
    # SELECT 1, not SELECT *: SQLite then answers from ix_reviews_subject alone.
    return ~exists(select(literal(1)).where(Review.inspection_id == I.id, Review.defect_id.is_(None)))


def _item_columns() -> tuple[Any, ...]:
    return (
        I.id.label("iid"),
        D.id.label("did"),
        S.name.label("station"),
        I.part_id,
        I.captured_at,
        I.verdict,
        D.step,
        D.kind,
        D.score,
        D.x,
        D.y,
        D.w,
        D.h,
        C.id.label("crop_id"),
        C.x.label("cx"),
        C.y.label("cy"),
        C.scale,
        C.width,
        C.height,
        I.run_id,
    )


@dataclasses.dataclass(frozen=True)
class _Run:
    station_id: int
    station: str
    rules: Any
    """The run's verdict rules (``whatif.RuleSet``); ``None`` when its stored config has none that
    can be read (such a run offers no near-threshold parts and shows no ``min_score``)."""
    key: str
    """The rules' identity: runs with equal rules share one condition."""


_RULES: weakref.WeakKeyDictionary[Engine, dict[tuple[int, str], tuple[Any, str]]] = weakref.WeakKeyDictionary()


def _runs(conn: Connection) -> dict[int, _Run]:
    """Every run, with its station and verdict rules. A run's stored config never changes, so its
    rules are parsed once per engine, keyed by run id and config hash (parsing every run's YAML
    twice per call was 60 % of the queue's CPU: 8 of 13 ms on a month of 1,000,000 parts)."""
    from inspector_core.qa.whatif import run_rules

    cache = _RULES.setdefault(conn.engine, {})
    rows = conn.execute(select(R.id, R.config_hash, R.station_id, S.name).join(S, S.id == R.station_id)).all()
    missing = sorted(r.id for r in rows if (r.id, r.config_hash) not in cache)
    for i in range(0, len(missing), 500):
        for rid, digest, cfg in conn.execute(
            select(R.id, R.config_hash, R.config_yaml).where(R.id.in_(missing[i : i + 500]))
        ):
            try:
                rules = run_rules(cfg)
                cache[(rid, digest)] = (rules, json.dumps(rules.describe(), sort_keys=True))
            except QueryError:
                cache[(rid, digest)] = (None, "")
    return {r.id: _Run(r.station_id, r.name, *cache[(r.id, r.config_hash)]) for r in rows}


def _window_ids(
    runs: dict[int, _Run],
    stations: Sequence[str],
    since: datetime | None,
    until: datetime | None,
    at: Any,
    station_id: Any,
) -> list[ColumnElement[bool]]:
    """The window on a roll-up's copied capture time and station id (stations by id, no join)."""
    where: list[ColumnElement[bool]] = []
    if stations:
        where.append(station_id.in_(_station_ids(runs, stations)))
    if since is not None:
        where.append(at >= since)
    if until is not None:
        where.append(at < until)
    return where


def _station_ids(runs: dict[int, _Run], stations: Sequence[str]) -> list[int]:
    """The ids of the named stations that have runs (a station without one has no inspections)."""
    names = set(stations)
    return sorted({r.station_id for r in runs.values() if r.station in names})


def _near_rules(
    runs: dict[int, _Run],
    stations: Sequence[str],
    near: float,
    kind_col: Any = D.kind,
    score_col: Any = D.score,
    *,
    kind_ranges: bool = False,
) -> list[tuple[list[int], list[ColumnElement[bool]]]]:
    """Per distinct rule set over the stations' runs (all runs when none are named): those runs'
    ids and the conditions, one per rule (any of them), on a candidate finding (not failed) whose
    score lies within ``near`` below its rule's ``min_score``, whatever the window (runs are few;
    scanning the window's inspections for their run ids cost more than the whole count).

    ``kind_ranges`` writes the default rule's "any kind without a rule of its own" as the ranges
    of kinds between those, one condition each, which an index on (kind, score) serves (``NOT IN``
    alone made both planners read every candidate: PostgreSQL 30 of the tiles' 125 ms); a part
    matched by two of them must be counted once."""
    names = set(stations)
    by_rules: dict[str, tuple[Any, list[int]]] = {}
    for rid, run in sorted(runs.items()):
        if run.rules is not None and (not names or run.station in names):
            by_rules.setdefault(run.key, (run.rules, []))[1].append(rid)
    out: list[tuple[list[int], list[ColumnElement[bool]]]] = []
    for rules, rids in by_rules.values():
        kinds: list[ColumnElement[bool]] = []
        for kind, rule in rules.rules.items():
            if rule.fail:
                kinds.append(and_(kind_col == kind, score_col >= rule.min_score - near, score_col < rule.min_score))
        dflt = rules.default
        if dflt.fail:
            band = (kind_col.not_in(list(rules.rules)), score_col >= dflt.min_score - near, score_col < dflt.min_score)
            if not kind_ranges:
                kinds.append(and_(*band))
            else:  # whatever the database's collation, the ranges cover every other kind (overlaps count once)
                bounds: list[str | None] = [None, *sorted(rules.rules), None]
                for lo, hi in itertools.pairwise(bounds):
                    side = ([] if lo is None else [kind_col > lo]) + ([] if hi is None else [kind_col < hi])
                    kinds.append(and_(*side, *band))
        if kinds:
            out.append((rids, kinds))
    return out


def _near_condition(runs: dict[int, _Run], stations: Sequence[str], near: float) -> ColumnElement[bool] | None:
    """Candidate findings (not failed) near their run's threshold (:func:`_near_rules`), as one
    condition on ``defects`` joined to ``inspections`` (:func:`counts_reference`)."""
    per_rules = [and_(I.run_id.in_(rids), or_(*conds)) for rids, conds in _near_rules(runs, stations, near)]
    return or_(*per_rules) if per_rules else None


def queue(
    engine: Engine,
    *,
    stations: Sequence[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    near: float = NEAR,
    limit: int = 50,
    include_reviewed: bool = False,
    pass_every: int = PASS_EVERY,
) -> list[QueueItem]:
    """What is left to review, in order: failed findings of FAIL parts newest first, with a
    near-threshold PASS part after every ``pass_every`` of them (or more when the FAIL ones run
    out). A subject with a current review is left out unless ``include_reviewed``."""
    if not 0 < near <= 1:
        raise ReviewError(f"near: a score band between 0 and 1 (got {near})")
    limit = max(1, min(limit, 1000))
    where = _window(stations, since, until)
    with engine.connect() as conn:
        runs = _runs(conn)
        base = (
            select(*_item_columns())
            .select_from(D)
            .join(I, I.id == D.inspection_id)
            .join(S, S.id == I.station_id)
            .outerjoin(C, C.defect_id == D.id)
        )
        fails_q = base.where(I.verdict == "FAIL", _failed(True), *where)
        if not include_reviewed:
            fails_q = fails_q.where(_unreviewed_finding())
        fails_q = fails_q.add_columns(literal(0).label("passed"))
        fails_q = fails_q.order_by(I.captured_at.desc(), I.id.desc(), D.id).limit(limit)
        # The near-threshold PASS parts newest first, from pass_candidates (a trigger keeps it:
        # only PASS parts' candidates, with the part's time, station and run) walked backwards on
        # its time index: the rows of the few shown are read, not every PASS part of the walk
        # (PostgreSQL read 1,119 PASS parts and their findings for the 8 of a page of 40).
        PC = PassCandidate
        bands = [
            and_(PC.run_id.in_(rids), or_(*conds))
            for rids, conds in _near_rules(runs, stations, near, PC.kind, PC.score)
        ]
        pass_q = None
        if bands:
            pass_q = (
                select(*_item_columns())
                .select_from(PC)
                .join(D, D.id == PC.defect_id)
                .join(I, I.id == PC.inspection_id)
                .join(S, S.id == I.station_id)
                .outerjoin(C, C.defect_id == D.id)
                .where(or_(*bands), *_window_ids(runs, stations, since, until, PC.captured_at, PC.station_id))
            )
            if not include_reviewed:
                pass_q = pass_q.where(
                    ~exists(
                        select(literal(1)).where(Review.inspection_id == PC.inspection_id, Review.defect_id.is_(None))
                    )
                )
            pass_q = pass_q.add_columns(literal(1).label("passed"))
            pass_q = pass_q.order_by(PC.captured_at.desc(), PC.inspection_id.desc(), PC.score.desc())

        def page(need: int) -> tuple[list[Any], list[Any]]:
            # Both walks in one statement (one round trip), each with its own order and limit; need
            # * 4 candidate rows for need parts (a part with several in its band is shown once).
            if pass_q is None or not need:
                rows = conn.execute(fails_q).all()
            else:
                parts = [fails_q.subquery().select(), pass_q.limit(need * 4).subquery().select()]
                rows = conn.execute(union_all(*parts)).all()
            return [r for r in rows if not r.passed], [r for r in rows if r.passed]

        need = _passes_needed(limit, limit, pass_every)  # as if the failed findings fill their share
        fails, candidates = page(need)
        if _passes_needed(len(fails), limit, pass_every) > need:  # they ran out: the page needs more
            need = _passes_needed(len(fails), limit, pass_every)
            fails, candidates = page(need)
    # UNION ALL keeps no order: each walk sorted again here, as its ORDER BY said.
    fails.sort(key=lambda r: (r.captured_at, r.iid, -r.did), reverse=True)
    candidates.sort(key=lambda r: (r.captured_at, r.iid, r.score), reverse=True)
    passes: list[Any] = []
    seen: set[int] = set()
    for r in candidates:
        if r.iid not in seen:  # a part once, by its highest near-threshold candidate
            seen.add(r.iid)
            passes.append(r)
        if len(passes) >= need:
            break
    states = current(engine, [r.iid for r in [*fails, *passes]]) if include_reviewed else {}

    def item(r: Any, part: bool) -> QueueItem:
        run = runs.get(r.run_id)
        rs = None if run is None else run.rules
        min_score = None if rs is None else rs.rules.get(r.kind, rs.default).min_score
        st = states.get((r.iid, None if part else r.did))
        if st is None and not part:
            st = states.get((r.iid, None))
        return QueueItem(
            r.iid,
            None if part else r.did,
            r.station,
            r.part_id,
            r.captured_at,
            r.verdict,
            r.step,
            r.kind,
            r.score,
            min_score,
            (r.x, r.y, r.w, r.h),
            r.crop_id,
            None if r.crop_id is None else (r.cx, r.cy, r.scale, r.width, r.height),
            st.label if st else None,
        )

    out: list[QueueItem] = []
    fq, pq = deque(fails), deque(passes)
    run = 0
    while len(out) < limit and (fq or pq):
        if pq and (not fq or run >= pass_every):
            out.append(item(pq.popleft(), part=True))
            run = 0
        else:
            out.append(item(fq.popleft(), part=False))
            run += 1
    return out


def _passes_needed(fails: int, limit: int, pass_every: int) -> int:
    """How many PASS parts a page of ``limit`` takes when ``fails`` failed findings are at hand:
    one after every ``pass_every`` of them, and all the rest of the page once they run out. The
    page asks the database for no more (a month of 1,000,000 parts on PostgreSQL: the PASS walk
    for 40 parts took 178 ms of the queue's 180, for the 8 a page of 40 shows about a fifth)."""
    n = run = f = 0
    for _ in range(limit):
        if f >= fails or run >= pass_every:
            n += 1
            run = 0
        else:
            f += 1
            run += 1
    return n


@dataclasses.dataclass(frozen=True)
class ReviewCounts:
    """Review progress over a window: subjects left, and current labels of those reviewed."""

    findings_left: int
    """Failed findings of FAIL parts without a current review (of their own or of their part)."""
    near_pass_left: int
    """PASS parts near the threshold without a review of the part."""
    labels: dict[str, int]
    """Reviewed subjects by their current label."""
    reviews: int
    """Rows in the log for subjects in the window (every change counted)."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def counts(
    engine: Engine,
    *,
    stations: Sequence[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    near: float = NEAR,
) -> ReviewCounts:
    """The review tiles for a window (see :class:`ReviewCounts`), in one statement after the runs:
    the reviewed side (labels, log rows, findings that have left the queue) summed from the
    ``review_parts`` roll-up (migration 0015, rewritten for a part by :func:`add_review` in its
    transaction) over a covering index; the failed findings of the window's FAIL parts summed from
    ``ix_inspections_verdict_time`` (their ``n_defects``, covering since 0015); the PASS parts near
    the threshold from the candidates in each rule's score band (``pass_candidates``, which a
    trigger on ``defects`` keeps, over its covering index). Exactly :func:`counts_reference` (the
    straightforward counts), tested equal to a count in Python on random data
    (``tests/qa/test_review_counts.py``)."""
    if not 0 < near <= 1:
        raise ReviewError(f"near: a score band between 0 and 1 (got {near})")
    P = ReviewPart
    with engine.connect() as conn:
        runs = _runs(conn)

        def window(at: Any, sid: Any) -> list[ColumnElement[bool]]:
            return _window_ids(runs, stations, since, until, at, sid)

        # n_defects is the writer's count of a part's findings that counted (failed), so this is
        # the number of failed findings of the window's FAIL parts, read from the covering index.
        failed = (
            select(func.coalesce(func.sum(I.n_defects), 0))
            .where(I.verdict == "FAIL", *window(I.captured_at, I.station_id))
            .scalar_subquery()
        )
        # The PASS parts with a candidate in a rule's band, from pass_candidates' covering index:
        # one SELECT per rule (a union), not an OR, which SQLite answers by collecting row ids from
        # each range and then reading every row; a part once, unless it has a review of its own.
        PC = PassCandidate
        # On SQLite the time is written so that no index serves it: without statistics its planner
        # took ix_pass_candidates_time (the whole window) for the open-ended kind ranges.
        at = func.coalesce(PC.captured_at, PC.captured_at) if conn.dialect.name == "sqlite" else PC.captured_at
        bands = [
            select(PC.inspection_id.label("iid")).where(PC.run_id.in_(rids), c, *window(at, PC.station_id))
            for rids, conds in _near_rules(runs, stations, near, PC.kind, PC.score, kind_ranges=True)
            for c in conds
        ]
        near_parts: list[Any] = []
        if bands:
            band = union_all(*bands).subquery("band")
            own = select(literal(1)).where(Review.inspection_id == band.c.iid, Review.defect_id.is_(None))
            near_parts.append(select(func.count(func.distinct(band.c.iid))).where(~exists(own)).scalar_subquery())
        columns = (P.findings_reviewed, P.reviews, *(P.__table__.c[k] for k in LABELS))
        sums = [func.coalesce(func.sum(c), 0) for c in columns]
        row = conn.execute(
            select(failed, *sums, *near_parts).select_from(P).where(*window(P.captured_at, P.station_id))
        ).one()
    total, reviewed, logged = int(row[0]), int(row[1]), int(row[2])
    labels = {k: int(v) for k, v in zip(LABELS, row[3 : 3 + len(LABELS)], strict=True)}
    return ReviewCounts(total - reviewed, sum(int(v) for v in row[3 + len(LABELS) :]), labels, logged)


def counts_reference(
    engine: Engine,
    *,
    stations: Sequence[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    near: float = NEAR,
) -> ReviewCounts:
    """:func:`counts` the straightforward way, from the log and the findings themselves: every
    failed finding of the window checked for a review, every candidate near the threshold for
    its part's, the latest review of every subject grouped by label (0.7 s of CPU on SQLite for
    a month of 1,000,000 parts with 50,000 reviews). Kept as the definition :func:`counts` is
    tested against."""
    where = _window(stations, since, until)
    with engine.connect() as conn:
        findings_left = conn.scalar(
            select(func.count())
            .select_from(D)
            .join(I, I.id == D.inspection_id)
            .join(S, S.id == I.station_id)
            .where(I.verdict == "FAIL", _failed(True), _unreviewed_finding(), *where)
        )
        near_cond = _near_condition(_runs(conn), stations, near)
        near_left = 0
        if near_cond is not None:
            near_left = (
                conn.scalar(
                    select(func.count(func.distinct(I.id)))
                    .select_from(D)
                    .join(I, I.id == D.inspection_id)
                    .join(S, S.id == I.station_id)
                    .where(I.verdict == "PASS", _failed(False), near_cond, _unreviewed_part(), *where)
                )
                or 0
            )
        latest = _latest_ids()
        labels: dict[str, int] = {
            r.label: r.n
            for r in conn.execute(
                select(Review.label, func.count().label("n"))
                .join(latest, latest.c.id == Review.id)
                .join(I, I.id == Review.inspection_id)
                .join(S, S.id == I.station_id)
                .where(*where)
                .group_by(Review.label)
            )
        }
        total = conn.scalar(
            select(func.count())
            .select_from(Review)
            .join(I, I.id == Review.inspection_id)
            .join(S, S.id == I.station_id)
            .where(*where)
        )
    return ReviewCounts(int(findings_left or 0), int(near_left), {k: labels.get(k, 0) for k in LABELS}, int(total or 0))


# ---------------------------------------------------------------------------- stats


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float] | None:
    """Wilson score interval of the proportion ``k / n`` (95 % by default); ``None`` for n = 0.
    (Checked against ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")`` in the tests.)"""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclasses.dataclass(frozen=True)
class ReviewStat:
    """How well the machine did on the reviewed parts, for one station, step and kind."""

    station: str
    step: str
    kind: str
    reviewed: int
    """Reviewed parts counted for this (step, kind): tp + fp + fn + tn."""
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def precision_ci(self) -> tuple[float, float] | None:
        return wilson(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def recall_ci(self) -> tuple[float, float] | None:
        return wilson(self.tp, self.tp + self.fn)

    @property
    def false_alarms_per_1000(self) -> float | None:
        return 1000 * self.fp / self.reviewed if self.reviewed else None

    @property
    def false_alarms_per_1000_ci(self) -> tuple[float, float] | None:
        ci = wilson(self.fp, self.reviewed)
        return None if ci is None else (1000 * ci[0], 1000 * ci[1])

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for name in ("precision", "recall", "false_alarms_per_1000"):
            d[name] = getattr(self, name)
            ci = getattr(self, name + "_ci")
            d[name + "_ci"] = list(ci) if ci else None
        return d


def review_stats(
    engine: Engine,
    *,
    stations: Sequence[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[ReviewStat]:
    """Precision, recall and false alarms per 1,000 parts per (station, step, kind), over the
    parts reviewed in the window (by capture time); see the module's rules.

    Read from the ``review_outcomes`` roll-up (migration 0014), which :func:`add_review` rewrites
    for the part it reviews in the same transaction: one GROUP BY over a covering index, however
    many reviews there are. Exactly :func:`review_stats_reference` (the straightforward tally,
    tested equal on random logs and after every review): per (step, kind) of a station, tp, fp
    and fn are summed over the parts' rows, and tn is the number of parts the reviewers judged as
    a whole less those that count otherwise for that (step, kind)."""
    O = ReviewOutcome
    where: list[ColumnElement[bool]] = []
    if since is not None:
        where.append(O.captured_at >= since)
    if until is not None:
        where.append(O.captured_at < until)
    with engine.connect() as conn:
        names: dict[int, str] = dict(conn.execute(select(S.id, S.name)).all())
        if stations:  # by id: a join to stations made SQLite scan the window once per station
            where.append(O.station_id.in_([i for i, n in names.items() if n in set(stations)]))
        rows = conn.execute(
            select(O.station_id, O.step, O.kind, func.sum(O.tp), func.sum(O.fp), func.sum(O.fn), func.sum(O.whole))
            .where(*where)
            .group_by(O.station_id, O.step, O.kind)
        ).all()
    judged = {sid: int(w) for sid, _, kind, _, _, _, w in rows if kind is None}
    out = []
    for sid, step, kind, tp, fp, fn, excluded in rows:
        if kind is None:
            continue
        c = (int(tp), int(fp), int(fn), judged.get(sid, 0) - int(excluded))
        if sum(c):
            out.append(ReviewStat(names[sid], str(step), kind, sum(c), *c))
    return sorted(out, key=lambda s: (s.station, s.step, s.kind))


def review_stats_reference(
    engine: Engine,
    *,
    stations: Sequence[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[ReviewStat]:
    """:func:`review_stats` computed the straightforward way: every reviewed part, its failed
    findings and the current state of each subject read into Python and tallied by the module's
    rules, one part and one (step, kind) at a time. Slow on a month of a busy line (2.8 s on
    SQLite, 4.1 s on PostgreSQL at 50,000 reviews); kept as the definition the fast one is tested
    against (``tests/qa/test_review_stats.py``)."""
    where = _window(stations, since, until)
    with engine.connect() as conn:
        reviewed = select(Review.inspection_id).distinct().subquery()
        parts = {
            r.id: r
            for r in conn.execute(
                select(I.id, I.verdict, S.name.label("station"))
                .join(S, S.id == I.station_id)
                .join(reviewed, reviewed.c.inspection_id == I.id)
                .where(*where)
            )
        }
        findings: dict[int, list[Any]] = defaultdict(list)
        ids = sorted(parts)
        for i in range(0, len(ids), 500):
            for d in conn.execute(
                select(D.id, D.inspection_id, D.step, D.kind).where(
                    D.inspection_id.in_(ids[i : i + 500]), _failed(True)
                )
            ):
                findings[d.inspection_id].append(d)
    states = current(engine, ids)
    # The (step, kind) pairs each station is judged on: what its machine failed or its reviewers missed.
    pairs: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for iid, ds in findings.items():
        for d in ds:
            pairs[parts[iid].station].add((d.step, d.kind))
    for (iid, did), st in states.items():
        if did is None and st.label == "missed" and iid in parts and st.kind:
            pairs[parts[iid].station].add((st.step or "", st.kind))
    tally: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for iid, p in parts.items():
        whole = states.get((iid, None))
        part_label = whole.label if whole else None
        missed = (whole.step or "", whole.kind) if whole and part_label == "missed" else None
        for step, kind in pairs[p.station]:
            cell = tally[(p.station, step, kind)]
            mine = [d for d in findings.get(iid, []) if d.step == step and d.kind == kind]
            if missed == (step, kind):
                cell[0 if mine else 2] += 1  # a missed defect of this kind: the part is defective
                continue
            if mine:
                said = []
                for d in mine:
                    own = states.get((iid, d.id))
                    lab = own.label if own else ("false_alarm" if part_label == "false_alarm" else None)
                    if lab is None and part_label == "confirmed" and p.verdict == "FAIL":
                        lab = "confirmed"
                    said.append(lab)
                if "confirmed" in said:
                    cell[0] += 1
                elif said and all(s == "false_alarm" for s in said):
                    cell[1] += 1
            elif part_label in ("confirmed", "false_alarm", "missed"):
                cell[3] += 1
    out = [
        ReviewStat(station, step, kind, sum(c), c[0], c[1], c[2], c[3])
        for (station, step, kind), c in sorted(tally.items())
        if sum(c)
    ]
    return out
