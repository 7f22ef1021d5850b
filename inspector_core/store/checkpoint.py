"""SQLite WAL checkpoints from a thread of their own, off the writer's commit path.

With SQLite's default (``wal_autocheckpoint`` 1000 pages) the connection whose commit takes the
write-ahead log past 1000 pages copies the log into the database file and fsyncs it, inside its
``COMMIT``: for the station's one writer that is every second or third 500-verdict batch at full
rate, a few MB written and one more fsync on the verdicts' path. :class:`WalCheckpointer` turns
that off on the writer's connections and checkpoints from its own connection and thread instead
(SQLite does the copying and the fsync with Python's lock released, so on a second core).

Durability is SQLite's own: a commit is durable once its log frames are fsynced
(``synchronous=FULL``), before and without any checkpoint; a checkpoint only copies committed
pages into the database file (after fsyncing the log; the database file is fsynced before the
log may be reused), and a crash in the middle of one is recovered from the log on the next open.

Bounds:

- every ``every_pages`` pages the writer's commits add (counted: about 25 per commit and 2 per
  verdict with a crop), or ``idle_s`` after the last commit, a ``PASSIVE`` checkpoint (it never
  blocks the writer);
- a writer that never pauses keeps the log from being restarted (SQLite restarts it only when a
  write *begins* after every frame was copied, and the writer's next transaction has begun before
  this thread's checkpoint ends), so once the log holds ``restart_pages`` frames this thread asks
  the writer to run a ``RESTART`` checkpoint itself, between two transactions: it copies only
  what came since the last passive one (about one batch) and the next write starts the log from
  its beginning. This thread checkpoints nothing until then. The restart never waits (busy
  timeout 0): a reader still on the log makes it give up until the writer's next commit;
- if this thread fails, the writer's connections get SQLite's own autocheckpoint back: no worse
  than without it.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

log = logging.getLogger(__name__)

PAGES_PER_VERDICT = 2
"""Log pages a verdict adds in a batch, for counting (measured 1.4-1.7 with one defect and its 2.5 KB
crop, 500 per commit)."""
PAGES_PER_COMMIT = 25
"""Log pages a commit adds whatever its size (the index and roll-up pages it touches: measured 26
for commits of one verdict)."""
SQLITE_DEFAULT = 1000
"""SQLite's own ``wal_autocheckpoint``: what the writer's connections get back."""


class WalCheckpointer:
    """Checkpoints the WAL of the SQLite file ``path`` from a thread of its own while the writer
    of ``engine`` (whose connections it sets to ``wal_autocheckpoint=0``) commits. The writer calls
    :meth:`committed` after each commit; :meth:`stop` ends it (and gives the connections SQLite's
    own autocheckpoint back)."""

    def __init__(
        self,
        engine: Engine,
        path: Path,
        *,
        every_pages: int = 1000,
        idle_s: float = 2.0,
        restart_pages: int = 8192,
        busy_timeout_s: float = 2.0,
        writer_busy_timeout_s: float = 10.0,
    ) -> None:
        self.engine = engine
        self.path = path
        self.every_pages = every_pages
        self.idle_s = idle_s
        self.restart_pages = restart_pages
        self.busy_timeout_s = busy_timeout_s
        self.checkpoints = 0
        """Checkpoints run (passive and restarting)."""
        self.restarts = 0
        """``RESTART`` checkpoints run (the writer did not pause for long enough)."""
        self.log_pages = 0
        """Frames in the log after the last checkpoint (0 once it was restarted)."""
        self.error: BaseException | None = None
        """Why the thread stopped checkpointing (the writer's connections then checkpoint themselves)."""
        self.writer_busy_timeout_s = writer_busy_timeout_s
        self.restart_due = False
        """The log is long: the writer restarts it between two transactions (:meth:`committed`)."""
        self._want = 0
        self._pending = 0
        self._last_commit = 0.0
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="inspector-wal-checkpoint", daemon=True)

    # -------------------------------------------------------------- the writer's side

    def start(self) -> None:
        """Turn the writer's autocheckpoint off (on every connection as it is checked out of the
        pool) and start the thread."""
        event.listen(self.engine, "checkout", self._checkout)
        self._thread.start()

    def committed(self, verdicts: int) -> None:
        """The writer committed a batch of ``verdicts``; called from the writer's thread between two
        of its transactions. When this thread asks for it (:attr:`restart_due`), restarts the log
        first, on one of the writer's connections, without waiting for anyone."""
        if self.restart_due:
            with contextlib.suppress(Exception), self.engine.connect() as c:
                dbapi = c.connection.dbapi_connection
                if dbapi is not None:
                    self._restart(dbapi)
        with self._cond:
            was = self._pending
            self._pending += PAGES_PER_COMMIT + verdicts * PAGES_PER_VERDICT
            self._last_commit = time.monotonic()
            if self._pending >= self.every_pages or not was:  # enough pages, or the idle clock starts
                self._cond.notify()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (after the checkpoint it is running) and give the writer's connections
        SQLite's own autocheckpoint back; the last connection to close checkpoints what is left."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._want = SQLITE_DEFAULT
        with contextlib.suppress(Exception):
            event.remove(self.engine, "checkout", self._checkout)
        # Pooled connections keep autocheckpoint 0: close them (new ones have SQLite's own; one
        # checked out now is closed when it is returned).
        self.engine.dispose()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _restart(self, conn: Any) -> None:
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            busy, pages, _copied = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        except sqlite3.Error as exc:  # locked, interrupted: the next commit tries again
            log.debug("WAL restart of %s: %s", self.path, exc)
            return
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute(f"PRAGMA busy_timeout = {int(self.writer_busy_timeout_s * 1000)}")
        self.checkpoints += 1
        if busy == 0:
            self.restarts += 1
            self.log_pages = 0
            with self._cond:
                self.restart_due = False
                self._cond.notify()
        else:
            self.log_pages = pages

    def _checkout(self, dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        want = self._want if self.error is None else SQLITE_DEFAULT
        if record.info.get("wal_autocheckpoint") != want:
            dbapi_conn.execute(f"PRAGMA wal_autocheckpoint={int(want)}")
            record.info["wal_autocheckpoint"] = want

    # -------------------------------------------------------------- the thread

    def _loop(self) -> None:
        try:
            db = self._connect()
        except Exception as exc:  # noqa: BLE001 - the writer checkpoints itself then
            self._failed(exc)
            return
        try:
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            db.execute("PRAGMA synchronous=FULL")
            while True:
                with self._cond:
                    # While the writer is to restart the log this thread leaves it alone: a checkpoint
                    # of its own running then would make the writer's restart give up.
                    while not self._stop and (self.restart_due or self._pending < self.every_pages):
                        if self._pending and not self.restart_due:
                            left = self.idle_s - (time.monotonic() - self._last_commit)
                            if left <= 0:
                                break  # the writer has paused: checkpoint what it wrote
                            self._cond.wait(left)
                        else:
                            self._cond.wait()
                    if self._stop:
                        return
                    self._pending = 0
                self._checkpoint(db)
        except Exception as exc:  # noqa: BLE001 - the writer checkpoints itself then
            self._failed(exc)
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        _busy, pages, _copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        self.log_pages = max(pages, 0)
        if pages >= self.restart_pages:
            with self._cond:
                self.restart_due = True

    def _failed(self, exc: BaseException) -> None:
        self.error = exc
        log.warning(
            "SQLite WAL checkpoints of %s from their own thread stopped (%s: %s); the writer checkpoints "
            "the log itself from now on, as SQLite does by default",
            self.path,
            type(exc).__name__,
            exc,
        )
