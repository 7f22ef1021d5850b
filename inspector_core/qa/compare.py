"""Compare two sides of a station's history: two runs, or two config hashes (every run recorded
with that hash), before / after a change.

Per side: parts judged (PASS + FAIL + ERROR; NOT_INSPECTED left out), yield = PASS / judged,
reject rate = (FAIL + ERROR) / judged, and the **reviewed false-alarm rate** = false-alarm FAIL
parts / reviewed FAIL parts, where a FAIL part is reviewed when its part review or its failed
findings' reviews settle it (:mod:`inspector_core.qa.review`): a false alarm when the part is
``false_alarm`` or every failed finding is; a real reject when the part is ``confirmed`` or
one failed finding is. ``unsure`` and unreviewed FAIL parts are left out.

**Significance** of each difference of proportions: the two-sided two-proportion z-test with
the pooled proportion, z = (p1 - p2) / sqrt(p (1 - p) (1/n1 + 1/n2)), p-value = erfc(|z| / sqrt 2);
and Fisher's exact test (two-sided, ``scipy.stats.fisher_exact``) when SciPy is installed,
which is the one to read for small counts.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, func, select

from inspector_core.qa.filters import D, I, QueryError, R, S
from inspector_core.qa.review import _failed, current


@dataclasses.dataclass(frozen=True)
class Side:
    label: str
    run_ids: tuple[int, ...]
    config_hashes: tuple[str, ...]
    judged: int
    passed: int
    rejects: int
    reviewed_fails: int
    false_alarms: int

    @property
    def yield_(self) -> float | None:
        return self.passed / self.judged if self.judged else None

    @property
    def reject_rate(self) -> float | None:
        return self.rejects / self.judged if self.judged else None

    @property
    def false_alarm_rate(self) -> float | None:
        return self.false_alarms / self.reviewed_fails if self.reviewed_fails else None

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d |= {"yield": self.yield_, "reject_rate": self.reject_rate, "false_alarm_rate": self.false_alarm_rate}
        return d


@dataclasses.dataclass(frozen=True)
class Test:
    """One difference of proportions k1/n1 vs k2/n2."""

    name: str
    k1: int
    n1: int
    k2: int
    n2: int
    z: float | None
    p_z: float | None
    p_fisher: float | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def two_proportion(k1: int, n1: int, k2: int, n2: int) -> tuple[float | None, float | None]:
    """(z, two-sided p) of the pooled two-proportion z-test; ``(None, None)`` when undefined."""
    if n1 <= 0 or n2 <= 0:
        return None, None
    p = (k1 + k2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (k1 / n1 - k2 / n2) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def fisher(k1: int, n1: int, k2: int, n2: int) -> float | None:
    """Two-sided Fisher's exact p-value via SciPy, ``None`` without SciPy or with an empty side."""
    if n1 <= 0 or n2 <= 0:
        return None
    try:
        from scipy.stats import fisher_exact  # type: ignore[import-untyped]
    except ImportError:
        return None
    return float(fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue)


def test(name: str, k1: int, n1: int, k2: int, n2: int) -> Test:
    z, p = two_proportion(k1, n1, k2, n2)
    return Test(name, k1, n1, k2, n2, z, p, fisher(k1, n1, k2, n2))


def _runs(engine: Engine, station: str | None, *, run_ids: Sequence[int] = (), hashes: Sequence[str] = ()) -> list[Any]:
    q = select(R.id, R.config_hash, S.name.label("station")).join(S, S.id == R.station_id)
    if station:
        q = q.where(S.name == station)
    if run_ids:
        q = q.where(R.id.in_(list(run_ids)))
    if hashes:
        q = q.where(R.config_hash.in_(list(hashes)))
    with engine.connect() as conn:
        return list(conn.execute(q))


def side(engine: Engine, label: str, run_ids: Sequence[int]) -> Side:
    with engine.connect() as conn:
        per = {
            v: int(n)
            for v, n in conn.execute(
                select(I.verdict, func.count()).where(I.run_id.in_(list(run_ids))).group_by(I.verdict)
            )
        }
        fails = list(conn.scalars(select(I.id).where(I.run_id.in_(list(run_ids)), I.verdict == "FAIL")))
        failed: dict[int, list[int]] = defaultdict(list)
        for i in range(0, len(fails), 500):
            for did, iid in conn.execute(
                select(D.id, D.inspection_id).where(D.inspection_id.in_(fails[i : i + 500]), _failed(True))
            ):
                failed[iid].append(did)
        hashes = tuple(sorted(set(conn.scalars(select(R.config_hash).where(R.id.in_(list(run_ids)))))))
    states = current(engine, fails)
    reviewed = fa = 0
    for iid in fails:
        whole = states.get((iid, None))
        own = [states.get((iid, d)) for d in failed.get(iid, [])]
        labels = [o.label for o in own if o is not None]
        if whole is not None and whole.label == "false_alarm":
            reviewed, fa = reviewed + 1, fa + 1
        elif (whole is not None and whole.label == "confirmed") or "confirmed" in labels:
            reviewed += 1
        elif own and all(o is not None and o.label == "false_alarm" for o in own):
            reviewed, fa = reviewed + 1, fa + 1
    judged = sum(per.get(v, 0) for v in ("PASS", "FAIL", "ERROR"))
    return Side(
        label,
        tuple(sorted(run_ids)),
        hashes,
        judged,
        per.get("PASS", 0),
        per.get("FAIL", 0) + per.get("ERROR", 0),
        reviewed,
        fa,
    )


@dataclasses.dataclass(frozen=True)
class Comparison:
    before: Side
    after: Side
    tests: list[Test]

    def as_dict(self) -> dict[str, Any]:
        return {
            "before": self.before.as_dict(),
            "after": self.after.as_dict(),
            "tests": [t.as_dict() for t in self.tests],
        }


def compare(
    engine: Engine,
    *,
    station: str | None = None,
    runs: tuple[int, int] | None = None,
    config_hashes: tuple[str, str] | None = None,
) -> Comparison:
    """Compare two runs (ids) or two config hashes (full or a unique prefix of at least 6)."""
    if (runs is None) == (config_hashes is None):
        raise QueryError("compare two runs or two config hashes (one of the two)")
    sides: list[tuple[str, list[int]]] = []
    if runs is not None:
        found = {r.id: r for r in _runs(engine, station, run_ids=runs)}
        for rid in runs:
            if rid not in found:
                where = f" of station {station!r}" if station else ""
                raise QueryError(f"no run {rid}{where} in the store (`inspector history --format json` shows run ids)")
            sides.append((f"run {rid}", [rid]))
    else:
        assert config_hashes is not None
        every = _runs(engine, station)
        for h in config_hashes:
            if len(h) < 6:
                raise QueryError(f"config hash {h!r}: give at least 6 characters")
            ids = [r.id for r in every if r.config_hash.startswith(h)]
            full = {r.config_hash for r in every if r.config_hash.startswith(h)}
            if not ids:
                raise QueryError(
                    f"no run recorded with config hash {h!r}" + (f" at station {station!r}" if station else "")
                )
            if len(full) > 1:
                raise QueryError(f"config hash {h!r} is the prefix of {len(full)} hashes; give more characters")
            sides.append((f"config {h[:12]}", ids))
    a, b = side(engine, *sides[0]), side(engine, *sides[1])
    tests = [
        test("yield", a.passed, a.judged, b.passed, b.judged),
        test("reject rate", a.rejects, a.judged, b.rejects, b.judged),
        test("reviewed false-alarm rate", a.false_alarms, a.reviewed_fails, b.false_alarms, b.reviewed_fails),
    ]
    return Comparison(a, b, tests)
