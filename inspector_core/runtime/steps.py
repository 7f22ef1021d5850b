"""Step workers: each step's detector in its own thread, with a time budget, and the check of
what it returns.

What a station may rely on (each is tested in ``tests/core/test_runtime_faults.py``):

- A part gets only its own answer. Every request to a detector thread carries a token and every
  answer carries it back; an answer with another token is discarded. An instance that overran
  its budget is abandoned with its queues: nothing it says later is ever read.
- A step that overran gets a fresh detector instance, constructed in its own thread; the next
  part waits for it within its own budget (ERROR "still starting" beyond; abandoned after
  ``START_TIMEOUT_S``). If it cannot start, every following part is ERROR for that step, with
  the reason, and the start is tried again with exponential backoff (``RESTART_BACKOFF_S``);
  the old instance is never reused.
- Threads are bounded: a step holds its live instance and at most ``MAX_STUCK_INSTANCES``
  abandoned ones still running. While that many are stuck, the step spawns nothing and
  reports ERROR ("still stuck") for new parts until one returns.
- ``close()`` of a detector runs in its own (daemon) thread; :func:`close_steps` waits a
  bounded time and reports the instances that did not finish.
- What ``inspect`` returns is checked (:func:`check_findings`): a fault makes the part ERROR
  with a message naming the step's detector and plugin; it never passes a part and never
  reaches the store.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from inspector_core.contract import CannotJudge, Detector, Finding, Pose, View
from inspector_core.runtime.config import Step
from inspector_core.runtime.isolation import IsolatedDetector, WorkerDied, WorkerFailure

log = logging.getLogger(__name__)

MAX_FINDINGS_PER_STEP = 50
"""Findings kept per step and part, the highest scores first."""
MAX_FINDINGS_RETURNED = 10_000
"""More than this from one ``inspect`` call is a fault, not a result."""
MAX_STUCK_INSTANCES = 1
"""Abandoned detector instances of one step that may still be running before it stops spawning."""
START_TIMEOUT_S = 30.0
"""How long a replacement instance may take to construct and warm up before it is abandoned."""
CLOSE_TIMEOUT_S = 5.0
"""How long the station waits for its detectors' ``close()`` at shutdown, all steps together."""
RESTART_BACKOFF_S = (0.5, 30.0)
"""First delay before trying again to start a step whose replacement failed, and the cap."""
_POLL_S = 0.1

Event = Callable[[str, str], None]


class StepStartError(RuntimeError):
    """A step's detector could not be constructed or warmed up."""


class FindingError(ValueError):
    """What a detector returned is not a valid list of findings for its view."""


@dataclasses.dataclass(frozen=True, slots=True)
class StepOutcome:
    """One step's result for one part. ``findings`` are validated, in view coordinates."""

    status: Literal["ok", "error", "timeout", "cannot_judge"]
    findings: list[Finding]
    error: str | None = None
    latency_ms: float | None = None
    raw_score: float | None = None
    """The highest ``Finding.raw_score`` of everything the detector returned, those below the floor
    included (:func:`raw_step_score`); ``None`` when it gave none."""
    pose: Pose | None = None
    """The pose the detector published for this part (``View.publish``), in its view's pixels;
    only with status ``ok``."""
    view: View | None = None
    """The view the step inspected when the host cut it from an earlier step's answer (a fixtured
    ROI, runtime/fixture.py): its findings and pose are in that view's pixels. ``None``: the view
    the part was begun with."""


# ---------------------------------------------------------------------------- one instance


class _Instance:
    """One detector instance and the thread that owns it: constructs it, serves requests one at
    a time, closes it when told to stop (or when it returns from the request it was abandoned
    on)."""

    _serial = itertools.count(1)

    def __init__(self, step: Step, station_dir: Path, make: Callable[[], Detector] | None = None) -> None:
        self.step = step
        self.station_dir = station_dir
        self.make = make or (lambda: step.detector(step.config, station_dir=station_dir))
        self.cpu_ms = 0.0
        """CPU time of the last ``inspect`` in this thread (set before its answer is put)."""
        self.requests: queue.SimpleQueue[tuple[int, View] | None] = queue.SimpleQueue()
        self.answers: queue.SimpleQueue[tuple[int, str, Any]] = queue.SimpleQueue()
        self.ready = threading.Event()
        self.detector: Detector | None = None
        self.start_error: str | None = None
        self.close_error: str | None = None
        self.busy_part: str | None = None
        self.busy_since: float | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True, name=f"step-{step.name}-{next(self._serial)}")
        self.thread.start()

    def _serve(self) -> None:
        try:
            detector = self.make()
            detector.warm_up(None)
        except BaseException as exc:  # noqa: BLE001 - the plugin's failure, reported by the step
            self.start_error = f"{type(exc).__name__}: {exc}"
            self.ready.set()
            return
        self.detector = detector
        self.ready.set()
        while (request := self.requests.get()) is not None:
            token, view = request
            self.busy_part, self.busy_since = view.part_id, time.monotonic()
            cpu0 = time.thread_time()
            try:
                answer: tuple[int, str, Any] = (token, "ok", detector.inspect(view))
            except CannotJudge as exc:  # the detector's own word: this part cannot be judged (ERROR, not a crash)
                answer = (token, "cannot_judge", f"cannot judge: {exc}")
            except WorkerDied as exc:  # an isolated detector's process ended: this instance is done
                answer = (token, "died", str(exc))
            except WorkerFailure as exc:  # an isolated detector raised: its own "Type: message"
                answer = (token, "error", str(exc))
            except BaseException as exc:  # noqa: BLE001 - the plugin's failure is the part's ERROR
                answer = (token, "error", f"{type(exc).__name__}: {exc}")
            self.cpu_ms = (time.thread_time() - cpu0) * 1000
            self.busy_part = self.busy_since = None
            self.answers.put(answer)
            if answer[1] == "died":
                break
            # Drop the frame now, not at the next request: an idle instance holds no image.
            del request, view, answer
        try:
            detector.close()
        except BaseException as exc:  # noqa: BLE001
            self.close_error = f"{type(exc).__name__}: {exc}"

    def stop(self) -> None:
        """No more requests; the thread closes the detector once its current one returns."""
        self.requests.put(None)

    def kill(self) -> None:
        """Stop it now where that is possible: an isolated detector's worker process is killed
        (its thread then returns at once); a thread cannot be stopped and is left to return."""
        if isinstance(self.detector, IsolatedDetector):
            self.detector.terminate()


# ---------------------------------------------------------------------------- one step


class StepWorker:
    """Runs one step's detector in its own thread, so that a step that hangs past its budget
    costs the part it hangs on, not the station.

    ``plugin`` names the plugin that provides the detector (for error messages); ``on_event``
    records what happened to the step in the run's event log; ``abort`` (set on a second
    Ctrl-C) stops waiting for an answer."""

    def __init__(
        self,
        step: Step,
        station_dir: Path,
        *,
        plugin: str | None = None,
        entry_point: str | None = None,
        on_event: Event | None = None,
        abort: threading.Event | None = None,
    ) -> None:
        self.step = step
        self.station_dir = station_dir
        self.who = f"detector {step.detector.name!r}" + (f" (plugin {plugin!r})" if plugin else "")
        self._args = (plugin, entry_point, on_event, abort)
        self.replicas: list[StepWorker] = []
        """More workers of the same step (``steps[i].parallel`` - 1 of them, `start_replicas`): the
        pipeline gives each its share of the parts; they stop and close with this one."""
        self._make: Callable[[], Detector] | None = None
        if step.isolation == "process":
            # ``entry_point``: the plugin's entry-point name, which the worker imports it by.
            self._make = lambda: IsolatedDetector(
                step.detector,
                step.config,
                station_dir=station_dir,
                entry_point=entry_point,
                who=self.who,
                start_timeout_s=START_TIMEOUT_S,
            )
        self.calls = 0
        self.cpu_ms = 0.0
        """CPU time of the calls answered, in the threads that ran ``inspect`` (for an isolated
        step: the station's side, the copy into shared memory and the pipe)."""
        self.worker_cpu_ms = 0.0
        """For an isolated step: CPU time of ``inspect`` in its worker processes."""
        self.on_event: Event = on_event or (lambda kind, message: None)
        self.abort = abort or threading.Event()
        budget = step.budget_ms
        # A budget that is not a positive finite number (refused at validation) means no limit
        # here rather than a crash: an infinite timeout overflows queue.get().
        self.budget_s = budget / 1000.0 if math.isfinite(budget) and budget > 0 else math.inf
        self._tokens = itertools.count(1)
        self._stuck: list[_Instance] = []
        self._starting: _Instance | None = None
        self._starting_since = 0.0
        self._failures = 0
        self._next_start = 0.0
        self._unavailable: str | None = None
        first = _Instance(step, station_dir, self._make)
        first.ready.wait()
        if first.start_error is not None:
            raise StepStartError(first.start_error)
        self._live: _Instance | None = first

    @property
    def detector(self) -> Detector | None:
        """The live detector instance, or ``None`` while the step has none."""
        return self._live.detector if self._live is not None else None

    @property
    def threads(self) -> int:
        """Threads this step holds: its live (or starting) instance and abandoned ones still running."""
        self._prune()
        return sum(1 for i in self._instances() if i.thread.is_alive())

    def run(self, view: View) -> StepOutcome:
        """Inspect one part's view within the step's budget; never raises for the plugin's fault."""
        t0 = time.perf_counter()
        deadline = t0 + self.budget_s
        instance = self._available(deadline)
        if isinstance(instance, str):
            return StepOutcome("error", [], instance, _ms(t0))
        token = next(self._tokens)
        instance.requests.put((token, view))
        while (remaining := deadline - time.perf_counter()) > 0:
            try:
                got, status, value = instance.answers.get(timeout=min(remaining, _POLL_S))
            except queue.Empty:
                if self.abort.is_set():
                    self._abandon(instance)
                    return StepOutcome(
                        "error",
                        [],
                        "not finished: the station was stopped while this step was inspecting the part",
                        _ms(t0),
                    )
                continue
            if got != token:
                log.warning(
                    "step %s: discarding an answer for request %s while waiting for %s", self.step.name, got, token
                )
                continue
            self.calls += 1
            self.cpu_ms += instance.cpu_ms
            if isinstance(instance.detector, IsolatedDetector):
                self.worker_cpu_ms = sum(
                    i.detector.worker_cpu_ms for i in self._instances() if isinstance(i.detector, IsolatedDetector)
                )
            if status == "died":
                self._replace_dead(instance, value)
                return StepOutcome("error", [], value, _ms(t0))
            if status != "ok":
                return StepOutcome("cannot_judge" if status == "cannot_judge" else "error", [], value, _ms(t0))
            try:
                findings = check_findings(value, self.step, view.image.shape)
            except FindingError as exc:
                return StepOutcome("error", [], f"{self.who} returned an invalid result: {exc}", _ms(t0))
            return StepOutcome("ok", findings, None, _ms(t0), raw_step_score(value), view.published)
        elapsed = _ms(t0)
        log.warning(
            "step %s overran its budget of %g ms on part %s; starting a fresh detector instance (a slow first "
            "call: do that work in the detector's warm_up(); else raise steps[].budget_ms)",
            self.step.name,
            self.step.budget_ms,
            view.part_id,
        )
        self._abandon(instance)
        self._start()
        return StepOutcome("timeout", [], f"overran its time budget of {self.step.budget_ms:g} ms", elapsed)

    def start_replicas(self, count: int) -> None:
        """Start ``count`` more workers of this step, each with a detector instance of its own (warmed
        as this one was); raises :class:`StepStartError` as the constructor does (those already
        started are kept in `replicas`, for `close` to stop)."""
        plugin, entry_point, on_event, abort = self._args
        for _ in range(count):
            self.replicas.append(
                StepWorker(
                    self.step, self.station_dir, plugin=plugin, entry_point=entry_point, on_event=on_event, abort=abort
                )
            )

    def stop(self) -> None:
        """Tell every instance to close its detector (each in its own thread), the replicas' too."""
        for inst in self._instances():
            inst.stop()
        for r in self.replicas:
            r.stop()

    def _instances(self) -> list[_Instance]:
        return [i for i in (self._live, self._starting) if i is not None] + self._stuck

    def unfinished(self) -> list[str]:
        """After :meth:`stop`: what has not closed yet, or closed with an error."""
        out = []
        for inst in self._instances():
            if inst.thread.is_alive():
                doing = (
                    "still starting"
                    if not inst.ready.is_set()
                    else f"still inspecting part {inst.busy_part!r}"
                    if inst.busy_part is not None
                    else "in close()"
                )
                out.append(f"step {self.step.name}: {self.who} did not finish ({doing})")
            elif inst.close_error:
                out.append(f"step {self.step.name}: {self.who} close() failed: {inst.close_error}")
        for r in self.replicas:
            out.extend(r.unfinished())
        return out

    def close(self, timeout: float | None = None) -> list[str]:
        """Stop and wait at most ``timeout`` s (default :data:`CLOSE_TIMEOUT_S`); what did not
        finish (see :func:`close_steps`)."""
        return close_steps([self], timeout)

    def join(self, deadline: float) -> None:
        for inst in self._instances():
            inst.thread.join(max(0.0, deadline - time.monotonic()))
        for r in self.replicas:
            r.join(deadline)

    # -------------------------------------------------------------- replacement

    def _prune(self) -> None:
        self._stuck = [i for i in self._stuck if i.thread.is_alive()]

    def _abandon(self, instance: _Instance) -> None:
        if instance is self._live:
            self._live = None
        instance.stop()
        instance.kill()
        self._stuck.append(instance)

    def _replace_dead(self, instance: _Instance, why: str) -> None:
        """An isolated detector's worker died: record it and start a fresh one for the next part."""
        if instance is self._live:
            self._live = None
        instance.stop()
        log.error("step %s: %s", self.step.name, why)
        self.on_event("step_worker_died", f"step {self.step.name}: {why}")
        self._start()

    def _available(self, deadline: float) -> _Instance | str:
        """The live instance, waiting for a starting one until ``deadline`` (perf_counter);
        otherwise why the step cannot run now."""
        self._prune()
        if self._live is not None:
            return self._live
        if self._starting is None:
            if len(self._stuck) > MAX_STUCK_INSTANCES:
                oldest = self._stuck[0]
                since = f" for {time.monotonic() - oldest.busy_since:.0f} s" if oldest.busy_since else ""
                on = f" on part {oldest.busy_part!r}" if oldest.busy_part is not None else ""
                return (
                    f"still stuck: {len(self._stuck)} earlier instances of {self.who} have not returned "
                    f"(the oldest{on}{since}); the step is not run until one returns"
                )
            if time.monotonic() < self._next_start:
                return f"{self._unavailable}; next attempt in {self._next_start - time.monotonic():.1f} s"
            self._start()
        starting = self._starting
        assert starting is not None
        while not starting.ready.wait(min(_POLL_S, max(0.0, deadline - time.perf_counter()))):
            if time.monotonic() - self._starting_since > START_TIMEOUT_S:
                self._starting = None
                starting.stop()
                self._stuck.append(starting)
                return self._failed(f"a fresh instance of {self.who} did not start within {START_TIMEOUT_S:g} s")
            if time.perf_counter() >= deadline or self.abort.is_set():
                return (
                    f"a fresh instance of {self.who} is still starting "
                    f"({time.monotonic() - self._starting_since:.1f} s so far)"
                )
        self._starting = None
        if starting.start_error is not None:
            return self._failed(f"a fresh instance of {self.who} failed to start: {starting.start_error}")
        self._live = starting
        if self._failures:
            msg = f"step {self.step.name}: {self.who} started again after {self._failures} failed attempt(s)"
            log.warning(msg)
            self.on_event("step_recovered", msg)
        self._failures, self._unavailable = 0, None
        return starting

    def _start(self) -> None:
        """Begin constructing a fresh instance in its own thread (the next part waits for it,
        within its budget); nothing while too many abandoned instances are still stuck."""
        self._prune()
        if self._starting is not None or len(self._stuck) > MAX_STUCK_INSTANCES:
            return
        self._starting = _Instance(self.step, self.station_dir, self._make)
        self._starting_since = time.monotonic()

    def _failed(self, reason: str) -> str:
        """The step is unavailable until the next attempt, which backs off exponentially."""
        self._failures += 1
        first, cap = RESTART_BACKOFF_S
        delay = min(cap, first * 2 ** (self._failures - 1))
        self._next_start = time.monotonic() + delay
        self._unavailable = reason
        msg = f"step {self.step.name}: {reason}; its parts are ERROR until it starts (next attempt in {delay:g} s)"
        log.error(msg)
        self.on_event("step_unavailable", msg)
        return f"{reason}; next attempt in {delay:.1f} s"


def close_steps(workers: Sequence[StepWorker], timeout: float | None = None) -> list[str]:
    """Close every step's detectors in parallel, waiting at most ``timeout`` seconds in all
    (default :data:`CLOSE_TIMEOUT_S`). Returns what did not finish in time or failed, one line
    each, for the run's event log."""
    for w in workers:
        w.stop()
    deadline = time.monotonic() + (CLOSE_TIMEOUT_S if timeout is None else timeout)
    for w in workers:
        w.join(deadline)
    return [problem for w in workers for problem in w.unfinished()]


_StepWorker = StepWorker  # the name the station used before


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


# ---------------------------------------------------------------------------- the output check


def check_findings(value: Any, step: Step, view_shape: tuple[int, ...]) -> list[Finding]:
    """Validate what ``inspect`` returned for a view of ``view_shape`` and return the host's own
    copies (the detector's objects are never modified), the highest scores first, at most
    :data:`MAX_FINDINGS_PER_STEP`, those below the step's floor (:attr:`Step.floor`) left out.

    Every field is checked again even though :class:`Finding` checks itself when built, since a
    dataclass can be changed after: a score must be a finite number in [0, 1], a box four
    finite numbers with non-negative width and height, a mask a 2-D ``uint8``/``bool`` array of
    the box's shape, a message a ``str``, ``size_px`` and measurements finite numbers.

    A box partly outside the view is clipped to it (its mask with it): the part of a defect the
    detector saw is still evidence. A box wholly outside the view is refused: the detector did
    not see it. Raises :class:`FindingError` naming the finding by its index."""
    if not isinstance(value, list | tuple):
        raise FindingError(f"inspect() must return a list of Finding (got {type(value).__name__})")
    if len(value) > MAX_FINDINGS_RETURNED:
        raise FindingError(f"{len(value)} findings; at most {MAX_FINDINGS_RETURNED} are accepted from one call")
    vh, vw = int(view_shape[0]), int(view_shape[1])
    kinds = step.detector.kinds
    out: list[Finding] = []
    for i, f in enumerate(value):
        if not isinstance(f, Finding):
            raise FindingError(f"finding [{i}] is a {type(f).__name__}, not a Finding")
        try:
            # The base class, built field by field: its __post_init__ checks and normalises.
            g = Finding(f.kind, f.score, f.box, f.message, f.size_px, f.measurements, f.mask, f.raw_score)
        except (TypeError, ValueError, OverflowError) as exc:
            raise FindingError(f"finding [{i}]: {exc}") from None
        if g.kind not in kinds:
            raise FindingError(f"finding [{i}] is of kind {g.kind!r}, not among its declared kinds {kinds}")
        x, y, w, h = g.box
        x0, y0, x1, y1 = max(0, x), max(0, y), min(vw, x + w), min(vh, y + h)
        if x1 < x0 or y1 < y0 or (w > 0 and x1 == x0) or (h > 0 and y1 == y0):
            raise FindingError(f"finding [{i}]: box {g.box} lies wholly outside the {vw}x{vh} view")
        if (x0, y0, x1 - x0, y1 - y0) != g.box:
            g.box = (x0, y0, x1 - x0, y1 - y0)
            if g.mask is not None:
                g.mask = g.mask[y0 - y : y1 - y, x0 - x : x1 - x]
        out.append(g)
    floor = step.floor
    kept = sorted((g for g in out if g.score >= floor), key=lambda g: -g.score)
    return kept[:MAX_FINDINGS_PER_STEP]


def raw_step_score(value: Any) -> float | None:
    """The highest ``raw_score`` among findings :func:`check_findings` accepted (call it after):
    below the floor too, where the step's normalised score is 0, so a part is still ranked."""
    raws = [f.raw_score for f in value if f.raw_score is not None]
    return max(raws) if raws else None
