"""Typed filters of the defect history and the SQL conditions they become (bound parameters only)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import (
    exists,
    select,
)
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.expression import ColumnElement

from inspector_core.store import schema

I, D, C, S, R, SR = (schema.Inspection, schema.Defect, schema.Crop, schema.Station, schema.Run, schema.StepResult)
H, HL = schema.InspectionHour, schema.InspectionHourLatency
Verdict = Literal["PASS", "FAIL", "ERROR", "NOT_INSPECTED"]
Period = Literal["hour", "shift", "day"]
REJECTS = ("FAIL", "ERROR")
MAX_PAGE = 1000
MAX_ID = 2**63 - 1
"""The largest id a database row can have (a signed 64-bit integer on both databases)."""


class QueryError(ValueError):
    """A filter or request that cannot be answered; the message says which field and why."""


DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$")
UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(value: str | None, *, now: datetime | None = None) -> datetime | None:
    """``since``/``until`` as a user writes them: a duration back from now (``8h``, ``30m``,
    ``2d``, ``1w``) or an ISO date/time (naive = UTC); naive UTC out, ``None`` for nothing.
    Raises :class:`QueryError` for anything else, or a time outside the years 1..9999."""
    if value is None or value == "":
        return None
    shown = repr(value[:60] + ("..." if len(value) > 60 else ""))
    m = DURATION.match(value)
    if m:
        now = now or datetime.now(UTC).replace(tzinfo=None)
        try:
            return now - timedelta(seconds=float(m.group(1)) * UNITS[m.group(2)])
        except OverflowError:
            raise QueryError(
                f"{shown} reaches back before the year 1; give a shorter duration or an ISO date"
            ) from None
    try:
        t = datetime.fromisoformat(value.strip())
        return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t
    except ValueError:
        raise QueryError(
            f"{shown} is neither a duration (8h, 30m, 2d, 1w) nor an ISO date/time "
            "(2026-11-20, 2026-11-20T06:00, 2026-11-20T06:00+01:00)"
        ) from None
    except OverflowError:
        raise QueryError(f"{shown} is out of range in UTC") from None


def _naive_utc(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


# ---------------------------------------------------------------------------- filters


class HistoryFilter(BaseModel):
    """Which inspections to read. Every field is optional; given fields must all hold.

    ``kind``, ``min_score``, ``min_size_mm`` and ``detector`` select parts having at least one
    defect that satisfies all of them together; by default only defects that counted in the
    verdict (``failed``), or every stored finding with ``include_candidates``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stations: tuple[str, ...] = Field((), description="station names; any of them")
    since: datetime | None = Field(None, description="captured at or after (UTC if naive)")
    until: datetime | None = Field(None, description="captured before (UTC if naive)")
    verdicts: tuple[Verdict, ...] = Field((), description="any of these verdicts")
    kinds: tuple[str, ...] = Field((), description="has a defect of any of these kinds")
    part_id: str | None = Field(None, max_length=300, description="glob: * any run, ? one character")
    min_score: float | None = Field(
        None, ge=0, le=1, allow_inf_nan=False, description="has a defect scoring at least this"
    )
    min_size_mm: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="has a defect at least this large, mm"
    )
    detector: str | None = Field(None, max_length=200, description="has a defect found by this detector")
    run_id: int | None = Field(None, ge=1, le=MAX_ID)
    recipes: tuple[str, ...] = Field((), description="inspected under any of these station recipes (docs/recipes.md)")
    include_candidates: bool = Field(False, description="defect filters also match findings below the rules")

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, t: datetime | None) -> datetime | None:
        try:
            return _naive_utc(t)
        except OverflowError:
            raise ValueError(f"{t.isoformat() if t else t} is out of range in UTC") from None

    @field_validator("stations", "kinds", "part_id", "detector", "recipes")
    @classmethod
    def _no_nul(cls, v: Any) -> Any:
        # No stored text holds a NUL (PostgreSQL cannot); refused here, not by the driver.
        for s in (v,) if isinstance(v, str) else v or ():
            if "\x00" in s:
                raise ValueError("must not contain a NUL character")
        return v

    @model_validator(mode="after")
    def _window(self) -> HistoryFilter:
        if self.since and self.until and self.since >= self.until:
            raise ValueError(f"since ({self.since.isoformat()}) must be before until ({self.until.isoformat()})")
        return self

    @property
    def has_defect_filter(self) -> bool:
        return bool(self.kinds) or self.min_score is not None or self.min_size_mm is not None or bool(self.detector)


def make_filter(**fields: Any) -> HistoryFilter:
    """:class:`HistoryFilter` from loose values (CLI, query string), or :class:`QueryError`."""
    try:
        return HistoryFilter.model_validate({k: v for k, v in fields.items() if v not in (None, (), [], "")})
    except ValidationError as exc:
        raise QueryError(
            "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'filter'}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
        ) from exc


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


def _glob_clause(column: InstrumentedAttribute[str], pattern: str, dialect: str) -> ColumnElement[bool]:
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
    if f.detector:
        conds.append(D.detector == f.detector)
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
    if f.recipes:
        conds.append(I.recipe.in_(f.recipes))
    if f.has_defect_filter:
        conds.append(exists().where(D.inspection_id == I.id, *_defect_conditions(f)))
    return conds
