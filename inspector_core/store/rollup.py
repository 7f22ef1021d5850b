"""The hourly roll-up the writer keeps beside the inspections, and the first-of-part rule."""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import math
import operator
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ARRAY, Connection, Integer, String, Table, bindparam, case, text
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from inspector_core.store import schema
from inspector_core.store.records import InspectionRecord, naive_utc

# ---------------------------------------------------------------------------- the roll-up

LATENCY_RATIO = 1.05
"""Latency histogram buckets (``inspection_hour_latency.bucket``): bucket ``b`` holds
``[LATENCY_RATIO**b, LATENCY_RATIO**(b+1))`` ms. A percentile read off the histogram is the
bucket's geometric middle, within ``sqrt(1.05) - 1 = 2.47%`` of the exact value."""
LATENCY_FLOOR_MS = 0.01
_LOG_RATIO = math.log(LATENCY_RATIO)
_HOUR = timedelta(hours=1)
_PG_PROBE = (
    text(
        "SELECT i.id, i.part_id, i.captured_at, i.verdict FROM unnest(CAST(:pids AS VARCHAR[])) AS p(part_id) "
        "JOIN inspections i ON i.station_id = :sid AND i.part_id = p.part_id"
    )
    .bindparams(bindparam("pids", type_=ARRAY(String)), bindparam("sid", type_=Integer))
    .columns(schema.Inspection.id, schema.Inspection.part_id, schema.Inspection.captured_at, schema.Inspection.verdict)
)
_SQLITE_PROBE = (
    text(
        "SELECT id, part_id, captured_at, verdict FROM inspections "
        "WHERE station_id = :sid AND part_id IN (SELECT value FROM json_each(:pids))"
    )
    .bindparams(bindparam("pids", type_=String), bindparam("sid", type_=Integer))
    .columns(schema.Inspection.id, schema.Inspection.part_id, schema.Inspection.captured_at, schema.Inspection.verdict)
)
"""Built once (building a ``select`` per batch cost more than running it); the same statement the ORM
made: each part id searched in ix_inspections_station_part."""
_floor, _log = math.floor, math.log
_HOUR_COLS = ("parts", "first_parts", "first_passed", "latency_count", "latency_sum")


def latency_bucket(ms: float) -> int:
    return math.floor(math.log(max(ms, LATENCY_FLOOR_MS)) / _LOG_RATIO)


def bucket_value(bucket: int) -> float:
    """The value a percentile falling in ``bucket`` is reported as (its geometric middle)."""
    return LATENCY_RATIO ** (bucket + 0.5)


def hour_of(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


@dataclasses.dataclass
class HourRollup:
    """Roll-up rows being built: ``hours[(station_id, hour, verdict)] = [parts, first_parts,
    first_passed, latency_count, latency_sum, latency_min, latency_max]`` and
    ``latency[(station_id, hour, verdict, bucket)] = n``."""

    hours: dict[tuple[int, datetime, str], list[Any]] = dataclasses.field(default_factory=dict)
    latency: dict[tuple[int, datetime, str, int], int] = dataclasses.field(default_factory=lambda: defaultdict(int))
    _last_hour: tuple[Any, Any] = (None, None)
    _pending: dict[tuple[int, datetime, str], list[Any]] = dataclasses.field(default_factory=dict)
    _span: tuple[Any, Any, Any] = (None, None, None)

    def _row(self, key: tuple[int, datetime, str]) -> list[Any]:
        row = self.hours.get(key)
        if row is None:
            row = self.hours[key] = [0, 0, 0, 0, 0.0, None, None]
        return row

    def add(
        self,
        station_id: int,
        captured_at: datetime,
        verdict: str,
        latency_ms: float | None,
        first: bool = False,
        first_passed: bool = False,
    ) -> None:
        h = (captured_at.year, captured_at.month, captured_at.day, captured_at.hour)
        if h != self._last_hour[0]:  # a batch's parts mostly share their hour: replace() once
            self._last_hour = (h, hour_of(captured_at))
        key = (station_id, self._last_hour[1], verdict)
        row = self._row(key)
        row[0] += 1
        row[1] += first
        row[2] += first_passed
        if latency_ms is not None:
            row[3] += 1
            row[4] += latency_ms
            row[5] = latency_ms if row[5] is None else min(row[5], latency_ms)
            row[6] = latency_ms if row[6] is None else max(row[6], latency_ms)
            self.latency[(*key, latency_bucket(latency_ms))] += 1

    def add_many(
        self,
        station_id: int,
        captured_at: datetime,
        verdict: str,
        latency_ms: float | None,
        first: bool = False,
        first_passed: bool = False,
    ) -> None:
        """As :meth:`add`, folded in by :meth:`flush` (the writer's batch: per key, the counts and the
        latencies are added at once). The result is exactly :meth:`add`'s, record by record."""
        lo, hi, hour = self._span
        if lo is None or not (lo <= captured_at < hi):
            hour = hour_of(captured_at)
            self._span = (hour, hour + _HOUR, hour)
        key = (station_id, hour, verdict)
        g = self._pending.get(key)
        if g is None:
            g = self._pending[key] = [0, 0, 0, []]
        g[0] += 1
        g[1] += first
        g[2] += first_passed
        if latency_ms is not None:
            g[3].append(latency_ms)

    def add_batch(
        self,
        records: Sequence[InspectionRecord],
        captured: Sequence[datetime],
        first: Sequence[bool],
        first_passed: Sequence[bool],
    ) -> None:
        """As :meth:`add_many` for each record in turn (``captured``: each one's naive UTC capture
        time), in one loop: a batch's records mostly share their station and hour, so only the
        verdict picks a row. The result is exactly :meth:`add`'s, record by record."""
        pending = self._pending
        sid: Any = None
        lo = hi = hour = None
        rows: dict[str, list[Any]] = {}
        for r, t, f1, p1 in zip(records, captured, first, first_passed, strict=True):
            s = r.station_id
            if s != sid or not (lo <= t < hi):  # type: ignore[operator]
                hour = hour_of(t)
                lo, hi, sid = hour, hour + _HOUR, s
                rows = {}
            v = r.verdict
            g = rows.get(v)
            if g is None:
                key = (s, hour, v)
                g = pending.get(key)  # type: ignore[arg-type]
                if g is None:
                    g = pending[key] = [0, 0, 0, []]  # type: ignore[index]
                rows[v] = g
            g[0] += 1
            g[1] += f1
            g[2] += p1
            lat = r.latency_ms
            if lat is not None:
                g[3].append(lat)

    def flush(self) -> None:
        """Fold what :meth:`add_many` gathered into the rows (in the order it was added: the same
        float sums, minima and maxima as :meth:`add` one by one)."""
        pending, self._pending = self._pending, {}
        latency = self.latency
        for key, (n, first, passed, lats) in pending.items():
            row = self._row(key)
            row[0] += n
            row[1] += first
            row[2] += passed
            if lats:
                row[3] += len(lats)
                row[4] = functools.reduce(operator.add, lats, row[4])
                row[5] = functools.reduce(min, lats) if row[5] is None else functools.reduce(min, lats, row[5])
                row[6] = functools.reduce(max, lats) if row[6] is None else functools.reduce(max, lats, row[6])
                for b, c in collections.Counter(
                    [_floor(_log(max(x, LATENCY_FLOOR_MS)) / _LOG_RATIO) for x in lats]
                ).items():
                    latency[(*key, b)] += c

    def adjust(self, station_id: int, captured_at: datetime, verdict: str, first: int, first_passed: int) -> None:
        """Change only the first-part counts of a row (a part's first inspection moved, or a
        first-pass part was inspected again)."""
        if first or first_passed:
            row = self._row((station_id, hour_of(captured_at), verdict))
            row[1] += first
            row[2] += first_passed

    def hour_rows(self) -> list[dict[str, Any]]:
        self.flush()
        return [
            {
                "station_id": k[0],
                "hour": k[1],
                "verdict": k[2],
                "parts": r[0],
                "first_parts": r[1],
                "first_passed": r[2],
                "latency_count": r[3],
                "latency_sum": r[4],
                "latency_min": r[5],
                "latency_max": r[6],
            }
            for k, r in sorted(self.hours.items())
        ]

    def latency_rows(self) -> list[dict[str, Any]]:
        self.flush()
        return [
            {"station_id": k[0], "hour": k[1], "verdict": k[2], "bucket": k[3], "n": n}
            for k, n in sorted(self.latency.items())
            if n
        ]


_UPSERTS: dict[tuple[str, str], Any] = {}


def _upsert(
    conn: Connection,
    table: Table,
    keys: Sequence[str],
    rows: list[dict[str, Any]],
    add: Sequence[str],
    minmax: Sequence[tuple[str, str]] = (),
) -> None:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE`` adding ``add`` columns, keeping the min/max
    of ``minmax`` ``(column, "min"|"max")``; SQLite and PostgreSQL."""
    if not rows:
        return
    key = (conn.dialect.name, table.name)
    stmt = _UPSERTS.get(key)
    if stmt is None:  # built once per dialect and table: building it costs more than running it
        ins = (sqlite_dialect.insert if conn.dialect.name == "sqlite" else pg_dialect.insert)(table)
        ex = ins.excluded
        sets: dict[str, Any] = {c: table.c[c] + ex[c] for c in add}
        for c, how in minmax:
            better = ex[c] < table.c[c] if how == "min" else ex[c] > table.c[c]
            sets[c] = case((table.c[c].is_(None), ex[c]), (better, ex[c]), else_=table.c[c])
        stmt = _UPSERTS[key] = ins.on_conflict_do_update(index_elements=list(keys), set_=sets)
    conn.execute(stmt, rows)


def write_rollup(conn: Connection, rollup: HourRollup) -> None:
    """Add ``rollup`` to ``inspection_hours`` / ``inspection_hour_latency`` (upserts)."""
    tables = schema.Base.metadata.tables
    _upsert(
        conn,
        tables["inspection_hours"],
        ("station_id", "hour", "verdict"),
        rollup.hour_rows(),
        _HOUR_COLS,
        (("latency_min", "min"), ("latency_max", "max")),
    )
    _upsert(
        conn,
        tables["inspection_hour_latency"],
        ("station_id", "hour", "verdict", "bucket"),
        rollup.latency_rows(),
        ("n",),
    )


def _first_of_part(
    conn: Connection,
    new: Sequence[InspectionRecord],
    rollup: HourRollup,
) -> tuple[list[bool], list[bool], list[int]]:
    """For each new record: is it the first inspection of its (station, part id), and is it a
    first-pass part (first, PASS, and the only one). Probes the stored inspections of the
    batch's part ids (the (station, part id) index), folds in duplicates within the batch,
    and adds to ``rollup`` the changes to stored rows' first-part counts. Returns the two
    flags per record and the ids of stored inspections that stop being first (a record
    captured before them arrived late)."""
    n = len(new)
    pids = [r.part_id for r in new]
    sids = {r.station_id for r in new}
    assert None not in sids, "the writer resolves the station before the roll-up"
    if len(sids) == 1:
        # The writer's usual batch: one station, each part id once. Every record is first unless
        # the probe finds its part id stored; only those go through the general rule below.
        (sid,) = sids
        index = dict(zip(pids, range(n), strict=True))
        if len(index) == n:
            stored = _probe(conn, sid, pids)  # type: ignore[arg-type]
            first = [True] * n
            passed = [r.verdict == "PASS" for r in new]
            demoted: list[int] = []
            for (s, pid), old in stored.items():
                i = index[pid]
                first[i] = passed[i] = False
                _settle((s, pid), [i], old, new, first, passed, demoted, rollup)
            return first, passed, demoted
    by_key: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i, r in enumerate(new):
        by_key[(r.station_id, r.part_id)].append(i)  # type: ignore[index]
    per_station: dict[int, list[str]] = defaultdict(list)
    for sid, pid in by_key:
        per_station[sid].append(pid)
    stored = {}
    for sid, spids in per_station.items():
        stored.update(_probe(conn, sid, spids))
    first = [False] * n
    passed = [False] * n
    demoted = []
    for key, idxs in by_key.items():
        _settle(key, idxs, stored.get(key), new, first, passed, demoted, rollup)
    return first, passed, demoted


def _probe(conn: Connection, sid: int, pids: list[str]) -> dict[tuple[int, str], list[Any]]:
    """The stored inspections (id, part_id, captured_at, verdict) of station ``sid`` with any of
    ``pids``, by (station, part id)."""
    stored: dict[tuple[int, str], list[Any]] = defaultdict(list)
    postgres = conn.dialect.name == "postgresql"
    step = 500 if postgres else 5000
    for k in range(0, len(pids), step):
        chunk = pids[k : k + step]
        # One parameter, not 500 placeholders to expand and convert. SQLite: a JSON list read by
        # json_each, each part id searched in ix_inspections_station_part. PostgreSQL: an array
        # joined through unnest, not "part_id = ANY(array)": once psycopg prepares the statement
        # (its fifth run) the server plans it generically, and with a new table's statistics that
        # plan scanned all the station's rows comparing each with all 500 ids (160-200 ms per
        # batch at 10,000 rows, growing with the table); the join is hashed then, and an index
        # nested loop once the table is analyzed.
        if postgres:
            rows = conn.execute(_PG_PROBE, {"pids": chunk, "sid": sid})
        else:
            rows = conn.execute(_SQLITE_PROBE, {"pids": json.dumps(chunk), "sid": sid})
        for row in rows:
            stored[(sid, row.part_id)].append(row)
    return stored


def _settle(
    key: tuple[int, str],
    idxs: list[int],
    old: list[Any] | None,
    new: Sequence[InspectionRecord],
    first: list[bool],
    passed: list[bool],
    demoted: list[int],
    rollup: HourRollup,
) -> None:
    """The first-of-part rule for one (station, part id): the batch's records ``idxs`` of it and
    the stored inspections ``old``; sets ``first``/``passed`` of the record that is first (if any),
    adjusts ``rollup`` for stored rows that stop being first or first-pass, adds to ``demoted``."""
    if old is None:
        if len(idxs) == 1:  # the usual case: a part id new to the station, once in the batch
            i = idxs[0]
            first[i] = True
            passed[i] = new[i].verdict == "PASS"
            return
        old = []
    # Order: captured_at, then id (stored rows before this batch's, which get larger ids).
    items: list[tuple[tuple[Any, int, Any], Any, Any, int | None]] = [
        ((r.captured_at, 0, r.id), r.captured_at, r.verdict, None) for r in old
    ]
    items += [((naive_utc(new[i].captured_at), 1, i), naive_utc(new[i].captured_at), new[i].verdict, i) for i in idxs]
    head = min(items, key=lambda x: x[0])
    n_after = len(items)
    if old:
        was = min(items[: len(old)], key=lambda x: x[0])
        was_passed = len(old) == 1 and was[2] == "PASS"
        if head is was:
            if was_passed:  # inspected again: no longer first-pass
                rollup.adjust(key[0], was[1], was[2], 0, -1)
            return
        rollup.adjust(key[0], was[1], was[2], -1, -int(was_passed))
        demoted.append(old[items.index(was)].id)
    at = head[3]
    assert at is not None  # a stored row that stays first was handled above
    first[at] = True
    passed[at] = n_after == 1 and head[2] == "PASS"
