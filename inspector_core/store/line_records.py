"""What the PLC was told, per trigger: the ``line_results`` table and its writer.

One row per trigger a station on a line accepted (``docs/line.md``): the code written to the
PLC, whether it was the deadline default, the real verdict (even when it came late), and the
four latencies (trigger -> frame, frame -> verdict, verdict -> committed, trigger -> result on
the PLC). The row of a deadline default is committed *before* the default is written to the
PLC; the row of a real verdict follows its publication (the verdict itself is committed in
``inspections`` before the PLC sees it), and later facts (the late verdict, the PLC's
acknowledge or its timeout) update the same row, keyed by ``(run_uid, seq)``.

The ORM class is ``LineResultRow``: ``LineResult`` is the contract's name of the answer as
the link writes it (``inspector_core.contract.LineResult``).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Table, UniqueConstraint, select, update
from sqlalchemy.orm import Mapped, mapped_column

from inspector_core.store.records import naive_utc
from inspector_core.store.schema import Base, BigId

if TYPE_CHECKING:
    from inspector_core.store.database import Store

log = logging.getLogger(__name__)


class LineResultRow(Base):
    """One trigger of a station on a line and the result the PLC got for it (migration 0009)."""

    __tablename__ = "line_results"
    __table_args__ = (
        UniqueConstraint("run_uid", "seq", name="uq_line_results_run_seq"),
        Index("ix_line_results_station_time", "station_id", "triggered_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    station_id: Mapped[int] = mapped_column(ForeignKey("stations.id"))
    run_uid: Mapped[str] = mapped_column(String(32))
    """The run (``runs.uid``) that took the trigger."""
    seq: Mapped[int] = mapped_column(Integer)
    """The station's own trigger number in that run, from 1."""
    counter: Mapped[int] = mapped_column(BigId)
    """The PLC's part counter (the key the PLC matches its result by)."""
    inspection_uid: Mapped[str | None] = mapped_column(String(32), index=True)
    """The inspection (``inspections.uid``) of this part; ``NULL`` for a trigger never captured
    (rejected as an overrun, or the station stopped first)."""
    part_id: Mapped[str | None] = mapped_column(String(300))
    """As ``inspections.part_id``: the PLC's part id, else the source's."""
    product: Mapped[str | None] = mapped_column(String(200))
    triggered_at: Mapped[datetime]
    deadline_ms: Mapped[float] = mapped_column(Float)
    trigger_to_frame_ms: Mapped[float | None] = mapped_column(Float)
    frame_to_verdict_ms: Mapped[float | None] = mapped_column(Float)
    verdict_to_committed_ms: Mapped[float | None] = mapped_column(Float)
    trigger_to_result_ms: Mapped[float | None] = mapped_column(Float)
    """Trigger to the result readable on the PLC (the code sent, real or default)."""
    code: Mapped[int] = mapped_column(Integer)
    """The result code written to the PLC."""
    defect_code: Mapped[int] = mapped_column(Integer, default=0)
    verdict: Mapped[str | None] = mapped_column(String(20))
    """The real verdict (PASS / FAIL / ERROR / NOT_INSPECTED), also when it came after the
    deadline; ``NULL`` while (or if never) known."""
    verdict_code: Mapped[int | None] = mapped_column(Integer)
    """The code the real verdict maps to; differs from ``code`` when the PLC acted on a default."""
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    """The verdict came after the deadline (the PLC got the default)."""
    overrun: Mapped[bool] = mapped_column(Boolean, default=False)
    missed: Mapped[bool] = mapped_column(Boolean, default=False)
    """The PLC's counter jumped before this trigger: triggers were never seen."""
    ack_ms: Mapped[float | None] = mapped_column(Float)
    """Result on the PLC to the PLC's acknowledge."""
    ack_timeout: Mapped[bool] = mapped_column(Boolean, default=False)


@dataclasses.dataclass(slots=True)
class LineResultRecord:
    """A ``line_results`` row as the station's line keeps it, written whole each time a fact
    about the part is added (the writer turns a second write of the same ``(run_uid, seq)``
    into an update)."""

    run_uid: str
    seq: int
    counter: int
    triggered_at: datetime
    deadline_ms: float
    code: int
    part_id: str | None = None
    product: str | None = None
    inspection_uid: str | None = None
    trigger_to_frame_ms: float | None = None
    frame_to_verdict_ms: float | None = None
    verdict_to_committed_ms: float | None = None
    trigger_to_result_ms: float | None = None
    defect_code: int = 0
    verdict: str | None = None
    verdict_code: int | None = None
    is_default: bool = False
    late: bool = False
    overrun: bool = False
    missed: bool = False
    ack_ms: float | None = None
    ack_timeout: bool = False

    def values(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["triggered_at"] = naive_utc(self.triggered_at)
        return out


class LineLog:
    """The writer of ``line_results``: one thread, group commit, retried while the database is
    away (the rows wait in memory; the verdicts themselves are the recorder's and its spool's).

    :meth:`write` queues a row; ``wait_s`` waits until it is committed (a deadline default) and
    returns whether it was."""

    RETRY_S = 0.5

    def __init__(self, store: Store, station: str) -> None:
        self.store = store
        self.station = station
        self._queue: queue.Queue[tuple[LineResultRecord, threading.Event | None] | None] = queue.Queue()
        self._inserted: set[tuple[str, int]] = set()
        self._station_id: int | None = None
        self.written = 0
        self.refused = 0
        """Rows the database refused (logged), never retried."""
        self.error: str | None = None
        """The last write failure, ``None`` once a write succeeds again."""
        self._thread = threading.Thread(target=self._loop, name="inspector-line-log", daemon=True)
        self._thread.start()

    def write(
        self, record: LineResultRecord, *, wait_s: float | None = None, done: threading.Event | None = None
    ) -> bool:
        """Queue ``record``; ``done`` is set once it is committed; ``wait_s`` waits that long for it."""
        if done is None and wait_s is not None:
            done = threading.Event()
        self._queue.put((dataclasses.replace(record), done))
        if done is None or wait_s is None:
            return False
        return done.wait(wait_s)

    def close(self, timeout: float = 10.0) -> bool:
        """Write what is queued (for at most ``timeout``), then stop."""
        self._queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        from inspector_core.store.database import classify  # database imports schema, which imports this

        pending: dict[tuple[str, int], LineResultRecord] = {}
        waiters: list[threading.Event] = []
        closing = False
        while True:
            if not pending and closing:
                return
            try:
                item = self._queue.get(timeout=self.RETRY_S if pending else None)
            except queue.Empty:
                item = ...  # type: ignore[assignment]  # retry what is pending
            while item is not ...:
                if item is None:
                    closing = True
                else:
                    rec, done = item
                    pending[(rec.run_uid, rec.seq)] = rec
                    if done is not None:
                        waiters.append(done)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if not pending:
                for w in waiters:
                    w.set()
                waiters.clear()
                continue
            try:
                self._commit(list(pending.values()))
            except Exception as exc:  # noqa: BLE001 - kept and retried; said in the log
                if classify(exc) == "refused":
                    # The database answered and refused: find the row(s) it will never take and
                    # set them aside (logged) instead of retrying every other row behind them.
                    for key, rec in list(pending.items()):
                        try:
                            self._commit([rec])
                        except Exception as one:  # noqa: BLE001
                            if classify(one) != "refused":
                                break
                            log.error("line_results: row %s refused by %s: %s", key, self.store.display_url, one)
                            self.refused += 1
                        else:
                            self.written += 1
                        del pending[key]
                    if not pending:
                        for w in waiters:
                            w.set()
                        waiters.clear()
                        continue
                if self.error is None:
                    log.warning("line_results: cannot write to %s: %s", self.store.display_url, exc)
                self.error = f"{type(exc).__name__}: {exc}"
                if closing and self._queue.empty():
                    # The station is stopping and the database is away: say what is lost.
                    log.error("line_results: %d row(s) not written: %s", len(pending), self.error)
                    return
                time.sleep(self.RETRY_S)
                continue
            self.error = None
            self.written += len(pending)
            pending.clear()
            for w in waiters:
                w.set()
            waiters.clear()

    def _commit(self, records: list[LineResultRecord]) -> None:
        table: Table = LineResultRow.__table__  # type: ignore[assignment]  # a mapped class's table is a Table
        station_id = self._station_id
        with self.store.transaction(write=True) as conn:
            if station_id is None:
                station_id = self.store._station_id(conn, self.station)
            fresh = [r for r in records if (r.run_uid, r.seq) not in self._inserted]
            there: set[tuple[str, int]] = set()
            if fresh:
                keys = {(r.run_uid, r.seq) for r in fresh}
                # A row may exist from an attempt whose commit was cut off: update it instead.
                existing = conn.execute(
                    select(table.c.run_uid, table.c.seq).where(
                        table.c.run_uid.in_({k[0] for k in keys}), table.c.seq.in_({k[1] for k in keys})
                    )
                ).all()
                there = {(u, s) for u, s in existing} & keys
                inserts = [dict(r.values(), station_id=station_id) for r in fresh if (r.run_uid, r.seq) not in there]
                if inserts:
                    conn.execute(table.insert(), inserts)
            for r in records:
                key = (r.run_uid, r.seq)
                if key in self._inserted or key in there:
                    values = r.values()
                    conn.execute(
                        update(table).where(table.c.run_uid == r.run_uid, table.c.seq == r.seq).values(**values)
                    )
        # Only once committed: an id or a row of a transaction that rolled back does not exist.
        self._station_id = station_id
        self._inserted.update((r.run_uid, r.seq) for r in records)
