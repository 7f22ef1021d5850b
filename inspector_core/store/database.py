"""Opening a store: the engine, its migrations and schema revision, runs and events, and the one
transaction that writes a batch of inspections.

Every call this module makes to a database has a bounded time, so a database that stops
answering (packets dropped, a server frozen) costs the caller seconds, never a hang:

- PostgreSQL: ``connect_timeout``; TCP keepalives and ``tcp_user_timeout`` (a peer that stops
  acknowledging breaks the connection); ``statement_timeout`` on the server; and, because none
  of those notices a peer that acknowledges but never answers, a watchdog per transaction that
  shuts the connection's socket down when its time is up (:meth:`Store.transaction`).
- SQLite: a busy timeout, and the same watchdog (``sqlite3.Connection.interrupt``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    ARRAY,
    Connection,
    Engine,
    String,
    any_,
    create_engine,
    event,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError, SQLAlchemyError, StatementError

from inspector_core.store import schema
from inspector_core.store.records import EventRecord, InspectionRecord, RunRecord, naive_utc, utcnow
from inspector_core.store.rollup import HourRollup, _first_of_part, write_rollup

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
ADVISORY_LOCK = 5109202611
"""PostgreSQL advisory lock taken while migrating: stations starting together migrate one at a time."""


class StoreError(RuntimeError):
    """The store cannot be opened or written; the message names the URL and the remedy."""


class StoreTimeout(StoreError):
    """A database call overran its time (the database stopped answering)."""


class StoreUnreachable(StoreError):
    """The database cannot be reached right now (refused, timed out, unknown host)."""


# ---------------------------------------------------------------------------- errors

Failure = Literal["unreachable", "refused", "failed"]

# Server-sent states that mean "not now" rather than "never": shutting down, starting up,
# the statement or a lock overran its time, a connection exception.
_TRANSIENT_SQLSTATES = ("57P01", "57P02", "57P03", "57014", "55P03", "08")
_TRANSIENT_FATAL = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "too many connections",
)
_SQLITE_TRANSIENT = ("database is locked", "interrupted", "database table is locked")


def classify(exc: BaseException) -> Failure:
    """What an exception from a database call means for the record(s) being written.

    ``unreachable``: the database is not there right now (refused, timed out, host unknown,
    restarting, busy); worth keeping the records and trying again later. ``refused``: the
    database answered and refused these records (an integrity or data error, a value it cannot
    store); trying again will not help, the record is set aside. ``failed``: anything else (no
    permission, missing table, wrong password): the store, not the record, is at fault.
    """
    if isinstance(exc, StoreTimeout | StoreUnreachable):
        return "unreachable"
    if isinstance(exc, StoreError):
        return classify(exc.__cause__) if exc.__cause__ is not None else "failed"
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return "unreachable"
    if isinstance(exc, IntegrityError | DataError):
        return "refused"
    if isinstance(exc, StatementError) and not isinstance(exc, DBAPIError):
        return "refused"  # a value that cannot even be bound (a NaN for an integer, a huge int)
    if isinstance(exc, TypeError | ValueError | OverflowError):
        return "refused"
    if isinstance(exc, OperationalError):
        orig = exc.orig
        text = str(orig)
        if type(orig).__module__.startswith("sqlite3"):
            return "unreachable" if any(t in text for t in _SQLITE_TRANSIENT) else "failed"
        state = getattr(orig, "sqlstate", None)
        if state is not None:
            return "unreachable" if state.startswith(_TRANSIENT_SQLSTATES) else "failed"
        # No state: libpq failed before or without the server's word (refused, timeout, DNS, the
        # server went away), unless the server answered FATAL (auth, missing database).
        if "FATAL:" in text:
            return "unreachable" if any(t in text for t in _TRANSIENT_FATAL) else "failed"
        return "unreachable"
    return "failed"


def is_unreachable(exc: BaseException) -> bool:
    """True for errors that mean 'the database is not there right now', worth spooling for."""
    return classify(exc) == "unreachable"


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return " ".join(str(orig if orig is not None else exc).split())


def describe_failure(display_url: str, exc: BaseException) -> str:
    """One line naming the store, what went wrong and the remedy."""
    reason = _reason(exc)
    if isinstance(exc, StoreError):
        return str(exc)
    if classify(exc) == "unreachable":
        return (
            f"store {display_url}: cannot reach the database ({reason}); check that the server runs, "
            "that the network to it works and the URL (host, port) is right"
        )
    if isinstance(exc, OperationalError):
        return (
            f"store {display_url}: the database refused the connection or the request ({reason}); "
            "check the user, password, database name and the user's permissions"
        )
    return f"store {display_url}: {type(exc).__name__}: {reason}"


# ---------------------------------------------------------------------------- the store


def _describe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url


class Store:
    """A database holding Inspector's tables.

    ``Store(url)`` migrates a writer's database to the newest schema on open. Readers (QA
    commands, the dashboard) open with ``Store(url, migrate=False)`` and call
    :meth:`check_revision`, which refuses a schema newer or older than this release's.
    """

    def __init__(
        self,
        url: str,
        *,
        migrate: bool = True,
        connect_timeout_s: float = 3.0,
        statement_timeout_s: float = 30.0,
        call_timeout_s: float = 30.0,
        busy_timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.display_url = _describe(url)
        self.call_timeout_s = call_timeout_s
        self.busy_timeout_s = busy_timeout_s
        try:
            parsed = make_url(url)
        except Exception as exc:
            raise StoreError(
                f"store url {url!r} is not a database URL ({exc}); "
                "use e.g. sqlite:///inspector.db or postgresql+psycopg://user@host/db"
            ) from exc
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self.sqlite_path: Path | None = None
        if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:" and not parsed.query.get("uri"):
                self.sqlite_path = Path(parsed.database)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": busy_timeout_s}
        else:
            kwargs["pool_timeout"] = connect_timeout_s
            kwargs["connect_args"] = _pg_connect_args(parsed.drivername, connect_timeout_s, statement_timeout_s)
        try:
            self.engine: Engine = create_engine(parsed, **kwargs)
        except Exception as exc:
            raise StoreError(f"store {self.display_url}: cannot create engine: {exc}") from exc
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        if migrate:
            self.migrate()

    # -------------------------------------------------------------- bounded calls

    @contextmanager
    def transaction(self, *, timeout_s: float | None = None, write: bool = False) -> Iterator[Connection]:
        """A connection in a transaction, committed when the block ends, that may take at most
        ``timeout_s`` (default ``call_timeout_s``) in all, connecting and committing included.
        When that time is up the connection is cut and the block raises :class:`StoreTimeout`.
        ``write=True`` takes SQLite's write lock at the start (``BEGIN IMMEDIATE``), so two
        writers wait for each other instead of failing."""
        limit = self.call_timeout_s if timeout_s is None else timeout_s
        fired = threading.Event()
        conn: Connection | None = None
        watch: int | None = None
        try:
            try:
                try:
                    conn = self.engine.connect()
                except SQLAlchemyError as exc:
                    if classify(exc) == "unreachable":
                        raise StoreUnreachable(describe_failure(self.display_url, exc)) from exc
                    raise
                if self.is_sqlite:
                    # The watchdog's interrupt does not end a wait for a lock: bound that wait too.
                    _sqlite_busy_timeout(conn, min(limit, self.busy_timeout_s))
                    if write:
                        conn = conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
                watch = _WATCHDOG.watch(limit, conn, fired)
                with conn.begin():
                    yield conn
            finally:
                if watch is not None:  # from here on fired says whether it was cut
                    _WATCHDOG.cancel(watch)
                if conn is not None:
                    if fired.is_set():
                        conn.invalidate()
                    elif self.is_sqlite:
                        _sqlite_busy_timeout(conn, self.busy_timeout_s)
                    conn.close()
        except SQLAlchemyError as exc:
            if fired.is_set():
                raise StoreTimeout(
                    f"store {self.display_url}: no answer within {limit:g} s ({_reason(exc)}); "
                    "the database or the network to it has stopped answering"
                ) from exc
            raise

    # -------------------------------------------------------------- schema

    def _alembic(self) -> Any:
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        return cfg

    def head_revision(self) -> str:
        """The newest schema revision this release knows."""
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(self._alembic()).get_current_head()
        assert head is not None
        return head

    def migrate(self, *, timeout_s: float = 600.0) -> None:
        """Create a new database's tables, or upgrade an old one, to the newest revision.

        All migrations run in one transaction (PostgreSQL's and, through ``BEGIN IMMEDIATE``,
        SQLite's DDL is transactional), so a process killed while migrating leaves the database
        as it was and the next start migrates it again. On PostgreSQL an advisory lock makes
        stations starting at once migrate one after the other."""
        from alembic import command

        if self.sqlite_path is not None:
            self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        if self.is_sqlite:
            # Readers beside the one writer: WAL (kept in the file). Outside any transaction.
            with self.engine.connect() as conn:
                dbapi = conn.connection.dbapi_connection
                assert dbapi is not None
                dbapi.execute("PRAGMA journal_mode=WAL")
        cfg = self._alembic()
        for attempt in range(3):
            try:
                with self.transaction(timeout_s=timeout_s, write=True) as conn:
                    if conn.dialect.name == "postgresql":
                        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
                        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK})")
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
                return
            except StoreError:
                raise
            except SQLAlchemyError as exc:
                if "already exists" in str(exc):
                    if attempt < 2:
                        continue  # another process on the same database migrated first
                    raise StoreError(
                        f"store {self.display_url} has some of Inspector's tables but no schema revision "
                        f"({_reason(exc)}): a first start was killed while migrating, under a release that did "
                        "not migrate in one transaction. If it holds nothing you need, delete the file (SQLite) or "
                        "drop its tables and start again; otherwise ask its owner to `alembic stamp` the revision "
                        "its tables match"
                    ) from exc
                raise StoreError(describe_failure(self.display_url, exc)) from exc
            except Exception as exc:  # alembic's own: a revision this release does not know
                try:
                    current = self.current_revision()
                except StoreError:
                    current = "?"
                raise StoreError(
                    f"store {self.display_url} is at schema revision {current}, which this release "
                    f"does not know (its newest is {self.head_revision()}; {exc}): a newer release "
                    "wrote it; upgrade Inspector (pip install -U inspector-core)"
                ) from exc

    def ping(self, *, timeout_s: float | None = None) -> None:
        """Ask the database something trivial; raises if it does not answer within the time."""
        try:
            with self.transaction(timeout_s=timeout_s) as conn:
                conn.exec_driver_sql("SELECT 1")
        except StoreError:
            raise
        except SQLAlchemyError as exc:
            raise StoreError(describe_failure(self.display_url, exc)) from exc

    def current_revision(self, *, timeout_s: float | None = None) -> str | None:
        """The schema revision the database is at (``None``: no Inspector schema)."""
        from alembic.migration import MigrationContext

        if self.sqlite_path is not None and not self.sqlite_path.exists():
            raise StoreError(
                f"store {self.display_url}: no such file {self.sqlite_path}; "
                "check the path (a station creates its database when it first runs)"
            )
        try:
            with self.transaction(timeout_s=timeout_s) as conn:
                return MigrationContext.configure(conn).get_current_revision()
        except StoreError:
            raise
        except SQLAlchemyError as exc:
            raise StoreError(describe_failure(self.display_url, exc)) from exc

    def check_revision(self) -> str:
        """For readers: the schema must be the one this release knows. Returns the revision;
        raises :class:`StoreError` (naming both revisions and the remedy) otherwise. Writes
        nothing."""
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(self._alembic())
        head = self.head_revision()
        current = self.current_revision()
        if current == head:
            return current
        ini = MIGRATIONS / "alembic.ini"
        upgrade = (
            "run a station on it once (`inspector run STATION.yaml` upgrades its store), or, as the "
            f"database's owner, set sqlalchemy.url = {self.display_url} in {ini} and run "
            f"`alembic -c {ini} upgrade head`"
        )
        if current is None:
            raise StoreError(
                f"store {self.display_url} holds no Inspector schema (no alembic_version; this "
                f"release needs revision {head}); is this the right database? To create it: " + upgrade
            )
        try:
            known = script.get_revision(current) is not None
        except Exception:  # noqa: BLE001 - alembic raises for a revision it has never heard of
            known = False
        if not known:
            raise StoreError(
                f"store {self.display_url} is at schema revision {current}, newer than this "
                f"release knows (its newest is {head}); upgrade Inspector "
                "(pip install -U inspector-core) to read it"
            )
        raise StoreError(
            f"store {self.display_url} is at schema revision {current}, older than this "
            f"release's {head}; upgrade the database: " + upgrade
        )

    def close(self) -> None:
        self.engine.dispose()

    # -------------------------------------------------------------- runs and events

    @staticmethod
    def _station_id(conn: Connection, name: str) -> int:
        sid = conn.scalar(select(schema.Station.id).where(schema.Station.name == name))
        if sid is None:
            sid = conn.execute(
                insert(schema.Station).values(name=name, created_at=utcnow()).returning(schema.Station.id)
            ).scalar_one()
        return sid

    def station_id(self, name: str) -> int:
        with self.transaction(write=True) as conn:
            return self._station_id(conn, name)

    def ensure_run(self, run: RunRecord, *, timeout_s: float | None = None) -> tuple[int, int]:
        """The ``(station_id, run_id)`` of ``run`` (by its uid), recording it (and its station)
        first if the database has not seen it."""
        for attempt in range(2):
            try:
                with self.transaction(timeout_s=timeout_s, write=True) as conn:
                    row = conn.execute(
                        select(schema.Run.station_id, schema.Run.id).where(schema.Run.uid == run.uid)
                    ).first()
                    if row is not None:
                        return row[0], row[1]
                    sid = self._station_id(conn, run.station)
                    rid = conn.execute(
                        insert(schema.Run)
                        .values(
                            uid=run.uid,
                            station_id=sid,
                            started_at=naive_utc(run.started_at),
                            ended_at=None,
                            hostname=run.hostname,
                            software_version=run.software_version,
                            plugins=run.plugins,
                            config_yaml=run.config_yaml,
                            config_hash=run.config_hash,
                            models=run.models,
                            parts_seen=None,
                        )
                        .returning(schema.Run.id)
                    ).scalar_one()
                    _open_cursors(conn, sid, run.sink_keys)
                    return sid, rid
            except IntegrityError:
                if attempt:  # a station of the same name (or this run) was recorded meanwhile
                    raise
        raise AssertionError("unreachable")

    def begin_run(
        self,
        station: str,
        *,
        hostname: str,
        software_version: str,
        plugins: dict[str, Any],
        config_yaml: str,
        config_hash: str,
        models: dict[str, Any],
    ) -> tuple[int, int]:
        """Record the start of a station; returns ``(station_id, run_id)``."""
        return self.ensure_run(
            RunRecord(station, hostname, software_version, plugins, config_yaml, config_hash, models)
        )

    def end_run(
        self, run_id: int, parts_seen: int, *, ended_at: datetime | None = None, timeout_s: float | None = None
    ) -> None:
        with self.transaction(timeout_s=timeout_s, write=True) as conn:
            conn.execute(
                update(schema.Run)
                .where(schema.Run.id == run_id)
                .values(ended_at=naive_utc(ended_at or utcnow()), parts_seen=parts_seen)
            )

    def add_events(self, events: Sequence[EventRecord], *, timeout_s: float | None = None) -> int:
        """Write events (their runs must be recorded); an event whose uid is already stored is
        skipped. Returns how many were new."""
        if not events:
            return 0
        with self.transaction(timeout_s=timeout_s, write=True) as conn:
            runs = self._run_ids(conn, {e.run_uid for e in events})
            present = set(conn.scalars(select(schema.Event.uid).where(schema.Event.uid.in_([e.uid for e in events]))))
            rows = []
            for e in events:
                if e.uid in present:
                    continue
                present.add(e.uid)
                rows.append(
                    {
                        "uid": e.uid,
                        "run_id": runs[e.run_uid][1],
                        "at": naive_utc(e.at),
                        "kind": e.kind,
                        "message": e.message,
                    }
                )
            if rows:
                conn.execute(insert(schema.Event), rows)
            return len(rows)

    def _run_ids(self, conn: Connection, uids: set[str]) -> dict[str, tuple[int, int, str]]:
        """``{run uid: (station_id, run_id, station name)}``; every uid must be recorded."""
        found: dict[str, tuple[int, int, str]] = {}
        for uid, sid, rid, name in conn.execute(
            select(schema.Run.uid, schema.Run.station_id, schema.Run.id, schema.Station.name)
            .join(schema.Station, schema.Station.id == schema.Run.station_id)
            .where(schema.Run.uid.in_(sorted(uids)))
        ):
            if uid is not None:
                found[uid] = (sid, rid, name)
        missing = uids - set(found)
        if missing:
            raise StoreError(
                f"store {self.display_url}: run(s) {', '.join(sorted(missing))} are not recorded "
                "in this database; the writer records a run before its verdicts"
            )
        return found

    # -------------------------------------------------------------- inspections

    def recorded_part_ids(self, station: str, part_ids: Sequence[str]) -> set[str]:
        """Which of ``part_ids`` have at least one inspection at ``station`` (in any run): what
        a source that resumes where it stopped must not yield again."""
        wanted = sorted(set(part_ids))
        found: set[str] = set()
        for i in range(0, len(wanted), 500):  # bounded IN lists, each in bounded time
            with self.transaction() as conn:
                found.update(
                    conn.scalars(
                        select(schema.Inspection.part_id)
                        .distinct()
                        .join(schema.Station, schema.Station.id == schema.Inspection.station_id)
                        .where(schema.Station.name == station, schema.Inspection.part_id.in_(wanted[i : i + 500]))
                    )
                )
        return found

    def write(self, records: Sequence[InspectionRecord], *, timeout_s: float | None = None, fresh: bool = False) -> int:
        """Write ``records`` in one transaction; records whose ``uid`` is already stored are
        skipped (a spool drained twice). A record without database ids names its run by
        ``run_uid`` (recorded before, :meth:`ensure_run`) and its station by ``station``; the ids
        are looked up and set on the record, and a station name that is not the run's is refused.
        ``fresh=True`` (the writer's first attempt at verdicts it has just been given, whose uids
        no earlier transaction can have committed) skips the probe for stored uids; a uid that is
        stored all the same is refused by its unique index. Returns how many were new."""
        if not records:
            return 0
        with self.transaction(timeout_s=timeout_s, write=True) as conn:
            named = [r for r in records if r.station_id is None or r.run_id is None]
            if named:
                if any(r.run_uid is None for r in named):
                    raise ValueError("an inspection record has neither database ids nor a run uid")
                runs = self._run_ids(conn, {r.run_uid for r in named if r.run_uid is not None})
                for r in named:
                    sid, rid, name = runs[r.run_uid]  # type: ignore[index]
                    if r.station is not None and r.station != name:
                        raise IntegrityError(
                            "resolve run",
                            None,
                            ValueError(
                                f"record {r.uid} names station {r.station!r} but its run {r.run_uid} "
                                f"belongs to station {name!r}"
                            ),
                        )
                    r.station_id, r.run_id = sid, rid
            present: set[str] = set()
            if not fresh:
                uids = [r.uid for r in records]
                if conn.dialect.name == "postgresql":  # one array parameter: no 500 placeholders to convert
                    match = schema.Inspection.uid == any_(literal(uids, ARRAY(String)))
                else:
                    match = schema.Inspection.uid.in_(uids)
                present = set(conn.scalars(select(schema.Inspection.uid).where(match)))
            # A uid repeated inside the batch is written (and rolled up) once too: its first record.
            once: dict[str, InspectionRecord] = {}
            for r in records:
                once.setdefault(r.uid, r)
            new = [r for uid, r in once.items() if uid not in present] if present else list(once.values())
            if not new:
                return 0
            # Roll-up of exactly these (deduplicated) records, upserted in this transaction.
            rollup = HourRollup()
            first, passed, demoted = _first_of_part(conn, new, rollup)
            if demoted:
                conn.execute(
                    update(schema.Inspection).where(schema.Inspection.id.in_(demoted)).values(first_of_part=False)
                )
            # Ids come from the writer, not from RETURNING: the children need no answer per row, and
            # every table goes in with one executemany (SQLite) or one COPY (PostgreSQL).
            iids = _allocate_ids(conn, "inspections", len(new))
            dids = _allocate_ids(conn, "defects", sum(len(r.defects) for r in new))
            sqlite = conn.dialect.name == "sqlite"
            js = _json
            at = utcnow()
            at_db = at.isoformat(" ", "microseconds") if sqlite else at
            ins: list[tuple[Any, ...]] = []
            steps: list[tuple[Any, ...]] = []
            defects: list[tuple[Any, ...]] = []
            crops: list[tuple[Any, ...]] = []
            evidence: list[tuple[Any, ...]] = []
            views: list[tuple[Any, ...]] = []
            add_ins, add_step, add_defect, add_crop = ins.append, steps.append, defects.append, crops.append
            caps: list[datetime] = []
            add_cap = caps.append
            text = _DatetimeText()
            # Booleans as SQLite stores them (0/1): sqlite3 binds an int as it is, a bool only after
            # looking for an adapter (see _without_nulls).
            first_db: Sequence[object] = [1 if f else 0 for f in first] if sqlite else first
            k = 0
            for iid, r, f1 in zip(iids, new, first_db, strict=True):
                for s in r.steps:
                    add_step(
                        (
                            iid,
                            s.step_index,
                            s.step,
                            s.detector,
                            s.status,
                            s.score,
                            s.raw_score,
                            s.latency_ms,
                            s.n_findings,
                            s.error,
                            s.view,
                        )
                    )
                n_failed = 0
                for d in r.defects:
                    did = dids[k]
                    k += 1
                    n_failed += d.failed
                    x, y, w, h = d.box
                    add_defect(
                        (
                            did,
                            iid,
                            d.step,
                            d.detector,
                            d.kind,
                            d.score,
                            d.raw_score,
                            (1 if d.failed else 0) if sqlite else d.failed,
                            x,
                            y,
                            w,
                            h,
                            d.size_px,
                            d.size_mm,
                            js(d.measurements),
                            d.message,
                            d.view,
                        )
                    )
                    c = d.crop
                    if c is not None:
                        add_crop((did, iid, c.format, c.width, c.height, c.x, c.y, c.scale, c.data))
                captured, decided = r.captured_at, r.decided_at
                if captured.tzinfo is not None:
                    captured = naive_utc(captured)
                if decided.tzinfo is not None:
                    decided = naive_utc(decided)
                lat = r.latency_ms
                station_id = r.station_id
                add_cap(captured)
                captured_db: Any
                decided_db: Any
                if sqlite:  # SQLAlchemy's SQLite DATETIME storage form (always with microseconds)
                    captured_db = text(captured)
                    decided_db = text(decided)
                else:
                    captured_db, decided_db = captured, decided
                if r.views:  # issue 14: a multi-view part's views (inspection_views, migration 0013)
                    add_views(iid, r.views, sqlite, views)
                ev = r.evidence
                if ev is not None:  # its file (if stored) was written and fsynced before this transaction
                    evidence.append(
                        (
                            iid,
                            station_id,
                            captured_db,
                            ev.kept_as,
                            ev.status,
                            ev.reason,
                            ev.sha256,
                            ev.format,
                            ev.width,
                            ev.height,
                            ev.scale,
                            ev.bytes,
                            at_db,
                        )
                    )
                meta = r.source_meta
                add_ins(
                    (
                        iid,
                        r.uid,
                        station_id,
                        r.run_id,
                        r.seq,
                        r.part_id,
                        captured_db,
                        decided_db,
                        r.verdict,
                        lat,
                        r.error,
                        r.error_step,
                        n_failed,
                        "null" if meta is None else js(meta),
                        f1,
                        at_db,
                        None if lat is None else lat + (at - decided).total_seconds() * 1000,
                        r.recipe,
                        r.recipe_hash,
                    )
                )
            rollup.add_batch(new, caps, first, passed)
            _insert_rows(conn, _INSPECTION_COLUMNS, ins)
            _insert_rows(conn, _STEP_COLUMNS, steps)
            _insert_rows(conn, _DEFECT_COLUMNS, defects)
            _insert_rows(conn, _CROP_COLUMNS, crops)
            _insert_rows(conn, _EVIDENCE_COLUMNS, evidence)
            _insert_rows(conn, VIEW_COLUMNS, views)
            write_rollup(conn, rollup)
        for r in new:  # only now: a record spooled after a failed attempt carries no commit time
            r.committed_at = at
        return len(new)


# ---------------------------------------------------------------------------- bulk rows

_INSPECTION_COLUMNS = (
    "inspections",
    "id uid station_id run_id seq part_id captured_at decided_at verdict latency_ms error error_step n_defects "
    "source_meta first_of_part committed_at commit_latency_ms recipe recipe_hash",
)
_STEP_COLUMNS = (
    "step_results",
    "inspection_id step_index step detector status score raw_score latency_ms n_findings error view",
)
_DEFECT_COLUMNS = (
    "defects",
    "id inspection_id step detector kind score raw_score failed x y w h size_px size_mm measurements message view",
)
_CROP_COLUMNS = ("crops", "defect_id inspection_id format width height x y scale data")
_EVIDENCE_COLUMNS = (
    "evidence",
    "inspection_id station_id captured_at kept_as status reason sha256 format width height scale bytes created_at",
)

VIEW_COLUMNS = (
    "inspection_views",
    "inspection_id view status captured_at source_meta error note evidence_x width height",
)


def add_views(iid: int, records: Sequence[Any], sqlite: bool, rows: list[tuple[Any, ...]]) -> None:
    """The bulk rows of an inspection's views (``inspection_views``), in the database's form."""
    for v in records:
        at = v.captured_at
        if at is not None:
            at = naive_utc(at)
            if sqlite:
                at = at.isoformat(" ", "microseconds")
        meta = None if v.source_meta is None else _json(v.source_meta)
        rows.append((iid, v.view, v.status, at, meta, v.error, v.note, v.evidence_x, v.width, v.height))


_SQL: dict[tuple[str, str, str], str] = {}


def _same(value: Any) -> Any:
    return value


def _sqlite_datetime(value: datetime) -> str:
    # SQLAlchemy's SQLite DATETIME storage format (always with microseconds), for naive UTC times.
    return value.isoformat(" ", "microseconds")


_MINUTE = timedelta(minutes=1)
_ZERO = timedelta(0)


class _DatetimeText:
    """:func:`_sqlite_datetime` for a batch's times, which mostly share their minute: the minute's
    text made once, seconds and microseconds added (half of ``isoformat``'s cost, which was a
    sixth of building the rows). The same text (tests/core/test_store_bulk.py)."""

    __slots__ = ("base", "prefix")

    def __init__(self) -> None:
        self.base = datetime.min
        self.prefix = ""

    def __call__(self, t: datetime) -> str:
        d = t - self.base
        if not (_ZERO <= d < _MINUTE and self.prefix):
            self.base = t.replace(second=0, microsecond=0)
            self.prefix = self.base.isoformat(" ", "minutes") + ":"
            d = t - self.base
        return self.prefix + "%02d.%06d" % (d.seconds, d.microseconds)  # noqa: UP031 - fastest here


def _encoder() -> Callable[[Any, int], list[str]] | None:
    """``json.dumps``'s own C encoder, made once (``json.dumps`` makes one per call: most of its cost
    for a small dict); ``None`` where it is not there or does not give ``json.dumps``'s text."""
    try:
        from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]

        if c_make_encoder is None:
            return None
        d = json.JSONEncoder()
        enc: Callable[[Any, int], list[str]] = c_make_encoder(
            None, d.default, encode_basestring_ascii, None, ": ", ", ", False, False, True
        )
        probe = {"a": 1.5, "b\u00e9": [1, None, True, float("nan")], "c": {"d": "x\n"}, "e": 1e300}
        return enc if "".join(enc(probe, 0)) == json.dumps(probe) else None
    except Exception:  # noqa: BLE001 - another Python's internals: json.dumps then
        return None


_ENCODE = _encoder()


def _json(value: Any) -> str:
    # SQLAlchemy's JSON bind processor with the dialects' default serializer (json.dumps): None is
    # JSON 'null'. A dict goes through json.dumps's own C encoder, made once: the same text.
    if value is None:
        return "null"
    if type(value) is dict and _ENCODE is not None:
        return "".join(_ENCODE(value, 0)) if value else "{}"
    if value == {}:
        return "{}"
    return json.dumps(value)


def _codec(dialect: str) -> tuple[Callable[[datetime], Any], Callable[[Any], Any]]:
    """How a datetime and a JSON value go into the bulk rows, exactly as SQLAlchemy's bind processors
    store them (tests/core/test_store_bulk.py compares the two): SQLite keeps datetimes as text with
    microseconds; both keep JSON as its text (``json.dumps``)."""
    return (_sqlite_datetime if dialect == "sqlite" else _same), _json


def _insert_rows(conn: Connection, spec: tuple[str, str], rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` (values in the order of ``spec``'s columns, already in the database's form: see
    :func:`_codec`) in the connection's transaction: one ``executemany`` (SQLite) or one ``COPY``
    (PostgreSQL through psycopg); no statement per row, no RETURNING. On SQLite the columns that are
    NULL in every row are left out of the statement (:func:`_without_nulls`). Driver errors are raised
    as SQLAlchemy's (``IntegrityError``, ``DataError``, ...), so :func:`classify` reads them as any other."""
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        spec, rows = _without_nulls(spec, rows)
    _send_rows(conn, spec, rows)


_NULLABLE: dict[tuple[str, str], tuple[int, ...]] = {}
_NARROW: dict[tuple[str, str, tuple[int, ...]], tuple[tuple[str, str], Callable[[tuple[Any, ...]], Any]]] = {}


def _nullable(spec: tuple[str, str]) -> tuple[int, ...]:
    """The positions in ``spec`` of the columns whose value may be left out: nullable, and no
    DEFAULT in the table (``server_default``), so a row without them stores NULL there as a row
    with ``None`` does."""
    got = _NULLABLE.get(spec)
    if got is None:
        table = schema.Base.metadata.tables[spec[0]]
        got = tuple(
            i
            for i, name in enumerate(spec[1].split())
            if table.c[name].nullable and table.c[name].server_default is None and not table.c[name].primary_key
        )
        _NULLABLE[spec] = got
    return got


def _without_nulls(spec: tuple[str, str], rows: list[tuple[Any, ...]]) -> tuple[tuple[str, str], list[tuple[Any, ...]]]:
    """``spec`` and ``rows`` without the nullable columns that are ``None`` in every row (a station
    without recipes, views or errors has nine of them per verdict with a defect): the same rows
    stored, and sqlite3 binds no parameter for them. A ``None`` parameter is not cheap there: the
    driver looks for an adapter for every value that is not an exact int, float, str or bytearray
    (about 0.7 us each on Python 3.11, measured), which is a fifth of ``executemany``'s time for
    these rows. The columns are checked from the first row; only those ``None`` there are scanned."""
    first = rows[0]
    drop = [i for i in _nullable(spec) if first[i] is None]
    if not drop:
        return spec, rows
    n = len(rows)
    if n > 1:
        drop = [i for i in drop if list(map(itemgetter(i), rows)).count(None) == n]
        if not drop:
            return spec, rows
    key = (spec[0], spec[1], tuple(drop))
    narrow = _NARROW.get(key)
    if narrow is None:
        names = spec[1].split()
        keep = [i for i in range(len(names)) if i not in drop]
        assert len(keep) > 1, spec  # every table has NOT NULL columns; itemgetter of one gives no tuple
        narrow = (spec[0], " ".join(names[i] for i in keep)), itemgetter(*keep)
        _NARROW[key] = narrow
    return narrow[0], list(map(narrow[1], rows))


def _send_rows(conn: Connection, spec: tuple[str, str], rows: list[tuple[Any, ...]]) -> None:
    """The driver's part of :func:`_insert_rows`: ``rows`` in the columns of ``spec``, exactly as
    given (``bench/store_rate.py`` replays what this receives as its raw limit)."""
    table, columns = spec
    postgres = conn.dialect.name == "postgresql"
    if postgres and conn.dialect.driver != "psycopg":  # another driver: SQLAlchemy's own executemany
        names = columns.split()
        conn.execute(insert(schema.Base.metadata.tables[table]), [dict(zip(names, r, strict=True)) for r in rows])
        return
    key = (conn.dialect.name, table, columns)
    sql = _SQL.get(key)
    if sql is None:
        names = columns.split()
        if postgres:
            sql = f"COPY {table} ({', '.join(names)}) FROM STDIN"
        else:
            sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        _SQL[key] = sql
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    try:
        if not postgres:  # the driver's executemany itself: SQLAlchemy's wrapping costs more than the call
            dbapi.executemany(sql, rows)
            return
        with dbapi.cursor() as cur, cur.copy(sql) as copy:  # type: ignore[attr-defined]
            for row in rows:
                copy.write_row(row)
    except conn.dialect.loaded_dbapi.Error as exc:
        gone = conn.dialect.is_disconnect(exc, dbapi, None)
        if gone:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            sql, None, exc, conn.dialect.loaded_dbapi.Error, connection_invalidated=gone, dialect=conn.dialect
        ) from exc


def _allocate_ids(conn: Connection, table: str, n: int) -> list[int]:
    """``n`` new ids of ``table``, ascending, given by the writer. PostgreSQL: from the table's own
    sequence (``nextval``, one round trip), so writers of several stations sharing the database
    never take the same id and each station's ids still grow in its commit order. SQLite: after
    ``max(id)``, under the write lock the writer's transaction holds from its start (``BEGIN
    IMMEDIATE``), which is what SQLite itself gives an ``INTEGER PRIMARY KEY``."""
    if n == 0:
        return []
    if conn.dialect.name == "postgresql":
        got = conn.exec_driver_sql(
            f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, {int(n)})"
        ).scalars()
        return sorted(got)
    top = conn.exec_driver_sql(f"SELECT coalesce(max(id), 0) FROM {table}").scalar_one()
    return list(range(top + 1, top + 1 + n))


def _pg_connect_args(driver: str, connect_timeout_s: float, statement_timeout_s: float) -> dict[str, Any]:
    if "psycopg" not in driver:  # another driver: only what every libpq-based one takes
        return {"connect_timeout": max(1, round(connect_timeout_s))}
    return {
        # libpq's own minimum is 2 s.
        "connect_timeout": max(2, round(connect_timeout_s)),
        # A peer that stops acknowledging (packets dropped) breaks the connection within seconds.
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": int(max(connect_timeout_s, 5.0) * 1000),
        "options": f"-c statement_timeout={int(statement_timeout_s * 1000)}",
        "application_name": "inspector",
    }


class _Watchdog:
    """One thread, for the whole process, that cuts each transaction whose time is up
    (:meth:`Store.transaction`); a ``threading.Timer`` per transaction started a thread per call."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # the child has no such thread, maybe a held lock

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[int, tuple[float, Connection, threading.Event]] = {}
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None
        self._wake = math.inf

    def watch(self, limit: float, conn: Connection, fired: threading.Event) -> int:
        """Cut ``conn`` (and set ``fired``) ``limit`` seconds from now unless :meth:`cancel` comes first."""
        deadline = time.monotonic() + limit
        with self._cond:
            token = next(self._tokens)
            self._due[token] = (deadline, conn, fired)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="inspector-store-watchdog", daemon=True)
                self._thread.start()
            elif deadline < self._wake:
                self._cond.notify()
        return token

    def cancel(self, token: int) -> None:
        """Stop watching; once this returns, the transaction's ``fired`` is set if and only if it was cut."""
        with self._cond:
            self._due.pop(token, None)

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                now = time.monotonic()
                cut = []
                for token, (deadline, conn, fired) in list(self._due.items()):
                    if deadline <= now:
                        del self._due[token]
                        fired.set()  # under the lock: cancel() returns after it or the entry is gone
                        cut.append((conn, fired))
                if not cut:
                    self._wake = min((d for d, _, _ in self._due.values()), default=math.inf)
                    cond.wait(None if self._wake == math.inf else self._wake - now)
                    continue
            for conn, fired in cut:  # outside the lock: other transactions come and go meanwhile
                _sever(conn, fired)


def _sever(conn: Connection, fired: threading.Event) -> None:
    """Cut a connection whose time is up, from the watchdog's thread: the call blocked on it
    raises at once."""
    fired.set()
    try:
        dbapi = conn.connection.dbapi_connection
    except Exception:  # noqa: BLE001 - not connected (yet, or any more)
        return
    if dbapi is None:
        return
    interrupt = getattr(dbapi, "interrupt", None)  # sqlite3
    if interrupt is not None:
        with contextlib.suppress(Exception):
            interrupt()
        return
    pgconn = getattr(dbapi, "pgconn", None)  # psycopg 3
    with contextlib.suppress(Exception):  # already closed
        fd = pgconn.socket if pgconn is not None else dbapi.fileno()
        # shutdown, not close: the descriptor stays libpq's, the blocked recv returns at once.
        s = socket.socket(fileno=os.dup(fd))
        try:
            s.shutdown(socket.SHUT_RDWR)
        finally:
            s.close()


_WATCHDOG = _Watchdog()


def _sqlite_busy_timeout(conn: Connection, seconds: float) -> None:
    # On the driver's connection: through SQLAlchemy's it would begin a transaction.
    dbapi = conn.connection.dbapi_connection
    if dbapi is not None:
        dbapi.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # The driver's own transaction handling commits DDL at once; with it off and BEGIN emitted
    # by _sqlite_begin, a migration is one transaction (SQLAlchemy's documented recipe).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    # No journal_mode here: setting it writes to the file, and a reader writes nothing. The
    # writer sets WAL (persistent) when it migrates.
    # FULL: a verdict reported after commit survives a power cut, not only a process kill.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))


def _open_cursors(conn: Connection, station_id: int, keys: Sequence[str]) -> None:
    """Give each sink key without a delivery cursor one just after the station's newest
    inspection: everything the run being recorded commits later is owed to it."""
    if not keys:
        return
    c = schema.SinkCursor
    have = set(conn.scalars(select(c.sink).where(c.station_id == station_id, c.sink.in_(list(keys)))))
    missing = [k for k in dict.fromkeys(keys) if k not in have]
    if not missing:
        return
    start = conn.scalar(select(func.max(schema.Inspection.id)).where(schema.Inspection.station_id == station_id)) or 0
    now = utcnow()
    conn.execute(
        insert(c), [{"station_id": station_id, "sink": k, "inspection_id": start, "updated_at": now} for k in missing]
    )
