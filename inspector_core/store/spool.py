"""The local spool: verdicts waiting for a server database, in an SQLite file beside the station."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from inspector_core.store.records import InspectionRecord

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
