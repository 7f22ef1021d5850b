"""The views of one part joined by part id, under a deadline (issue 14; docs/views.md).

The station's capture thread reads its source (or :class:`~inspector_core.runtime.views.ViewSources`)
through :func:`joined`: every frame is stamped when it arrives and routed to its view; a part leaves
the join when it has every view, or when ``join.deadline_ms`` has passed since its first view arrived
(then with the views it has: the part is recorded ERROR, the missing view named). Parts leave in the
order they are decided: a complete part is never held behind an older one still waiting.

Nothing is dropped silently. A frame that cannot join a part is recorded as a run event:
``view_unknown`` (it matches no view), ``view_duplicate`` (its part already has that view; the first
frame is inspected, the duplicate is noted on the part's view too), ``view_late`` (its part was decided
without it, past the deadline). A part decided within the last ``KEEP_FACTOR`` deadlines is remembered
for this; a frame of the same part id after that starts a new part.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from inspector_core.runtime.views import ViewPlan

_REMEMBERED = 100_000
"""At most this many decided parts are remembered (for late and duplicate frames)."""


@dataclasses.dataclass
class Arrival:
    """One frame of a view, as the join keeps it."""

    view: str
    item: Any
    """What the station made of the frame (its ``_Captured``)."""
    at: float
    """``time.monotonic()`` when the frame reached the station."""
    t0: float
    """``time.perf_counter()`` then (the part's latency is measured from its first view)."""
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class JoinedPart:
    """A part leaving the join: its views (``None`` for a missing one) and why each is missing."""

    part_id: str
    views: dict[str, Arrival | None]
    missing: dict[str, str]
    first_at: float

    @property
    def t0(self) -> float:
        return min(a.t0 for a in self.views.values() if a is not None)


@dataclasses.dataclass
class Stray:
    """A frame that joins no part, recorded as an event ``kind`` with ``message``."""

    kind: str
    message: str


class ViewJoin:
    """The parts waiting for their views. Not thread-safe: one thread feeds it (:func:`joined`)."""

    def __init__(self, plan: ViewPlan) -> None:
        self.plan = plan
        self.deadline_s = plan.deadline_ms / 1000
        self.open: dict[str, JoinedPart] = {}
        self.decided: collections.OrderedDict[str, tuple[float, frozenset[str], float]] = collections.OrderedDict()
        """part id -> (when decided, views it had, its first view's arrival)."""

    def next_deadline(self) -> float | None:
        """When the oldest waiting part's time is up (``time.monotonic()``), or ``None``."""
        if not self.open:
            return None
        return min(p.first_at for p in self.open.values()) + self.deadline_s

    def add(
        self, view: str | None, tag: str, part_id: str, item: Any, at: float, t0: float
    ) -> list[JoinedPart | Stray]:
        """A frame of ``view`` arrived at ``at``: the parts it completes, or what it is if it joins none.
        Parts whose deadline passed before ``at`` leave first (every frame before this one was seen)."""
        out: list[JoinedPart | Stray] = list(self.expire(at))
        if view is None:
            out.append(
                Stray(
                    "view_unknown",
                    f"part {part_id!r}: a frame of no view of this station ({tag}; views: "
                    f"{', '.join(self.plan.names)}); not inspected",
                )
            )
            return out
        part = self.open.get(part_id)
        if part is None:
            self._forget(at)
            known = self.decided.get(part_id)
            if known is not None:
                decided_at, had, first_at = known
                ms = (at - first_at) * 1000
                if view in had:
                    out.append(
                        Stray(
                            "view_duplicate",
                            f"part {part_id!r}: another frame of view {view!r} {ms:.0f} ms after the part's "
                            "first view; the part was already decided with the first one; not inspected",
                        )
                    )
                else:
                    out.append(
                        Stray(
                            "view_late",
                            f"part {part_id!r}: view {view!r} arrived {ms:.0f} ms after the part's first view, "
                            f"past join.deadline_ms {self.plan.deadline_ms:g}; the part was recorded ERROR "
                            "without it; not inspected",
                        )
                    )
                return out
            part = JoinedPart(part_id, dict.fromkeys(self.plan.names), {}, at)
            self.open[part_id] = part
        have = part.views[view]
        if have is not None:
            ms = (at - have.at) * 1000
            have.notes.append(f"a second frame of this view arrived {ms:.0f} ms after it and was not inspected")
            out.append(
                Stray(
                    "view_duplicate",
                    f"part {part_id!r}: a second frame of view {view!r} {ms:.0f} ms after the first; "
                    "the first is inspected, this one is not",
                )
            )
            return out
        part.views[view] = Arrival(view, item, at, t0)
        if all(a is not None for a in part.views.values()):
            out.append(self._decide(part, at))
        return out

    def expire(self, now: float) -> list[JoinedPart]:
        """The parts whose deadline passed before ``now``, oldest first, each missing view named."""
        due = sorted((p for p in self.open.values() if p.first_at + self.deadline_s < now), key=lambda p: p.first_at)
        for p in due:
            for view, a in p.views.items():
                if a is None:
                    p.missing[view] = f"view {view!r} missing: no frame within {self.plan.deadline_ms:g} ms"
            self._decide(p, now)
        return due

    def flush(self, why: str, now: float) -> list[JoinedPart]:
        """Every waiting part, now (the source ended or the station stops): each missing view with ``why``."""
        due = sorted(self.open.values(), key=lambda p: p.first_at)
        for p in due:
            for view, a in p.views.items():
                if a is None:
                    p.missing[view] = f"view {view!r} missing: {why}"
            self._decide(p, now)
        return due

    def _decide(self, part: JoinedPart, now: float) -> JoinedPart:
        del self.open[part.part_id]
        had = frozenset(v for v, a in part.views.items() if a is not None)
        self.decided[part.part_id] = (now, had, part.first_at)
        self.decided.move_to_end(part.part_id)
        while len(self.decided) > _REMEMBERED:
            self.decided.popitem(last=False)
        return part

    def _forget(self, now: float) -> None:
        keep = self.plan.keep_s
        while self.decided:
            _, (at, _, _) = next(iter(self.decided.items()))
            if now - at <= keep:
                return
            self.decided.popitem(last=False)


_END = object()


def joined(
    frames: Iterator[Any],
    plan: ViewPlan,
    *,
    capture: Callable[[Any], Any],
    stopping: Callable[[], bool],
    stop_grace_s: float | None = None,
    on_unread: Callable[[Any], None] = lambda frame: None,
) -> Iterator[JoinedPart | Stray]:
    """The parts of ``frames`` (a source's ``frames()``), each with its views, as they are decided,
    and every frame that joins no part (:class:`Stray`). ``capture(frame)`` makes the station's item
    of a frame (its part id as ``item.frame.part_id``). The source is read in a thread of its own so
    that a deadline passes on time while it blocks. Once ``stopping()`` is true the frames already
    on their way (for at most one deadline, ``stop_grace_s``) are joined, then every part still
    waiting leaves with its missing views named; a failure of the source is raised after that. A
    frame the source hands over after that (it was blocked giving it) goes to ``on_unread``."""
    join = ViewJoin(plan)
    pipe: queue.Queue[Any] = queue.Queue(maxsize=4 * max(2, len(plan.names)))
    quit_ = threading.Event()
    failure: list[BaseException] = []

    def pump() -> None:
        try:
            for frame in frames:
                while not quit_.is_set():
                    try:
                        pipe.put(frame, timeout=0.25)
                        break
                    except queue.Full:
                        continue
                if quit_.is_set():
                    with contextlib.suppress(Exception):  # the station records it (an event)
                        on_unread(frame)
                    break
        except Exception as exc:  # noqa: BLE001 - raised by joined() once the waiting parts are out
            failure.append(exc)
        close = getattr(frames, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):  # closing after the end
                close()
        while not quit_.is_set():
            try:
                pipe.put(_END, timeout=0.25)
                return
            except queue.Full:
                continue

    reader = threading.Thread(target=pump, name="inspector-view-join", daemon=True)
    reader.start()
    grace = plan.deadline_ms / 1000 if stop_grace_s is None else stop_grace_s
    stop_by: float | None = None
    why = "the source ended before it"
    held = 0.0
    """Seconds this generator was suspended (the station busy with what it yielded): the join's
    clock stops meanwhile, so a station held back by a full inspection queue, which takes the
    views of a part before and after such a pause, does not count the pause against the deadline."""

    def clock() -> float:
        return time.monotonic() - held

    def out(items: Sequence[JoinedPart | Stray]) -> Iterator[JoinedPart | Stray]:
        nonlocal held
        for x in items:
            t = time.monotonic()
            yield x
            held += time.monotonic() - t

    try:
        while True:
            now = time.monotonic()
            if stop_by is None and stopping():
                stop_by = now + grace
            if stop_by is not None and (now >= stop_by or (not join.open and pipe.empty())):
                why = "the station stopped before it"
                break
            due = join.next_deadline()
            wait = 0.25 if due is None else max(0.0, min(0.25, due - clock()))
            if stop_by is not None:
                wait = min(wait, max(0.0, stop_by - now))
            try:
                frame = pipe.get(timeout=wait)
            except queue.Empty:
                # Nothing the source has given is waiting here: every frame from now on arrives later.
                yield from out(join.expire(clock()))
                continue
            # Stamped when the station takes the frame (on the join's clock), not when the source
            # gave it: what counts is how long the station, reading, waits for a part's other views.
            at, t0 = clock(), time.perf_counter()
            if frame is _END:
                if failure:
                    why = "the source failed before it"
                break
            item = capture(frame)
            view, tag = plan.view_of(item.frame)
            part_id = item.frame.part_id
            if stop_by is not None and view is not None and part_id not in join.open and part_id not in join.decided:
                # After the stop only the parts already begun are completed; a new one is not started.
                yield from out(
                    [
                        Stray(
                            "view_not_inspected",
                            f"part {part_id!r}: view {view!r} arrived after the station began to stop; "
                            "its part was not begun, this frame is not inspected",
                        )
                    ]
                )
                continue
            yield from out(join.add(view, tag, part_id, item, at, t0))
    finally:
        quit_.set()
    yield from join.flush(why, clock())
    if failure:
        raise failure[0]


# ---------------------------------------------------------------------------- the station's side


def begin_part_views(part: JoinedPart, station: Any) -> Any:
    """What each step of ``station`` sees of the joined ``part`` (:func:`inspection.begin_views`)."""
    from inspector_core.runtime.inspection import begin_views

    frames = {v: (a.item.frame if a is not None else None) for v, a in part.views.items()}
    return begin_views(frames, part.missing, station)


def evidence_image(begun: Any) -> Any:
    """The frame the evidence writer keeps of a part: its image, or for a multi-view part a callable
    that builds its views side by side (only if the writer keeps it, in the writer's thread)."""
    part_views = getattr(begun, "part_views", None)
    return part_views.mosaic if part_views is not None and part_views.images else begun.image


def view_records(part: JoinedPart) -> list[Any]:
    """The part's views as the store keeps them (``inspection_views``), in the order declared."""
    from inspector_core.runtime.inspection import check_image
    from inspector_core.runtime.storable import storable_message
    from inspector_core.store.records import ViewRecord

    out = []
    x = 0
    for view, a in part.views.items():
        if a is None:
            out.append(ViewRecord(view, "missing", error=storable_message(part.missing.get(view, "missing"))))
            continue
        frame = a.item.frame
        problem = frame.error or ("the source gave no image" if frame.image is None else check_image(frame.image))
        note = storable_message("; ".join(a.notes)) if a.notes else None
        rec = ViewRecord(view, "ok", frame.captured_at, a.item.meta or None, note=note)
        if problem:
            rec.status, rec.error = "error", storable_message(f"view {view!r}: {problem}")
        else:
            rec.height, rec.width = frame.image.shape[:2]
            rec.evidence_x = x
            x += rec.width
        out.append(rec)
    return out
