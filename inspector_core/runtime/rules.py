"""Verdict rules: which findings fail a part.

One function decides, both on the line (:mod:`inspector_core.runtime.station`) and when QA replays
stored parts under other rules (``inspector whatif``), so the two can never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from pydantic import Field

from inspector_core.contract import PluginConfig


class Rule(PluginConfig):
    """When a finding of one kind fails the part. All given conditions must hold.

    A size condition is judged only on a finding that has that size: one without it (no
    ``size_px`` from its detector, no calibration for ``min_size_mm``) counts as failing, so a
    rule that cannot judge a finding never passes a part (fail closed). A station with a
    ``min_size_mm`` rule and no calibration is refused at validation.
    """

    min_score: float = Field(
        0.5, ge=0, le=1, description="fail at or above this score (0.5: the detector's own boundary)"
    )
    min_size_px: float | None = Field(None, ge=0, description="fail only findings at least this large, px")
    min_size_mm: float | None = Field(
        None, ge=0, description=("fail only findings at least this large, mm (needs the station's calibration)")
    )
    fail: bool = Field(True, description="false: record findings of this kind but never fail a part for them")

    def counts(self, score: float, size_px: float | None, size_mm: float | None) -> bool:
        if not self.fail or score < self.min_score:
            return False
        # An unknown size is never "small enough to pass": the finding counts (fail closed).
        if self.min_size_px is not None and size_px is not None and size_px < self.min_size_px:
            return False
        return not (self.min_size_mm is not None and size_mm is not None and size_mm < self.min_size_mm)


class Judged(Protocol):
    kind: str
    score: float
    size_px: float | None
    size_mm: float | None


def failing(findings: Iterable[Judged], rules: Mapping[str, Rule], default: Rule) -> list[bool]:
    """For each finding, whether it fails the part under ``rules``."""
    return [rules.get(f.kind, default).counts(f.score, f.size_px, f.size_mm) for f in findings]


def verdict(failed: Iterable[bool], step_errors: int) -> str:
    """ERROR when a step could not judge the part (fail closed), else FAIL or PASS."""
    if step_errors:
        return "ERROR"
    return "FAIL" if any(failed) else "PASS"
