"""The local spool: what waits for the database (verdicts, events, the run itself), and what the
database refused, in an SQLite file beside the station.

A spool belongs to one station and one database: its file name carries the station's name and a
hash of the database URL (password left out), and the file itself records both, checked on
open, so a spool can never be drained into another database or attach rows to another station.
Records name their run by the uid the station gave it and the run's own record (station,
versions, config) is kept beside them, so the writer can record the run when the database
answers; no database id is ever spooled. The file carries a format version; one this release
does not know is refused with a message that says so. Everything read back is validated
(pydantic): a row that does not validate is moved to ``refused``, never lost and never written.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from inspector_core.store.database import StoreError
from inspector_core.store.records import (
    SPOOLED_EVENT,
    SPOOLED_INSPECTION,
    SPOOLED_RUN,
    EventRecord,
    InspectionRecord,
    RunRecord,
    naive_utc,
    utcnow,
)

FORMAT = 2
"""Version of the spool file's layout. 1 (before this one) had records with database ids."""

Kind = Literal["inspection", "event"]


class SpoolError(StoreError):
    """The spool file cannot be used: another station's or database's, an unknown format, or broken."""


def spool_file(directory: Path, station: str, database: str) -> Path:
    """Where the spool of ``station`` for ``database`` (a URL without its password) lives."""
    key = hashlib.sha256(database.encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", station)[:80] or "station"
    return directory / f"{safe}-{key}.spool.db"


@dataclass(slots=True)
class SpooledRun:
    run: RunRecord
    ended_at: datetime | None
    parts_seen: int | None


@dataclass(slots=True)
class SpooledItem:
    id: int
    kind: Kind
    record: InspectionRecord | EventRecord


_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE runs (uid TEXT PRIMARY KEY, record TEXT NOT NULL, ended_at TEXT, parts_seen INTEGER)",
    (
        "CREATE TABLE items (id INTEGER PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('inspection', 'event')), "
        "run_uid TEXT NOT NULL REFERENCES runs (uid), record TEXT NOT NULL)"
    ),
    (
        "CREATE TABLE refused (id INTEGER PRIMARY KEY, at TEXT NOT NULL, kind TEXT NOT NULL, uid TEXT, "
        "record TEXT NOT NULL, error TEXT NOT NULL)"
    ),
)


class Spool:
    """What waits for ``database`` on behalf of ``station``, in a local SQLite file (FIFO,
    synchronous FULL: what it holds survives a power cut)."""

    def __init__(self, path: Path, *, station: str, database: str, busy_timeout_s: float = 10.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.station = station
        self.database = database
        try:
            self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=busy_timeout_s)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._open()
        except sqlite3.DatabaseError as exc:
            raise SpoolError(
                f"spool {path}: cannot open it ({exc}); move the file aside to start a new one "
                "(what it holds is then not written)"
            ) from exc

    def _open(self) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            tables = {n for (n,) in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                for ddl in _SCHEMA:
                    self.db.execute(ddl)
                self.db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("format", str(FORMAT)),
                        ("station", self.station),
                        ("database", self.database),
                        ("created_at", utcnow().isoformat()),
                    ],
                )
                return
            if "meta" not in tables:
                raise SpoolError(
                    f"spool {self.path}: format 1 (records with database ids, from an older "
                    f"release), which this release ({FORMAT}) cannot drain safely; move it aside"
                )
            meta = dict(self.db.execute("SELECT key, value FROM meta"))
        if meta.get("format") != str(FORMAT):
            raise SpoolError(
                f"spool {self.path}: format {meta.get('format')!r}, this release reads format "
                f"{FORMAT}; drain it with the release that wrote it, or move it aside"
            )
        if meta.get("station") != self.station or meta.get("database") != self.database:
            raise SpoolError(
                f"spool {self.path} belongs to station {meta.get('station')!r} and database "
                f"{meta.get('database')}, not to station {self.station!r} and {self.database}; "
                "it is never drained elsewhere: move it back or aside"
            )

    # -------------------------------------------------------------- writing

    def _put_run(self, run: RunRecord) -> None:
        if run.station != self.station:
            raise SpoolError(f"spool {self.path}: a run of station {run.station!r} in the spool of {self.station!r}")
        self.db.execute(
            "INSERT OR IGNORE INTO runs (uid, record) VALUES (?, ?)", (run.uid, SPOOLED_RUN.dump_json(run).decode())
        )

    def put(
        self, run: RunRecord, records: Sequence[InspectionRecord] = (), events: Sequence[EventRecord] = ()
    ) -> list[tuple[InspectionRecord, str]]:
        """Keep ``records`` and ``events`` of ``run`` (in one transaction). A record that cannot
        even be encoded is kept in ``refused`` instead; those are returned with the reason."""
        rows: list[tuple[str, str, str]] = []
        bad: list[tuple[InspectionRecord, str]] = []
        for r in records:
            if r.run_uid != run.uid or (r.station is not None and r.station != run.station):
                bad.append((r, f"names run {r.run_uid} of station {r.station!r}, not run {run.uid} of {run.station!r}"))
                continue
            try:
                # Database ids mean nothing to another database: never spooled.
                text = SPOOLED_INSPECTION.dump_json(
                    replace(r, station_id=None, run_id=None, station=run.station)
                ).decode()
            except Exception as exc:  # noqa: BLE001 - a value JSON cannot hold
                bad.append((r, f"cannot be encoded: {type(exc).__name__}: {exc}"))
                continue
            rows.append(("inspection", run.uid, text))
        rows += [("event", run.uid, SPOOLED_EVENT.dump_json(e).decode()) for e in events]
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._put_run(run)
            self.db.executemany("INSERT INTO items (kind, run_uid, record) VALUES (?, ?, ?)", rows)
            for r, why in bad:
                self._refuse("inspection", r.uid, repr(r), why)
        return bad

    def end_run(self, run: RunRecord, parts_seen: int, ended_at: datetime) -> None:
        """The run ended while the database was away: record its end when it answers."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._put_run(run)
            self.db.execute(
                "UPDATE runs SET ended_at = ?, parts_seen = ? WHERE uid = ?",
                (naive_utc(ended_at).isoformat(), parts_seen, run.uid),
            )

    def _refuse(self, kind: str, uid: str | None, text: str, error: str) -> None:
        self.db.execute(
            "INSERT INTO refused (at, kind, uid, record, error) VALUES (?, ?, ?, ?, ?)",
            (utcnow().isoformat(), kind, uid, text, error),
        )

    def refuse(self, record: InspectionRecord | EventRecord, error: str) -> None:
        """Set aside a record (or event) the database refused, with the reason (kept, never written)."""
        kind = "event" if isinstance(record, EventRecord) else "inspection"
        try:
            if isinstance(record, EventRecord):
                text = SPOOLED_EVENT.dump_json(record).decode()
            else:
                text = SPOOLED_INSPECTION.dump_json(record).decode()
        except Exception:  # noqa: BLE001 - refused because it cannot be encoded: keep what can be
            text = repr(record)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._refuse(kind, record.uid, text, error)

    # -------------------------------------------------------------- reading

    def runs(self) -> dict[str, SpooledRun]:
        out = {}
        for uid, text, ended, parts in self.db.execute("SELECT uid, record, ended_at, parts_seen FROM runs"):
            try:
                run = SPOOLED_RUN.validate_json(text)
            except ValidationError as exc:
                raise SpoolError(
                    f"spool {self.path}: run {uid} does not validate ({exc.error_count()} errors: "
                    f"{exc.errors()[0]['msg']}); move the file aside"
                ) from exc
            if run.uid != uid or run.station != self.station:
                raise SpoolError(f"spool {self.path}: run {uid} is of station {run.station!r}, not {self.station!r}")
            out[uid] = SpooledRun(run, datetime.fromisoformat(ended) if ended else None, parts)
        return out

    def peek(self, n: int) -> list[SpooledItem]:
        """The oldest ``n`` items, validated. An item that does not validate, or names another run
        or station than the row it is in, is moved to ``refused`` (and not returned)."""
        out: list[SpooledItem] = []
        rows = self.db.execute("SELECT id, kind, run_uid, record FROM items ORDER BY id LIMIT ?", (n,)).fetchall()
        stations = {uid: r.run.station for uid, r in self.runs().items()}
        for id_, kind, run_uid, text in rows:
            try:
                rec: InspectionRecord | EventRecord
                if kind == "inspection":
                    rec = SPOOLED_INSPECTION.validate_json(text)
                    ok = rec.run_uid == run_uid and rec.station == stations.get(run_uid) == self.station
                    rec.station_id = rec.run_id = None
                else:
                    rec = SPOOLED_EVENT.validate_json(text)
                    ok = rec.run_uid == run_uid and run_uid in stations
                if not ok:
                    raise ValueError(
                        f"names run {rec.run_uid} but is spooled under run {run_uid} "
                        f"of station {stations.get(run_uid)!r}"
                    )
            except (ValidationError, ValueError) as exc:
                with self.db:
                    self.db.execute("BEGIN IMMEDIATE")
                    self._refuse(kind, None, text, f"unreadable in the spool: {exc}")
                    self.db.execute("DELETE FROM items WHERE id = ?", (id_,))
                continue
            out.append(SpooledItem(id_, kind, rec))
        return out

    def remove_through(self, last_id: int) -> None:
        self.db.execute("DELETE FROM items WHERE id <= ?", (last_id,))

    def forget_run(self, uid: str) -> None:
        """The run and all its items are in the database: drop its record here."""
        self.db.execute(
            "DELETE FROM runs WHERE uid = ? AND NOT EXISTS (SELECT 1 FROM items WHERE run_uid = ?)", (uid, uid)
        )

    def count(self, kind: Kind = "inspection") -> int:
        return self.db.execute("SELECT count(*) FROM items WHERE kind = ?", (kind,)).fetchone()[0]

    def __len__(self) -> int:
        return self.count("inspection")

    def refused(self) -> list[tuple[str, str | None, str]]:
        """``(kind, uid, error)`` of everything set aside, oldest first."""
        return list(self.db.execute("SELECT kind, uid, error FROM refused ORDER BY id"))

    def close(self) -> None:
        self.db.close()
