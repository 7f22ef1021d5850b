"""The one writer of a station: group commit, the spool while the database is away, then report."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from inspector_core.store.database import Store, is_unreachable
from inspector_core.store.records import InspectionRecord
from inspector_core.store.spool import Spool

log = logging.getLogger(__name__)

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
