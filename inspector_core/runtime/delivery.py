"""Delivery of committed verdicts to a station's sinks, from the durable outbox.

Each sink gets its own worker thread and its own cursor in the store (``sink_cursors``, see
:mod:`inspector_core.store.outbox`). A worker reads the station's committed inspections after
its cursor, in commit order, sends each report to its sink, and advances the cursor once the
sink accepted them. So:

- **at least once**: a report counts as delivered only after ``Sink.send`` returned (or
  ``Sink.send_many`` for a group, see :func:`groups`); a kill
  (even ``kill -9``) between a send and the cursor's update sends it again on the next start.
  Receivers deduplicate by ``Report.inspection_uid`` (the webhook sink sends it as the
  ``Idempotency-Key`` header too);
- **resumed**: the cursor is in the store, so a restart continues where each sink stopped;
- **a slow sink delays no other**: sinks never wait for one another, and none waits for the
  recorder (the recorder only wakes the workers after each commit; they also poll, so a
  verdict committed by an earlier process is found without a wake-up);
- **retried without limit** while the station runs: tenacity, exponential backoff from
  ``first_wait_s`` capped at ``max_wait_s``. A sink delivers in order, so a report it keeps
  refusing holds back the ones after it (they wait in the store, counted in its backlog);
- **never silent**: after ``failing_after`` consecutive failures, or a send that has not
  returned for ``hung_after_s``, the event ``sink_failing`` is recorded once (with the error
  and the backlog) and the cursor row keeps the error; ``sink_recovered`` follows when the sink
  delivers again. At shutdown the workers get ``drain_s`` to catch up; whatever a sink still
  owes then is recorded as the event ``sink_backlog`` (per sink), and the next start resumes.
  A sink whose cursor is dropped because it left the station config is recorded as
  ``sink_removed`` with what it still owed.

Cursor writes go through the store's engine in short transactions of their own, at most every
``cursor_every_s`` while sending and at the end of each batch (why not through the recorder:
see :mod:`inspector_core.store.outbox`). With the database unreachable the workers wait and
retry; the verdicts are in the spool meanwhile and reach the sinks once written.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import tenacity

from inspector_core.contract import Report, Sink
from inspector_core.runtime.config import SinkSpec
from inspector_core.store.outbox import Outbox, Pending

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DeliveryPolicy:
    """How the sink workers retry, poll and drain."""

    first_wait_s: float = 0.05
    """Wait after a sink's first failure; doubled after each further one."""
    max_wait_s: float = 5.0
    """Longest wait between two attempts."""
    failing_after: int = 5
    """Consecutive failures after which ``sink_failing`` is recorded."""
    hung_after_s: float = 30.0
    """A send that has not returned for this long counts as failing too."""
    poll_s: float = 1.0
    """How often an idle worker looks for verdicts committed without a wake-up."""
    batch: int = 100
    """Reports read from the store at a time."""
    cursor_every_s: float = 1.0
    """Longest time a worker sends before it writes its cursor."""
    drain_s: float = 5.0
    """At shutdown, how long the workers may catch up before the backlog is recorded."""


POLICY = DeliveryPolicy()
"""The policy a :class:`Delivery` uses when given none."""

FINAL_CALL_S = 2.0
"""After the drain, how long each sink's last cursor write and backlog count may take (a store
that stops answering at shutdown must not hold it up for the store's whole call timeout)."""


def groups(sink: Sink) -> bool:
    """Whether the host hands ``sink`` the reports waiting for it in one ``send_many`` call: only
    where its class defines ``send_many`` at or below the class that defines its ``send`` (a
    subclass that changes ``send`` alone, as a test's slow file sink does, keeps ``send``)."""
    mro = type(sink).__mro__
    many = next(c for c in mro if "send_many" in vars(c))
    one = next((c for c in mro if "send" in vars(c)), Sink)
    return many is not Sink and issubclass(many, one)


def sink_keys(specs: Sequence[SinkSpec]) -> list[str]:
    """Each sink's key in the store: its ``name:``, else its type. Raises ``ValueError`` naming
    both sinks when two share a key (their deliveries would share one cursor)."""
    keys: list[str] = []
    for i, spec in enumerate(specs):
        key = spec.name or spec.type
        if key in keys:
            j = keys.index(key)
            raise ValueError(
                f"sinks[{i}] and sinks[{j}] both have the key {key!r} (the name of their delivery "
                "cursor in the store); give one a distinct `name:`"
            )
        keys.append(key)
    return keys


class Delivery:
    """The sink workers of one station run. ``start`` once the run is recorded (or being
    recorded), ``wake`` after each commit, ``close`` once the recorder has committed what it
    was given (it stays open for the events ``close`` records)."""

    def __init__(
        self,
        sinks: Sequence[tuple[str, Sink]],
        outbox: Outbox,
        *,
        on_event: Callable[[str, str], None],
        run_id: Callable[[], int | None] = lambda: None,
        policy: DeliveryPolicy | None = None,
    ) -> None:
        self.outbox = outbox
        self.policy = policy or POLICY
        self.on_event = on_event
        self._run_id = run_id
        self.workers = [_SinkWorker(key, sink, self) for key, sink in sinks]
        self._open_lock = threading.Lock()
        self._opened = False
        self._open_failed = False
        self._closed = threading.Event()
        self._watch = threading.Thread(target=self._watch_loop, name="inspector-sinks-watch", daemon=True)

    def start(self) -> None:
        """Start the workers; the first of them to run opens the cursors, as soon as the store
        answers (a store that is down never holds up the station's start). A new sink's cursor
        starts just before the run's first inspection (``run_id``), whenever it is opened."""
        if not self.workers:
            return
        for w in self.workers:
            w.thread.start()
        self._watch.start()

    def wake(self) -> None:
        """New verdicts were committed: look now rather than at the next poll."""
        for w in self.workers:
            w.wake.set()

    def close(
        self, drain_s: float | None = None, *, hurry: threading.Event | None = None, hurry_s: float = 0.5
    ) -> dict[str, int | None]:
        """Let the workers deliver what is committed for up to ``drain_s`` (default: the
        policy's), or ``hurry_s`` once ``hurry`` is set (a second Ctrl-C, even during the
        drain), then stop them and close the sinks. Returns each sink's backlog (``None``:
        unknown, the store did not answer); a non-zero backlog is recorded as the event
        ``sink_backlog``."""
        if not self.workers:
            return {}
        drain = self.policy.drain_s if drain_s is None else drain_s
        t0 = time.monotonic()
        for w in self.workers:
            w.draining.set()
            w.wake.set()
        while any(w.thread.is_alive() for w in self.workers):
            if hurry is not None and hurry.is_set() and time.monotonic() - t0 + hurry_s < drain:
                drain = time.monotonic() - t0 + hurry_s
            left = t0 + drain - time.monotonic()
            if left <= 0:
                break
            next(w for w in self.workers if w.thread.is_alive()).thread.join(min(left, 0.05))
        stuck = [w for w in self.workers if w.thread.is_alive()]
        for w in self.workers:
            w.abandon.set()
        for w in stuck:
            w.thread.join(0.5)
        self._closed.set()
        backlog: dict[str, int | None] = {}
        for w in self.workers:
            backlog[w.key] = w.final_backlog()
        owed = {k: n for k, n in backlog.items() if n != 0}
        if owed:
            parts = []
            for w in self.workers:
                n = backlog[w.key]
                if n == 0:
                    continue
                what = "unknown (the store did not answer)" if n is None else f"{n} verdicts"
                state = (
                    f"; {'still sending' if w.thread.is_alive() else 'stopped'}, last error: {w.last_error}"
                    if w.last_error
                    else ""
                )
                parts.append(f"sink {w.key}: {what} not yet delivered (cursor at inspection {w.cursor}){state}")
            msg = (
                f"station stopping after {time.monotonic() - t0:.1f} s of draining (at most {drain:.1f} s): "
                + "; ".join(parts)
                + ". They stay in the store and are delivered when the station next starts."
            )
            log.warning(msg)
            self.on_event("sink_backlog", msg)
        return backlog

    # -------------------------------------------------------------- internals

    def _open(self) -> bool:
        """Open every worker's cursor in one transaction; False while the store cannot."""
        with self._open_lock:
            if self._opened:
                return True
            try:
                opened = self.outbox.open([w.key for w in self.workers], run_id=self._run_id())
            except Exception as exc:  # noqa: BLE001 - the database away: the workers try again
                if not self._open_failed:
                    log.warning(
                        "sinks: cannot read the delivery cursors in the store yet (%s: %s); retrying",
                        type(exc).__name__,
                        exc,
                    )
                    self._open_failed = True
                return False
            if opened is None:
                return False
            cursors, removed = opened
            for w in self.workers:
                cursor = cursors[w.key]
                w.cursor = w.saved = cursor.inspection_id
                if cursor.failing_since is not None:  # failing when the last run ended: recovered on its first send
                    w.failing_since = cursor.failing_since.replace(tzinfo=UTC)
            for key, n in removed.items():
                self.on_event(
                    "sink_removed",
                    f"sink {key} is no longer in the station config; its delivery cursor "
                    f"was dropped with {n} verdicts it had not delivered",
                )
            self._opened = True
            return True

    def _watch_loop(self) -> None:
        while not self._closed.wait(min(self.policy.poll_s, self.policy.hung_after_s)):
            for w in self.workers:
                w.check_hung()


class _SinkWorker:
    """One sink's thread: read after the cursor, send, advance."""

    def __init__(self, key: str, sink: Sink, delivery: Delivery) -> None:
        self.key = key
        self.sink = sink
        self.delivery = delivery
        self.outbox = delivery.outbox
        self.policy = delivery.policy
        self.cursor: int | None = None
        """The last inspection id the sink accepted (``None`` until the cursor is opened)."""
        self.saved: int | None = None
        """The cursor as the store has it."""
        self.delivered = 0
        self.failures = 0
        self.last_error: str | None = None
        self.grouped = groups(sink)
        """The reports of a batch go to ``send_many`` together (one fsync for the file sink)."""
        self.wake = threading.Event()
        self.draining = threading.Event()
        self.abandon = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"inspector-sink-{key}", daemon=True)
        self._lock = threading.Lock()
        self.failing_since: datetime | None = None
        self._sending: tuple[float, Report] | None = None
        self._saved_at = time.monotonic()
        self._store_down = False

    # -------------------------------------------------------------- the loop

    def _run(self) -> None:
        try:
            while not self.abandon.is_set():
                self.wake.clear()
                # The flag is taken before the read: an empty read proves nothing is left only if the drain
                # (which starts once the recorder has committed everything) had begun before it.
                draining = self.draining.is_set()
                batch = self._next()
                if batch is None:  # the store does not answer: the verdicts wait in it (or the spool)
                    self.abandon.wait(self.policy.poll_s)
                    continue
                if not batch:
                    if draining:
                        break
                    self.wake.wait(self.policy.poll_s)
                    continue
                self._deliver(batch)
        except BaseException as exc:  # a sink's BaseException must not end delivery silently
            msg = (
                f"sink {self.key}: its worker stopped: {type(exc).__name__}: {exc}; "
                "undelivered verdicts stay in the store"
            )
            log.exception(msg)
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.delivery.on_event("sink_failing", msg)
        finally:
            self._save()
            try:
                self.sink.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("closing sink %s: %s", self.key, exc)

    def _next(self) -> list[Pending] | None:
        if self.cursor is None and not self.delivery._open():
            return None
        assert self.cursor is not None
        try:
            batch = self.outbox.pending(self.cursor, self.policy.batch)
        except Exception as exc:  # noqa: BLE001
            if not self._store_down:
                log.warning(
                    "sink %s: cannot read committed verdicts from the store (%s: %s); retrying",
                    self.key,
                    type(exc).__name__,
                    exc,
                )
                self._store_down = True
            return None
        self._store_down = False
        return batch

    def _deliver(self, batch: list[Pending]) -> None:
        if self.grouped:
            # The whole batch (what waits for the sink, up to policy.batch) in one call; every report of
            # it counts as delivered only once that call returned (the file sink: after its one fsync).
            if not self.abandon.is_set() and self._send([p.report for p in batch]):
                self.cursor = batch[-1].inspection_id
                self.delivered += len(batch)
            self._save()
            return
        for p in batch:
            # Abandoned after the drain: no new send (tenacity's stop is asked only after a failure).
            if self.abandon.is_set() or not self._send([p.report]):
                break
            self.cursor = p.inspection_id
            self.delivered += 1
            if time.monotonic() - self._saved_at >= self.policy.cursor_every_s:
                self._save()
        self._save()

    def _send(self, reports: list[Report]) -> bool:
        """Send until the sink accepts (True) or the worker is abandoned at shutdown (False): one
        report with ``send``, or a group with ``send_many`` (retried whole)."""
        self._sending = (time.monotonic(), reports[0])
        try:
            for attempt in tenacity.Retrying(
                wait=tenacity.wait_exponential(multiplier=self.policy.first_wait_s, max=self.policy.max_wait_s),
                stop=lambda _state: self.abandon.is_set(),
                retry=tenacity.retry_if_exception_type(Exception),
                before_sleep=self._failed,
                sleep=self._pause,
                reraise=True,
            ):
                with attempt:
                    if self.grouped:
                        self.sink.send_many(reports)
                    else:
                        self.sink.send(reports[0])
        except Exception as exc:  # noqa: BLE001 - only when abandoned: the report stays in the backlog
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False
        finally:
            self._sending = None
        self._succeeded()
        return True

    def _pause(self, seconds: float) -> None:
        """Tenacity's sleep between attempts; cut short when the worker is abandoned at shutdown."""
        self.abandon.wait(seconds)

    def _save(self, timeout_s: float | None = None) -> None:
        if self.cursor is None or self.cursor == self.saved:
            return
        cursor = self.cursor
        try:
            self.outbox.advance(self.key, cursor, timeout_s=timeout_s)
        except Exception as exc:  # noqa: BLE001 - kept in memory; written next time (at worst re-sent)
            log.warning(
                "sink %s: cannot write its delivery cursor (%s: %s); retrying", self.key, type(exc).__name__, exc
            )
            return
        self.saved = cursor
        self._saved_at = time.monotonic()

    # -------------------------------------------------------------- failing and recovered

    def _failed(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        sending = self._sending
        if self.failures == 1 and sending is not None:
            log.warning("sink %s: sending part %s failed (%s); retrying", self.key, sending[1].part_id, self.last_error)
        if self.failures >= self.policy.failing_after:
            self._raise_failing(f"{self.failures} attempts in a row failed, the last: {self.last_error}")

    def check_hung(self) -> None:
        sending = self._sending
        if sending is not None and time.monotonic() - sending[0] >= self.policy.hung_after_s:
            self._raise_failing(f"a send has not returned for {time.monotonic() - sending[0]:.0f} s")

    def _raise_failing(self, why: str) -> None:
        with self._lock:
            if self.failing_since is not None:
                return
            self.failing_since = since = datetime.now(UTC)
        sending = self._sending
        part = f" on part {sending[1].part_id} ({sending[1].inspection_uid})" if sending else ""
        backlog = self._backlog()
        msg = (
            f"sink {self.key} ({self.sink.name}) keeps failing{part}: {why}; "
            f"{'?' if backlog is None else backlog} verdicts waiting; retrying every {self.policy.max_wait_s:g} s "
            "at most, nothing is lost (the verdicts are in the store)"
        )
        log.error(msg)
        self.delivery.on_event("sink_failing", msg)
        try:
            self.outbox.failing(self.key, self.last_error or why, since.replace(tzinfo=None))
        except Exception as exc:  # noqa: BLE001
            log.warning("sink %s: cannot record its failure in the store: %s", self.key, exc)

    def _succeeded(self) -> None:
        failures, self.failures = self.failures, 0
        with self._lock:
            since, self.failing_since = self.failing_since, None
        if since is None:
            return
        msg = (
            f"sink {self.key} ({self.sink.name}) delivers again after "
            f"{(datetime.now(UTC) - since).total_seconds():.1f} s failing ({failures} failed attempts)"
        )
        log.warning(msg)
        self.delivery.on_event("sink_recovered", msg)
        try:
            self.outbox.recovered(self.key)
        except Exception as exc:  # noqa: BLE001
            log.warning("sink %s: cannot record its recovery in the store: %s", self.key, exc)

    # -------------------------------------------------------------- shutdown

    def _backlog(self, timeout_s: float | None = None) -> int | None:
        if self.cursor is None:
            return None
        try:
            return self.outbox.backlog(self.cursor, timeout_s=timeout_s)
        except Exception:  # noqa: BLE001
            return None

    def final_backlog(self) -> int | None:
        """After the drain: write the cursor of a worker still stuck in a send, then count
        (each within :data:`FINAL_CALL_S`)."""
        if self.thread.is_alive():
            self._save(timeout_s=FINAL_CALL_S)
        return self._backlog(timeout_s=FINAL_CALL_S)
