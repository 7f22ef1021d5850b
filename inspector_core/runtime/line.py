"""The line: a PLC drives the station through a :class:`~inspector_core.contract.PlcLink`.

The handshake, whatever the protocol (``docs/line.md`` has the timing diagram)::

    PLC: trigger (counter, part id, product) --> Busy --> frame captured --> Ready
         ... verdict committed --> result (counter, code, defect code, flags) --> ResultValid
    PLC: acknowledge (counter) --> ResultValid cleared

Promises kept here (tested in ``tests/line/``):

- every trigger the link hands over gets exactly one result on the PLC, by its deadline: the
  real verdict once it is committed in the store (the recorder's commit callback), or, when the
  deadline (less ``line.margin_ms``) comes first, the configured default (``nok`` / ``recheck``,
  never ``ok``), whose ``line_results`` row is committed before it is written to the PLC;
- a verdict that comes after its default is still recorded, with ``late`` and its real code;
- a trigger while BUSY (the previous one not yet captured) is an overrun: flagged and either
  captured after the current part (``line.overrun: queue``) or answered at once with the
  default (``reject``); a jump of the PLC's counter flags ``missed``;
- a PLC that does not acknowledge within ``line.ack_timeout_ms`` is recorded (``ack_timeout``);
  the station does not wait for acknowledges to take the next trigger.
- a result whose ``publish`` raises is kept and published again (``RETRY_S``), never dropped;
  on :meth:`Handshake.close` a trigger never captured is answered with the default at once;
- the PLC sees ERROR while the store is away or the camera is down (``CAMERA_ERROR_HOLD_S``, and
  while a triggerable source says ``capture_state() == "down"``), and BUSY, not Ready, while the
  camera is first being opened;
  a recipe request (OPC UA ``SelectRecipe``/``PrepareProduct``, a Modbus recipe register) is
  handed to the station's changeover (runtime/changeover.py) and returns once the recipe is
  active; an unknown one is refused with :class:`RecipeRefused`.
- a station with ``views:`` (docs/views.md, on a line): the k-th trigger of a part id is the part's
  k-th view declared, its frame tagged with that view for the join; the part's one result, once
  its verdict is committed, is written at every trigger of it, in trigger order (the last
  trigger's counter last); its earlier triggers wait for the part (their deadline moves to the
  last trigger's), so the PLC reads one verdict per part at the counter of its last view.

A real result is published in the recorder's thread, right in its commit callback; defaults,
acknowledges, timeouts and the state in the ``inspector-line`` thread; both under one lock, so a
link sees one call at a time. The capture thread takes frames through :meth:`Handshake.frames`.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from inspector_core.contract import (
    CaptureState,
    Frame,
    FrameSource,
    LineControl,
    LineResult,
    LineState,
    PlcLink,
    Trigger,
)
from inspector_core.runtime.storable import storable_message, storable_part_id
from inspector_core.store.line_records import LineLog, LineResultRecord

if TYPE_CHECKING:
    from inspector_core.runtime.config import LineSpec, Station
    from inspector_core.runtime.views import ViewPlan
    from inspector_core.store import InspectionRecord, Store

log = logging.getLogger(__name__)

HEARTBEAT_S = 0.5
"""How often the line thread shows it is alive (a link may show a heartbeat to the PLC)."""
LAST_MOMENT_S = 0.003
"""A default whose row is not committed yet is written to the PLC at the latest half of
``line.margin_ms`` before the deadline, and never later than this before it: a thread woken at
the very last moment on a loaded machine is late (measured: up to 190 ms under load 16)."""
SOURCE_POLL_S = 0.02
"""While the PLC does not see Ready, how often a triggerable source's ``capture_state`` is asked
(Ready is shown within this of the camera's opening)."""
CLOSE_TIMEOUT_S = 10.0
"""After the station's last verdict, how long the line may take to answer what is left."""
RETRY_S = 0.01
"""A result whose ``publish`` raised (the link between sessions) is tried again this soon."""
CAMERA_ERROR_HOLD_S = 2.0
"""How long the PLC sees ERROR after the camera's last fault, unless a frame with an image comes
first: a fault does not latch, so a PLC that triggers only on Ready can try the camera again."""


COUNTER_WRAPS = (1 << 16, 1 << 32)
"""Where a PLC's part counter wraps: a 16-bit INT/WORD counter after 65535, a 32-bit one after
4294967295; the next counter is 0 or 1 (Modbus: 0 is "no trigger", so 65535 -> 1)."""
WRAP_WINDOW = 64
"""A counter that drops from within this many of a wrap point to below this many is a wrap."""


def wrap_gap(last: int, counter: int) -> int | None:
    """How many triggers were missed between ``last`` and ``counter`` when the PLC's counter
    wrapped (16 or 32 bits, 0 counted as "no trigger"); ``None`` when it did not wrap."""
    for m in COUNTER_WRAPS:
        if m - WRAP_WINDOW <= last < m and counter < WRAP_WINDOW:
            return (m - 1 - last) + max(0, counter - 1)
    return None


class RecipeRefused(Exception):
    """:meth:`Handshake.select_recipe` refuses the PLC's recipe (the station has none of that
    name, no recipes at all, or its detectors cannot start). A link turns it into the protocol's refusal: OPC UA
    ``SelectRecipe``/``PrepareProduct`` return Error -1; the message says why and what to do."""


@dataclasses.dataclass(slots=True)
class _Part:
    seq: int
    trigger: Trigger
    overrun: bool
    missed: bool
    record: LineResultRecord
    frame_mono: float | None = None
    published_mono: float | None = None
    acked: bool = False
    rejected: bool = False
    verdict: str | None = None
    pending: LineResult | None = None
    """A result whose ``publish`` raised: tried again every ``RETRY_S`` until the link takes it."""
    recipe: str | None = None
    """The station's active recipe when the trigger came (the part is inspected under it)."""
    view: str | None = None
    """On a station with views: the view this trigger takes (its place among the part's triggers)."""
    group: _Group | None = None
    """On a station with views: the triggers of the same part (answered together)."""
    due_mono: float | None = None
    """The deadline (``time.monotonic()``) when it is not the trigger's own: a view trigger waits
    for its part's later triggers (docs/views.md, on a line)."""


@dataclasses.dataclass(slots=True)
class _Group:
    """The triggers of one multi-view part: the k-th is the k-th view declared."""

    part_id: str
    first_mono: float
    seqs: list[int] = dataclasses.field(default_factory=list)


class Handshake(LineControl):
    """The station's side of the PLC handshake, protocol-neutral; a :class:`PlcLink` calls it.

    Built by :meth:`start` from the station's ``line:`` section; the station calls
    :meth:`frames` (capture thread), :meth:`committed` (recorder thread) and :meth:`close`."""

    def __init__(
        self,
        spec: LineSpec,
        link: PlcLink,
        *,
        run_uid: str,
        line_log: LineLog | None,
        on_event: Callable[[str, str], None],
        source: FrameSource | None = None,
    ) -> None:
        self.spec = spec
        self.link = link
        self.run_uid = run_uid
        self.line_log = line_log
        self.on_event = on_event
        self.source = source if source is not None and source.triggerable else None
        self._lock = threading.Condition()
        """Guards the parts and the capture queue (the link's, capture and line threads)."""
        self._work = threading.RLock()
        """Held while results are decided and published (the recorder's and the line thread)."""
        self._parts: dict[int, _Part] = {}
        self._by_trigger: dict[Trigger, int] = {}
        self._to_capture: collections.deque[int] = collections.deque()
        self._jobs: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._seq = 0
        self._last_counter: int | None = None
        self._closing = False
        self._state: LineState | None = None
        self._camera_fault: str | None = None
        self._camera_fault_mono = 0.0
        """Why the source cannot deliver (its last frame had an error, or a trigger failed):
        the PLC sees ERROR until a frame comes with an image again."""
        self._frame_to_committed_s = 0.0
        """Recent frame -> committed (a moving average), the time a part captured now needs."""
        self._due: list[tuple[float, int, str]] = []
        """Heap of (when, seq, "deadline" | "ack"): what the line thread wakes for."""
        self._defaults: dict[int, tuple[threading.Event, float]] = {}
        """Defaults waiting for their row's commit: seq -> (committed, publish at the latest)."""
        self._events: collections.Counter[str] = collections.Counter()
        self.stats: collections.Counter[str] = collections.Counter()
        """Counts: triggers, results, defaults, late, overruns, missed, ack_timeouts, acks,
        not_captured (paced parts whose default went before their frame was handed out)."""
        self.healthy: Callable[[], bool] | None = None
        """``False`` while the station cannot commit verdicts (its database away): state ERROR."""
        self.recipe_selector: Callable[[str], str | None] | None = None
        """The station's changeover (``StationRuntime.select_recipe``): returns once the recipe is
        active, raises :class:`RecipeRefused`; ``None``: every recipe is refused."""
        self.active_recipe: Callable[[], str | None] | None = None
        """The station's active recipe now: a part is inspected under the one active at its
        trigger (``source_meta.plc_recipe``), even when its frame is taken after a changeover."""
        self.views: ViewPlan | None = None
        """The station's views (``views:``): each trigger is one view of a part (docs/views.md)."""
        self._groups: dict[str | None, _Group] = {}
        """Multi-view parts whose triggers have not all come: PLC part id -> its triggers."""
        self._thread = threading.Thread(target=self._loop, name="inspector-line", daemon=True)

    @classmethod
    def start(
        cls,
        station: Station,
        store: Store | None,
        run_uid: str,
        on_event: Callable[[str, str], None],
        source: FrameSource | None,
        *,
        healthy: Callable[[], bool] | None = None,
    ) -> Handshake:
        """The station's line, its link serving: return once the PLC can connect. ``healthy``
        says whether the station can commit verdicts now (the PLC sees ERROR while it cannot)."""
        assert station.line is not None and station.spec.line is not None
        link_cls, link_cfg = station.line
        link = link_cls(link_cfg, station_dir=station.directory)
        line_log = LineLog(store, station.name) if store is not None else None
        hs = cls(station.spec.line, link, run_uid=run_uid, line_log=line_log, on_event=on_event, source=source)
        hs.healthy = healthy
        hs.views = station.views
        try:
            link.start(hs)
        except BaseException:
            if line_log is not None:
                line_log.close(timeout=1)
            raise
        hs._thread.start()
        hs._jobs.put(("state",))
        return hs

    # -------------------------------------------------------------- LineControl (the link's threads)

    def trigger(self, *, counter: int | None = None, part_id: str | None = None, product: str | None = None) -> Trigger:
        now, mono = datetime.now(UTC), time.monotonic()
        # What the PLC sent, as the store can keep it (no NUL, at most 200 characters).
        part_id = storable_part_id(part_id)[0] if part_id else None
        product = storable_message(product, 200) if product else None
        with self._lock:
            self._seq += 1
            seq = self._seq
            if counter is None:
                counter = seq
            last = self._last_counter
            gap = wrap_gap(last, counter) if last is not None and counter < last else None
            missed = last is not None and (counter > last + 1 or bool(gap))
            if last is not None and counter <= last and gap is None:
                self._event_once("line_counter_restarted", f"the PLC's counter went from {last} to {counter}")
            self._last_counter = counter
            overrun = bool(self._to_capture)
            group, view = self._view_of(part_id or None, counter, mono) if self.views is not None else (None, None)
            if group is not None:
                part_id = group.part_id
            trig = Trigger(counter, now, mono, self.spec.deadline_ms / 1000, part_id or None, product or None)
            record = LineResultRecord(
                run_uid=self.run_uid,
                seq=seq,
                counter=counter,
                triggered_at=now,
                deadline_ms=self.spec.deadline_ms,
                code=self._default_code(),
                part_id=part_id or None,
                product=product or None,
                overrun=overrun,
                missed=missed,
            )
            part = _Part(seq, trig, overrun, missed, record)
            part.recipe = self.active_recipe() if self.active_recipe is not None else None
            self._parts[seq] = part
            if group is not None:
                part.view, part.group = view, group
                self._view_deadlines(group, seq)
            else:
                heapq.heappush(self._due, (mono + trig.deadline_s - self.spec.margin_ms / 1000, seq, "deadline"))
            self.stats["triggers"] += 1
            self.stats["overruns"] += overrun
            self.stats["missed"] += missed
            if self._closing or (overrun and self.spec.overrun == "reject"):
                part.rejected = True
                self._jobs.put(("reject", seq))
                return trig
            self._by_trigger[trig] = seq
            self._to_capture.append(seq)
            self._lock.notify_all()
        self._jobs.put(("state",))
        if self.source is not None:
            try:
                self.source.trigger(trig)
            except Exception as exc:  # noqa: BLE001 - the part gets its default; the reason is recorded
                self._camera_fault = f"source trigger failed: {type(exc).__name__}: {exc}"
                self._camera_fault_mono = time.monotonic()
                self._event_once("line_source_trigger_failed", self._camera_fault)
                self._jobs.put(("state",))
        return trig

    def _view_of(self, part_id: str | None, counter: int, mono: float) -> tuple[_Group, str]:
        """The part this trigger is a view of and which view (under ``_lock``): the k-th trigger of
        a part id is the k-th view declared. A part's triggers end with its last view, or when its
        first is older than ``join.deadline_ms`` (the join has decided it); the next one then
        begins a new part. Triggers without a part id are grouped in turn (part id ``plc-N``, N
        the counter of its first trigger)."""
        plan = self.views
        assert plan is not None
        g = self._groups.get(part_id)
        if g is None or mono - g.first_mono > plan.deadline_ms / 1000:
            if len(self._groups) > 1000:  # parts whose triggers stopped short, long decided by the join
                old = mono - plan.deadline_ms / 1000
                self._groups = {k: v for k, v in self._groups.items() if v.first_mono >= old}
            g = self._groups[part_id] = _Group(part_id or f"plc-{counter}", mono)
        view = plan.names[len(g.seqs)]
        if len(g.seqs) + 1 == len(plan.names):
            del self._groups[part_id]  # its last view: the next trigger of this id is a new part
        return g, view

    def _view_deadlines(self, group: _Group, seq: int) -> None:
        """A view trigger's deadline (under ``_lock``): the last view's is its own; until it comes,
        the part's triggers wait for the join (``join.deadline_ms`` from the first) and the verdict
        (``line.deadline_ms``). Every trigger of the part then shares the latest such deadline."""
        plan = self.views
        assert plan is not None
        group.seqs.append(seq)
        p = self._parts[seq]
        if len(group.seqs) == len(plan.names):
            due = p.trigger.at_monotonic + p.trigger.deadline_s
        else:
            due = group.first_mono + plan.deadline_ms / 1000 + p.trigger.deadline_s
        for s in group.seqs:
            q = self._parts.get(s)
            if q is None or q.published_mono is not None:
                continue
            q.due_mono = due
            q.record.deadline_ms = (due - q.trigger.at_monotonic) * 1000
            heapq.heappush(self._due, (due - self.spec.margin_ms / 1000, s, "deadline"))

    def _deadline(self, p: _Part) -> float:
        """When ``p``'s result must be on the PLC (``time.monotonic()``)."""
        return p.due_mono if p.due_mono is not None else p.trigger.at_monotonic + p.trigger.deadline_s

    def acknowledge(self, counter: int) -> None:
        self._jobs.put(("ack", counter, time.monotonic()))

    def connection(self, connected: bool, peer: str = "") -> None:
        self.stats["connects" if connected else "disconnects"] += 1
        kind = "plc_connected" if connected else "plc_disconnected"
        self.on_event(kind, f"the PLC {'connected' if connected else 'disconnected'}{f' ({peer})' if peer else ''}")

    def select_recipe(self, name: str) -> str | None:
        """The PLC's changeover: returns once recipe ``name`` is active (its detectors started and
        warmed first; this may take seconds, so a link calls it off its I/O loop); raises
        :class:`RecipeRefused` for a recipe the station does not have or cannot start."""
        select = self.recipe_selector
        if select is None:
            msg = f"the PLC asked for recipe {name!r}; this station has no recipes (docs/recipes.md)"
            self._event_once("line_recipe_refused", msg)
            raise RecipeRefused(msg)
        try:
            return select(name)
        except RecipeRefused as exc:
            self._event_once("line_recipe_refused", f"the PLC asked for recipe {name!r}: {exc}")
            raise

    # -------------------------------------------------------------- the station's side

    def recipe_changed(self, name: str, products: tuple[str, ...]) -> None:
        """The station's active recipe is now ``name``: shown to the PLC (``PlcLink.show_recipe``)
        from the line thread, whoever asked for the changeover."""
        self._jobs.put(("recipe", name, products))

    def frames(self, frames: Iterator[Frame], stop: threading.Event) -> Iterator[Frame]:
        """The source's frames, one per trigger: a triggerable source's frames carry their
        trigger; any other source is paced, each trigger taking its next frame."""
        try:
            if self.source is not None:
                for frame in frames:
                    seq = self._by_trigger.pop(frame.trigger, None) if frame.trigger is not None else None
                    if seq is None:
                        yield frame  # a frame no trigger asked for: inspected, not answered
                        continue
                    yield self._captured(seq, frame)
                    if stop.is_set():
                        return
                return
            # The next frame is read before its trigger comes (a folder's file, a generated
            # plate): the trigger only hands it out, so trigger -> frame is not the read time.
            ahead: Frame | None = None
            while not stop.is_set():
                if ahead is None:
                    try:
                        ahead = next(frames)
                    except StopIteration:
                        self._event_once("line_source_ended", "the source has no more frames; triggers get the default")
                        return
                with self._lock:
                    if not self._to_capture:
                        self._lock.wait(0.1)
                        continue
                    seq = self._next_to_capture()  # taken: a default now no longer drops it
                frame, ahead = ahead, None
                if isinstance(frame, Frame):
                    frame = dataclasses.replace(frame, captured_at=datetime.now(UTC))
                yield self._captured(seq, frame)
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    def _next_to_capture(self) -> int:
        """The oldest waiting trigger that can still make its deadline (under ``_lock``). One
        that cannot (less time left than the station's recent frame -> committed) is left to its
        default while a later one waits: serving it would make every later part late too."""
        now = time.monotonic()
        while len(self._to_capture) > 1:
            p = self._parts[self._to_capture[0]]
            if self._deadline(p) - now >= self._frame_to_committed_s:
                break
            self._to_capture.popleft()
            self._by_trigger.pop(p.trigger, None)
            p.rejected = True
            self.stats["not_captured"] += 1
        return self._to_capture.popleft()

    def _captured(self, seq: int, frame: Frame) -> Frame:
        mono = time.monotonic()
        with self._lock:
            part = self._parts[seq]  # kept until its verdict is known (_forget_if_done)
            if seq in self._to_capture:
                self._to_capture.remove(seq)
            part.frame_mono = mono
            self._by_trigger.pop(part.trigger, None)
            if frame.error is not None or frame.image is None:
                self._camera_fault = frame.error or "the source yielded a frame without an image"
                self._camera_fault_mono = mono
            else:
                self._camera_fault = None
        if self._camera_fault is not None:
            self._event_once("line_camera_error", f"the PLC sees ERROR: {self._camera_fault}")
        self._jobs.put(("state",))
        trig = part.trigger
        meta = dict(frame.meta) if isinstance(frame.meta, dict) else {}
        meta.update(plc_run=self.run_uid, plc_seq=seq, plc_counter=trig.counter)
        if trig.product:
            meta["plc_product"] = trig.product
        if part.recipe is not None:
            meta["plc_recipe"] = part.recipe
        if part.view is not None and self.views is not None:  # the join routes the frame to its view
            tag = next((t for t, v in self.views.tags.items() if v == part.view), part.view)
            meta[self.views.tag_key] = tag
            meta["plc_view"] = part.view
        return dataclasses.replace(frame, trigger=trig, part_id=trig.part_id or frame.part_id, meta=meta)

    def committed(self, batch: list[InspectionRecord]) -> None:
        """The recorder committed ``batch``: answer the parts in it, here in the recorder's
        thread (a hand-over to the line thread cost up to 5 ms on a loaded machine; a link's
        ``publish`` returns within microseconds to milliseconds), under the line's own lock."""
        mono = time.monotonic()
        try:
            with self._work:
                self._answer(batch, mono)
        except Exception as exc:  # the recorder must not fail for the line: said in an event
            log.exception("line: answering committed parts")
            self._event_once("line_error", f"answering committed parts failed: {type(exc).__name__}: {exc}")

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Answer every trigger still open (its verdict or, at its deadline, the default), show
        HALTED, stop the link and write the last rows."""
        with self._lock:
            self._closing = True
            # Triggers never captured will not be (the station has stopped capturing): answered
            # now with the default, not at a deadline that may lie beyond this wait.
            uncaptured = list(self._to_capture)
            self._to_capture.clear()
            for seq in uncaptured:
                self._by_trigger.pop(self._parts[seq].trigger, None)
                self._parts[seq].rejected = True
                self.stats["not_captured"] += 1
        for seq in uncaptured:
            self._jobs.put(("reject", seq))
        self._jobs.put(("state",))
        end = time.monotonic() + timeout
        last_call = end - min(1.0, timeout / 4)
        swept = False
        while True:
            now = time.monotonic()
            with self._lock:
                open_ = [p for p in self._parts.values() if p.published_mono is None]
            if not open_ or now >= end:
                break
            if now >= last_call and not swept:
                # Captured parts whose verdict has not come by now get the default (the station
                # calls close() after its recorder's: a verdict after this is recorded late).
                swept = True
                for p in open_:
                    self._jobs.put(("reject", p.seq))
            time.sleep(0.01)
        self._jobs.put(("stop",))
        self._thread.join(timeout=max(1.0, end - time.monotonic()))
        try:
            self.link.close()
        except Exception as exc:  # noqa: BLE001
            log.warning("closing the PLC link: %s", exc)
        if self.line_log is not None and not self.line_log.close():
            self.on_event("line_log_incomplete", "line_results: the last rows could not be written in time")

    # -------------------------------------------------------------- the line thread

    def _loop(self) -> None:
        next_beat = time.monotonic()
        while True:
            now = time.monotonic()
            due = min(self._next_due(now), next_beat)
            if self._defaults:
                due = min(due, now + 0.001)
            if self.source is not None and self._state != "READY":
                due = min(due, now + SOURCE_POLL_S)  # Ready shown soon after the camera opens
            try:
                job = self._jobs.get(timeout=max(0.0, due - now))
            except queue.Empty:
                job = ("tick",)
            kind = job[0]
            try:
                with self._work:
                    if self._line_job(kind, job):
                        return
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + HEARTBEAT_S
                    beat = getattr(self.link, "heartbeat", None)
                    if beat is not None:
                        beat()
            except Exception as exc:  # the recorder must not fail for the line: said in an event
                log.exception("line: %s", kind)
                self._event_once("line_error", f"the line thread failed on {kind}: {type(exc).__name__}: {exc}")

    def _line_job(self, kind: str, job: tuple[Any, ...]) -> bool:
        """One job of the line thread, under the line's lock; ``True`` when it was the stop."""
        if kind == "stop":
            self._set_state("HALTED")
            return True
        if kind == "reject":
            p = self._parts.get(job[1])
            # Not one already answered, waiting for its row, or being published again.
            if p is not None and p.published_mono is None and p.pending is None and p.seq not in self._defaults:
                self._default(p, time.monotonic())
        elif kind == "ack":
            self._ack(job[1], job[2])
        elif kind == "recipe":
            self.link.show_recipe(job[1], job[2])
        self._timers(time.monotonic())
        self._defaults_due(time.monotonic())
        if self._jobs.empty():
            self._set_state(self._wanted_state())
        return False

    def _wanted_state(self) -> LineState:
        with self._lock:
            if self._closing:
                return "HALTED"
            if self.healthy is not None and not self.healthy():
                return "ERROR"  # triggers are still taken; their results will be defaults
            if self._camera_fault is not None and time.monotonic() - self._camera_fault_mono < CAMERA_ERROR_HOLD_S:
                return "ERROR"  # the camera is down: its parts are ERROR (line.error), never ok
            capture = self._capture_state()
            if capture == "down":
                return "ERROR"  # no part triggered now would have an image
            if capture == "opening":
                return "BUSY"  # not Ready until the camera is open: a part triggered now would wait for it
            return "BUSY" if self._to_capture else "READY"

    def _capture_state(self) -> CaptureState:
        if self.source is None:
            return "ready"
        try:
            return self.source.capture_state()
        except Exception as exc:  # noqa: BLE001 - a source that cannot say is not trusted to be ready
            self._event_once(
                "line_source_state_failed", f"the source's capture_state failed: {type(exc).__name__}: {exc}"
            )
            return "down"

    def _set_state(self, state: LineState) -> None:
        if state != self._state:
            self._state = state
            self.link.set_state(state)

    def _next_due(self, now: float) -> float:
        """When a deadline or an ack timeout is next due (a heap: the loop runs every
        millisecond while a default waits, with hundreds of parts open under overload)."""
        with self._lock:
            return min(self._due[0][0], now + 1.0) if self._due else now + 1.0

    def _timers(self, now: float) -> None:
        due: list[tuple[float, int, str]] = []
        with self._lock:
            while self._due and self._due[0][0] <= now:
                due.append(heapq.heappop(self._due))
        for at, seq, what in due:
            p = self._parts.get(seq)
            if p is None:
                continue
            if what == "deadline":
                if p.due_mono is not None and abs(at - (p.due_mono - self.spec.margin_ms / 1000)) > 1e-6:
                    continue  # a view trigger's deadline moved with its part's later triggers
                if (
                    p.published_mono is None
                    and p.pending is None
                    and p.seq not in self._defaults
                    and not p.record.is_default
                ):
                    self._default(p, now)
            elif what == "retry":
                if p.published_mono is None and p.pending is not None:
                    self._publish(p, p.pending)
            elif not p.acked and not p.record.ack_timeout:
                p.record.ack_timeout = True
                self.stats["ack_timeouts"] += 1
                self._event_once(
                    "plc_ack_timeout",
                    f"the PLC did not acknowledge the result of counter {p.trigger.counter} within "
                    f"{self.spec.ack_timeout_ms:g} ms (each one is in line_results.ack_timeout)",
                )
                self._write(p)
                self._forget_if_done(p)

    def _default_code(self) -> int:
        return getattr(self.spec.codes, self.spec.default)

    def _code(self, verdict: str) -> int:
        codes = self.spec.codes
        if verdict == "PASS":
            return codes.ok
        if verdict == "FAIL":
            return codes.nok
        if verdict == "ERROR":
            return getattr(codes, self.spec.error)
        return self._default_code()  # NOT_INSPECTED: not judged, never ok

    def _default(self, p: _Part, now: float) -> None:
        """The deadline came first (or the trigger was refused): record the default, then write it."""
        rec = p.record
        rec.code, rec.is_default = self._default_code(), True
        if self.line_log is None:
            self._publish_default(p)
            return
        # Published once its row is committed (the line thread goes on meanwhile), or, fail
        # closed, just before the deadline if the store is slower: a default is a reject.
        done = threading.Event()
        self.line_log.write(rec, done=done)
        slack = max(LAST_MOMENT_S, self.spec.margin_ms / 2000)
        self._defaults[p.seq] = (done, self._deadline(p) - slack)

    def _defaults_due(self, now: float) -> None:
        for seq, (done, last) in list(self._defaults.items()):
            if done.is_set() or now >= last:
                del self._defaults[seq]
                p = self._parts.get(seq)
                if p is None or p.published_mono is not None:
                    continue  # its real verdict came first
                if not done.is_set():
                    self._event_once(
                        "line_default_not_recorded_in_time",
                        "a deadline default was written to the PLC before its line_results row was committed "
                        f"(the store: {(self.line_log.error if self.line_log else None) or 'slow'}); the row "
                        "follows when the store answers",
                    )
                self._publish_default(p)

    def _publish_default(self, p: _Part) -> None:
        rec = p.record
        self.stats["defaults"] += 1
        if self.source is None:
            with self._lock:
                if p.seq in self._to_capture:
                    # A paced source has not handed out its frame yet: the part has gone by with
                    # its default; capturing a frame for it now would only delay the next parts.
                    self._to_capture.remove(p.seq)
                    self._by_trigger.pop(p.trigger, None)
                    p.rejected = True
                    self.stats["not_captured"] += 1
        self._publish(p, LineResult(p.trigger.counter, rec.part_id or "", rec.code, None, 0, True, p.overrun, p.missed))

    def _answer(self, batch: list[InspectionRecord], committed_mono: float) -> None:
        for ins in batch:
            meta = ins.source_meta or {}
            if meta.get("plc_run") != self.run_uid:
                continue
            seq = meta.get("plc_seq")
            p = self._parts.get(seq) if isinstance(seq, int) else None
            if p is None:
                continue
            if p.group is None:
                self._answer_one(ins, p, committed_mono)
                continue
            # A multi-view part: its one result at every trigger of it, the last trigger's last.
            with self._lock:
                parts = [self._parts[s] for s in p.group.seqs if s in self._parts]
            for q in parts:
                self._answer_one(ins, q, committed_mono)

    def _answer_one(self, ins: InspectionRecord, p: _Part, committed_mono: float) -> None:
        rec = p.record
        rec.inspection_uid, rec.part_id = ins.uid, ins.part_id
        rec.verdict, rec.verdict_code = ins.verdict, self._code(ins.verdict)
        failing = [d for d in ins.defects if d.failed]
        rec.defect_code = self.spec.defect_codes.get(failing[0].kind, 0) if failing else 0
        p.verdict = ins.verdict
        if p.frame_mono is not None:
            if p.group is None or p.seq == p.group.seqs[-1]:  # a part's last view: what a capture now needs
                # Frame -> committed, smoothed: what a trigger taken now still needs (see _next_to_capture).
                self._frame_to_committed_s += 0.2 * (committed_mono - p.frame_mono - self._frame_to_committed_s)
            rec.trigger_to_frame_ms = (p.frame_mono - p.trigger.at_monotonic) * 1000
            if ins.latency_ms is not None:
                rec.frame_to_verdict_ms = ins.latency_ms
                rec.verdict_to_committed_ms = max(0.0, (committed_mono - p.frame_mono) * 1000 - ins.latency_ms)
        if p.published_mono is not None:  # the default went first: the verdict is late
            rec.late = True
            self.stats["late"] += 1
            self._write(p)
            self._forget_if_done(p)
            return
        self._defaults.pop(p.seq, None)  # a default still waiting for its row is not sent
        rec.code, rec.is_default = rec.verdict_code, False
        result = LineResult(
            p.trigger.counter,
            ins.part_id,
            rec.code,
            ins.verdict,  # type: ignore[arg-type]  # a store verdict is one of the four
            rec.defect_code,
            False,
            p.overrun,
            p.missed,
            ins.uid,
            tuple({"kind": d.kind, "score": d.score, "box": list(d.box), "step": d.step} for d in failing),
        )
        self._publish(p, result)

    def _publish(self, p: _Part, result: LineResult) -> None:
        try:
            self.link.publish(result)
        except Exception as exc:  # noqa: BLE001 - kept and tried again (the line thread's timers)
            p.pending = result
            with self._lock:
                heapq.heappush(self._due, (time.monotonic() + RETRY_S, p.seq, "retry"))
            self._jobs.put(("tick",))  # wakes the line thread (the recorder's thread may be here)
            self._event_once(
                "line_publish_failed",
                f"writing the result of counter {result.counter} to the PLC failed: {type(exc).__name__}: "
                f"{exc}; tried again every {RETRY_S * 1000:g} ms until the link takes it",
            )
            return
        p.pending = None
        p.published_mono = time.monotonic()
        with self._lock:
            heapq.heappush(self._due, (p.published_mono + self.spec.ack_timeout_ms / 1000, p.seq, "ack"))
        p.record.trigger_to_result_ms = (p.published_mono - p.trigger.at_monotonic) * 1000
        self.stats["results"] += 1
        self._write(p)
        self._forget_if_done(p)

    def _ack(self, counter: int, mono: float) -> None:
        with self._lock:
            parts = [p for p in self._parts.values() if p.published_mono is not None and not p.acked]
        # The acknowledge of a counter also acknowledges every result published before it.
        target = [p for p in parts if p.trigger.counter == counter]
        if not target:
            return
        upto = max(p.seq for p in target)
        for p in parts:
            if p.seq <= upto:
                p.acked = True
                p.record.ack_ms = (mono - p.published_mono) * 1000 if p.published_mono is not None else None
                self.stats["acks"] += 1
                self._write(p)
                self._forget_if_done(p)

    def _write(self, p: _Part) -> None:
        if self.line_log is not None:
            self.line_log.write(p.record)

    def _forget_if_done(self, p: _Part) -> None:
        """Drop a part once nothing more can be learnt of it (answered, acknowledged or timed
        out, and its verdict known or never coming)."""
        if p.published_mono is None or not (p.acked or p.record.ack_timeout):
            return
        if p.verdict is None and not p.rejected:
            return  # its (late) verdict may still come: captured or still to be
        with self._lock:
            self._parts.pop(p.seq, None)

    def _event_once(self, kind: str, message: str) -> None:
        self._events[kind] += 1
        if self._events[kind] == 1:
            self.on_event(kind, message)
