"""The steps of consecutive parts, overlapped on the station's cores.

Each step has a lane: one thread that takes the parts in capture order and calls its
:class:`~inspector_core.runtime.steps.StepWorker` for each (a step with ``parallel: N`` has N
such runners, each with a worker and a detector instance of its own, taking every N-th part).
Lanes run side by side, so step 1 of part n+1 runs while step 3 of part n does; a core gate
lets at most ``workers`` detector calls run at once and gives a free core to the oldest part
waiting, and among the steps of that part to the one that has been taking longest (its critical
path: the part's last step to finish is then not the long one started last). numpy, OpenCV and
onnxruntime release the GIL, so the threads overlap for real.

What the station may rely on (tested in ``tests/core/test_overlap.py``):

- One step sees the parts in capture order, one at a time: a :class:`StepWorker` is never
  called from two threads, so its tokens, budgets and replacement of a hung detector work as
  they did when the steps ran one after another. A step with ``parallel: N`` (``steps[i]``)
  inspects up to N parts at once, part k by its runner k mod N: each runner (its own worker and
  detector instance) sees its parts in capture order, one at a time.
- :meth:`Pipeline.results` yields the parts in the order they were put, each once, when every
  step has answered for it: verdicts reach the recorder in capture order.
- At most ``window`` parts are in the pipeline; :meth:`Pipeline.put` waits beyond that, so the
  station's capture queue (and its overload policy) still holds the frames waiting.
- Lanes added by :meth:`Pipeline.add_lanes` (a recipe's steps, started before a changeover)
  take only the parts put after them; the parts already in the pipeline keep their lanes.
- After ``abort`` (a second Ctrl-C) a lane starts no step: a part none of whose steps had
  started is reported ``started=False`` (the station records it NOT_INSPECTED), a step that had
  not started on a started part is an error "not run".
- A step whose view depends on an earlier step of the same part (a :class:`Deferred` view: a
  fixtured ROI, runtime/fixture.py) waits for that step's answer *before* it asks the gate for a
  core, so it never holds a core the earlier step needs (``workers: 1`` cannot deadlock: within a
  part the waits follow the step order, and every lane takes the parts in order); then it cuts
  its view (holding a core: a warp is work) and hands it back with its answer
  (``StepOutcome.view``), for whoever judges the part to map its findings into frame pixels.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from inspector_core.contract import View
from inspector_core.runtime.steps import StepOutcome, StepWorker

_POLL_S = 0.1
NOT_RUN = "not run: the station was stopped before this step"


def default_workers() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class CoreGate:
    """At most ``cores`` holders at once; a free core goes to the waiter with the lowest key
    (the oldest part), among equal keys to the lowest ``rank`` (the lane's longest step first),
    then to the first to ask, never to whichever thread woke first."""

    def __init__(self, cores: int) -> None:
        self.cores = cores
        self._free = cores
        self._waiting: list[tuple[int, float, int]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()

    def acquire(self, key: int, abort: threading.Event, rank: float = 0.0) -> bool:
        """Wait for a core; ``False`` (holding none) if ``abort`` was set meanwhile."""
        with self._cond:
            me = (key, rank, next(self._order))
            heapq.heappush(self._waiting, me)
            while not (self._free > 0 and self._waiting[0] == me):
                if abort.is_set():
                    self._waiting.remove(me)
                    heapq.heapify(self._waiting)
                    self._cond.notify_all()
                    return False
                self._cond.wait(_POLL_S)
            heapq.heappop(self._waiting)
            self._free -= 1
            self._cond.notify_all()
            return True

    def release(self) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify_all()

    def keep(self, key: int, rank: float = 0.0) -> bool:
        """A holder done with its call keeps its core for a next one of ``key`` and ``rank`` if no
        waiter comes before it (``True``); else the core is released (``False``) and the holder
        asks again as any other. So a lane whose next part is the oldest does not lose its core
        to a younger part's step that happened to be waiting when it finished."""
        with self._cond:
            if not self._waiting or (key, rank) < self._waiting[0][:2]:
                return True
            self._free += 1
            self._cond.notify_all()
            return False


@dataclasses.dataclass(frozen=True, eq=False)
class Deferred:
    """A step's view that can be cut only once an earlier step of the same part has answered.

    ``after`` is that step's entry in the part's views (the very object: found by identity when
    the part is put, wherever its views are laid out on the lanes). ``cut(its outcome, the view
    it saw)`` gives this step's view, or why there is none (the step is then an error with that
    message, and not run)."""

    after: View | Deferred
    cut: Callable[[StepOutcome, View], View | str]


@dataclasses.dataclass(eq=False)
class Job:
    """One part in the pipeline: what each step sees (a :class:`View`, a :class:`Deferred` one,
    or ``None`` for a step the station does not run on this part) and, once done, what each step
    answered (a :class:`Deferred` step's answer carries the view it cut, ``StepOutcome.view``)."""

    seq: int
    payload: Any
    views: list[View | Deferred | None]
    outcomes: list[StepOutcome | None]
    started: bool = False
    """Whether any step began inspecting this part."""
    _left: int = 0
    _done: threading.Event = dataclasses.field(default_factory=threading.Event)
    _answered: list[bool] = dataclasses.field(default_factory=list)
    _after: dict[int, int] = dataclasses.field(default_factory=dict)
    """Lane of a :class:`Deferred` view -> lane of the step it waits for."""


@dataclasses.dataclass
class LaneTimes:
    """Where one lane's time went (seconds since it started), for ``bench/line_rate.py``: why a
    core idles. ``idle``: no part for this step yet (the window, or the source); ``after``: a
    :class:`Deferred` view waiting for its earlier step; ``gate``: waiting for a core;
    ``busy``: holding one (the step, its check and hand-off)."""

    parts: int = 0
    idle: float = 0.0
    after: float = 0.0
    gate: float = 0.0
    busy: float = 0.0


EXPECTED_WEIGHT = 0.2
"""Weight of the newest part in a lane's running mean of its step's latency (the gate's rank)."""


class _Lane:
    """One step's lane: a runner per worker of the step (its own and its replicas,
    ``steps[i].parallel``), part k to runner k mod N, so each takes its parts in capture order."""

    def __init__(self, index: int, worker: StepWorker, pipeline: Pipeline) -> None:
        self.index = index
        self.worker = worker
        self.runners = [_Runner(index, w, pipeline, k) for k, w in enumerate([worker, *worker.replicas])]
        self._next = 0  # put is called by one thread (the parts in capture order)

    def put(self, job: Job | None) -> None:
        if job is None:  # the end: every runner stops
            for r in self.runners:
                r.put(None)
            return
        self.runners[self._next % len(self.runners)].put(job)
        self._next += 1

    def start(self) -> None:
        for r in self.runners:
            r.thread.start()


class _Runner:
    def __init__(self, index: int, worker: StepWorker, pipeline: Pipeline, number: int = 0) -> None:
        self.index = index
        self.worker = worker
        self.pipeline = pipeline
        self.name = worker.step.name + (f"#{number + 1}" if number else "")
        self.jobs: collections.deque[Job | None] = collections.deque()
        self.ready = threading.Semaphore(0)
        self.times = LaneTimes()
        self.expected_ms = 0.0
        """Running mean of this step's latency: the longer a part's step, the sooner it gets a core."""
        self.thread = threading.Thread(target=self._run, name=f"inspector-lane-{self.name}", daemon=True)

    def put(self, job: Job | None) -> None:
        self.jobs.append(job)
        self.ready.release()

    def _run(self) -> None:
        p = self.pipeline
        times = self.times
        clock = time.perf_counter
        held = False  # the core of the last call, kept for this part (CoreGate.keep)
        while True:
            t0 = clock()
            self.ready.acquire()
            job = self.jobs.popleft()
            if job is None:
                if held:
                    p.gate.release()
                return
            t1 = clock()
            times.idle += t1 - t0
            entry = job.views[self.index]
            outcome: StepOutcome | None = None
            earlier = self._earlier(job, entry) if isinstance(entry, Deferred) else None
            t2 = clock()
            times.after += t2 - t1
            if held and (entry is None or isinstance(earlier, StepOutcome) or p.abort.is_set()):
                p.gate.release()
                held = False
            if isinstance(earlier, StepOutcome):
                outcome = earlier
            elif entry is not None:
                granted = held or (not p.abort.is_set() and p.gate.acquire(job.seq, p.abort, -self.expected_ms))
                held = False
                t3 = clock()
                times.gate += t3 - t2
                if not granted:
                    outcome = StepOutcome("error", [], NOT_RUN)
                else:
                    try:
                        view = self._cut(job, entry) if isinstance(entry, Deferred) else entry
                        if isinstance(view, str):
                            outcome = StepOutcome("error", [], view, 0.0)
                        else:
                            job.started = True
                            outcome = self.worker.run(view)
                            if isinstance(entry, Deferred):  # its findings are in this view's pixels
                                outcome = dataclasses.replace(outcome, view=view)
                        del view
                    except Exception as exc:  # noqa: BLE001 - the host's bug is this part's ERROR
                        outcome = StepOutcome("error", [], f"host error: {type(exc).__name__}: {exc}", 0.0)
                    finally:
                        held = self._keep_core(job)
                        times.busy += clock() - t3
                        times.parts += 1
                    if outcome is not None and outcome.status == "ok" and outcome.latency_ms is not None:
                        w = EXPECTED_WEIGHT if self.expected_ms else 1.0
                        self.expected_ms += w * (outcome.latency_ms - self.expected_ms)
            del entry
            p._answered(job, self.index, outcome)

    def _keep_core(self, job: Job) -> bool:
        """After a call on ``job``: keep the core if this lane's next part is already here, needs no
        earlier step's answer, and comes before every waiter (:meth:`CoreGate.keep`); else release
        it. Never when a fixtured step of ``job`` waits for this answer: it is about to ask."""
        p = self.pipeline
        nxt = self.jobs[0] if self.jobs else None
        waited_for = self.index in job._after.values()
        if nxt is not None and not waited_for and not p.abort.is_set() and isinstance(nxt.views[self.index], View):
            rank = -self.expected_ms  # as it will be after this call: close enough for an order
            return p.gate.keep(nxt.seq, rank)
        p.gate.release()
        return False

    def _earlier(self, job: Job, deferred: Deferred) -> StepOutcome | None:
        """Wait, holding no core, until the step ``deferred`` depends on has answered for this
        part; ``None`` then, or this step's outcome when it will not run (a stop)."""
        p = self.pipeline
        after = job._after.get(self.index)
        if after is None:
            return StepOutcome("error", [], "host error: the step its view depends on is not run on this part", 0.0)
        with p._cond:
            while not job._answered[after]:
                if p.abort.is_set():
                    return StepOutcome("error", [], NOT_RUN)
                p._cond.wait(_POLL_S)
        return None

    def _cut(self, job: Job, deferred: Deferred) -> View | str:
        after = job._after[self.index]
        outcome, entry = job.outcomes[after], job.views[after]
        seen = outcome.view if outcome is not None and outcome.view is not None else entry
        if outcome is None or not isinstance(seen, View):
            return "not run: the step its view depends on gave no answer"
        return deferred.cut(outcome, seen)


class Pipeline:
    """Runs every step's lane; ``put`` parts in capture order, read them back from ``results``."""

    def __init__(
        self, workers: list[StepWorker], *, cores: int, abort: threading.Event, window: int | None = None
    ) -> None:
        self.workers = workers
        self.gate = CoreGate(cores)
        self.abort = abort
        self.window = window if window is not None else cores + 1
        self._lanes = [_Lane(i, w, self) for i, w in enumerate(workers)]
        self._order: collections.deque[Job | None] = collections.deque()
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._closed = False
        for lane in self._lanes:
            lane.start()

    def put(self, payload: Any, views: list[View | Deferred | None] | None) -> bool:
        """Hand a part to the steps (``views=None``: a part decided without them, passed through
        in order). Waits while ``window`` parts are in the pipeline; ``False`` if it was
        cancelled meanwhile (the part was not taken)."""
        views = views if views is not None else [None] * len(self._lanes)
        job = Job(next(self._seq), payload, views, [None] * len(views), _answered=[False] * len(views))
        for i, v in enumerate(views):
            if isinstance(v, Deferred):
                after = next((j for j, w in enumerate(views) if w is v.after and j != i), None)
                if after is not None:
                    job._after[i] = after
        job._left = sum(v is not None for v in views)
        with self._cond:
            while len(self._order) >= self.window and not self._closed:
                self._cond.wait(_POLL_S)
            if self._closed:
                return False
            self._order.append(job)
            self._cond.notify_all()
        if job._left == 0:
            job._done.set()
        # A part's views may be fewer than the lanes: lanes added since (a recipe's) take no earlier part.
        for lane, view in zip(self._lanes, views, strict=False):
            if view is not None:
                lane.put(job)
        return True

    def lane_times(self) -> dict[str, LaneTimes]:
        """Where each lane's time went so far, by step name (a copy); a step with ``parallel: N``
        has a row per runner, ``NAME``, ``NAME#2``, ..."""
        return {r.name: dataclasses.replace(r.times) for lane in self._lanes for r in lane.runners}

    @property
    def lanes(self) -> int:
        """How many lanes there are (a part's views are laid out on them)."""
        return len(self._lanes)

    def add_lanes(self, workers: list[StepWorker]) -> list[int] | None:
        """Lanes for more steps (a recipe's, their workers started and warmed by the caller),
        running at once; their indices, or ``None`` once the pipeline takes no more parts."""
        with self._cond:
            if self._closed:
                return None
            start = len(self._lanes)
            lanes = [_Lane(start + i, w, self) for i, w in enumerate(workers)]
            for lane in lanes:
                lane.start()
            self._lanes.extend(lanes)
        return list(range(start, start + len(lanes)))

    def _answered(self, job: Job, index: int, outcome: StepOutcome | None) -> None:
        with self._cond:
            job.outcomes[index] = outcome
            job._answered[index] = True
            job._left -= 1
            if job._left == 0:
                job._done.set()
            self._cond.notify_all()  # a lane waiting for this step's answer (a Deferred view)

    def end(self) -> None:
        """No more parts: :meth:`results` stops after the last one put."""
        with self._cond:
            self._order.append(None)
            self._cond.notify_all()

    def cancel(self) -> None:
        """Take no more parts (a waiting :meth:`put` returns ``False``)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def results(self) -> Iterator[Job]:
        """Every part put, in order, once all its steps have answered."""
        while True:
            with self._cond:
                while not self._order:
                    self._cond.wait(_POLL_S)
                job = self._order[0]
            if job is None:
                return
            job._done.wait()
            yield job  # still counted in the window while the station judges and submits it
            with self._cond:
                self._order.popleft()
                self._cond.notify_all()

    def in_flight(self) -> int:
        """Parts put and not yet read back."""
        with self._cond:
            return sum(j is not None for j in self._order)

    def close(self) -> None:
        """Stop the lanes once they have finished what they hold (they are daemon threads)."""
        self.cancel()
        for lane in self._lanes:
            lane.put(None)
