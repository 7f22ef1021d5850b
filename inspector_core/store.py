"""The verdict store: opening (and migrating) the database, runs, and the one writer.

A station has exactly one :class:`Recorder`: a thread that takes finished inspections from a
queue and commits whatever has accumulated in one transaction (group commit). Only after that
commit does it hand the reports to the sinks. When the database is unreachable (a plant
PostgreSQL being restarted), the batch goes to a local spool on disk (an SQLite file, written
with synchronous FULL) instead; that counts as committed, and the spool is drained into the
database, in order and without duplicates, as soon as it answers again (or at the next start).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import math
import queue
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, case, create_engine, event, insert, select, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from inspector_core import schema

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")


class StoreError(RuntimeError):
    """The store cannot be opened or written; the message names the URL and the remedy."""


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def naive_utc(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


# ---------------------------------------------------------------------------- records


@dataclasses.dataclass(slots=True)
class CropRecord:
    format: str
    width: int
    height: int
    x: int
    y: int
    scale: float
    data: bytes


@dataclasses.dataclass(slots=True)
class DefectRecord:
    step: str
    plugin: str
    kind: str
    score: float
    failed: bool
    box: tuple[int, int, int, int]
    size_px: float | None
    size_mm: float | None
    measurements: dict[str, float]
    message: str
    crop: CropRecord | None = None


@dataclasses.dataclass(slots=True)
class StepRecord:
    step_index: int
    step: str
    plugin: str
    status: str
    score: float | None
    latency_ms: float | None
    n_findings: int = 0
    error: str | None = None


@dataclasses.dataclass(slots=True)
class InspectionRecord:
    """One part's verdict with its evidence, as the runtime hands it to the recorder."""

    uid: str
    station_id: int
    run_id: int
    seq: int
    part_id: str
    captured_at: datetime
    decided_at: datetime
    verdict: str
    latency_ms: float | None
    error: str | None = None
    error_step: str | None = None
    source_meta: dict[str, Any] | None = None
    steps: list[StepRecord] = dataclasses.field(default_factory=list)
    defects: list[DefectRecord] = dataclasses.field(default_factory=list)

    # The spool keeps records as JSON (never pickle); crops as base64.
    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["captured_at"] = self.captured_at.isoformat()
        d["decided_at"] = self.decided_at.isoformat()
        for defect in d["defects"]:
            if defect["crop"]:
                defect["crop"]["data"] = base64.b64encode(defect["crop"]["data"]).decode()
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> InspectionRecord:
        d = json.loads(text)
        d["captured_at"] = datetime.fromisoformat(d["captured_at"])
        d["decided_at"] = datetime.fromisoformat(d["decided_at"])
        d["steps"] = [StepRecord(**s) for s in d["steps"]]
        defects = []
        for x in d["defects"]:
            crop = x.pop("crop")
            if crop:
                crop["data"] = base64.b64decode(crop["data"])
                crop = CropRecord(**crop)
            x["box"] = tuple(x["box"])
            defects.append(DefectRecord(**x, crop=crop))
        d["defects"] = defects
        return cls(**d)


# ---------------------------------------------------------------------------- the roll-up

LATENCY_RATIO = 1.05
"""Latency histogram buckets (``inspection_hour_latency.bucket``): bucket ``b`` holds
``[LATENCY_RATIO**b, LATENCY_RATIO**(b+1))`` ms. A percentile read off the histogram is the
bucket's geometric middle, within ``sqrt(1.05) - 1 = 2.47%`` of the exact value."""
LATENCY_FLOOR_MS = 0.01
_LOG_RATIO = math.log(LATENCY_RATIO)
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

    def _row(self, key: tuple[int, datetime, str]) -> list[Any]:
        row = self.hours.get(key)
        if row is None:
            row = self.hours[key] = [0, 0, 0, 0, 0.0, None, None]
        return row

    def add(self, station_id: int, captured_at: datetime, verdict: str, latency_ms: float | None,
            first: bool = False, first_passed: bool = False) -> None:
        key = (station_id, hour_of(captured_at), verdict)
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

    def adjust(self, station_id: int, captured_at: datetime, verdict: str, first: int, first_passed: int) -> None:
        """Change only the first-part counts of a row (a part's first inspection moved, or a
        first-pass part was inspected again)."""
        if first or first_passed:
            row = self._row((station_id, hour_of(captured_at), verdict))
            row[1] += first
            row[2] += first_passed

    def hour_rows(self) -> list[dict[str, Any]]:
        return [{"station_id": k[0], "hour": k[1], "verdict": k[2], "parts": r[0], "first_parts": r[1],
                 "first_passed": r[2], "latency_count": r[3], "latency_sum": r[4], "latency_min": r[5],
                 "latency_max": r[6]} for k, r in sorted(self.hours.items())]

    def latency_rows(self) -> list[dict[str, Any]]:
        return [{"station_id": k[0], "hour": k[1], "verdict": k[2], "bucket": k[3], "n": n}
                for k, n in sorted(self.latency.items()) if n]


def _upsert(conn: Connection, table: Table, keys: Sequence[str], rows: list[dict[str, Any]],
            add: Sequence[str], minmax: Sequence[tuple[str, str]] = ()) -> None:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE`` adding ``add`` columns, keeping the min/max
    of ``minmax`` ``(column, "min"|"max")``; SQLite and PostgreSQL."""
    if not rows:
        return
    ins = (sqlite_dialect.insert if conn.dialect.name == "sqlite" else pg_dialect.insert)(table)
    ex = ins.excluded
    sets: dict[str, Any] = {c: table.c[c] + ex[c] for c in add}
    for c, how in minmax:
        better = ex[c] < table.c[c] if how == "min" else ex[c] > table.c[c]
        sets[c] = case((table.c[c].is_(None), ex[c]), (better, ex[c]), else_=table.c[c])
    conn.execute(ins.on_conflict_do_update(index_elements=list(keys), set_=sets), rows)


def write_rollup(conn: Connection, rollup: HourRollup) -> None:
    """Add ``rollup`` to ``inspection_hours`` / ``inspection_hour_latency`` (upserts)."""
    _upsert(conn, schema.InspectionHour.__table__, ("station_id", "hour", "verdict"), rollup.hour_rows(),
            _HOUR_COLS, (("latency_min", "min"), ("latency_max", "max")))
    _upsert(conn, schema.InspectionHourLatency.__table__, ("station_id", "hour", "verdict", "bucket"),
            rollup.latency_rows(), ("n",))


def _first_of_part(conn: Connection, new: Sequence[InspectionRecord], rollup: HourRollup,
                   ) -> tuple[list[bool], list[bool], list[int]]:
    """For each new record: is it the first inspection of its (station, part id), and is it a
    first-pass part (first, PASS, and the only one). Probes the stored inspections of the
    batch's part ids (the (station, part id) index), folds in duplicates within the batch,
    and adds to ``rollup`` the changes to stored rows' first-part counts. Returns the two
    flags per record and the ids of stored inspections that stop being first (a record
    captured before them arrived late)."""
    I = schema.Inspection
    by_key: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i, r in enumerate(new):
        by_key[(r.station_id, r.part_id)].append(i)
    per_station: dict[int, list[str]] = defaultdict(list)
    for sid, pid in by_key:
        per_station[sid].append(pid)
    stored: dict[tuple[int, str], list[Any]] = defaultdict(list)
    for sid, pids in per_station.items():
        for k in range(0, len(pids), 500):
            for row in conn.execute(select(I.id, I.part_id, I.captured_at, I.verdict)
                                    .where(I.station_id == sid, I.part_id.in_(pids[k:k + 500]))):
                stored[(sid, row.part_id)].append(row)
    first = [False] * len(new)
    passed = [False] * len(new)
    demoted: list[int] = []
    for key, idxs in by_key.items():
        old = stored.get(key, [])
        # Order: captured_at, then id (stored rows before this batch's, which get larger ids).
        items = [((r.captured_at, 0, r.id), r.captured_at, r.verdict, None) for r in old]
        items += [((naive_utc(new[i].captured_at), 1, i), naive_utc(new[i].captured_at), new[i].verdict, i)
                  for i in idxs]
        head = min(items, key=lambda x: x[0])
        n_after = len(items)
        if old:
            was = min(items[:len(old)], key=lambda x: x[0])
            was_passed = len(old) == 1 and was[2] == "PASS"
            if head is was:
                if was_passed:  # inspected again: no longer first-pass
                    rollup.adjust(key[0], was[1], was[2], 0, -1)
                continue
            rollup.adjust(key[0], was[1], was[2], -1, -int(was_passed))
            demoted.append(old[items.index(was)].id)
        i = head[3]
        first[i] = True
        passed[i] = n_after == 1 and head[2] == "PASS"
    return first, passed, demoted


# ---------------------------------------------------------------------------- the store


def _describe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url


class Store:
    """A database holding Inspector's tables, migrated to the newest schema on open."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.display_url = _describe(url)
        try:
            parsed = make_url(url)
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"store url {url!r} is not a database URL ({exc}); "
                             "use e.g. sqlite:///inspector.db or postgresql+psycopg://user@host/db") from exc
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["connect_args"] = {"connect_timeout": 5}
        try:
            self.engine: Engine = create_engine(parsed, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"store {self.display_url}: cannot create engine: {exc}") from exc
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        if migrate:
            self.migrate()

    def migrate(self) -> None:
        """Create a new database's tables, or upgrade an old one, to the newest revision."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        for attempt in range(3):
            try:
                with self.engine.begin() as conn:
                    if conn.dialect.name == "postgresql":
                        # Several stations starting at once on one plant database: one migrates,
                        # the others wait here and then find the schema current.
                        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(5109202611)")
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
                return
            except OperationalError as exc:
                if "already exists" in str(exc.orig) and attempt < 2:
                    continue  # another process on the same SQLite file migrated first
                raise StoreError(
                    f"store {self.display_url}: cannot reach the database ({exc.orig}); "
                    "check that the server runs and the URL (host, port, database name) is right"
                ) from exc

    def close(self) -> None:
        self.engine.dispose()

    # -------------------------------------------------------------- runs and events

    def station_id(self, name: str) -> int:
        with self.engine.begin() as conn:
            sid = conn.scalar(select(schema.Station.id).where(schema.Station.name == name))
            if sid is None:
                sid = conn.execute(insert(schema.Station).values(name=name, created_at=utcnow())
                                   .returning(schema.Station.id)).scalar_one()
            return sid

    def begin_run(self, station: str, *, hostname: str, software_version: str, plugins: dict[str, Any],
                  config_yaml: str, config_hash: str, models: dict[str, Any]) -> tuple[int, int]:
        """Record the start of a station; returns ``(station_id, run_id)``."""
        sid = self.station_id(station)
        with self.engine.begin() as conn:
            rid = conn.execute(insert(schema.Run).values(
                station_id=sid, started_at=utcnow(), ended_at=None, hostname=hostname,
                software_version=software_version, plugins=plugins, config_yaml=config_yaml,
                config_hash=config_hash, models=models, parts_seen=None,
            ).returning(schema.Run.id)).scalar_one()
        return sid, rid

    def end_run(self, run_id: int, parts_seen: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(schema.Run).where(schema.Run.id == run_id)
                         .values(ended_at=utcnow(), parts_seen=parts_seen))

    def add_events(self, events: Sequence[tuple[int, datetime, str, str]]) -> None:
        if not events:
            return
        with self.engine.begin() as conn:
            conn.execute(insert(schema.Event), [
                {"run_id": r, "at": naive_utc(at), "kind": k, "message": m} for r, at, k, m in events
            ])

    # -------------------------------------------------------------- inspections

    def write(self, records: Sequence[InspectionRecord]) -> int:
        """Write ``records`` in one transaction; records whose ``uid`` is already stored are
        skipped (a spool drained twice). Returns how many were new."""
        if not records:
            return 0
        with self.engine.begin() as conn:
            uids = [r.uid for r in records]
            present = set(conn.scalars(select(schema.Inspection.uid).where(schema.Inspection.uid.in_(uids))))
            seen: set[str] = set()
            # A uid repeated inside the batch is written (and rolled up) once too.
            new = [r for r in records if r.uid not in present and not (r.uid in seen or seen.add(r.uid))]
            if not new:
                return 0
            # Roll-up of exactly these (deduplicated) records, upserted in this transaction.
            rollup = HourRollup()
            first, passed, demoted = _first_of_part(conn, new, rollup)
            for r, f1, p1 in zip(new, first, passed, strict=True):
                rollup.add(r.station_id, naive_utc(r.captured_at), r.verdict, r.latency_ms, f1, p1)
            if demoted:
                conn.execute(update(schema.Inspection).where(schema.Inspection.id.in_(demoted))
                             .values(first_of_part=False))
            ids = conn.execute(
                insert(schema.Inspection).returning(schema.Inspection.id, sort_by_parameter_order=True),
                [{
                    "uid": r.uid, "station_id": r.station_id, "run_id": r.run_id, "seq": r.seq,
                    "part_id": r.part_id, "captured_at": naive_utc(r.captured_at),
                    "decided_at": naive_utc(r.decided_at), "verdict": r.verdict, "latency_ms": r.latency_ms,
                    "error": r.error, "error_step": r.error_step, "source_meta": r.source_meta,
                    "n_defects": sum(1 for d in r.defects if d.failed), "first_of_part": f1,
                } for r, f1 in zip(new, first, strict=True)],
            ).scalars().all()
            steps = [
                {"inspection_id": iid, "step_index": s.step_index, "step": s.step, "plugin": s.plugin,
                 "status": s.status, "score": s.score, "latency_ms": s.latency_ms,
                 "n_findings": s.n_findings, "error": s.error}
                for iid, r in zip(ids, new, strict=True) for s in r.steps
            ]
            if steps:
                conn.execute(insert(schema.StepResult), steps)
            defects = [(iid, d) for iid, r in zip(ids, new, strict=True) for d in r.defects]
            if defects:
                dids = conn.execute(
                    insert(schema.Defect).returning(schema.Defect.id, sort_by_parameter_order=True),
                    [{"inspection_id": iid, "step": d.step, "plugin": d.plugin, "kind": d.kind,
                      "score": d.score, "failed": d.failed, "x": d.box[0], "y": d.box[1], "w": d.box[2],
                      "h": d.box[3], "size_px": d.size_px, "size_mm": d.size_mm,
                      "measurements": d.measurements, "message": d.message} for iid, d in defects],
                ).scalars().all()
                crops = [
                    {"defect_id": did, "inspection_id": iid, "format": d.crop.format, "width": d.crop.width,
                     "height": d.crop.height, "x": d.crop.x, "y": d.crop.y, "scale": d.crop.scale,
                     "data": d.crop.data}
                    for did, (iid, d) in zip(dids, defects, strict=True) if d.crop is not None
                ]
                if crops:
                    conn.execute(insert(schema.Crop), crops)
            write_rollup(conn, rollup)
        return len(new)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: a verdict reported after commit survives a power cut, not only a process kill.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


# ---------------------------------------------------------------------------- the spool


class Spool:
    """Records waiting for the database, in a local SQLite file (FIFO, synchronous FULL)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY, record TEXT NOT NULL)")

    def put(self, records: Sequence[InspectionRecord]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO spool (record) VALUES (?)", [(r.to_json(),) for r in records])

    def __len__(self) -> int:
        return self.db.execute("SELECT count(*) FROM spool").fetchone()[0]

    def peek(self, n: int) -> list[tuple[int, InspectionRecord]]:
        rows = self.db.execute("SELECT id, record FROM spool ORDER BY id LIMIT ?", (n,)).fetchall()
        return [(i, InspectionRecord.from_json(t)) for i, t in rows]

    def remove_through(self, last_id: int) -> None:
        self.db.execute("DELETE FROM spool WHERE id <= ?", (last_id,))

    def close(self) -> None:
        self.db.close()


def is_unreachable(exc: BaseException) -> bool:
    """True for errors that mean 'the database is not there right now', worth spooling for."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


# ---------------------------------------------------------------------------- the recorder


class Recorder:
    """The one writer of a station: group commit, then report.

    ``submit`` never blocks on the database. ``on_committed`` is called from the recorder's
    thread, in commit order, with each batch once it is durable (in the database or the spool).
    """

    def __init__(self, store: Store, *, on_committed: Callable[[list[InspectionRecord]], None],
                 spool_path: Path | None = None, max_batch: int = 500, retry_s: float = 2.0,
                 on_event: Callable[[str, str], None] | None = None) -> None:
        self.store = store
        self.on_committed = on_committed
        self.on_event = on_event or (lambda kind, msg: None)
        self.max_batch = max_batch
        self.retry_s = retry_s
        self.spool = Spool(spool_path) if spool_path else None
        self.queue: queue.Queue[InspectionRecord | None] = queue.Queue()
        self.committed = 0
        self.spooled = 0
        self.error: BaseException | None = None
        self._down_since: float | None = None
        self._next_try = 0.0
        self._thread = threading.Thread(target=self._loop, name="inspector-recorder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, record: InspectionRecord) -> None:
        self.queue.put(record)

    def close(self, timeout: float | None = None) -> None:
        """Commit everything submitted so far, then stop."""
        self.queue.put(None)
        self._thread.join(timeout)
        if self.spool:
            self.spool.close()

    @property
    def backlog(self) -> int:
        return self.queue.qsize() + (len(self.spool) if self.spool else 0)

    def _loop(self) -> None:
        # Verdicts spooled by an earlier run that ended while the database was away.
        self._drain_spool()
        stop = False
        while not stop:
            try:
                first = self.queue.get(timeout=self.retry_s if self._down_since else None)
            except queue.Empty:
                self._drain_spool()
                continue
            batch: list[InspectionRecord] = []
            if first is None:
                stop = True
            else:
                batch.append(first)
            while len(batch) < self.max_batch:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            if batch:
                self._commit(batch)
        self._drain_spool()

    def _commit(self, batch: list[InspectionRecord]) -> None:
        if self._down_since is None or time.monotonic() >= self._next_try:
            self._drain_spool()
        if self._down_since is None:
            try:
                self.store.write(batch)
            except Exception as exc:  # noqa: BLE001
                if self.spool is None or not is_unreachable(exc):
                    # SQLite next to the station: nowhere better to put it. Stop loudly.
                    self.error = exc
                    log.error("store %s: cannot write %d verdicts: %s", self.store.display_url, len(batch), exc)
                    raise
                self._went_down(exc)
            else:
                self.committed += len(batch)
                self.on_committed(batch)
                return
        assert self.spool is not None
        self.spool.put(batch)
        self.spooled += len(batch)
        self.on_committed(batch)

    def _went_down(self, exc: BaseException) -> None:
        self._down_since = time.monotonic()
        self._next_try = self._down_since + self.retry_s
        msg = f"store {self.store.display_url} unreachable ({type(exc).__name__}); spooling to {self.spool.path}"
        log.warning(msg)
        self.on_event("store_unreachable", msg)

    def _drain_spool(self) -> None:
        if self.spool is None:
            return
        if self._down_since is not None and time.monotonic() < self._next_try:
            return
        drained = 0
        while True:
            items = self.spool.peek(self.max_batch)
            if not items:
                break
            try:
                self.store.write([r for _, r in items])
            except Exception as exc:  # noqa: BLE001
                if not is_unreachable(exc):
                    raise
                if self._down_since is None:
                    self._went_down(exc)
                self._next_try = time.monotonic() + self.retry_s
                return
            self.spool.remove_through(items[-1][0])
            drained += len(items)
        if self._down_since is not None or drained:
            msg = f"store {self.store.display_url} reachable again; {drained} spooled verdicts written"
            log.warning(msg)
            self._down_since = None
            self.on_event("store_recovered", msg)
