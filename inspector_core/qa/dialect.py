"""The only dialect-specific SQL: time buckets, compiled from typed integers for SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnExpressionArgument,
    Integer,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from inspector_core.qa.filters import Period

# ---------------------------------------------------------------------------- time buckets


class _Bucket(FunctionElement):
    """``floor((epoch seconds of col + offset_s) / period_s)``, an integer, per dialect."""

    type = Integer()
    inherit_cache = False

    def __init__(self, col: ColumnExpressionArgument[Any], period_s: int, offset_s: int) -> None:
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

    def expr(self, col: ColumnExpressionArgument[Any]) -> _Bucket:
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


class _Hour(FunctionElement):
    """The capture hour, as the expression the hour index (migration 0002) is built on:
    ``substr(col, 1, 13)`` on SQLite (text ``YYYY-MM-DD HH``), ``date_trunc('hour', col)`` on
    PostgreSQL. Grouping by it walks that covering index in order, with no sort."""

    inherit_cache = True

    def __init__(self, col: ColumnExpressionArgument[Any]) -> None:
        super().__init__(col)


@compiles(_Hour, "sqlite")
def _hour_sqlite(el: _Hour, compiler: Any, **kw: Any) -> str:
    return f"substr({compiler.process(list(el.clauses)[0], **kw)}, 1, 13)"


@compiles(_Hour, "postgresql")
def _hour_pg(el: _Hour, compiler: Any, **kw: Any) -> str:
    return f"date_trunc('hour', {compiler.process(list(el.clauses)[0], **kw)})"


def _hour_value(v: Any) -> datetime:
    return v if isinstance(v, datetime) else datetime.strptime(v, "%Y-%m-%d %H")
