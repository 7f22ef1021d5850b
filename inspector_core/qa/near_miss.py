"""Near misses: stored findings that did not fail their part, by how close they came to their rule.

Each finding is judged against the rule of the run that recorded it (its kind's rule, else the
run's ``default_rule``). Its **margin** says what kept it from failing:

- ``min_score``: the score fell short, margin = ``min_score - score`` (score units, 0..1);
- ``min_size_mm`` / ``min_size_px``: the score was enough but the finding was smaller than the
  rule's size, margin = ``(min_size - size) / min_size`` (a fraction of the size limit).

Findings of a kind whose rule never fails (``fail: false``) are left out. The list is sorted by
margin, smallest first, across kinds; a margin of 0.02 in score and one of 0.02 of the size limit
sort together. Findings below a detector's ``report_floor`` were never stored and cannot appear.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from inspector_core.qa.filters import D, I, QueryError, R, S
from inspector_core.qa.review import _failed
from inspector_core.qa.whatif import RuleSet, run_rules


@dataclasses.dataclass(frozen=True)
class NearMiss:
    inspection_id: int
    defect_id: int
    station: str
    part_id: str
    captured_at: datetime
    verdict: str
    step: str
    kind: str
    score: float
    size_mm: float | None
    size_px: float | None
    field: str
    """The rule field that kept the finding from failing."""
    limit: float
    margin: float

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["captured_at"] = self.captured_at.isoformat() + "Z"
        return d


def margin(
    rs: RuleSet, kind: str, score: float, size_px: float | None, size_mm: float | None
) -> tuple[str, float, float] | None:
    """``(field, limit, margin)`` of a finding that does not fail under ``rs``; ``None`` when it
    fails or its rule never fails."""
    rule = rs.rules.get(kind, rs.default)
    if not rule.fail or rule.counts(score, size_px, size_mm):
        return None
    if score < rule.min_score:
        return "min_score", rule.min_score, rule.min_score - score
    gaps = []
    for field, size in (("min_size_mm", size_mm), ("min_size_px", size_px)):
        lim = getattr(rule, field)
        if lim is not None and size is not None and size < lim:
            gaps.append((field, float(lim), (lim - size) / lim if lim > 0 else 0.0))
    return max(gaps, key=lambda g: g[2]) if gaps else None


def near_misses(
    engine: Engine,
    *,
    stations: Sequence[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    within: float = 0.1,
    kinds: Sequence[str] = (),
    limit: int = 100,
) -> list[NearMiss]:
    """Findings that did not fail, with margin <= ``within``, smallest margin first."""
    if not 0 < within <= 1:
        raise QueryError(f"within: a margin between 0 and 1 (got {within})")
    with engine.connect() as conn:
        runs = select(R.id, R.config_yaml)
        if stations:
            runs = runs.join(S, S.id == R.station_id).where(S.name.in_(list(stations)))
        rules: dict[int, RuleSet] = {}
        for rid, cfg in conn.execute(runs):
            with contextlib.suppress(QueryError):  # a run whose rules cannot be read has no margins
                rules[rid] = run_rules(cfg)
        q = (
            select(
                I.id,
                D.id.label("did"),
                S.name.label("station"),
                I.part_id,
                I.captured_at,
                I.verdict,
                I.run_id,
                D.step,
                D.kind,
                D.score,
                D.size_mm,
                D.size_px,
            )
            .select_from(D)
            .join(I, I.id == D.inspection_id)
            .join(S, S.id == I.station_id)
            .where(_failed(False), I.run_id.in_(sorted(rules)))
        )
        if stations:
            q = q.where(S.name.in_(list(stations)))
        if kinds:
            q = q.where(D.kind.in_(list(kinds)))
        if since is not None:
            q = q.where(I.captured_at >= since)
        if until is not None:
            q = q.where(I.captured_at < until)
        out = []
        for r in conn.execution_options(yield_per=2000).execute(q):
            m = margin(rules[r.run_id], r.kind, r.score, r.size_px, r.size_mm)
            if m is None or m[2] > within:
                continue
            out.append(
                NearMiss(
                    r.id, r.did, r.station, r.part_id, r.captured_at, r.verdict, r.step, r.kind,
                    r.score, r.size_mm, r.size_px, m[0], m[1], m[2],
                )
            )  # fmt: skip
    out.sort(key=lambda n: (n.margin, -n.inspection_id, n.defect_id))
    return out[: max(1, limit)]
