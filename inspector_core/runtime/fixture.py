"""Fixtured regions of interest (``steps[i].fixture``; docs/fixture.md).

A fixtured step's ROI is placed on the part as an earlier step of the same part found it: that
step's detector publishes a :class:`~inspector_core.contract.Pose` (``View.publish``), and the
fixtured step's view is cut from the frame where the ROI lies on the part as it lies now.

- :func:`defer` (called when a part is begun) gives a fixtured step a
  :class:`~inspector_core.runtime.pipeline.Deferred` view instead of its ROI; its lane waits for
  the fixture step's answer of the same part (holding no core) and then calls :func:`cut`.
- :func:`cut` places the ROI (:func:`place`): a pose that does not turn the ROI (rotation and
  scale move no corner of it by more than :data:`SHIFT_ONLY_PX`) gives a no-copy view of the frame,
  moved by the shift rounded to whole pixels (``meta["fixture"]["mode"] == "shift"``); any other
  gives a resampled copy of the ROI's size (``cv2.warpAffine``, bilinear; ``"warp"``, ``View.warped``).
- Without a pose (the fixture step was not ``ok``, or published none: it found no part) and
  where the placed ROI leaves the frame, the fixtured step is an error saying why: the part is
  ERROR, never PASS. The ROI is not clipped: a detector would see another region than taught.
- :func:`to_frame` maps what the detector found (boxes, masks) back into frame pixels.
- A view placed by a shift shares its ``View.pyramid`` with any other view of the part that shows
  the same pixels (another step fixtured alike on the same roi); a warped one has its own.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from inspector_core.contract import Finding, Pose, View
from inspector_core.runtime.pipeline import Deferred
from inspector_core.runtime.pyramids import share_pyramids

if TYPE_CHECKING:
    from inspector_core.runtime.config import Station, Step
    from inspector_core.runtime.inspection import Begun
    from inspector_core.runtime.steps import StepOutcome

SHIFT_ONLY_PX = 0.25
"""A pose whose rotation and scale move no corner of the ROI by more than this (px, beyond its
shift) places the ROI by its shift alone, as a no-copy view (the shift rounded to whole pixels,
so the view lies within 0.5 px of the pose in x and y, plus this)."""


def defer(begun: Begun, station: Station) -> None:
    """Give each fixtured step of ``begun`` a view cut once its fixture step has answered; a
    fixtured step whose fixture step does not run on this part does not run either (why in
    ``begun.unrun``)."""
    at = {s.name: k for k, s in enumerate(station.steps)}
    placed = _Placed()
    for k, step in enumerate(station.steps):
        if step.fixture is None:
            continue
        nominal = begun.views[k]
        if not isinstance(nominal, View):
            continue  # not run on this part (its own roi outside the frame): the reason is there already
        j = at.get(step.fixture)
        after = begun.views[j] if j is not None else None
        if j is None or after is None:
            why = begun.unrun.get(station.steps[j].index, "not run") if j is not None else "no such step"
            begun.views[k] = None
            begun.unrun[step.index] = f"no pose: its fixture step {step.fixture!r} did not run on this part ({why})"
            continue
        image = begun.image_of(step)  # its view's frame (a multi-view part, runtime/views.py)
        begun.views[k] = Deferred(after, functools.partial(placed.cut, step, station.steps[j], image, nominal))
    placed.views = [v for v in begun.views if isinstance(v, View)]


class _Placed:
    """The views of one part that a view placed by a shift may share its `View.pyramid` with (the
    part's own views, then each placed one as it is cut): two steps fixtured alike on the same roi
    see the same pixels, and compute each level once."""

    def __init__(self) -> None:
        self.views: list[View] = []
        self._lock = threading.Lock()

    def cut(self, *args: Any) -> View | str:
        view = cut(*args)
        if isinstance(view, View) and not view.warped:
            with self._lock:  # the lanes of one part cut their views in their own threads
                share_pyramids([*self.views, view])
                self.views.append(view)
        return view


def cut(step: Step, fixture: Step, image: np.ndarray, nominal: View, outcome: StepOutcome, seen: View) -> View | str:
    """``step``'s view of this part, placed by the pose ``fixture`` published (``outcome``, for the
    view ``seen``), or why there is none."""
    name = fixture.name
    if outcome.status != "ok":
        return (
            f"no pose: its fixture step {name!r} did not judge this part ({outcome.status}), so this step's roi "
            "cannot be placed on it"
        )
    if outcome.pose is None:
        return (
            f"no pose: its fixture step {name!r} (detector {fixture.detector.name!r}) published none for this "
            "part (it found no part, or the detector does not publish poses: View.publish)"
        )
    try:
        pose = frame_pose(outcome.pose, seen, fixture)
    except ValueError as exc:
        return f"no pose: the pose its fixture step {name!r} published cannot be used ({exc})"
    return place(image, step, nominal, pose, {**seen.poses, name: pose}, name)


def frame_pose(pose: Pose, seen: View, step: Step) -> Pose:
    """``pose``, published in the pixels of the view ``seen`` of ``step``, in frame pixels: the map
    from where a point lies on the part as ``step``'s roi frames it when taught to where it lies now."""
    nx, ny = (step.roi.x, step.roi.y) if step.roi is not None else (0, 0)
    if not seen.warped and seen.origin == (nx, ny):
        return pose.translated(nx, ny)
    a = _h(seen.frame_matrix()) @ _h(pose.matrix()) @ _h(np.array([[1.0, 0.0, -nx], [0.0, 1.0, -ny]]))
    return Pose.from_matrix(a[:2], (pose.centre[0] + nx, pose.centre[1] + ny))


def place(image: np.ndarray, step: Step, nominal: View, pose: Pose, poses: dict[str, Pose], fixture: str) -> View | str:
    """``step``'s roi of ``image`` placed by ``pose`` (frame pixels): a no-copy view where the pose
    only shifts it, a warped copy where it turns or scales it; why not, where it leaves the frame."""
    assert step.roi is not None  # a fixtured step has one (validated)
    h, w = image.shape[:2]
    x0, y0, rw, rh = step.roi.x, step.roi.y, step.roi.width, step.roi.height
    m = pose.matrix()
    lin = m[:, :2]
    centre = np.array([x0 + (rw - 1) / 2, y0 + (rh - 1) / 2])
    corners = np.array([[x0, y0], [x0 + rw - 1, y0], [x0, y0 + rh - 1], [x0 + rw - 1, y0 + rh - 1]], np.float64)
    bend = float(np.linalg.norm((corners - centre) @ (lin - np.eye(2)).T, axis=1).max())
    info: dict[str, object] = {
        "step": fixture,
        "dx": round(pose.dx, 3),
        "dy": round(pose.dy, 3),
        "angle_deg": round(pose.angle_deg, 4),
        "scale": round(pose.scale, 5),
        "centre": [round(pose.centre[0], 2), round(pose.centre[1], 2)],
    }
    if bend <= SHIFT_ONLY_PX:
        ex, ey = lin @ centre + m[:, 2] - centre
        nx, ny = x0 + int(round(ex)), y0 + int(round(ey))
        if nx < 0 or ny < 0 or nx + rw > w or ny + rh > h:
            return _outside(step, pose, fixture, w, h, f"to x={nx}, y={ny}")
        meta = {**nominal.meta, "fixture": {**info, "mode": "shift", "shift_px": [nx - x0, ny - y0]}}
        sub = image[ny : ny + rh, nx : nx + rw]
        return View(
            sub, nominal.part_id, (nx, ny), nominal.calibration, meta, nominal.frame_size, poses=poses, placement=pose
        )
    moved = corners @ lin.T + m[:, 2]
    lo, hi = moved.min(0), moved.max(0)
    if lo[0] < -0.5 or lo[1] < -0.5 or hi[0] > w - 0.5 or hi[1] > h - 0.5:
        return _outside(step, pose, fixture, w, h, f"to span x {lo[0]:.1f}..{hi[0]:.1f}, y {lo[1]:.1f}..{hi[1]:.1f}")
    a = m.copy()
    a[:, 2] += lin @ np.array([x0, y0], np.float64)
    warped = cv2.warpAffine(
        image, a, (rw, rh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    )
    meta = {**nominal.meta, "fixture": {**info, "mode": "warp"}}
    return View(
        warped,
        nominal.part_id,
        (x0, y0),
        nominal.calibration,
        meta,
        nominal.frame_size,
        poses=poses,
        placement=pose,
        warped=True,
    )


def _outside(step: Step, pose: Pose, fixture: str, w: int, h: int, where: str) -> str:
    r = step.roi
    assert r is not None
    return (
        f"its roi {r.x},{r.y} {r.width}x{r.height}, placed by the pose of step {fixture!r} "
        f"({pose.dx:+.1f}, {pose.dy:+.1f} px, {pose.angle_deg:+.2f} deg), moves {where}: partly outside the "
        f"{w}x{h} frame, so it would not frame the region taught; give the roi a margin of the largest move "
        f"step {fixture!r} accepts"
    )


def to_frame(finding: Finding, view: View) -> None:
    """Move ``finding`` (the host's own copy, in ``view``'s pixels) into frame pixels: its box by
    the view's origin, or, for a warped view, to the bounding box of its outline in the frame
    (clipped to the frame, ``view.frame_size``), its mask resampled there (nearest)."""
    x, y, bw, bh = finding.box
    if not view.warped:
        ox, oy = view.origin
        finding.box = (x + ox, y + oy, bw, bh)
        return
    a = view.frame_matrix()
    # Pixel (i, j) covers [i - 0.5, i + 0.5]: map the box's outline, then take the pixels it covers.
    outline = np.array(
        [[x - 0.5, y - 0.5], [x + bw - 0.5, y - 0.5], [x - 0.5, y + bh - 0.5], [x + bw - 0.5, y + bh - 0.5]]
    )
    pts = outline @ a[:, :2].T + a[:, 2]
    fw, fh = view.frame_size or (2**31 - 1, 2**31 - 1)
    x0 = min(fw, max(0, math.floor(pts[:, 0].min() + 0.5)))
    y0 = min(fh, max(0, math.floor(pts[:, 1].min() + 0.5)))
    x1 = min(fw, max(x0, math.ceil(pts[:, 0].max() + 0.5)))
    y1 = min(fh, max(y0, math.ceil(pts[:, 1].max() + 0.5)))
    finding.box = (x0, y0, x1 - x0, y1 - y0)
    if finding.mask is None:
        return
    mask = finding.mask
    out = np.zeros((y1 - y0, x1 - x0), np.uint8)
    if mask.size and out.size:
        inv = np.asarray(cv2.invertAffineTransform(a), np.float64)  # frame -> view
        inv[:, 2] += inv[:, :2] @ np.array([x0, y0], np.float64) - np.array([x, y], np.float64)
        out = cv2.warpAffine(
            mask.astype(np.uint8),
            inv,
            (x1 - x0, y1 - y0),
            flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
    finding.mask = out.astype(bool) if mask.dtype == np.bool_ else out


def _h(m: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(m, np.float64), [0.0, 0.0, 1.0]])
