"""The station: one part from the camera to a recorded, reported verdict.

Three stages overlap, each in its own thread, joined by bounded queues::

    capture (source.frames)  --queue(overload.queue_size)-->  inspect (steps, verdict, crops)
        --> Recorder (group commit, spool)  --> outbox: one worker per sink (runtime/delivery.py)

Promises kept here (each is tested in tests/):
- every frame the source yields leaves as exactly one recorded inspection: PASS, FAIL, ERROR
  (a corrupt image, a step that raised or overran its budget), or NOT_INSPECTED (dropped
  under the ``drop-oldest`` overload policy);
- a verdict reaches a sink only after it is committed, at least once, from the store (each
  sink has its own worker and cursor, so a restart resumes and a slow sink delays no other);
- SIGINT/SIGTERM stop the capture, drain the queues and commit before exit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
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

import numpy as np

import inspector_core
from inspector_core.contract import (
    Calibration,
    Finding,
    Frame,
    Sink,
    SourceContext,
    View,
)
from inspector_core.plugins import Registry
from inspector_core.runtime.config import Station, Step
from inspector_core.runtime.crops import encode_crop
from inspector_core.runtime.delivery import Delivery, sink_keys
from inspector_core.runtime.progress import Tally
from inspector_core.runtime.rules import failing, verdict
from inspector_core.runtime.steps import _findings, _StepWorker
from inspector_core.store import (
    DefectRecord,
    InspectionRecord,
    Recorder,
    StepRecord,
    Store,
    StoreError,
)
from inspector_core.store.outbox import Outbox

log = logging.getLogger(__name__)

class StationError(RuntimeError):
    """The station cannot start or had to stop; the message says why and what to do."""



# ---------------------------------------------------------------------------- the runtime


@dataclasses.dataclass
class _Captured:
    frame: Frame
    seq: int
    uid: str
    t0: float


class StationRuntime:
    """One run of one station. ``run()`` blocks until the source ends, ``limit`` parts were
    captured, or ``stop()`` is called (SIGINT/SIGTERM call it)."""

    def __init__(self, station: Station, registry: Registry, *, limit: int | None = None,
                 on_progress: Callable[[Tally], None] | None = None) -> None:
        self.station = station
        self.registry = registry
        self.limit = limit
        self.on_progress = on_progress
        self.tally = Tally()
        self._stop = threading.Event()
        self._events: list[tuple[int, datetime, str, str]] = []
        self._events_lock = threading.Lock()
        self.run_id: int | None = None
        self.failure: str | None = None

    # -------------------------------------------------------------- public

    def stop(self) -> None:
        self._stop.set()
        source = getattr(self, "_source", None)
        if source is not None:
            try:
                source.close()
            except Exception:  # noqa: BLE001
                log.exception("closing the source")

    def event(self, kind: str, message: str) -> None:
        with self._events_lock:
            self._events.append((self.run_id or 0, datetime.now(UTC), kind, message))

    def run(self) -> Tally:
        st = self.station
        try:
            self.store = Store(st.store_url)
        except StoreError as exc:
            raise StationError(f"station {st.path.name}: {exc}") from exc
        workers = self._start_steps()
        sinks = self._start_sinks(workers)
        self._source = self._start_source(workers, sinks)
        try:
            self.station_id, self.run_id = self.store.begin_run(
                st.name, hostname=socket.gethostname(), software_version=inspector_core.__version__,
                plugins=self._provenance_plugins(), config_yaml=st.text, config_hash=st.config_hash,
                models=self._provenance_models(workers),
            )
        except Exception as exc:
            for w in workers:
                w.close()
            raise StationError(f"station {st.path.name}: cannot record the run in {self.store.display_url}: {exc}") from exc

        spool = None
        if not self.store.is_sqlite:
            spool_dir = Path(st.spec.store.spool) if st.spec.store.spool else st.directory / ".spool"
            if not spool_dir.is_absolute():
                spool_dir = st.directory / spool_dir
            spool = spool_dir / f"{st.name}.spool.db"
        # Before the recorder's first commit, so a new sink's cursor starts before this run's verdicts.
        self._delivery = Delivery(list(zip(self._sink_keys, sinks, strict=True)), Outbox(self.store, st.name),
                                  on_event=self.event, run_id=lambda: self.run_id)
        self._delivery.start()
        self.recorder = Recorder(self.store, on_committed=self._committed, spool_path=spool,
                                 on_event=self.event)
        self.recorder.start()

        self._queue: queue.Queue[_Captured | None] = queue.Queue(maxsize=st.spec.overload.queue_size)
        self._queue_lock = threading.Lock()
        self._seq = 0
        capture = threading.Thread(target=self._capture_loop, name="inspector-capture", daemon=True)
        inspect = threading.Thread(target=self._inspect_loop, args=(workers,), name="inspector-inspect", daemon=True)
        restore = self._install_signals()
        try:
            capture.start()
            inspect.start()
            while inspect.is_alive():
                inspect.join(0.25)
                self._tick()
                if self.recorder.error is not None and not self._stop.is_set():
                    self.failure = f"the store failed: {self.recorder.error}"
                    self.stop()
            capture.join(5)
        finally:
            restore()
            self.recorder.close()
            self._delivery.close()
            for w in workers:
                w.close()
            self._flush_events()
            try:
                self.store.end_run(self.run_id, self._seq)
            except Exception as exc:  # noqa: BLE001
                log.warning("could not record the end of run %s: %s", self.run_id, exc)
            self.store.close()
            self._tick()
        if self.recorder.error is not None:
            raise StationError(f"station {st.path.name}: stopped because the store failed: {self.recorder.error}; "
                               f"verdicts committed before it: {self.recorder.committed}")
        return self.tally

    # -------------------------------------------------------------- start-up

    def _start_steps(self) -> list[_StepWorker]:
        workers = []
        for step in self.station.steps:
            try:
                workers.append(_StepWorker(step, self.station.directory))
            except Exception as exc:
                for w in workers:
                    w.close()
                raise StationError(
                    f"station {self.station.path.name}: steps[{step.index}] ({step.name}): detector "
                    f"{step.detector.name!r} failed to start: {type(exc).__name__}: {exc}") from exc
        return workers

    def _start_sinks(self, workers: list[_StepWorker]) -> list[Sink]:
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
                raise StationError(f"station {self.station.path.name}: sinks[{i}] ({cls.name}) failed to start: "
                                   f"{type(exc).__name__}: {exc}") from exc
        return sinks

    def _start_source(self, workers: list[_StepWorker], sinks: list[Sink]):
        st = self.station
        try:
            context = SourceContext(st.directory, self.event,
                                    recorded=lambda part_ids: self.store.recorded_part_ids(st.name, part_ids))
            return st.source(st.source_config, context)
        except Exception as exc:
            for w in workers:
                w.close()
            for s in sinks:
                s.close()
            raise StationError(f"station {st.path.name}: source ({st.source.name}) failed to start: "
                               f"{type(exc).__name__}: {exc}") from exc

    def _provenance_plugins(self) -> dict[str, Any]:
        used = [("source", self.station.source.name)]
        used += [("detector", s.detector.name) for s in self.station.steps]
        used += [("sink", cls.name) for cls, _ in self.station.sinks]
        out: dict[str, Any] = {}
        for what, name in used:
            info = self.registry.plugin_of(what, name)
            if info is not None:
                out[info.name] = {"distribution": info.distribution, "version": info.version, "module": info.module}
        return out

    def _provenance_models(self, workers: list[_StepWorker]) -> dict[str, Any]:
        out = {}
        for w in workers:
            for label, path in w.detector.files().items():
                out[f"{w.step.name}/{label}"] = {"path": str(path), "sha256": _sha256(Path(path))}
        return out

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, _frame: Any) -> None:
            log.warning("%s: stopping capture, draining and committing", signal.Signals(signum).name)
            self.stop()

        for s in previous:
            signal.signal(s, handler)
        return lambda: [signal.signal(s, h) for s, h in previous.items()] and None

    # -------------------------------------------------------------- capture

    def _capture_loop(self) -> None:
        st = self.station
        try:
            for frame in self._source.frames():
                if self._stop.is_set():
                    break
                item = _Captured(frame, self._seq, uuid.uuid4().hex, time.perf_counter())
                self._seq += 1
                self._enqueue(item)
                if self.limit is not None and self._seq >= self.limit:
                    break
        except Exception as exc:  # noqa: BLE001
            msg = f"source {st.source.name} failed: {type(exc).__name__}: {exc}"
            log.error(msg)
            self.event("source_failed", msg)
            self.failure = msg
        finally:
            self._queue.put(None)

    def _enqueue(self, item: _Captured) -> None:
        if self.station.spec.overload.policy == "wait":
            self._queue.put(item)
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
        self._submit(self._record(item, "NOT_INSPECTED", error="dropped: the inspection queue was full "
                                  f"(overload policy drop-oldest, queue_size {self.station.spec.overload.queue_size})"))

    # -------------------------------------------------------------- inspect

    def _inspect_loop(self, workers: list[_StepWorker]) -> None:
        while (item := self._queue.get()) is not None:
            try:
                record = self._inspect(item, workers)
            except Exception as exc:  # noqa: BLE001 - the host's own bug must still record the part
                log.exception("inspecting part %s", item.frame.part_id)
                record = self._record(item, "ERROR", error=f"host error: {type(exc).__name__}: {exc}")
            self._submit(record)

    def _inspect(self, item: _Captured, workers: list[_StepWorker]) -> InspectionRecord:
        frame = item.frame
        image = frame.image
        if frame.error is not None or image is None:
            return self._record(item, "ERROR", error=frame.error or "the source gave no image", error_step="source")
        problem = _check_image(image)
        if problem:
            return self._record(item, "ERROR", error=problem, error_step="source")
        calibration = Calibration(self.station.spec.calibration.mm_per_px)
        steps: list[StepRecord] = []
        found: list[tuple[Step, Finding]] = []
        errors: list[tuple[str, str]] = []
        h, w = image.shape[:2]
        for worker in workers:
            step = worker.step
            ox, oy = (step.roi.x, step.roi.y) if step.roi else (0, 0)
            if step.roi and (step.roi.x + step.roi.width > w or step.roi.y + step.roi.height > h):
                msg = f"roi {step.roi.x},{step.roi.y} {step.roi.width}x{step.roi.height} lies outside the {w}x{h} frame"
                steps.append(StepRecord(step.index, step.name, step.detector.name, "error", None, None, 0, msg))
                errors.append((step.name, msg))
                continue
            sub = image[oy:oy + step.roi.height, ox:ox + step.roi.width] if step.roi else image
            view = View(sub, frame.part_id, (ox, oy), calibration, frame.meta)
            status, value, ms = worker.run(view)
            if status == "ok":
                try:
                    findings = _findings(value, step)
                except Exception as exc:  # noqa: BLE001
                    status, value = "error", f"{type(exc).__name__}: {exc}"
            if status != "ok":
                steps.append(StepRecord(step.index, step.name, step.detector.name, status, None, ms, 0, value))
                errors.append((step.name, value))
                continue
            for f in findings:
                x, y, bw, bh = f.box
                f.box = (x + ox, y + oy, bw, bh)
                found.append((step, f))
            score = max((f.score for f in findings), default=0.0)
            steps.append(StepRecord(step.index, step.name, step.detector.name, "ok", score, ms, len(findings)))

        spec = self.station.spec
        judged = [_Judged(f.kind, f.score, f.size_px, _mm(f.size_px, calibration)) for _, f in found]
        failed = failing(judged, spec.rules, spec.default_rule)
        v = verdict(failed, len(errors))
        policy = spec.store.crops
        defects = []
        for (step, f), j, fail in zip(found, judged, failed, strict=True):
            crop = None
            if policy.save == "all" or (policy.save == "failed" and fail):
                crop = encode_crop(image, f.box, policy)
            defects.append(DefectRecord(step.name, step.detector.name, f.kind, float(f.score), fail, f.box,
                                        _float(f.size_px), _float(j.size_mm),
                                        {k: float(x) for k, x in f.measurements.items()}, f.message, crop))
        error = "; ".join(f"step {name}: {msg}" for name, msg in errors) or None
        record = self._record(item, v, error=error, error_step=errors[0][0] if errors else None)
        record.steps, record.defects = steps, defects
        return record

    def _record(self, item: _Captured, verdict_: str, *, error: str | None = None,
                error_step: str | None = None) -> InspectionRecord:
        now = datetime.now(UTC)
        latency = (time.perf_counter() - item.t0) * 1000 if verdict_ != "NOT_INSPECTED" else None
        return InspectionRecord(
            uid=item.uid, station_id=self.station_id, run_id=self.run_id, seq=item.seq,
            part_id=item.frame.part_id, captured_at=item.frame.captured_at, decided_at=now,
            verdict=verdict_, latency_ms=latency, error=error, error_step=error_step,
            source_meta=_jsonable(item.frame.meta) or None,
        )

    def _submit(self, record: InspectionRecord) -> None:
        self.tally.add(record.verdict, record.latency_ms)
        self.recorder.submit(record)

    # -------------------------------------------------------------- after commit

    def _committed(self, batch: list[InspectionRecord]) -> None:
        """Called by the recorder after each database commit: the sink workers read the store."""
        self.tally.reported += len(batch)
        self._delivery.wake()

    # -------------------------------------------------------------- housekeeping

    def _tick(self) -> None:
        self._flush_events()
        if self.on_progress is not None:
            self.on_progress(self.tally)

    def _flush_events(self) -> None:
        with self._events_lock:
            pending, self._events = self._events, []
        if not pending or self.run_id is None:
            with self._events_lock:
                self._events[:0] = pending
            return
        try:
            self.store.add_events([(self.run_id, at, k, m) for _, at, k, m in pending])
        except Exception:  # noqa: BLE001 - unreachable database: keep them for later
            with self._events_lock:
                self._events[:0] = pending


@dataclasses.dataclass(slots=True)
class _Judged:
    kind: str
    score: float
    size_px: float | None
    size_mm: float | None


def _mm(px: float | None, cal: Calibration) -> float | None:
    return None if px is None or cal.mm_per_px is None else float(px) * cal.mm_per_px


def _float(v: float | None) -> float | None:
    return None if v is None else float(v)


def _check_image(image: Any) -> str | None:
    if not isinstance(image, np.ndarray):
        return f"the source gave a {type(image).__name__}, not an image array"
    if image.dtype != np.uint8:
        return f"the source gave an image of dtype {image.dtype}; expected uint8"
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3) or image.size == 0:
        return f"the source gave an image of shape {image.shape}; expected (H, W) or (H, W, 3)"
    return None


def _jsonable(meta: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in meta.items():
        if isinstance(v, str | int | float | bool) or v is None:
            out[str(k)] = v
        elif isinstance(v, list | tuple) and all(isinstance(x, str | int | float | bool) for x in v):
            out[str(k)] = list(v)
        else:
            out[str(k)] = str(v)
    return out


_hash_cache: dict[tuple[str, float, int], str] = {}


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime, st.st_size)
    if key not in _hash_cache:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _hash_cache[key] = h.hexdigest()
    return _hash_cache[key]
