"""One part through the station's steps: what each step sees of it (:func:`begin`), and its
verdict, step results and defects from what the steps answered (:func:`judge`). The station
runs the steps in between (runtime/pipeline.py) and records the result."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from inspector_core.contract import Calibration, Finding, Frame, View
from inspector_core.runtime.config import Station, Step
from inspector_core.runtime.crops import encode_crop
from inspector_core.runtime.fixture import defer, to_frame
from inspector_core.runtime.pipeline import Deferred
from inspector_core.runtime.pyramids import share_pyramids
from inspector_core.runtime.rules import failing, verdict
from inspector_core.runtime.steps import StepOutcome
from inspector_core.runtime.storable import storable_message
from inspector_core.store import DefectRecord, StepRecord


@dataclasses.dataclass
class Begun:
    """A part handed to the steps: the view each step sees (``None`` where it does not run on
    this part; a :class:`Deferred` one for a fixtured step, runtime/fixture.py) and why a step
    does not run."""

    image: np.ndarray
    calibration: Calibration
    views: list[View | Deferred | None]
    unrun: dict[int, str]
    part_views: PartViews | None = None
    """A multi-view part's frames (runtime/views.py); ``image`` is then the first view's."""

    def image_of(self, step: Step) -> np.ndarray:
        """The frame ``step`` looks at: its view's, or the part's only one."""
        if self.part_views is not None and step.view is not None:
            return self.part_views.images[step.view]
        return self.image


@dataclasses.dataclass
class Judged:
    """A part's verdict with its evidence, for the station's :class:`InspectionRecord`."""

    verdict: str
    error: str | None
    error_step: str | None
    steps: list[StepRecord]
    defects: list[DefectRecord]


def begin(frame: Frame, station: Station) -> Begun | str:
    """The part's views, one per step (``None`` where the step cannot run: its ROI lies outside
    the frame), or why its image cannot be inspected at all."""
    image = frame.image
    if frame.error is not None or image is None:
        return frame.error or "the source gave no image"
    problem = check_image(image)
    if problem:
        return problem
    calibration = Calibration(station.spec.calibration.mm_per_px)
    begun = Begun(image, calibration, [], {})
    h, w = image.shape[:2]
    for step in station.steps:
        ox, oy = (step.roi.x, step.roi.y) if step.roi else (0, 0)
        if step.roi and (step.roi.x + step.roi.width > w or step.roi.y + step.roi.height > h):
            begun.unrun[step.index] = (
                f"roi {step.roi.x},{step.roi.y} {step.roi.width}x{step.roi.height} lies outside the {w}x{h} frame"
            )
            begun.views.append(None)
            continue
        sub = image[oy : oy + step.roi.height, ox : ox + step.roi.width] if step.roi else image
        begun.views.append(View(sub, frame.part_id, (ox, oy), calibration, frame.meta, frame_size=(w, h)))
    share_pyramids(begun.views)  # steps with the same roi compute each View.pyramid level once
    defer(begun, station)  # fixtured steps: their roi placed by an earlier step's pose (runtime/fixture.py)
    return begun


def judge(station: Station, begun: Begun, outcomes: list[StepOutcome | None]) -> Judged:
    """The verdict rules over every step's findings; a step that did not answer ``ok`` makes the
    part ERROR (fail closed). Crops are cut from the frame as the store's crop policy says."""
    calibration = begun.calibration
    steps: list[StepRecord] = []
    found: list[tuple[Step, Finding]] = []
    errors: list[tuple[str, str]] = []
    for step, outcome in zip(station.steps, outcomes, strict=True):
        ox, oy = (step.roi.x, step.roi.y) if step.roi else (0, 0)
        if outcome is None:
            msg = begun.unrun.get(step.index, "not run")
            steps.append(StepRecord(step.index, step.name, step.detector.name, "error", None, None, 0, msg))
            errors.append((step.name, msg))
            continue
        if outcome.status != "ok":
            msg = storable_message(outcome.error)
            steps.append(
                StepRecord(step.index, step.name, step.detector.name, outcome.status, None, outcome.latency_ms, 0, msg)
            )
            errors.append((step.name, msg))
            continue
        for f in outcome.findings:
            # The host's own copy (steps.check_findings): moved into frame pixels; a fixtured step's
            # from the view its roi was placed in (runtime/fixture.py: warped, it is mapped back).
            if outcome.view is not None:
                to_frame(f, outcome.view)
            else:
                x, y, bw, bh = f.box
                f.box = (x + ox, y + oy, bw, bh)
            found.append((step, f))
        score = max((f.score for f in outcome.findings), default=0.0)
        steps.append(
            StepRecord(
                step.index,
                step.name,
                step.detector.name,
                "ok",
                score,
                outcome.latency_ms,
                len(outcome.findings),
                raw_score=outcome.raw_score,
            )
        )

    spec = station.spec
    judged = [_Judged(f.kind, f.score, f.size_px, _mm(f.size_px, calibration)) for _, f in found]
    failed = failing(judged, spec.rules, spec.default_rule)
    policy = spec.store.crops
    defects = []
    for (step, f), j, fail in zip(found, judged, failed, strict=True):
        crop = None
        if policy.save == "all" or (policy.save == "failed" and fail):
            crop = encode_crop(begun.image_of(step), f.box, policy)
        defects.append(
            DefectRecord(
                step.name,
                step.detector.name,
                f.kind,
                float(f.score),
                fail,
                f.box,
                _float(f.size_px),
                _float(j.size_mm),
                {storable_message(k, 100): x for k, x in f.measurements.items()},
                storable_message(f.message),
                crop,
                raw_score=f.raw_score,
            )
        )
    error = "; ".join(f"step {name}: {msg}" for name, msg in errors) or None
    result = Judged(verdict(failed, len(errors)), error, errors[0][0] if errors else None, steps, defects)
    if begun.part_views is not None:
        _judge_views(station, begun.part_views, result)
    return result


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


def check_image(image: Any) -> str | None:
    """Why ``image`` is not a frame the steps can inspect, or ``None``."""
    if not isinstance(image, np.ndarray):
        return f"the source gave a {type(image).__name__}, not an image array"
    if image.dtype != np.uint8:
        return f"the source gave an image of dtype {image.dtype}; expected uint8"
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3) or image.size == 0:
        return f"the source gave an image of shape {image.shape}; expected (H, W) or (H, W, 3)"
    return None


# ---------------------------------------------------------------------------- multi-view parts


@dataclasses.dataclass
class PartViews:
    """The frames of a multi-view part (issue 14; docs/views.md): the image of each view that can be
    inspected, and why each other view cannot (missing past the join's deadline, a corrupt frame)."""

    images: dict[str, np.ndarray]
    problems: dict[str, str]
    order: tuple[str, ...]

    def mosaic(self) -> np.ndarray:
        """The part's views side by side (declared order, top-aligned, colour when any is), for the
        whole-frame evidence of the part: one image, each view at :meth:`layout`'s x. Built only
        when the evidence writer keeps the frame (in its thread), never on the inspection's path."""
        layout = self.layout()
        imgs = [self.images[v] for v in self.order if v in self.images]
        if not imgs:
            raise ValueError("no view of this part has an image")
        height = max(i.shape[0] for i in imgs)
        width = sum(i.shape[1] for i in imgs)
        colour = any(i.ndim == 3 for i in imgs)
        out = np.zeros((height, width, 3) if colour else (height, width), np.uint8)
        for view, x in layout.items():
            img = self.images[view]
            if colour and img.ndim == 2:
                img = np.repeat(img[:, :, None], 3, axis=2)
            out[: img.shape[0], x : x + img.shape[1]] = img
        return out

    def layout(self) -> dict[str, int]:
        """Each view's x in :meth:`mosaic` (frame px), for the views with an image."""
        x, out = 0, {}
        for v in self.order:
            if v in self.images:
                out[v] = x
                x += self.images[v].shape[1]
        return out


def begin_views(frames: dict[str, Frame | None], missing: dict[str, str], station: Station) -> Begun:
    """What each step sees of a multi-view part: its ROI of its own view's frame (``None`` where that
    view is missing or cannot be inspected, the reason in ``unrun``)."""
    assert station.views is not None
    calibration = Calibration(station.spec.calibration.mm_per_px)
    images: dict[str, np.ndarray] = {}
    problems: dict[str, str] = {}
    for view in station.views.names:
        frame = frames.get(view)
        if frame is None:
            problems[view] = missing.get(view, f"view {view!r} missing")
            continue
        if frame.error is not None or frame.image is None:
            problems[view] = f"view {view!r}: {frame.error or 'the source gave no image'}"
            continue
        problem = check_image(frame.image)
        if problem:
            problems[view] = f"view {view!r}: {problem}"
            continue
        images[view] = frame.image
    first = next(iter(images.values()), np.zeros((1, 1), np.uint8))
    part = PartViews(images, problems, station.views.names)
    begun = Begun(first, calibration, [], {}, part)
    for step in station.steps:
        frame = frames.get(step.view or "")
        image = images.get(step.view or "")
        if image is None or frame is None:
            begun.unrun[step.index] = problems.get(step.view or "", "no view")
            begun.views.append(None)
            continue
        h, w = image.shape[:2]
        r = step.roi
        if r and (r.x + r.width > w or r.y + r.height > h):
            begun.unrun[step.index] = (
                f"roi {r.x},{r.y} {r.width}x{r.height} lies outside view {step.view!r}'s {w}x{h} frame"
            )
            begun.views.append(None)
            continue
        sub = image[r.y : r.y + r.height, r.x : r.x + r.width] if r else image
        origin = (r.x, r.y) if r else (0, 0)
        begun.views.append(View(sub, frame.part_id, origin, calibration, frame.meta, frame_size=(w, h)))
    share_pyramids(begun.views)  # per view's frame and roi (the key is the pixels' memory)
    defer(begun, station)  # fixtured steps (runtime/fixture.py)
    return begun


def _judge_views(station: Station, part: PartViews, judged: Judged) -> None:
    """Each step result and finding names its view; a view that could not be inspected makes the
    part ERROR with that reason first and ``error_step`` ``view:NAME`` (never PASS)."""
    view_of = {s.name: s.view for s in station.steps}
    for sr in judged.steps:
        sr.view = view_of.get(sr.step)
    for d in judged.defects:
        d.view = view_of.get(d.step)
    if not part.problems:
        return
    first = next(v for v in part.order if v in part.problems)
    reasons = [part.problems[v] for v in part.order if v in part.problems]
    others = [
        f"step {sr.step}: {sr.error}"
        for sr in judged.steps
        if sr.status != "ok" and view_of.get(sr.step) not in part.problems
    ]
    judged.verdict = "ERROR"
    judged.error = "; ".join(reasons + others)
    judged.error_step = f"view:{first}"
