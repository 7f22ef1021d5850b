"""The station: one part from the camera to a recorded, reported verdict.

Three stages overlap, each in its own thread, joined by bounded queues::

    capture (source.frames)  --queue(overload.queue_size)-->  inspect (steps, verdict, crops)
        --> Recorder (group commit, spool)  --> outbox: one worker per sink (runtime/delivery.py)

Inside inspect, the steps of consecutive parts overlap (runtime/pipeline.py: a lane thread per
step, at most ``workers`` detector calls at once); the verdicts are submitted in capture order.
A step with ``isolation: process`` runs in a worker process (runtime/isolation.py).

Promises kept here (each is tested in tests/):
- every frame the source yields leaves as exactly one recorded inspection: PASS, FAIL, ERROR
  (a corrupt image, a step that raised or overran its budget), or NOT_INSPECTED (dropped
  under the ``drop-oldest`` overload policy);
- a verdict reaches a sink only after it is committed, at least once, from the store (each
  sink has its own worker and cursor, so a restart resumes and a slow sink delays no other);
- SIGINT/SIGTERM stop the capture, drain the queues and commit before exit; the frame the
  source has just yielded is recorded too. A second SIGINT/SIGTERM stops waiting for steps:
  a part being inspected becomes ERROR and every part no step had started NOT_INSPECTED, each with
  the reason, then they are committed; a third one exits at once (the default handler).
- Shutdown is bounded: a source that does not return from ``frames()`` within
  ``SOURCE_STOP_TIMEOUT_S`` of the stop is abandoned (a ``source_stuck`` event), detectors'
  ``close()`` gets ``steps.CLOSE_TIMEOUT_S``, the recorder ``RECORDER_CLOSE_TIMEOUT_S``.
- Every part id and message reaches the store storable (:mod:`inspector_core.runtime.storable`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import queue
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import inspector_core
from inspector_core.contract import (
    Frame,
    Sink,
    SourceContext,
)
from inspector_core.plugins import Registry
from inspector_core.runtime.changeover import Changeover, Recipe
from inspector_core.runtime.config import Station, Step
from inspector_core.runtime.delivery import Delivery, sink_keys
from inspector_core.runtime.evidence import evidence_writer
from inspector_core.runtime.garbage import freeze_startup
from inspector_core.runtime.inspection import Begun, begin, judge
from inspector_core.runtime.inspection import check_image as _check_image  # noqa: F401 - its old name here
from inspector_core.runtime.join import JoinedPart, begin_part_views, evidence_image, view_records
from inspector_core.runtime.line import RecipeRefused
from inspector_core.runtime.memory import limit_arenas
from inspector_core.runtime.pipeline import Pipeline, default_workers
from inspector_core.runtime.progress import Tally
from inspector_core.runtime.steps import StepOutcome, StepStartError, StepWorker, close_steps
from inspector_core.runtime.storable import storable_message, storable_part_id
from inspector_core.store import (
    InspectionRecord,
    Recorder,
    RunRecord,
    Store,
    StoreError,
)
from inspector_core.store.outbox import Outbox

log = logging.getLogger(__name__)


class StationError(RuntimeError):
    """The station cannot start or had to stop; the message says why and what to do."""


SOURCE_STOP_TIMEOUT_S = 5.0
"""After a stop, how long the source may take to return from ``frames()`` before it is abandoned."""
ABORT_TIMEOUT_S = 5.0
"""After a second interrupt, how long the inspect thread may take to record what is left."""
RECORDER_CLOSE_TIMEOUT_S = 60.0
"""At the end of a run, how long the recorder may take to commit (or spool) what it holds."""
ABORT_DRAIN_S = 0.5
"""After a second interrupt, how long the sinks may deliver before their backlog is recorded
(the drain otherwise lasts ``runtime.delivery.POLICY.drain_s``)."""
ABORTED = "not inspected: the station was stopped by a second interrupt before this part was inspected"


# ---------------------------------------------------------------------------- the runtime


@dataclasses.dataclass
class _Captured:
    frame: Frame
    seq: int
    uid: str
    t0: float
    meta: dict[str, Any] | None = None
    """The frame's metadata as the store keeps it."""
    recipe: Recipe | None = None
    """The recipe the part is inspected under, bound at capture (runtime/changeover.py)."""
    recipe_error: str | None = None
    """Why the part has no recipe (a product code that selects none): it is ERROR."""
    views: JoinedPart | None = None
    """A multi-view part's views as joined (runtime/join.py); ``frame`` is then its first view's."""


class StationRuntime:
    """One run of one station. ``run()`` blocks until the source ends, ``limit`` parts were
    captured, or ``stop()`` is called (SIGINT/SIGTERM call it)."""

    def __init__(
        self,
        station: Station,
        registry: Registry,
        *,
        limit: int | None = None,
        on_progress: Callable[[Tally], None] | None = None,
    ) -> None:
        self.station = station
        self.registry = registry
        self.limit = limit
        self.on_progress = on_progress
        self.tally = Tally()
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._capture_abandoned = threading.Event()
        self._interrupts = 0
        self._interrupt_recorded = False
        self._seq = 0
        self._inspect_done = False
        self._source_closing = False
        self._source_close_lock = threading.Lock()
        self._signal_name = "SIGINT"
        self._events: list[tuple[int, datetime, str, str]] = []
        self._events_lock = threading.Lock()
        self.run_id: int | None = None
        self.failure: str | None = None

    # -------------------------------------------------------------- public

    def stop(self) -> None:
        """Stop capturing; the parts already captured are inspected and committed. Returns at
        once: the source's ``close()`` runs in its own thread (once), so a source that blocks
        in it cannot hold up the caller."""
        self._stop.set()
        source = getattr(self, "_source", None)
        with self._source_close_lock:
            if source is None or self._source_closing:
                return
            self._source_closing = True
        threading.Thread(target=self._close_source, args=(source,), name="inspector-source-close", daemon=True).start()

    def _close_source(self, source: Any) -> None:
        try:
            source.close()
        except Exception as exc:  # noqa: BLE001 - the source's failure, recorded
            msg = f"source {self.station.source.name}: close() failed: {type(exc).__name__}: {exc}"
            log.warning(msg)
            self.event("source_close_failed", storable_message(msg))

    def event(self, kind: str, message: str) -> None:
        """Record an event of this run: the recorder writes it (durably, through the spool while
        the database is away); one raised before the recorder exists waits for it."""
        recorder = getattr(self, "recorder", None)
        if recorder is not None:
            recorder.event(kind, message)
            return
        with self._events_lock:
            self._events.append((0, datetime.now(UTC), kind, message))

    def run(self) -> Tally:
        st = self.station
        limit_arenas()  # before the steps' threads allocate: peak RSS (runtime/memory.py)
        try:
            # The recorder migrates it when it answers: a station starts while its database is down.
            self.store = Store(st.store_url, migrate=False)
        except StoreError as exc:
            raise StationError(f"station {st.path.name}: {exc}") from exc
        workers = self._start_steps()
        sinks = self._start_sinks(workers)
        self._source = self._start_source(workers, sinks)
        run = RunRecord(
            st.name,
            hostname=socket.gethostname(),
            software_version=inspector_core.__version__,
            plugins=self._provenance_plugins(),
            config_yaml=st.text,
            config_hash=st.config_hash,
            models=self._provenance_models(workers),
            sink_keys=tuple(self._sink_keys),
        )
        spool_dir = Path(st.spec.store.spool) if st.spec.store.spool else st.directory / ".spool"
        if not spool_dir.is_absolute():
            spool_dir = st.directory / spool_dir
        try:
            # Opens the spool: one of another format, station or database is refused (SpoolError).
            recorder = Recorder(
                self.store,
                run=run,
                on_committed=self._committed,
                spool_dir=spool_dir,
                overload=st.spec.overload.policy,
                evidence=evidence_writer(st),
            )
        except (StoreError, OSError) as exc:
            close_steps(workers)
            raise StationError(f"station {st.path.name}: cannot open the spool in {spool_dir}: {exc}") from exc
        try:
            # Records the run (migrating a new database first), or starts with the spool if the
            # database cannot be reached; refuses a database that answers but will not take it.
            recorder.start()
        except StoreError as exc:
            close_steps(workers)
            raise StationError(f"station {st.path.name}: cannot record the run: {exc}") from exc
        self.recorder = recorder
        self.run_uid = run.uid
        self.station_id, self.run_id = recorder.station_id, recorder.run_id
        self._flush_events()
        # One worker per sink, reading the store after its cursor; a new sink starts at this run's first verdict.
        self._delivery = Delivery(
            list(zip(self._sink_keys, sinks, strict=True)),
            Outbox(self.store, st.name),
            on_event=self.event,
            run_id=lambda: recorder.run_id,
        )
        self._delivery.start()
        self._line = self._start_line(workers)  # issue 13: the PLC handshake (runtime/line.py)

        self._queue: queue.Queue[_Captured | None] = queue.Queue(maxsize=st.spec.overload.queue_size)
        self._queue_lock = threading.Lock()
        self._pipeline = Pipeline(workers, cores=st.spec.workers or default_workers(), abort=self._abort)
        self._start_recipes(workers)  # issue 14: recipes and their changeover (runtime/changeover.py)
        capture = threading.Thread(target=self._capture_loop, name="inspector-capture", daemon=True)
        inspect = threading.Thread(target=self._inspect_loop, args=(workers,), name="inspector-inspect", daemon=True)
        restore = self._install_signals()
        freeze_startup()  # full collections walk only the run's own objects (runtime/garbage.py)
        try:
            capture.start()
            inspect.start()
            self._wait(capture, inspect)
        finally:
            # The handler stays until the run is ended: a Ctrl-C during the shutdown (the flush,
            # the sinks' drain) counts like any other (the second cuts the drain short, the
            # third exits), instead of a KeyboardInterrupt that would skip the end of the run.
            try:
                self._close_recorder()
                if self._line is not None:  # issue 13: answer what is open, then stop the link
                    self._line.close()
                control = getattr(self, "_control", None)
                if control is not None:  # issue 14: the `inspector recipe` channel
                    control.close()
                # After a second interrupt the sinks get a moment only; what they still owe is recorded.
                self._delivery.close(hurry=self._abort, hurry_s=ABORT_DRAIN_S)
                for problem in close_steps(workers):
                    log.warning("%s", problem)
                    self.event("detector_close_overran", problem)
                if self._abort.is_set() and not self._interrupt_recorded:
                    self.event(
                        "interrupted",
                        f"{self._signal_name} twice during the shutdown: the sinks' drain "
                        f"was cut to {ABORT_DRAIN_S:g} s, the recorder's close to {ABORT_TIMEOUT_S:g} s",
                    )
                if self._seq == 0 and self.failure is None:
                    self.event(
                        "no_parts",
                        f"the source {st.source.name} gave no parts "
                        f"(config {st.source_config.model_dump(mode='json')})",
                    )
                self._end_run()
                self.store.close()
                self._tick()
            finally:
                restore()
        if self.recorder.error is not None:
            raise StationError(
                f"station {st.path.name}: stopped because the store failed: {self.recorder.error}; "
                f"verdicts committed before it: {self.recorder.committed}"
            )
        return self.tally

    def _wait(self, capture: threading.Thread, inspect: threading.Thread) -> None:
        """Until the inspect thread has recorded every captured part; bounded after a stop."""
        st = self.station
        stopped_at: float | None = None
        aborted_at: float | None = None
        while inspect.is_alive():
            inspect.join(0.25)
            self._tick()
            if self.recorder.error is not None and not self._stop.is_set():
                self.failure = f"the store failed: {self.recorder.error}"
                self.stop()
            now = time.monotonic()
            if self._stop.is_set() and stopped_at is None:
                stopped_at = now
                self.stop()  # a signal only set the flag: close the source now
            if (
                stopped_at is not None
                and capture.is_alive()
                and not self._capture_abandoned.is_set()
                and now - stopped_at > SOURCE_STOP_TIMEOUT_S
            ):
                msg = (
                    f"source {st.source.name} did not return from frames() within {SOURCE_STOP_TIMEOUT_S:g} s "
                    "of the stop; abandoned (the parts it had yielded are recorded)"
                )
                log.error(msg)
                self.event("source_stuck", msg)
                self._capture_abandoned.set()
            if self._abort.is_set():
                if aborted_at is None:
                    aborted_at = now
                    self._interrupt_recorded = True
                    self.event(
                        "interrupted",
                        f"{self._signal_name} twice: stopped waiting for the steps; the "
                        "part being inspected is ERROR, the parts not yet inspected NOT_INSPECTED",
                    )
                if now - aborted_at > ABORT_TIMEOUT_S:
                    left = self._queue.qsize() + self._pipeline.in_flight()
                    msg = (
                        f"the inspect thread did not finish within {ABORT_TIMEOUT_S:g} s of the second "
                        f"interrupt; {left} captured part(s) may not be recorded"
                    )
                    log.error(msg)
                    self.event("shutdown_incomplete", msg)
                    self.failure = msg
                    return
        capture.join(0 if self._capture_abandoned.is_set() else SOURCE_STOP_TIMEOUT_S)
        if capture.is_alive() and not self._capture_abandoned.is_set():
            self._capture_abandoned.set()
            msg = f"source {st.source.name} did not return from frames() at the end of the run; abandoned"
            log.error(msg)
            self.event("source_stuck", msg)

    def _close_recorder(self) -> None:
        """Wait until the recorder has committed (or spooled) every verdict; it stays open for the
        events of the rest of the shutdown and the end of the run (:meth:`_end_run`)."""
        timeout = ABORT_TIMEOUT_S if self._abort.is_set() else RECORDER_CLOSE_TIMEOUT_S
        closed = self.recorder.flush(timeout=timeout)
        if not closed:
            msg = (
                f"the recorder did not finish within {timeout:g} s; verdicts committed: "
                f"{self.recorder.committed}; the rest of this run's verdicts may be lost"
            )
            log.error(msg)
            self.event("recorder_close_timeout", msg)
            self.failure = self.failure or msg

    # -------------------------------------------------------------- start-up

    def _start_steps(self, steps: list[Step] | None = None) -> list[StepWorker]:
        workers: list[StepWorker] = []
        for step in self.station.steps if steps is None else steps:
            info = self.registry.plugin_of("detector", step.detector.name)
            try:
                workers.append(
                    StepWorker(
                        step,
                        self.station.directory,
                        plugin=info.name if info else None,
                        # an isolated step's worker imports the plugin by it (None: not installed)
                        entry_point=info.name if info and info.distribution else None,
                        on_event=self.event,
                        abort=self._abort,
                    )
                )
                workers[-1].start_replicas(step.parallel - 1)  # steps[i].parallel: the pipeline's runners
            except StepStartError as exc:
                close_steps(workers)
                raise StationError(
                    f"station {self.station.path.name}: steps[{step.index}] ({step.name}): detector "
                    f"{step.detector.name!r} failed to start: {exc}"
                ) from exc
        return workers

    def _start_sinks(self, workers: list[StepWorker]) -> list[Sink]:
        try:
            self._sink_keys = sink_keys(self.station.spec.sinks)
        except ValueError as exc:
            for w in workers:
                w.close()
            raise StationError(f"station {self.station.path.name}: {exc}") from exc
        sinks: list[Sink] = []
        for i, (cls, cfg) in enumerate(self.station.sinks):
            try:
                sinks.append(cls(cfg, station_dir=self.station.directory))
            except Exception as exc:
                for w in workers:
                    w.close()
                raise StationError(
                    f"station {self.station.path.name}: sinks[{i}] ({cls.name}) failed to start: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        return sinks

    def _start_source(self, workers: list[StepWorker], sinks: list[Sink]):
        st = self.station
        try:
            context = SourceContext(
                st.directory, self.event, recorded=lambda part_ids: self.store.recorded_part_ids(st.name, part_ids)
            )
            return st.source(st.source_config, context)
        except Exception as exc:
            for w in workers:
                w.close()
            for s in sinks:
                s.close()
            raise StationError(
                f"station {st.path.name}: source ({st.source.name}) failed to start: {type(exc).__name__}: {exc}"
            ) from exc

    def _provenance_plugins(self) -> dict[str, Any]:
        used = [("source", self.station.source.name)]
        used += [("detector", s.detector.name) for s in self.station.steps]
        # issue 14: every recipe's detectors (a recipe started later runs under this run too)
        used += [("detector", s.detector.name) for r in self.station.recipes.values() for s in r.steps]
        used += [("sink", cls.name) for cls, _ in self.station.sinks]
        out: dict[str, Any] = {}
        for what, name in used:
            info = self.registry.plugin_of(what, name)
            if info is not None:
                out[info.name] = {"distribution": info.distribution, "version": info.version, "module": info.module}
        return out

    def _provenance_models(self, workers: list[StepWorker]) -> dict[str, Any]:
        out = {}
        for w in workers:
            for label, path in (w.detector.files() if w.detector is not None else {}).items():
                out[f"{w.step.name}/{label}"] = {"path": str(path), "sha256": _sha256(Path(path))}
        return out

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, _frame: Any) -> None:
            # Only flags here: the handler runs in the main thread between any two bytecodes, maybe
            # while it holds a lock the recorder or the source needs. _wait() acts on the flags.
            self._interrupts += 1
            self._signal_name = signal.Signals(signum).name
            if self._interrupts == 1:
                log.warning(
                    "%s: stopping capture, finishing the captured parts and committing "
                    "(again: stop waiting for the steps)",
                    self._signal_name,
                )
                self._stop.set()
                return
            log.warning(
                "%s again: not waiting for the steps; recording the captured parts NOT_INSPECTED "
                "and committing (again: exit at once)",
                self._signal_name,
            )
            self._abort.set()
            self._stop.set()
            for s, h in previous.items():
                signal.signal(s, h)

        for s in previous:
            signal.signal(s, handler)

        def restore() -> None:
            for s, h in previous.items():
                signal.signal(s, h)

        return restore

    def _start_line(self, workers: list[StepWorker]) -> Any:
        """Issue 13's seam: the station's ``line:`` (a PLC link serving), or ``None``."""
        st = self.station
        if st.line is None:
            return None
        from inspector_core.runtime.line import Handshake

        try:
            return Handshake.start(
                st, self.store, self.run_uid, self.event, self._source, healthy=lambda: not self.recorder.outage
            )
        except Exception as exc:
            self._delivery.close(hurry=self._abort, hurry_s=ABORT_DRAIN_S)
            close_steps(workers)
            self.recorder.close(timeout=ABORT_TIMEOUT_S, parts_seen=0)
            raise StationError(
                f"station {st.path.name}: line: the PLC link {st.line[0].name!r} failed to start: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    # -------------------------------------------------------------- capture

    def _capture_loop(self) -> None:
        st = self.station
        frames = None
        try:
            frames = self._source.frames()
            if self._line is not None:  # issue 13: one frame per PLC trigger
                frames = self._line.frames(frames, self._stop)
            if st.views is not None:  # issue 14: the views of a part joined by part id (runtime/join.py)
                frames = self._joined(frames)
            for frame in frames:
                if self._capture_abandoned.is_set():
                    msg = f"source {st.source.name} yielded a frame after it was abandoned at shutdown; not recorded"
                    log.error(msg)
                    self.event("source_late_frame", msg)
                    break
                # The frame just yielded is recorded even if a stop arrived meanwhile.
                item = frame if isinstance(frame, _Captured) else self._captured(frame)
                item.recipe, item.recipe_error = self._changeover.for_frame(item.frame)
                self._seq += 1
                self._enqueue(item)
                if st.views is not None:
                    continue  # the join ends by itself after a stop, recording the parts it holds
                if self._stop.is_set() or (self.limit is not None and self._seq >= self.limit):
                    break
        except Exception as exc:  # noqa: BLE001
            msg = f"source {st.source.name} failed: {type(exc).__name__}: {exc}"
            log.error(msg)
            self.event("source_failed", storable_message(msg))
            self.failure = msg
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    log.exception("closing the source's frames()")
            self._put_end()

    def _captured(self, frame: Any) -> _Captured:
        """The frame as the station keeps it: a storable part id, metadata the store can keep."""
        seq = self._seq
        if not isinstance(frame, Frame):
            frame = Frame(
                f"#{seq}", None, datetime.now(UTC), error=f"the source yielded a {type(frame).__name__}, not a Frame"
            )
        part_id, problem = storable_part_id(frame.part_id)
        meta = _jsonable(frame.meta) if isinstance(frame.meta, dict) else {"meta": storable_message(frame.meta)}
        changes: dict[str, Any] = {}
        if problem is not None:
            meta["part_id_problem"] = problem
            changes["part_id"] = part_id
            log.warning("part %d: %s", seq, problem)
            if not getattr(self, "_part_id_event", False):
                self._part_id_event = True
                self.event(
                    "part_id_escaped",
                    f"{problem} (the first such part of this run; each one carries source_meta.part_id_problem)",
                )
        if not isinstance(frame.captured_at, datetime):
            meta["captured_at_problem"] = f"the source gave {type(frame.captured_at).__name__}, not a datetime"
            changes["captured_at"] = datetime.now(UTC)
        if frame.error is not None and not isinstance(frame.error, str):
            changes["error"] = storable_message(frame.error)
        if changes:
            frame = dataclasses.replace(frame, **changes)
        return _Captured(frame, seq, uuid.uuid4().hex, time.perf_counter(), meta)

    def _put_end(self) -> None:
        while True:
            try:
                self._queue.put(None, timeout=0.25)
                return
            except queue.Full:
                if self._capture_abandoned.is_set() or self._abort.is_set() and self._inspect_done:
                    return

    def _enqueue(self, item: _Captured) -> None:
        if self.station.spec.overload.policy == "wait":
            while True:
                try:
                    self._queue.put(item, timeout=0.25)
                    return
                except queue.Full:
                    if self._abort.is_set():
                        self._submit(self._record(item, "NOT_INSPECTED", error=ABORTED))
                        return
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    oldest = self._queue.get_nowait()
                except queue.Empty:
                    continue
                if oldest is not None:
                    self._record_not_inspected(oldest)

    def _record_not_inspected(self, item: _Captured) -> None:
        self._submit(
            self._record(
                item,
                "NOT_INSPECTED",
                error="dropped: the inspection queue was full "
                f"(overload policy drop-oldest, queue_size {self.station.spec.overload.queue_size})",
            )
        )

    def _joined(self, frames: Any) -> Any:
        """issue 14: the parts of a multi-view station, each with its views (runtime/join.py); a
        frame that joins no part (unknown view, duplicate, late) is recorded as an event."""
        from inspector_core.runtime.join import joined

        plan = self.station.views
        assert plan is not None
        stopping = lambda: self._stop.is_set() or (self.limit is not None and self._seq >= self.limit)  # noqa: E731

        def unread(frame: Any) -> None:
            pid = getattr(frame, "part_id", "?")
            self.event(
                "view_not_inspected", storable_message(f"part {pid!r}: a frame after the join ended; not inspected")
            )

        for out in joined(frames, plan, capture=self._captured, stopping=stopping, on_unread=unread):
            if isinstance(out, JoinedPart):
                first = next(a.item for a in out.views.values() if a is not None)
                meta = dict(first.meta or {})
                meta["views"] = [v for v, a in out.views.items() if a is not None]
                yield _Captured(first.frame, self._seq, uuid.uuid4().hex, out.t0, meta, views=out)
            else:
                log.warning("%s", out.message)
                self.event(out.kind, storable_message(out.message))

    # -------------------------------------------------------------- inspect

    def _inspect_loop(self, workers: list[StepWorker]) -> None:
        """Hands each captured part to the steps' lanes (runtime/pipeline.py: steps of consecutive
        parts overlap); a second thread judges the parts and submits them, in capture order."""
        pipeline = self._pipeline
        verdicts = threading.Thread(target=self._verdict_loop, name="inspector-verdict", daemon=True)
        verdicts.start()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=0.25)
                except queue.Empty:
                    if self._capture_abandoned.is_set() or not verdicts.is_alive():
                        break
                    continue
                if item is None:
                    break
                if self._abort.is_set():
                    taken = pipeline.put((item, self._record(item, "NOT_INSPECTED", error=ABORTED)), None)
                else:
                    try:
                        begun = self._begin(item)
                    except Exception as exc:  # the host's own bug must still record the part
                        log.exception("inspecting part %s", item.frame.part_id)
                        begun = self._record(item, "ERROR", error=f"host error: {type(exc).__name__}: {exc}")
                    if isinstance(begun, InspectionRecord):
                        taken = pipeline.put((item, begun), None)
                    else:
                        taken = pipeline.put((item, begun), self._lanes_of(item, begun))
                if not taken:
                    break
        finally:
            pipeline.end()
            verdicts.join()
            pipeline.close()
            self._inspect_done = True

    def _verdict_loop(self) -> None:
        for job in self._pipeline.results():
            item, begun = job.payload
            if isinstance(begun, InspectionRecord):
                record = begun
            elif self._abort.is_set() and not job.started:
                record = self._record(item, "NOT_INSPECTED", error=ABORTED)
            else:
                try:
                    record = self._judge(item, begun, job.outcomes)
                except Exception as exc:  # the host's own bug must still record the part
                    log.exception("judging part %s", item.frame.part_id)
                    record = self._record(item, "ERROR", error=f"host error: {type(exc).__name__}: {exc}")
            try:
                # The frame (a reference) for the writer's evidence files (store.evidence; issue 15).
                self._submit(record, evidence_image(begun) if isinstance(begun, Begun) else None)
            except Exception as exc:  # noqa: BLE001 - stop, saying so, rather than die silently
                msg = f"part {item.frame.part_id!r} could not be handed to the recorder: {type(exc).__name__}: {exc}"
                log.error(msg)
                self.failure = self.failure or msg
                self.stop()
                self._pipeline.cancel()
                return

    def _begin(self, item: _Captured) -> InspectionRecord | Begun:
        """What each step sees of the part, or its record at once when its image cannot be inspected."""
        station = self._recipe_station(item)
        if isinstance(station, InspectionRecord):
            return station
        begun = begin(item.frame, station) if item.views is None else begin_part_views(item.views, station)
        if isinstance(begun, str):
            return self._record(item, "ERROR", error=begun, error_step="source")
        return begun

    def _judge(self, item: _Captured, begun: Begun, outcomes: list[StepOutcome | None]) -> InspectionRecord:
        recipe = item.recipe if item.recipe is not None else self._changeover.active
        judged = judge(recipe.station, begun, recipe.outcomes(outcomes))
        record = self._record(item, judged.verdict, error=judged.error, error_step=judged.error_step)
        record.steps, record.defects = judged.steps, judged.defects
        return record

    def _record(
        self, item: _Captured, verdict_: str, *, error: str | None = None, error_step: str | None = None
    ) -> InspectionRecord:
        now = datetime.now(UTC)
        latency = (time.perf_counter() - item.t0) * 1000 if verdict_ != "NOT_INSPECTED" else None
        return InspectionRecord(
            uid=item.uid,
            station_id=self.station_id,
            run_id=self.run_id,
            seq=item.seq,
            part_id=item.frame.part_id,
            captured_at=item.frame.captured_at,
            decided_at=now,
            verdict=verdict_,
            latency_ms=latency,
            error=None if error is None else storable_message(error),
            error_step=error_step,
            source_meta=item.meta or None,
            views=view_records(item.views) if item.views is not None else [],
            recipe=item.recipe.name if item.recipe is not None else None,
            recipe_hash=item.recipe.hash if item.recipe is not None else None,
        )

    # -------------------------------------------------------------- recipes (issue 14)

    def _start_recipes(self, workers: list[StepWorker]) -> None:
        """The run's recipes (runtime/changeover.py), those marked ``preload`` started now, and the
        control channel ``inspector recipe`` talks to (runtime/control.py)."""
        from inspector_core.runtime.control import ControlServer

        self._changeover = Changeover(
            self.station,
            workers,
            self._pipeline,
            start_steps=self._start_steps,
            on_event=self.event,
            describe=lambda started: json.dumps(self._provenance_models(started), sort_keys=True),
            on_switch=self._line.recipe_changed if self._line is not None else None,
        )
        if self._line is not None:  # the PLC may ask at once: a request meets the preloads in progress
            self._line.recipe_selector = self._plc_selects_recipe
            self._line.active_recipe = lambda: self.recipe
            self._changeover.show_active()
        try:
            self._changeover.preload()
        except RecipeRefused as exc:  # its parts are ERROR with the reason (fail closed); the rest run
            log.error("%s", exc)
            self.event("recipe_preload_failed", storable_message(str(exc)))
        self._control = ControlServer.start(self.station, self)

    def select_recipe(self, name: str, *, by: str = "api") -> float:
        """Change the product: ``name``'s detectors are started and warmed, then it is the recipe of
        every part captured after; the parts captured before finish under theirs. Returns the
        seconds until it was active; raises ``RecipeRefused`` for an unknown recipe (or one that
        cannot start), the active one staying."""
        changeover = getattr(self, "_changeover", None)
        if changeover is None:
            raise RecipeRefused(f"the station is starting; ask for recipe {name!r} again in a moment")
        return changeover.select(name, by=by)

    def _plc_selects_recipe(self, name: str) -> str | None:
        self.select_recipe(name, by="the PLC")
        return self.recipe

    @property
    def recipe(self) -> str | None:
        """The active recipe (``None``: the station has none, or has not started)."""
        changeover = getattr(self, "_changeover", None)
        return changeover.active.name if changeover is not None else self.station.recipe

    def _recipe_station(self, item: _Captured) -> Station | InspectionRecord:
        """The part's recipe, its detectors started (waited for), or the part's ERROR record."""
        if item.recipe is None:
            error = item.recipe_error or "the part has no recipe"
            return self._record(item, "ERROR", error=error, error_step="recipe")
        problem = self._changeover.wait(item.recipe, self._abort)
        if problem is not None:
            return self._record(item, "ERROR", error=problem, error_step="recipe")
        return item.recipe.station

    def _lanes_of(self, item: _Captured, begun: Begun) -> list[Any]:
        """The part's step views laid out on the pipeline's lanes (its recipe's)."""
        assert item.recipe is not None
        return item.recipe.views(begun.views, self._pipeline.lanes)

    def _submit(self, record: InspectionRecord, frame: Any = None) -> None:
        self.tally.add(record.verdict, record.latency_ms)
        self.recorder.submit(record, frame)

    # -------------------------------------------------------------- after commit

    def _committed(self, batch: list[InspectionRecord]) -> None:
        """Called by the recorder after each database commit: the sink workers read the store.
        The writer starts (and drains an earlier run's spool) before the delivery exists; its
        workers find those verdicts in the store when they start."""
        self.tally.add_reported(len(batch))
        line = getattr(self, "_line", None)
        if line is not None:  # issue 13: a PLC result only after its verdict is committed
            line.committed(batch)
        delivery = getattr(self, "_delivery", None)
        if delivery is not None:
            delivery.wake()

    # -------------------------------------------------------------- housekeeping

    def _tick(self) -> None:
        self._flush_events()
        if self.on_progress is not None:
            self.on_progress(self.tally)

    def _flush_events(self) -> None:
        """Hand events raised before the recorder existed to it (it writes them)."""
        recorder = getattr(self, "recorder", None)
        if recorder is None:
            return
        if self.run_id is None:  # recorded once the database answered
            self.station_id, self.run_id = recorder.station_id, recorder.run_id
        with self._events_lock:
            pending, self._events = self._events, []
        for _, _at, kind, message in pending:
            recorder.event(kind, message)

    def _end_run(self) -> None:
        """The end of the run and its last events, through the recorder; a run that ends while
        the database is away fails with a line naming the spool and what waits in it."""
        rec = self.recorder
        if not rec.close(
            timeout=ABORT_TIMEOUT_S if self._abort.is_set() else RECORDER_CLOSE_TIMEOUT_S, parts_seen=self._seq
        ):
            msg = f"the recorder did not finish: {rec.close_problem}"
            log.error(msg)
            self.failure = self.failure or msg
        if rec.outage and rec.waiting:
            msg = (
                f"the run ended while store {self.store.display_url} was unreachable: {rec.waiting} verdicts "
                f"wait in the spool {rec.spool_path} and are written when the station next runs with the "
                "database reachable"
            )
            log.error(msg)
            self.failure = self.failure or msg


def _jsonable(meta: dict[Any, Any]) -> dict[str, Any]:
    """Source metadata as the store can keep it (JSON without NaN, NUL or lone surrogates)."""
    return {storable_message(k, 200): _json_value(v) for k, v in meta.items()}


def _json_value(v: Any) -> Any:
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int) and abs(v) < 2**63:
        return v
    if isinstance(v, float) and math.isfinite(v):
        return v
    if isinstance(v, list | tuple) and all(isinstance(x, str | int | float | bool) for x in v):
        return [_json_value(x) for x in v]
    return storable_message(v, 2000)


_hash_cache: dict[tuple[str, float, int], str] = {}


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime, st.st_size)
    if key not in _hash_cache:
        with path.open("rb") as f:
            _hash_cache[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _hash_cache[key]
