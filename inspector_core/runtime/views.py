"""Multi-view parts (issue 14; docs/views.md): a station that looks at one part from several sides.

A station declares its views (``views: {NAME: {source | tag}}``) and says on each step which view it
looks at (``steps[i].view``). A view's frames come either from its own source (a second camera:
``views.side.source``) or from the station's ``source:``, routed by a tag in the frame's metadata
(one camera that triggers at several positions: ``meta[join.tag_key] == views.NAME.tag``); when only
one view takes the station's source and has no tag, every frame of that source is that view.

This module resolves that part of a station file (:func:`check_views`, called by ``load_station``)
into a :class:`ViewPlan`, and holds :class:`ViewSources`, the frame source that runs the views'
own sources side by side. The views of a part are joined by part id in runtime/join.py.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import difflib
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydantic import Field, PrivateAttr

from inspector_core.contract import Frame, FrameSource, PluginConfig, SourceContext

if TYPE_CHECKING:
    from inspector_core.runtime.config import StationSpec, Step

VIEW_KEY = "view"
"""The metadata key :class:`ViewSources` sets on every frame it yields: the view it belongs to
(``None`` when a frame of the station's source matches no view)."""
PER_SOURCE = 2
"""Frames of one of :class:`ViewSources`'s sources waiting to be yielded, at most."""
KEEP_FACTOR = 10
"""A part's views are remembered for this many join deadlines after the part was decided: a frame
arriving within that window is recorded as late (or a duplicate), after it a new part."""


@dataclasses.dataclass(frozen=True)
class ViewPlan:
    """The resolved views of a station: their names in the order declared, how the station's own
    source's frames are routed to them, and the join's deadline."""

    names: tuple[str, ...]
    deadline_ms: float
    tag_key: str
    tags: dict[str, str]
    """Tag value -> view, for the views fed by the station's source (``views.NAME.tag``, or the
    view's name when it has none and several views share the station's source)."""
    default: str | None
    """The one view fed by the station's source without a tag: every frame of it is this view."""
    own_sources: tuple[str, ...] = ()
    """The views that have a source of their own (a camera each)."""

    @property
    def keep_s(self) -> float:
        return KEEP_FACTOR * self.deadline_ms / 1000

    def route(self, frame: Any) -> tuple[str | None, str]:
        """``(view, tag)`` of a frame of the station's source: the view it belongs to (``None``:
        none) and the tag it carried, as written (for the record of a frame of an unknown view)."""
        meta = getattr(frame, "meta", None)
        if self.default is not None:
            return self.default, self.default
        tag = meta.get(self.tag_key) if isinstance(meta, dict) else None
        if tag is None:
            return None, f"no {self.tag_key!r} in the frame's metadata"
        return self.tags.get(str(tag)), f"{self.tag_key}={tag!r}"

    def view_of(self, frame: Any) -> tuple[str | None, str]:
        """``(view, tag)`` of any frame the station's capture sees: one :class:`ViewSources`
        marked (``meta["view"]``), or one of the station's source routed by :meth:`route`."""
        if not self.own_sources:
            return self.route(frame)
        meta = getattr(frame, "meta", None)
        view = meta.get(VIEW_KEY) if isinstance(meta, dict) else None
        if isinstance(view, str) and view in self.names:
            return view, view
        tag = meta.get("view_tag") if isinstance(meta, dict) else None
        return None, str(tag) if tag is not None else f"no {self.tag_key!r} in the frame's metadata"


class ViewSourcesConfig(PluginConfig):
    """The views' own sources (and the station's), as the station file gives them."""

    station: dict[str, Any] = Field(description="the station's source: {type, config}")
    views: dict[str, dict[str, Any]] = Field(description="view -> its own source: {type, config}")
    _members: list[tuple[str | None, type[FrameSource], PluginConfig]] = PrivateAttr(default_factory=list)
    _plan: ViewPlan | None = PrivateAttr(None)


class ViewSources(FrameSource):
    """Every source of a multi-view station, side by side: each in its own thread, their frames
    yielded in the order they arrive, each marked with its view (``meta["view"]``). Built by
    ``load_station`` when a view has a source of its own; never named in a station file."""

    name = "views"
    Config = ViewSourcesConfig

    def __init__(self, config: ViewSourcesConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        self.config: ViewSourcesConfig = config
        plan = config._plan
        assert plan is not None, "ViewSources is built by load_station"
        self.plan = plan
        self.members: list[tuple[str | None, FrameSource]] = []
        try:
            for view, cls, cfg in config._members:
                self.members.append((view, cls(cfg, context)))
        except Exception as exc:
            for _, m in self.members:
                m.close()
            failed = view or "the station's"
            raise type(exc)(f"{failed} source ({cls.name}): {exc}") from exc
        self._stop = threading.Event()
        self._gone = threading.Event()

    def frames(self) -> Iterator[Frame]:
        # One short queue per source: a camera that runs ahead waits for the others after
        # PER_SOURCE frames (so the views of a part reach the join close together), and the frame
        # captured first among the heads of the queues is yielded first.
        self._queues: list[collections.deque[tuple[float, str, Any]]] = [collections.deque() for _ in self.members]
        self._cond = threading.Condition()
        threads = []
        for i, (view, member) in enumerate(self.members):
            t = threading.Thread(
                target=self._pump, args=(i, view, member), name=f"inspector-view-{view or 'station'}", daemon=True
            )
            t.start()
            threads.append(t)
        running = len(threads)
        failure: BaseException | None = None
        try:
            while running:
                with self._cond:
                    while not any(self._queues):
                        self._cond.wait(0.25)
                    i = min((q[0][0], i) for i, q in enumerate(self._queues) if q)[1]
                    _, what, item = self._queues[i].popleft()
                    self._cond.notify_all()
                if what == "end":
                    running -= 1
                elif what == "failed":
                    running -= 1
                    failure = failure or item
                    self.close()  # one camera failed: the run ends (the open parts are recorded)
                else:
                    yield item
        finally:
            self._gone.set()
            self.close()
        if failure is not None:
            raise failure

    def _pump(self, i: int, view: str | None, member: FrameSource) -> None:
        it = None
        try:
            it = member.frames()
            for frame in it:
                if isinstance(frame, Frame):
                    meta = dict(frame.meta) if isinstance(frame.meta, dict) else {"meta": str(frame.meta)}
                    if view is None:
                        routed, tag = self.plan.route(frame)
                        meta[VIEW_KEY] = routed
                        if routed is None:
                            meta["view_tag"] = tag
                    else:
                        meta[VIEW_KEY] = view
                    frame = dataclasses.replace(frame, meta=meta)  # the image by reference, not copied
                self._put(i, "frame", frame)
                if self._stop.is_set():
                    break
        except Exception as exc:  # noqa: BLE001 - the member's failure ends the run, named
            where = f"view {view!r}" if view else "the station's source"
            self._put(i, "failed", type(exc)(f"{where} ({member.name}): {exc}"))
            return
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):  # closing after the end
                    close()
        self._put(i, "end", None)

    def _put(self, i: int, what: str, item: Any) -> None:
        with self._cond:
            q = self._queues[i]
            # gone: frames() was closed, nobody reads any more; an end or failure always goes in
            while what == "frame" and len(q) >= PER_SOURCE and not self._gone.is_set():
                self._cond.wait(0.25)
            q.append((time.monotonic(), what, item))
            self._cond.notify_all()

    def close(self) -> None:
        self._stop.set()
        for _, m in self.members:
            with contextlib.suppress(Exception):  # each member is closed, whatever another does
                m.close()


# ---------------------------------------------------------------------------- the station file


def check_views(
    spec: StationSpec,
    steps: list[Step],
    registry: Any,
    plugin_config: Any,
    context: dict[str, Any],
    problems: list[str],
    source: tuple[type[FrameSource] | None, PluginConfig | None],
) -> tuple[ViewPlan | None, tuple[type[FrameSource], PluginConfig] | None]:
    """The station's views, checked: every step names one (and only when there are views), every
    view has a step, the views' own sources and their ROIs, the tags of the views that share the
    station's source. Returns the plan, and the :class:`ViewSources` to run instead of the station's
    source when a view has one of its own (``None``: the station's source alone)."""
    views = spec.views
    if views is None:
        for i, s in enumerate(spec.steps):
            if s.view is not None:
                problems.append(
                    f"steps[{i}].view: {s.view!r}: the station declares no views; add a views: section "
                    "(docs/views.md) or remove this key"
                )
        return None, None
    names = list(views)
    if not names:
        problems.append("views: empty; declare the views of the part (docs/views.md) or remove views:")
        return None, None
    for i, s in enumerate(spec.steps):
        if s.view is None:
            problems.append(
                f"steps[{i}].view: missing: this station has views ({', '.join(names)}); say which one "
                f"step {s.name or s.detector!r} looks at"
            )
        elif s.view not in views:
            close = difflib.get_close_matches(s.view, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(
                f"steps[{i}].view: {s.view!r} is not a view of this station (views: {', '.join(names)}){hint}"
            )
    used = {s.view for s in spec.steps}
    for name in names:
        if name not in used:
            problems.append(
                f"views.{name}: no step looks at this view; add a step with view: {name}, or remove the view"
            )
    shared = [n for n in names if views[n].source is None]
    own = [n for n in names if views[n].source is not None]
    if spec.line is not None:
        # On a line each view is a trigger of the station's camera: the k-th trigger of a part id
        # is the k-th view declared (docs/views.md); a camera of a view's own is not triggered.
        for n in own:
            problems.append(
                f"views.{n}.source: on a line (line:) every view is a trigger of the station's source (the "
                "k-th trigger of a part id is the k-th view declared); remove this source, or the line:"
            )
        own = []
    if not shared:
        problems.append(
            f"source: every view has a source of its own, so the station's source would feed no view; "
            f"remove views.{names[0]}.source to make the station's source that view's"
        )
    default = None
    tags: dict[str, str] = {}
    if len(shared) == 1 and views[shared[0]].tag is None:
        default = shared[0]
    else:
        for n in shared:
            tag = views[n].tag or n
            if tag in tags:
                problems.append(
                    f"views.{n}.tag: {tag!r} is also the tag of view {tags[tag]!r}; give each view "
                    "that shares the station's source its own tag"
                )
            tags[tag] = n
    plan = ViewPlan(tuple(names), spec.join.deadline_ms, spec.join.tag_key, tags, default, tuple(own))
    members: list[tuple[str | None, type[FrameSource], PluginConfig]] = []
    station_cls, station_cfg = source
    if station_cls is not None and station_cfg is not None:
        members.append((None, station_cls, station_cfg))
    for n in own:
        vs = views[n].source
        assert vs is not None
        cls, cfg = plugin_config(
            "frame source", vs.type, registry.sources, registry, vs.config, ("views", n, "source"), problems, context
        )
        if cls is None or cfg is None:
            continue
        members.append((n, cls, cfg))
        if cls.triggerable:
            problems.append(
                f"views.{n}.source: the {vs.type!r} source grabs a part only when triggered, and a station "
                "with views triggers only the station's source: (from its line:); use a free-running source "
                "(camera, folder)"
            )
        _check_view_rois(spec, n, vs.type, cls, cfg, problems)
    if not own:
        return plan, None
    cfg_all = ViewSourcesConfig(
        station=spec.source.model_dump(mode="json"),
        views={n: views[n].source.model_dump(mode="json") for n in own},  # type: ignore[union-attr]
    )
    cfg_all._members = members
    cfg_all._plan = plan
    return plan, (ViewSources, cfg_all)


def own_source(spec: StationSpec, view: str | None) -> bool:
    """Whether the view ``view`` has a source of its own (its steps' ROIs are checked against it)."""
    return bool(view and spec.views and view in spec.views and spec.views[view].source is not None)


def _check_view_rois(
    spec: StationSpec, view: str, type_: str, cls: type[FrameSource], cfg: PluginConfig, problems: list[str]
) -> None:
    try:
        size = cls.frame_size(cfg)
    except Exception as exc:  # noqa: BLE001 - a plugin's code
        problems.append(f"views.{view}.source: the frame source {type_!r} failed to say its frame size ({exc})")
        return
    if size is None:
        return
    width, height = size
    for i, s in enumerate(spec.steps):
        r = s.roi
        if s.view != view or r is None:
            continue
        if r.x + r.width > width or r.y + r.height > height:
            problems.append(
                f"steps[{i}].roi: x={r.x}, y={r.y}, width={r.width}, height={r.height} is not inside the "
                f"{width}x{height} px frame of view {view!r}'s {type_} source; move or shrink it"
            )
