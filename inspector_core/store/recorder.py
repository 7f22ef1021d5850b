"""The one writer of a station: group commit, the spool while the database is away, then report.

Everything a station writes goes through here, from one thread: the run itself, the verdicts and
the events. Promises:

- ``on_committed(batch)`` is called only once a batch is committed to the database; spooled
  verdicts are reported when they are drained into it.
- A database that is unreachable or stops answering costs at most ``write_timeout_s``: then the
  verdicts and events go to the spool (a local file keyed by that database), drained in order,
  once, when it answers again (``store_unreachable`` / ``store_recovered`` events).
- A record the database refuses (an integrity or data error, a value it cannot store) is set
  aside in the spool's ``refused`` table and recorded as a ``record_refused`` event; the rest of
  its batch is written and the station goes on. The writer thread does not die: an error it
  cannot handle (the spool itself failing) is set in :attr:`Recorder.error`.
- A transaction holds at most ``max_batch`` verdicts while the writer keeps up; when more than
  that wait (the writer is behind), up to ``max_group``: fewer commits (and fsyncs) per verdict
  when it matters, the same short transactions at a line's pace. A group whose write takes more
  than a quarter of ``write_timeout_s`` halves the next ones (down to ``max_batch``). Either way
  a verdict is reported only after the commit that holds it.
- The queue is bounded (``max_queue``): a full queue makes ``submit`` wait (policy ``wait``) or,
  with ``drop-oldest``, lets only NOT_INSPECTED records (the capture thread's, which must not
  wait) go up to twice past it; an inspected verdict is never dropped. Each wait is an event.
- :meth:`Recorder.close` records the end of the run (through the spool if the database is
  away) within its timeout, or raises saying what is left.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, Literal

from inspector_core.store.checkpoint import WalCheckpointer
from inspector_core.store.database import Store, StoreError, StoreTimeout, classify, describe_failure
from inspector_core.store.evidence import EvidenceWriter, add_evidence
from inspector_core.store.records import EventRecord, EvidenceRecord, InspectionRecord, RunRecord, utcnow
from inspector_core.store.spool import Spool, spool_file

log = logging.getLogger(__name__)

Overload = Literal["wait", "drop-oldest"]
LATE_AFTER_S = 0.02
"""How long the writer waits for a batch's evidence files before it commits the verdicts without
them (their evidence rows follow in a later transaction, once the files are on disk)."""
MAX_EVENTS = 10_000
SQLITE_GROUP = 2000
"""Verdicts per transaction on SQLite when the writer is behind (``max_group``'s default there):
fewer commits, fsyncs and per-transaction probes per verdict, each page of the random ``uid``
index dirtied once for more verdicts (log bytes per verdict 6.2 -> 5.1 KB, measured). On
PostgreSQL groups of 2,000 measured no better than 500 (the server's CPU bounds it), so its
default stays ``max_batch``."""
"""Events waiting for the writer beyond this are counted, not kept (a source flooding events)."""


class _Down(Exception):
    """The database cannot take this now; ``rest`` is what is left to spool."""

    def __init__(self, cause: BaseException, rest: list[Any]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.rest = rest


class Recorder:
    """The one writer of a station's run ``run``: group commit, then report.

    ``max_batch`` / ``max_group``: verdicts per transaction while the writer keeps up / when it is
    behind (see the module doc; ``max_group`` defaults to :data:`SQLITE_GROUP` on SQLite and to
    ``max_batch`` elsewhere); ``max_queue`` (default twice ``max_group``, at least 1000; at least
    ``max_group``, or the backlog never reaches a group) bounds what waits for the writer.
    ``spool_dir``: where the spool file lives (named by the station and a hash of the database
    URL); ``None`` keeps the spool in memory (lost with the process: for tests and tools).
    ``on_event(kind, message)`` is told about the recorder's own events as well (they are
    written either way). ``wal_checkpoints``: on a SQLite file, the write-ahead log is
    checkpointed from a thread of its own instead of inside the writer's commits
    (:mod:`inspector_core.store.checkpoint`); ``False`` leaves it to SQLite's autocheckpoint.
    """

    def __init__(
        self,
        store: Store,
        *,
        run: RunRecord,
        on_committed: Callable[[list[InspectionRecord]], None],
        spool_dir: Path | None = None,
        on_event: Callable[[str, str], None] | None = None,
        max_queue: int | None = None,
        overload: Overload = "wait",
        max_batch: int = 500,
        max_group: int | None = None,
        write_timeout_s: float = 5.0,
        retry_s: float = 1.0,
        max_retry_s: float = 15.0,
        evidence: EvidenceWriter | None = None,
        wal_checkpoints: bool = True,
    ) -> None:
        self.store = store
        self.checkpointer: WalCheckpointer | None = None
        """The SQLite file's WAL checkpoints, off the writer's commits (``None``: SQLite's own)."""
        if wal_checkpoints and store.sqlite_path is not None:
            self.checkpointer = WalCheckpointer(
                store.engine, store.sqlite_path, writer_busy_timeout_s=store.busy_timeout_s
            )
        self.evidence = evidence
        """Keeps the frames handed to :meth:`submit` as evidence files, in the writer's thread,
        before the transaction of their rows (``None``: no evidence)."""
        self._frames: dict[str, Future[EvidenceRecord]] = {}
        """Frames being encoded and written (by the evidence thread), by inspection uid."""
        self._late: dict[str, tuple[InspectionRecord, Future[EvidenceRecord]]] = {}
        """Committed (or held) verdicts whose file was not ready when their batch was written: their
        evidence rows follow in a later transaction, once the file is on disk."""
        self._late_ready = False
        self._late_dropped = 0
        self._ev_pool: ThreadPoolExecutor | None = None
        if evidence is not None:
            evidence.on_event = self.event
            self._ev_pool = ThreadPoolExecutor(1, thread_name_prefix="inspector-evidence")
        self.run = run
        self.on_committed = on_committed
        self.on_event = on_event or (lambda kind, msg: None)
        if max_group is None:
            max_group = SQLITE_GROUP if store.is_sqlite else max_batch
        self.max_queue = max(1000, 2 * max_group) if max_queue is None else max_queue
        self.overload = overload
        if max_batch < 1 or max_group < max_batch:
            raise ValueError(
                f"recorder: max_batch {max_batch} and max_group {max_group}: need 1 <= max_batch <= max_group"
            )
        self.max_batch = max_batch
        self.max_group = max_group
        self.write_timeout_s = write_timeout_s
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        path = spool_file(spool_dir, run.station, store.display_url) if spool_dir else Path(":memory:")
        self.spool = Spool(path, station=run.station, database=store.display_url)
        self.spool_path: Path | None = path if spool_dir else None

        self.committed = 0
        """Verdicts committed to the database by this recorder (its own and drained ones)."""
        self.spooled = 0
        """Verdicts of this run that went to the spool."""
        self.refused = 0
        """Records the database refused, set aside in the spool's ``refused`` table."""
        self.waiting = len(self.spool)
        """Verdicts in the spool, not yet in the database (of any run)."""
        self.error: BaseException | None = None
        """Set when the writer cannot keep what it was given (the spool itself failed)."""
        self.run_id: int | None = None
        self.station_id: int | None = None

        self._cond = threading.Condition()
        self._pending: collections.deque[InspectionRecord] = collections.deque()
        self._events: collections.deque[EventRecord] = collections.deque()
        self._events_dropped = 0
        self._stop = False
        self._parts_seen: int | None = None
        self._held: list[InspectionRecord] = []
        self._busy = False
        self._retry_now = False
        self.close_problem: str | None = None
        """Why :meth:`close` or :meth:`flush` returned False."""
        self._finish_failed: str | None = None
        self._blocked_since: float | None = None
        self._blocked_s = 0.0
        self._down: BaseException | None = None
        self._next_try = 0.0
        self._backoff = retry_s
        self._chunk = max_batch
        self._group = max_group
        """Verdicts per transaction when behind: halved while a group's write takes more than a
        quarter of ``write_timeout_s`` (a slow disk or a loaded machine), back up to ``max_group``."""
        self._schema_ok = False
        self._ids: dict[str, tuple[int, int]] = {}
        self._thread = threading.Thread(target=self._loop, name="inspector-recorder", daemon=True)
        if spool_dir is not None:
            self._legacy_spool(spool_dir / f"{run.station}.spool.db")

    def _legacy_spool(self, path: Path) -> None:
        """An older release's spool (format 1: one file per station name, records with database
        ids) is never drained into a database by this one; say so, once per run."""
        if not path.is_file():
            return
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                n = db.execute("SELECT count(*) FROM spool").fetchone()[0]
        except sqlite3.Error:
            return
        if n:
            msg = (
                f"an older release's spool {path} holds {n} verdicts (format 1, with database ids, for a "
                "database it does not name); this release does not drain it: run the release that wrote it "
                "once with its database reachable, or move the file aside"
            )
            log.warning(msg)
            self.event("legacy_spool", msg)

    # -------------------------------------------------------------- the station's side

    def start(self) -> None:
        """Record the run (migrating a new database first) and start the writer. A database
        that cannot be reached is no obstacle: the recorder starts with the spool
        (``outage`` is true). A database that answers but refuses (a wrong password, no
        permission, a schema from a newer release) raises :class:`StoreError`."""
        try:
            self._connect()
        except Exception as exc:
            if classify(exc) != "unreachable":
                raise StoreError(describe_failure(self.store.display_url, exc)) from exc
            self._went_down(exc)
        if self.checkpointer is not None:
            self.checkpointer.start()
        self._busy = True  # until what earlier runs left in the spool is tried (flush waits for it)
        self._thread.start()

    @property
    def outage(self) -> bool:
        """True while the database is away (verdicts go to the spool)."""
        return self._down is not None

    def submit(self, record: InspectionRecord, frame: Any = None) -> None:
        """Hand a verdict to the writer. Waits while the queue is full (see the module doc).
        ``frame``: the part's image (a reference, not copied), kept as evidence if the policy
        says so; more than ``max_pending`` such frames waiting makes this one ``dropped``."""
        ev = self.evidence
        if ev is not None and frame is not None and record.evidence is None:
            kept_as = ev.kept_as(record.verdict)
            if kept_as is not None:
                if len(self._frames) + len(self._late) >= ev.policy.max_pending:
                    record.evidence = ev.dropped_record(
                        kept_as, f"more than {ev.policy.max_pending} frames waiting for the writer"
                    )
                else:
                    assert self._ev_pool is not None
                    # Encoded and written at once, beside the inspection of the next parts.
                    fut = self._ev_pool.submit(ev.keep, frame, kept_as)
                    self._frames[record.uid] = fut
                    fut.add_done_callback(self._evidence_done)
        if record.run_uid is None:
            record.run_uid = self.run.uid
        if record.station is None:
            record.station = self.run.station
        limit = self.max_queue
        if self.overload == "drop-oldest" and record.verdict == "NOT_INSPECTED":
            limit *= 2
        with self._cond:
            if self._stop:
                raise StoreError(
                    f"store {self.store.display_url}: the recorder is closed; part {record.part_id} was not recorded"
                )
            if len(self._pending) >= limit:
                t0 = time.monotonic()
                if self._blocked_since is None:
                    self._blocked_since = t0
                    self._event(
                        "recorder_backpressure",
                        f"the writer's queue is full ({len(self._pending)} verdicts waiting for store "
                        f"{self.store.display_url}; overload policy {self.overload}): the station waits for it",
                    )
                while len(self._pending) >= limit:
                    if not self._thread.is_alive():
                        raise StoreError(
                            f"store {self.store.display_url}: the writer is not running "
                            f"({self.error or 'never started'}); part {record.part_id} was not recorded"
                        )
                    self._cond.wait(0.25)
                self._blocked_s += time.monotonic() - t0
            pending = self._pending
            pending.append(record)
            if len(pending) == 1:  # only the writer waits for verdicts, and only on an empty queue
                self._cond.notify_all()

    def event(self, kind: str, message: str) -> None:
        """Record an event of this run (never blocks: the writer writes it, durably)."""
        with self._cond:
            self._event(kind, message)

    def _event(self, kind: str, message: str) -> None:
        if len(self._events) >= MAX_EVENTS:
            self._events_dropped += 1
            return
        self._events.append(EventRecord(self.run.uid, kind, message))
        self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every verdict submitted so far is committed or spooled (events too); if the
        database is away, try it once more first (so what it takes now is reported before the
        station stops). False if that did not happen within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._retry_now = self._down is not None
            self._cond.notify_all()
            while (
                self._pending
                or self._events
                or self._busy
                or self._held
                or self._retry_now
                or (self._late and self._down is None)
            ):
                if not self._thread.is_alive():
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    self.close_problem = self._left(timeout)
                    return False
                self._cond.wait(0.25 if left is None else min(0.25, left))
            return not (self._pending or self._held)

    def close(self, timeout: float | None = None, *, parts_seen: int | None = None) -> bool:
        """Write everything submitted so far, the events and the end of the run (``parts_seen``)
        to the database or, if it is away, to the spool; then stop. Returns False if that could
        not finish within ``timeout`` seconds; :attr:`close_problem` then says what is left."""
        with self._cond:
            self._stop = True
            self._parts_seen = parts_seen
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self.checkpointer is not None and not self._thread.is_alive():
            self.checkpointer.stop()
        if self._thread.is_alive():
            self.close_problem = self._left(timeout)
            return False
        if self._finish_failed is not None:
            self.close_problem = self._finish_failed
            return False
        if self._held:
            self.close_problem = (
                f"{len(self._held)} verdicts could be kept neither in store "
                f"{self.store.display_url} nor in the spool: {self.error}"
            )
            return False
        self.spool.close()
        return True

    def _left(self, timeout: float | None) -> str:
        within = "" if timeout is None else f" within {timeout:g} s"
        return (
            f"the writer of store {self.store.display_url} did not finish{within}: "
            f"{len(self._pending) + len(self._held)} verdicts were still queued, {self.waiting} wait in the "
            f"spool {self.spool_path or '(in memory)'}"
        )

    @property
    def backlog(self) -> int:
        """Verdicts not yet in the database: queued and spooled."""
        return len(self._pending) + self.waiting

    # -------------------------------------------------------------- the writer's thread

    def _loop(self) -> None:
        try:
            if self._down is None and (self.waiting or self.spool.count("event")):
                self._try_again()  # what earlier runs left in the spool
        except Exception as exc:  # the writer must not die: say so and go on
            log.exception("store %s: draining the spool", self.store.display_url)
            self.error = exc
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
        while True:
            with self._cond:
                while not (
                    self._pending or self._events or self._stop or self._held or self._retry_now or self._late_ready
                ):
                    if self._blocked_since is not None:
                        self._backpressure_ended()
                    wait = None if self._down is None else max(0.05, self._next_try - time.monotonic())
                    if not self._cond.wait(wait):
                        break  # time to try the database again
                # Behind (more waiting than one batch): a bigger group, fewer commits per verdict.
                take = self._group if len(self._pending) > self.max_batch else self.max_batch
                batch = [self._pending.popleft() for _ in range(min(len(self._pending), take))]
                events = list(self._events)
                self._events.clear()
                if self._blocked_since is not None and len(self._pending) < self.max_queue // 2:
                    self._backpressure_ended()
                stop = self._stop and not self._pending
                self._late_ready = False
                retry_now, self._retry_now = self._retry_now, False
                if retry_now:
                    self._next_try = 0.0
                self._busy = True
                self._cond.notify_all()
            if self._frames:
                self._keep_frames(batch)
            try:
                # Held verdicts were in a write that failed: it may have committed, so they are probed.
                self._process(self._held + batch, events, fresh=not self._held)
                self._held = []
            except Exception as exc:
                self._held = self._held + batch
                with self._cond:
                    self._events.extendleft(reversed(events))
                if self.error is None:
                    log.exception(
                        "store %s: the writer cannot keep %d verdicts", self.store.display_url, len(self._held)
                    )
                self.error = exc
                if stop:  # the end of the run is not recorded: close() says so
                    self._finish_failed = (
                        f"the writer's last batch ({len(self._held)} verdicts, {len(events)} events) and the end of "
                        f"the run could be kept neither in store {self.store.display_url} nor in the spool "
                        f"{self.spool_path or '(in memory)'}: {type(exc).__name__}: {exc}"
                    )
                    return
                time.sleep(min(1.0, self.retry_s))
                continue
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
            if self._late:
                try:
                    self._write_late()
                except Exception:  # only pictures are at stake: never the writer
                    log.exception("store %s: writing late evidence rows", self.store.display_url)
            if stop:
                try:
                    self._finish()
                except Exception as exc:  # the spool failing at the end: say so, close() returns False
                    log.exception("store %s: recording the end of the run", self.store.display_url)
                    self.error = exc
                    self._finish_failed = (
                        f"the end of the run could be kept neither in store {self.store.display_url} nor in the "
                        f"spool {self.spool_path or '(in memory)'}: {type(exc).__name__}: {exc}"
                    )
                return

    def _keep_frames(self, batch: list[InspectionRecord], wait_s: float = LATE_AFTER_S) -> None:
        """The batch's evidence whose file is written (and fsynced) goes into its transaction; a file
        not ready within ``wait_s`` (for the whole batch) does not hold the verdict back: its row
        follows in a later transaction (:meth:`_write_late`)."""
        deadline = time.monotonic() + wait_s
        for r in batch:
            fut = self._frames.pop(r.uid, None)
            if fut is None:
                continue
            try:
                r.evidence = fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                self._late[r.uid] = (r, fut)

    def _evidence_done(self, _fut: Future[EvidenceRecord]) -> None:
        with self._cond:
            if self._late:
                self._late_ready = True
                self._cond.notify_all()

    def _write_late(self) -> None:
        """Evidence rows of verdicts already committed, whose files are now on disk. A verdict that
        went to the spool or was refused has no row to name: its file is left to the orphan sweep."""
        held = {r.uid for r in self._held}
        rows: list[tuple[InspectionRecord, EvidenceRecord]] = []
        for uid, (r, fut) in list(self._late.items()):
            if not fut.done():
                continue
            if r.committed_at is None:
                if uid not in held:
                    del self._late[uid]
                    self._late_dropped += 1
                continue
            rows.append((r, fut.result()))
        if rows and self._down is None:
            try:
                add_evidence(self.store, rows, timeout_s=self.write_timeout_s)
            except Exception as exc:  # noqa: BLE001 - the verdicts are committed: only pictures are at stake
                if classify(exc) != "refused":
                    self._went_down(exc)
                    return
                log.error("store %s refused %d evidence rows: %s", self.store.display_url, len(rows), exc)
            for r, _ in rows:
                self._late.pop(r.uid, None)
        if self._late_dropped:
            msg = (
                f"{self._late_dropped} evidence frames have no row: their verdicts went to the spool or were "
                "refused before the files were written; `inspector retention` sweeps the files"
            )
            self._late_dropped = 0
            log.warning(msg)
            with self._cond:
                self._event("evidence_unrecorded", msg)

    def _finish_evidence(self) -> None:
        """At the end of the run: the frames still being written, then their rows."""
        if self._ev_pool is None:
            return
        self._ev_pool.shutdown(wait=True)
        if self._late:
            self._write_late()
        if self._late:
            self._late_dropped += len(self._late)
            self._late.clear()
            self._write_late()

    def _backpressure_ended(self) -> None:
        assert self._blocked_since is not None
        self._event(
            "recorder_backpressure_ended",
            f"the writer caught up; the station waited {self._blocked_s:.1f} s for it in all",
        )
        self._blocked_since = None

    def _process(self, batch: list[InspectionRecord], events: list[EventRecord], *, fresh: bool = False) -> None:
        if self._down is not None and time.monotonic() >= self._next_try:
            self._try_again()
        if self._down is None:
            try:
                self._write(batch, fresh=fresh)
                batch = []
                self._write_events(events)
                return
            except _Down as down:
                self._went_down(down.cause)
                batch = down.rest
        bad = self.spool.put(self.run, batch, events)
        self.spooled += len(batch) - len(bad)
        self.waiting += len(batch) - len(bad)
        for r, why in bad:
            self._refused(r, why)

    def _finish(self) -> None:
        """Last words: the end of the run, and what waits; then the events raised on the way
        (``store_recovered``, ``store_unreachable``), which no later batch would write."""
        if self._down is not None:
            self._try_again()
        self._finish_evidence()
        ended = utcnow()
        parts = self._parts_seen
        ended_in_db = False
        if self._down is None and self.run_id is not None and parts is not None:
            try:
                self.store.end_run(self.run_id, parts, ended_at=ended, timeout_s=self.write_timeout_s)
                ended_in_db = True
            except Exception as exc:  # noqa: BLE001
                self._went_down(exc)
        if not ended_in_db and self._down is not None:
            msg = (
                f"the run ended while store {self.store.display_url} was away: {self.waiting} verdicts wait in "
                f"the spool {self.spool_path or '(in memory)'} and are written when the station next runs"
            )
            self.spool.put(self.run, [], [EventRecord(self.run.uid, "run_ended_in_outage", msg)])
            if parts is not None:
                self.spool.end_run(self.run, parts, ended)
        for _ in range(3):  # writing them may raise one more (the database went away meanwhile)
            with self._cond:
                events = list(self._events)
                self._events.clear()
            if not events:
                break
            if self._down is None:
                self._write_events(events)  # spooled if the database goes away now
            else:
                self.spool.put(self.run, [], events)

    # -------------------------------------------------------------- the database

    def _connect(self) -> None:
        """Migrate a new (or old) database, record this run; raises if the database does not answer."""
        if self.store.sqlite_path is not None:  # the writer makes a new SQLite file's folder (ping opens the file)
            self.store.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        self.store.ping(timeout_s=self.write_timeout_s)
        if not self._schema_ok:
            if self.store.current_revision(timeout_s=self.write_timeout_s) != self.store.head_revision():
                self.store.migrate()
            self._schema_ok = True
        self.station_id, self.run_id = self._run_ids(self.run)

    def _run_ids(self, run: RunRecord) -> tuple[int, int]:
        if run.uid not in self._ids:
            self._ids[run.uid] = self.store.ensure_run(run, timeout_s=self.write_timeout_s)
        return self._ids[run.uid]

    def _write(self, batch: list[InspectionRecord], *, fresh: bool = False) -> None:
        """Commit ``batch``, or raise :class:`_Down`. A refused batch is retried record by record:
        only the records the database refuses alone are set aside. ``fresh``: the batch is on its
        first write (the station's own verdicts, never spooled): the store skips its duplicate probe.
        Retries (record by record, held, drained from the spool) are never fresh."""
        if not batch:
            return
        if self.run_id is not None and self.station_id is not None:
            # This run's own verdicts: the ids are known, the store need not look them up per batch.
            for r in batch:
                if r.station_id is None and r.run_uid == self.run.uid and r.station in (None, self.run.station):
                    r.station_id, r.run_id = self.station_id, self.run_id
        try:
            t0 = time.monotonic()
            self.store.write(batch, timeout_s=self.write_timeout_s, fresh=fresh)
            if len(batch) >= self.max_batch:  # behind: keep a group's write well inside the timeout
                took = time.monotonic() - t0
                if took > self.write_timeout_s / 4:
                    self._group = max(self.max_batch, self._group // 2)
                elif took < self.write_timeout_s / 16:
                    self._group = min(self.max_group, self._group * 2)
        except Exception as exc:
            if classify(exc) != "refused":
                raise _Down(exc, batch) from exc
            if len(batch) == 1 and not fresh:
                self._refused(batch[0], describe_failure(self.store.display_url, exc))
                return
            # Each record again alone, never fresh: its uid probed (a fresh batch of one that the unique
            # index refused is a verdict stored already, kept once, not set aside).
            for i, r in enumerate(batch):
                try:
                    self._write([r])
                except _Down as down:
                    raise _Down(down.cause, batch[i:]) from down.cause
            return
        self.committed += len(batch)
        self._report(batch)
        # After the report: a log restart (about a batch's pages copied, an fsync) holds no verdict back.
        if self.checkpointer is not None:
            try:
                self.checkpointer.committed(len(batch))
            except Exception:  # the batch is committed and reported: never hold it for the checkpoints
                log.exception("store %s: WAL checkpoint bookkeeping", self.store.display_url)

    def _write_events(self, events: list[EventRecord]) -> None:
        if self._events_dropped:
            events.append(
                EventRecord(
                    self.run.uid,
                    "events_dropped",
                    f"{self._events_dropped} events were not recorded: more than {MAX_EVENTS} "
                    "waited for the writer at once",
                )
            )
            self._events_dropped = 0
        try:
            self._store_events(events)
        except _Down as down:
            self._went_down(down.cause)
            self.spool.put(self.run, [], down.rest)

    def _store_events(self, events: list[EventRecord]) -> None:
        """Write ``events``, or raise :class:`_Down` with those left; one the database refuses
        alone is set aside in the spool's ``refused`` table."""
        if not events:
            return
        try:
            self.store.add_events(events, timeout_s=self.write_timeout_s)
        except Exception as exc:
            if classify(exc) != "refused":
                raise _Down(exc, events) from exc
            if len(events) == 1:
                why = describe_failure(self.store.display_url, exc)
                log.error("event %s of run %s refused and set aside: %s", events[0].kind, events[0].run_uid, why)
                self.spool.refuse(events[0], why)
                return
            for i, e in enumerate(events):
                try:
                    self._store_events([e])
                except _Down as down:
                    raise _Down(down.cause, events[i:]) from down.cause

    def _report(self, batch: list[InspectionRecord]) -> None:
        try:
            self.on_committed(batch)
        except Exception:
            log.exception("handing %d committed verdicts on", len(batch))

    def _refused(self, record: InspectionRecord, why: str) -> None:
        self.spool.refuse(record, why)
        self.refused += 1
        msg = (
            f"part {record.part_id!r} (inspection {record.uid}, {record.verdict}) was refused by the store and set "
            f"aside in the spool {self.spool_path or '(in memory)'} (table refused): {why}"
        )
        log.error(msg)
        with self._cond:
            self._event("record_refused", msg)
        self.on_event("record_refused", msg)

    def _went_down(self, exc: BaseException) -> None:
        first = self._down is None
        self._down = exc
        self._next_try = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.max_retry_s)
        if isinstance(exc, StoreTimeout) and self._chunk > 1:
            self._chunk = max(1, self._chunk // 2)  # a slow link: try smaller batches
        if isinstance(exc, StoreTimeout):
            self._group = self.max_batch
        # Idle pooled connections lead to the same silent peer: start afresh next time.
        self.store.engine.dispose()
        if not first:
            return
        kind = "store_unreachable" if classify(exc) == "unreachable" else "store_failing"
        msg = (
            f"{describe_failure(self.store.display_url, exc)}; verdicts go to the spool "
            f"{self.spool_path or '(in memory)'} until it answers"
        )
        log.warning(msg)
        with self._cond:
            self._event(kind, msg)
        self.on_event(kind, msg)

    def _try_again(self) -> None:
        """The database may be back: record the run, then drain the spool into it."""
        try:
            self._connect()
            drained = self._drain()
        except Exception as exc:  # noqa: BLE001
            self._went_down(exc)
            return
        was, self._down = self._down, None
        self._backoff = self.retry_s
        msg = f"store {self.store.display_url} answers again; {drained} spooled verdicts written" + (
            f", {self.waiting} still wait" if self.waiting else ""
        )
        if was is not None or drained:
            log.warning(msg)
            kind = "store_recovered" if was is not None else "spool_drained"
            with self._cond:
                self._event(kind, msg)
            self.on_event(kind, msg)

    def _drain(self) -> int:
        """Write what the spool holds, oldest first; returns how many verdicts. Raises if the
        database stops answering (what is left stays in the spool)."""
        drained = 0
        while items := self.spool.peek(self._chunk):
            runs = self.spool.runs()
            for uid in {i.record.run_uid for i in items}:
                assert uid is not None  # the spool validated it against its runs
                self._run_ids(runs[uid].run)
            records = [i.record for i in items if isinstance(i.record, InspectionRecord)]
            events = [i.record for i in items if isinstance(i.record, EventRecord)]
            if self.evidence is not None:
                for rec in records:
                    if rec.evidence is not None:
                        self.evidence.check_stored(rec.evidence)
            try:
                self._write(records)
            except _Down as down:
                raise down.cause from None
            try:
                self._store_events(events)
            except _Down as down:
                raise down.cause from None
            self.spool.remove_through(items[-1].id)
            drained += len(records)
            self.waiting = max(0, self.waiting - len(records))
            self._chunk = min(self.max_batch, self._chunk * 2)
        self._end_spooled_runs()
        self.waiting = len(self.spool)
        return drained

    def _end_spooled_runs(self) -> None:
        for uid, spooled in self.spool.runs().items():
            if spooled.ended_at is not None and spooled.parts_seen is not None:
                _, rid = self._run_ids(spooled.run)
                self.store.end_run(rid, spooled.parts_seen, ended_at=spooled.ended_at, timeout_s=self.write_timeout_s)
            self.spool.forget_run(uid)
