"""What-if: replay stored findings under other verdict rules."""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy import (
    Engine,
    func,
    select,
)

from inspector_core.qa.filters import D, HistoryFilter, I, QueryError, R, S, _where
from inspector_core.runtime.rules import Rule
from inspector_core.runtime.rules import failing as _failing
from inspector_core.runtime.rules import verdict as _verdict

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
            raise QueryError(
                f"--set {kind}.{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
            ) from exc
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

        return {
            "parts": self.parts,
            "unchanged": self.unchanged,
            "errors": self.errors,
            "rejects_before": self.rejects_before,
            "rejects_after": self.rejects_after,
            "pass_to_fail": [ch(c) for c in self.to_fail],
            "fail_to_pass": [ch(c) for c in self.to_pass],
            "rules_before": {str(k): v for k, v in self.rules_before.items()},
            "rules_after": {str(k): v for k, v in self.rules_after.items()},
        }


def whatif(engine: Engine, f: HistoryFilter, overrides: dict[str, dict[str, Any]]) -> WhatIf:
    """Re-decide every stored part matching ``f`` from its stored findings, under each run's
    recorded rules with ``overrides`` applied, through the same :func:`inspector_core.runtime.rules`
    functions the station uses. Reads only.

    Findings below a detector's ``report_floor`` were never stored: lowering a ``min_score``
    below that floor cannot find them."""
    dialect = engine.dialect.name
    base = f.model_copy(
        update={"verdicts": tuple(v for v in (f.verdicts or ("PASS", "FAIL", "ERROR")) if v != "NOT_INSPECTED")}
    )
    conds = _where(base, dialect)
    with engine.connect() as conn:
        per_verdict = dict(conn.execute(select(I.verdict, func.count()).where(*conds).group_by(I.verdict)).all())
        run_ids = list(conn.scalars(select(I.run_id).where(*conds).distinct()))
        before: dict[int, RuleSet] = {}
        for rid, text in conn.execute(select(R.id, R.config_yaml).where(R.id.in_(run_ids))):
            before[rid] = run_rules(text)
        after = {rid: rs.apply(overrides) for rid, rs in before.items()}
        # Only parts with stored findings can change; the rest pass under any rules.
        q = (
            select(
                I.id,
                I.run_id,
                I.part_id,
                I.captured_at,
                I.verdict,
                S.name.label("station"),
                D.kind,
                D.score,
                D.size_px,
                D.size_mm,
                D.failed,
            )
            .join(S, S.id == I.station_id)
            .join(D, D.inspection_id == I.id)
            .where(*conds, I.verdict.in_(("PASS", "FAIL")))
            .order_by(I.id)
        )
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
    return WhatIf(
        parts=parts,
        rejects_before=per_verdict.get("FAIL", 0) + per_verdict.get("ERROR", 0),
        unchanged=parts - len(to_fail) - len(to_pass),
        to_fail=to_fail,
        to_pass=to_pass,
        errors=per_verdict.get("ERROR", 0),
        rules_before={k: v.describe() for k, v in before.items()},
        rules_after={k: v.describe() for k, v in after.items()},
    )
