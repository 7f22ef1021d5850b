"""Threshold proposals: the rule thresholds that would have judged the *reviewed* parts best.

**Outcomes.** For one station and one finding kind, every reviewed part (a current review in the
log, :mod:`inspector_core.qa.review`) gets a truth, by the rules :func:`review.review_stats` counts
by: *defective* when one of its findings of that kind is ``confirmed`` (directly, or by a
``confirmed`` review of the FAIL part it failed), or the part is reviewed ``missed`` with that
kind; *good* when all its findings of that kind that failed it are ``false_alarm`` (directly or by the part's
``false_alarm``), or the whole part was reviewed ``confirmed`` / ``false_alarm`` / ``missed`` of
another kind without a confirmed finding of this kind. ``unsure`` and unreviewed parts count
nowhere. A threshold *fails* a part for the kind when one of its stored findings of that kind
meets the rule (the station's own :class:`~inspector_core.runtime.rules.Rule`, one field changed).

**Criterion** (say which with ``criterion``):

- ``keep-recall`` (default): the fewest false alarms subject to recall >= the recall of the
  current threshold on the same parts; ties go to the threshold nearest the current one.
- ``f1``: the largest F1 = 2 TP / (2 TP + FP + FN); ties nearest the current threshold.

Candidates are the stored scores (sizes) of the reviewed findings and the current value; the
chosen one is then written with the fewest decimals that judge the reviewed parts alike
(:func:`shortest`: 0.8, not 0.8237, when no reviewed value lies between). A
defect with no stored finding (a ``missed`` below the detector's ``report_floor``, never stored)
is a false negative under every threshold: no threshold here can find it.

A proposal is previewed with :func:`inspector_core.qa.whatif.whatif` over the station's stored
parts and applied only by writing a **new** station file (:func:`write_station`): the old one
is never touched, the new file's hash is a new ``config_hash``, recorded by the next run.
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine, select

from inspector_core.qa.filters import D, HistoryFilter, I, QueryError, S
from inspector_core.qa.review import _failed, current
from inspector_core.qa.whatif import WhatIf, run_rules, whatif
from inspector_core.runtime.rules import Rule
from inspector_core.store.review_records import Review

CRITERIA = ("keep-recall", "f1")
FIELDS = ("min_score", "min_size_mm", "min_size_px")
MIN_REVIEWED = 10
"""Below this many labelled parts for a kind, a proposal is shown but marked as too few."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One reviewed part for one kind: its truth and its stored findings of that kind."""

    inspection_id: int
    defective: bool
    findings: tuple[tuple[float, float | None, float | None], ...]
    """(score, size_px, size_mm) of each stored finding of the kind."""


@dataclasses.dataclass(frozen=True)
class Tally:
    threshold: float | None
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def f1(self) -> float | None:
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else None


@dataclasses.dataclass
class Proposal:
    station: str
    kind: str
    field: str
    rule_key: str
    """Where it is written: ``rules.KIND`` (created from ``default_rule`` if absent)."""
    current: float | None
    proposed: float | None
    criterion: str
    now: Tally
    then: Tally
    reviewed: int
    unreachable: int
    """Defective parts with no stored finding of the kind: false negatives at every threshold."""
    preview: WhatIf | None = None

    @property
    def changed(self) -> bool:
        return self.proposed is not None and self.proposed != self.current

    @property
    def enough(self) -> bool:
        return self.reviewed >= MIN_REVIEWED and self.now.tp + self.now.fn > 0

    def as_dict(self) -> dict[str, Any]:
        def t(x: Tally) -> dict[str, Any]:
            return {**dataclasses.asdict(x), "recall": x.recall, "precision": x.precision, "f1": x.f1}

        d: dict[str, Any] = {
            k: getattr(self, k)
            for k in ("station", "kind", "field", "rule_key", "current", "proposed", "criterion", "reviewed")
        }
        d |= {"unreachable": self.unreachable, "changed": self.changed, "enough_reviews": self.enough}
        d |= {"now": t(self.now), "proposed_tally": t(self.then)}
        if self.preview is not None:
            d["preview"] = {
                "parts": self.preview.parts,
                "rejects_before": self.preview.rejects_before,
                "rejects_after": self.preview.rejects_after,
                "pass_to_fail": [c.inspection_id for c in self.preview.to_fail],
                "fail_to_pass": [c.inspection_id for c in self.preview.to_pass],
            }
        return d


def outcomes(
    engine: Engine, station: str, *, since: datetime | None = None, until: datetime | None = None
) -> dict[str, list[Outcome]]:
    """The reviewed parts of ``station`` per finding kind, with their truth (module rules)."""
    with engine.connect() as conn:
        reviewed = select(Review.inspection_id).distinct().subquery()
        q = (
            select(I.id, I.verdict)
            .join(S, S.id == I.station_id)
            .join(reviewed, reviewed.c.inspection_id == I.id)
            .where(S.name == station)
        )
        if since is not None:
            q = q.where(I.captured_at >= since)
        if until is not None:
            q = q.where(I.captured_at < until)
        parts = {r.id: r.verdict for r in conn.execute(q)}
        ids = sorted(parts)
        findings: dict[int, list[Any]] = defaultdict(list)
        for i in range(0, len(ids), 500):
            for d in conn.execute(
                select(
                    D.id,
                    D.inspection_id,
                    D.kind,
                    D.score,
                    D.size_px,
                    D.size_mm,
                    _failed(True).label("failed"),
                ).where(D.inspection_id.in_(ids[i : i + 500]))
            ):
                findings[d.inspection_id].append(d)
    states = current(engine, ids)
    kinds = {d.kind for ds in findings.values() for d in ds}
    kinds |= {st.kind for (_, did), st in states.items() if did is None and st.label == "missed" and st.kind}
    out: dict[str, list[Outcome]] = defaultdict(list)
    for iid, verdict in parts.items():
        whole = states.get((iid, None))
        plabel = whole.label if whole else None
        for kind in sorted(kinds):
            mine = [d for d in findings.get(iid, []) if d.kind == kind]
            labels = []
            for d in mine:
                own = states.get((iid, d.id))
                lab = own.label if own else None
                if lab is None and plabel == "false_alarm" and d.failed:
                    lab = "false_alarm"
                if lab is None and plabel == "confirmed" and verdict == "FAIL" and d.failed:
                    lab = "confirmed"
                labels.append(lab)
            truth: bool | None = None
            if "confirmed" in labels or (plabel == "missed" and whole is not None and whole.kind == kind):
                truth = True
            elif plabel in ("confirmed", "false_alarm", "missed") and all(
                lab in (None, "false_alarm") for lab in labels
            ):
                truth = False  # the reviewer looked at the whole part: no defect of this kind
            elif any(d.failed for d in mine) and all(
                lab == "false_alarm" for d, lab in zip(mine, labels, strict=True) if d.failed
            ):
                truth = False  # every finding that failed the part is a false alarm (as review_stats counts)
            if truth is None:
                continue
            out[kind].append(Outcome(iid, truth, tuple((d.score, d.size_px, d.size_mm) for d in mine)))
    return dict(out)


def tally(items: Sequence[Outcome], rule: Rule, field: str, value: float | None) -> Tally:
    r = rule.model_copy(update={field: value})
    c = [0, 0, 0, 0]
    for o in items:
        fails = any(r.counts(s, px, mm) for s, px, mm in o.findings)
        c[(0 if fails else 2) if o.defective else (1 if fails else 3)] += 1
    return Tally(value, *c)


def best(items: Sequence[Outcome], rule: Rule, field: str, criterion: str) -> tuple[Tally, Tally]:
    """(the current threshold's tally, the chosen threshold's tally) under ``criterion``."""
    if criterion not in CRITERIA:
        raise QueryError(f"criterion {criterion!r}: one of {', '.join(CRITERIA)}")
    cur = getattr(rule, field)
    idx = {"min_score": 0, "min_size_px": 1, "min_size_mm": 2}[field]
    cands = {cur} | {f[idx] for o in items for f in o.findings if f[idx] is not None}
    if field == "min_score":
        cands = {c for c in cands if c is not None and 0 <= c <= 1}
    now = tally(items, rule, field, cur)
    tallies = [tally(items, rule, field, c) for c in sorted(cands, key=lambda c: (c is None, c))]

    def dist(t: Tally) -> float:
        return 0.0 if t.threshold == cur else abs((t.threshold or 0) - (cur or 0)) + 1e-12

    if criterion == "f1":
        chosen = min(tallies, key=lambda t: (-(t.f1 or 0.0), dist(t)))
    else:
        floor = now.recall if now.recall is not None else 0.0
        ok = [t for t in tallies if (t.recall if t.recall is not None else 0.0) >= floor - 1e-12]
        chosen = min(ok, key=lambda t: (t.fp, dist(t)))
    if chosen.threshold is not None and chosen.threshold != cur:
        below = [c for c in cands if c is not None and c < chosen.threshold]
        short = shortest(max(below), chosen.threshold) if below else chosen.threshold
        again = tally(items, rule, field, short)
        if (again.tp, again.fp, again.fn, again.tn) == (chosen.tp, chosen.fp, chosen.fn, chosen.tn):
            chosen = again
    return now, chosen


def shortest(lower: float, upper: float) -> float:
    """The value with the fewest decimals in (lower, upper]: every threshold there judges the
    reviewed findings alike (no stored value lies between), and 0.8 reads better than 0.8237."""
    for digits in range(7):
        q = 10**digits
        v = math.floor(upper * q) / q
        if v > lower:
            return v
    return upper


def station_rules(text: str) -> tuple[str, dict[str, Rule], Rule]:
    data = yaml.safe_load(text) or {}
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str):
        raise QueryError("the station file has no name")
    rs = run_rules(text)
    return name, rs.rules, rs.default


def propose(
    engine: Engine,
    station_text: str,
    *,
    criterion: str = "keep-recall",
    since: datetime | None = None,
    until: datetime | None = None,
    preview: bool = True,
) -> list[Proposal]:
    """A proposal per reviewed kind and rule field: ``min_score`` always, a size field where the
    kind's rule has one. Previewed with what-if over the station's stored parts (``preview``)."""
    name, rules, default = station_rules(station_text)
    out = []
    for kind, items in sorted(outcomes(engine, name, since=since, until=until).items()):
        rule = rules.get(kind, default)
        if not rule.fail:
            continue
        fields = ["min_score"] + [f for f in ("min_size_mm", "min_size_px") if getattr(rule, f) is not None]
        for field in fields:
            now, then = best(items, rule, field, criterion)
            unreachable = sum(1 for o in items if o.defective and not o.findings)
            p = Proposal(
                name,
                kind,
                field,
                f"rules.{kind}",
                getattr(rule, field),
                then.threshold,
                criterion,
                now,
                then,
                len(items),
                unreachable,
            )
            if preview and p.changed:
                p.preview = whatif(engine, HistoryFilter(stations=(name,)), {kind: {field: p.proposed}})
            out.append(p)
    return out


def rewrite(station_text: str, changes: Sequence[Proposal]) -> str:
    """The station file with the proposals' values in ``rules:``, comments and order kept
    (ruamel.yaml round trip). A kind without its own rule gets one copied from ``default_rule``."""
    from ruamel.yaml import YAML

    ry = YAML()
    ry.preserve_quotes = True
    ry.width = 4096
    todo = [p for p in changes if p.changed]
    # Where every changed value already stands in the file, only its characters are replaced: the
    # rest of the file stays byte for byte (a round trip re-indents block sequences).
    data = ry.load(station_text)
    lines = station_text.splitlines(True)
    in_place = True
    for p in todo:
        entry: Any = (data.get("rules") or {}).get(p.kind)
        if entry is None or not hasattr(entry, "lc") or p.field not in entry:
            in_place = False
            break
        line, col = entry.lc.value(p.field)
        m = _SCALAR.match(lines[line], col)
        if m is None:
            in_place = False
            break
        lines[line] = lines[line][:col] + repr(p.proposed) + lines[line][m.end() :]
    if in_place:
        return "".join(lines)
    data = ry.load(station_text)
    _, rules, default = station_rules(station_text)
    if data.get("rules") is None:
        data["rules"] = {}
    for p in todo:
        entry = data["rules"].get(p.kind)
        if entry is None:
            base = rules.get(p.kind, default).model_dump(exclude_defaults=True)
            entry = data["rules"][p.kind] = dict(base)
        entry[p.field] = p.proposed
    buf = io.StringIO()
    ry.dump(data, buf)
    return buf.getvalue()


_SCALAR = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?=\s*(?:[,}#]|$))")


def diff(old: str, new: str, old_name: str, new_name: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), old_name, new_name))


def write_station(old_path: Path, new_path: Path, new_text: str) -> None:
    """Write ``new_text`` to ``new_path``, a new file (never the old one, never over another)."""
    if new_path.resolve() == old_path.resolve():
        raise QueryError(
            f"--write {new_path}: that is the station file itself; write a new file (the old one stays "
            "as the record of what ran)"
        )
    if new_path.exists():
        raise QueryError(f"--write {new_path}: the file exists; choose a new name")
    with open(new_path, "x", encoding="utf-8") as fh:
        fh.write(new_text)
