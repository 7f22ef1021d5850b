"""Opening a store: the engine, its migrations, runs and events, and the one transaction that
writes a batch of inspections."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from inspector_core.store import schema
from inspector_core.store.records import InspectionRecord, naive_utc, utcnow
from inspector_core.store.rollup import HourRollup, _first_of_part, write_rollup

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")


class StoreError(RuntimeError):
    """The store cannot be opened or written; the message names the URL and the remedy."""


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


def is_unreachable(exc: BaseException) -> bool:
    """True for errors that mean 'the database is not there right now', worth spooling for."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated
