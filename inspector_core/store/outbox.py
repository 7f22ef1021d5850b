"""The sinks' durable outbox: a cursor per (station, sink) in ``sink_cursors``, the committed
inspections after it, and the :class:`~inspector_core.contract.Report` built from the stored rows.

What a caller may rely on:

- **Only committed verdicts.** Reports are read from the database, so a sink never sees a
  verdict the store lacks (a verdict waiting in the spool reaches the sinks once it is written).
- **Commit order.** A station has one writer, so its inspection ids grow in commit order; a
  sink's backlog is the station's inspections with ``id`` above its cursor, read in ``id`` order.
  A reader never sees a gap that later fills: everything below a committed id of the station
  was committed before it.
- **At least once.** The cursor moves only after the sink accepted the reports up to it; a
  kill between a send and the cursor's update sends those reports again. ``Report.inspection_uid``
  is the idempotency key a receiver deduplicates by.
- **JSON-safe reports.** Every field is a str, int, finite float, bool, None or a list/dict of
  those: a non-finite score or size becomes ``None``, a message that is not text becomes text.
- **A new sink starts at the current run.** Its cursor is created just before the current run's
  first inspection, or the first of a run recorded after it (a spooled run the writer drained at
  start: a run wholly in an outage gets its row only then), or at the station's newest inspection
  if there is none yet, so adding a sink does not replay the station's whole history to it.

Every call is one of the store's bounded transactions (:meth:`Store.transaction`): a database
that stops answering costs a worker at most ``call_timeout_s`` per call, then it waits and tries
again. Cursor writes on SQLite: a short transaction on the store's own engine, ``BEGIN
IMMEDIATE`` (``write=True``) then one ``UPDATE`` of one row, so two writers wait for each other
within the busy timeout instead of failing, and WAL readers are never blocked; not a message to
the recorder. The single-writer promise is about
inspections (their order and group commit); a cursor row is the sink worker's own, and routing
it through the recorder would make a sink's progress wait behind the recorder's queue and its
outages while buying nothing: an UPDATE of a cursor needs no ordering with inspections beyond
"after the commit", which reading from the database already gives.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, func, insert, inspect, select, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from inspector_core.contract import Report
from inspector_core.store import schema
from inspector_core.store.database import Store
from inspector_core.store.records import utcnow

SINK_EVENTS = ("sink_failing", "sink_recovered", "sink_backlog", "sink_removed")
"""Event kinds the outbox's workers record (``events.kind``)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Pending:
    """A committed inspection waiting for a sink: its ``inspections.id`` and its report."""

    inspection_id: int
    report: Report


@dataclasses.dataclass(frozen=True, slots=True)
class Cursor:
    """Where a sink's delivery stands: the last inspection it accepted, and since when it has
    been failing (``None``: it is not), as the store has them."""

    inspection_id: int
    failing_since: datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class SinkState:
    """One sink's cursor as the store has it, with its backlog (committed, not yet delivered)."""

    station: str
    sink: str
    inspection_id: int
    backlog: int
    updated_at: datetime
    failing_since: datetime | None
    last_error: str | None
    last_error_at: datetime | None


class Outbox:
    """The cursors of one station's sinks in one store. Safe to use from several threads (each
    call is its own bounded transaction)."""

    def __init__(self, store: Store, station: str) -> None:
        self.store = store
        self.station = station
        self._station_id: int | None = None

    @property
    def station_id(self) -> int | None:
        """The station's id in this store; ``None`` while the store has no row for it yet."""
        if self._station_id is None:
            with self.store.transaction() as conn:
                self._station_id = conn.scalar(select(schema.Station.id).where(schema.Station.name == self.station))
        return self._station_id

    def open(
        self, keys: Sequence[str], *, run_id: int | None = None
    ) -> tuple[dict[str, Cursor], dict[str, int]] | None:
        """Create the cursors of ``keys`` that the store lacks and drop those of sinks no longer
        configured. Returns ``({key: cursor}, {removed key: its backlog})``, or ``None`` while the
        store has no row for the station (nothing of it was committed yet: try again later)."""
        sid = self.station_id
        if sid is None:
            return None
        now = utcnow()
        with self.store.transaction(write=True) as conn:
            c = schema.SinkCursor
            rows = {
                k: Cursor(at, since)
                for k, at, since in conn.execute(
                    select(c.sink, c.inspection_id, c.failing_since).where(c.station_id == sid)
                ).all()
            }
            missing = [k for k in keys if k not in rows]
            if missing:
                start = None
                if run_id is not None:
                    # Runs recorded after this one are those its writer drained from the spool (a
                    # run wholly in an outage is recorded only then): their verdicts are owed too.
                    first = conn.scalar(
                        select(func.min(schema.Inspection.id)).where(
                            schema.Inspection.station_id == sid, schema.Inspection.run_id >= run_id
                        )
                    )
                    start = None if first is None else first - 1
                if start is None:
                    start = (
                        conn.scalar(select(func.max(schema.Inspection.id)).where(schema.Inspection.station_id == sid))
                        or 0
                    )
                conn.execute(
                    insert(schema.SinkCursor),
                    [{"station_id": sid, "sink": k, "inspection_id": start, "updated_at": now} for k in missing],
                )
                rows.update(dict.fromkeys(missing, Cursor(start)))
            removed = {k: _backlog(conn, sid, cur.inspection_id) for k, cur in rows.items() if k not in keys}
            if removed:
                conn.execute(
                    delete(schema.SinkCursor).where(
                        schema.SinkCursor.station_id == sid, schema.SinkCursor.sink.in_(list(removed))
                    )
                )
        return {k: rows[k] for k in keys}, removed

    def pending(self, after: int, limit: int) -> list[Pending]:
        """The station's committed inspections with ``id > after``, oldest first, at most ``limit``."""
        sid = self.station_id
        if sid is None:
            return []
        i, d = schema.Inspection, schema.Defect
        with self.store.transaction() as conn:
            rows = conn.execute(
                select(
                    i.id,
                    i.uid,
                    i.run_id,
                    i.part_id,
                    i.verdict,
                    i.captured_at,
                    i.latency_ms,
                    i.error,
                    i.recipe,
                    i.recipe_hash,
                )
                .where(i.station_id == sid, i.id > after)
                .order_by(i.id)
                .limit(limit)
            ).all()
            if not rows:
                return []
            defects: dict[int, list[dict[str, Any]]] = {}
            cols: tuple[Any, ...] = (d.inspection_id, d.kind, d.score, d.x, d.y, d.w, d.h, d.size_px, d.size_mm)
            cols += (d.message, d.step, d.view)
            for x in conn.execute(
                select(*cols).where(d.inspection_id.in_([r.id for r in rows]), d.failed).order_by(d.id)
            ):
                found = {
                    "kind": _text(x.kind),
                    "score": _finite(x.score),
                    "box": [int(x.x), int(x.y), int(x.w), int(x.h)],
                    "size_px": _finite(x.size_px),
                    "size_mm": _finite(x.size_mm),
                    "message": _text(x.message),
                    "step": _text(x.step),
                }
                if x.view is not None:  # a multi-view part (docs/views.md): the box is in this view's frame
                    found["view"] = _text(x.view)
                defects.setdefault(x.inspection_id, []).append(found)
        return [
            Pending(
                r.id,
                Report(
                    self.station,
                    int(r.run_id),
                    _text(r.uid),
                    _text(r.part_id),
                    _text(r.verdict),  # type: ignore[arg-type]
                    r.captured_at if r.captured_at.tzinfo else r.captured_at.replace(tzinfo=UTC),
                    _finite(r.latency_ms) or 0.0,
                    None if r.error is None else _text(r.error),
                    tuple(defects.get(r.id, ())),
                    None if r.recipe is None else _text(r.recipe),
                    None if r.recipe_hash is None else _text(r.recipe_hash),
                ),
            )
            for r in rows
        ]

    def advance(self, sink: str, inspection_id: int, *, timeout_s: float | None = None) -> None:
        """Record that ``sink`` accepted everything up to ``inspection_id`` (never moves back), and,
        in the same transaction, when: a ``sink_deliveries`` row for the range the cursor moved over
        (one row per cursor save, not per inspection: cheap at any rate; its time is exact for the
        range's last inspection, an upper bound for the others)."""
        sid = self.station_id
        c = schema.SinkCursor
        with self.store.transaction(timeout_s=timeout_s, write=True) as conn:
            before = conn.scalar(select(c.inspection_id).where(c.station_id == sid, c.sink == sink))
            if before is None or before >= inspection_id:
                return
            now = utcnow()
            conn.execute(
                update(c)
                .where(c.station_id == sid, c.sink == sink, c.inspection_id < inspection_id)
                .values(inspection_id=inspection_id, updated_at=now)
            )
            d = schema.SinkDelivery
            row = {
                "station_id": sid,
                "sink": sink,
                "through_id": inspection_id,
                "after_id": before,
                "delivered_at": now,
            }
            ins = (sqlite_dialect.insert if conn.dialect.name == "sqlite" else pg_dialect.insert)(d)
            conn.execute(ins.values(row).on_conflict_do_nothing(index_elements=["station_id", "sink", "through_id"]))

    def failing(self, sink: str, error: str, since: datetime) -> None:
        """Record that ``sink`` keeps failing, since when, and its last error."""
        with self.store.transaction(write=True) as conn:
            conn.execute(
                update(schema.SinkCursor)
                .where(schema.SinkCursor.station_id == self.station_id, schema.SinkCursor.sink == sink)
                .values(failing_since=since, last_error=error, last_error_at=utcnow())
            )

    def recovered(self, sink: str) -> None:
        """Record that ``sink`` delivers again (the last error is kept, with its time)."""
        with self.store.transaction(write=True) as conn:
            conn.execute(
                update(schema.SinkCursor)
                .where(schema.SinkCursor.station_id == self.station_id, schema.SinkCursor.sink == sink)
                .values(failing_since=None)
            )

    def backlog(self, after: int, *, timeout_s: float | None = None) -> int:
        """How many of the station's committed inspections lie after cursor ``after``."""
        sid = self.station_id
        if sid is None:
            return 0
        with self.store.transaction(timeout_s=timeout_s) as conn:
            return _backlog(conn, sid, after)


def sink_states(engine: Engine, station: str | None = None) -> list[SinkState]:
    """Every sink cursor in the store (of ``station`` only, if given), with its backlog; read
    only. Empty for a store whose schema predates the outbox (migration 0006)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(schema.SinkCursor.__tablename__):
            return []
        c, s = schema.SinkCursor, schema.Station
        q = select(s.name.label("station"), *c.__table__.columns).select_from(c).join(s, s.id == c.station_id)
        if station is not None:
            q = q.where(s.name == station)
        return [
            SinkState(
                r.station,
                r.sink,
                r.inspection_id,
                _backlog(conn, r.station_id, r.inspection_id),
                r.updated_at,
                r.failing_since,
                r.last_error,
                r.last_error_at,
            )
            for r in conn.execute(q.order_by(s.name, c.sink)).all()
        ]


def sink_events(engine: Engine, station: str, limit: int = 10) -> list[tuple[datetime, str, str]]:
    """The station's latest sink events (``SINK_EVENTS``), newest first: ``(at, kind, message)``."""
    e, r, s = schema.Event, schema.Run, schema.Station
    with engine.connect() as conn:
        rows = conn.execute(
            select(e.at, e.kind, e.message)
            .join(r, r.id == e.run_id)
            .join(s, s.id == r.station_id)
            .where(s.name == station, e.kind.in_(SINK_EVENTS))
            .order_by(e.id.desc())
            .limit(limit)
        ).all()
    return [(at, kind, message) for at, kind, message in rows]


def _backlog(conn: Any, station_id: int, after: int) -> int:
    return (
        conn.scalar(
            select(func.count())
            .select_from(schema.Inspection)
            .where(schema.Inspection.station_id == station_id, schema.Inspection.id > after)
        )
        or 0
    )


def _finite(v: Any) -> float | None:
    """A float fit for strict JSON: ``None`` for None, NaN and the infinities."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _text(v: Any) -> str:
    """Text fit for JSON: bytes (a BLOB SQLite kept for a ``Text`` column) decoded, anything else ``str()``."""
    if isinstance(v, str):
        return v
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).decode("utf-8", "replace")
    return "" if v is None else str(v)
