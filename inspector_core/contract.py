"""The objects a plugin and the host hand each other.

This file and `inspector_core.hookspecs` are the whole plugin contract; the docs site's
reference pages (`make docs`) are generated from their docstrings, and `docs/plugins.md` is the
tutorial on top. A plugin author needs nothing else of the host.

Flow of one part:

    FrameSource.frames() --Frame--> Detector.inspect(View) --[Finding]--> verdict rules
        --> store (one transaction) --> Sink.send(Report)   (only after commit)

Conventions a plugin may rely on, and must follow:

- Images are ``numpy.uint8`` arrays, ``(H, W)`` grayscale or ``(H, W, 3)`` BGR (OpenCV order).
- A detector receives a `View` of its region of interest. ``view.image`` is a *view*
  into the frame (no copy): never write into it. With an ROI it is not contiguous (strided
  rows): copy it before handing it to code that reads raw memory. Either layout, gray or BGR,
  may come: ``view.gray`` is always ``(H, W)``.
- A detector that works on a downscaled image takes it from ``view.pyramid(k)`` (level ``k``:
  ``cv2.pyrDown`` of ``view.gray`` ``k`` times, read-only) rather than computing its own: the host
  computes each level once per part for all the steps that look at the same pixels (not for a
  warped view, nor across an ``isolation: process`` step's worker: those compute their own).
- A detector returns boxes **in view coordinates**; the host shifts them into frame pixels.
- A detector that finds where the part lies may publish it (`View.publish`, a `Pose`);
  a step whose ROI is fixtured to it (``steps[i].fixture``) then sees its region placed on
  the part as it lies, and reads the poses it waited for in `View.poses`.
- A score is in [0, 1], rises with confidence and severity, and **0.5 is the detector's own
  decision boundary**. The station's verdict rules (``min_score``, default 0.5) decide what
  fails. Return candidates below 0.5 too (down to ``Detector.report_floor``, or the station's
  ``steps[i].report_floor``): they are stored so that QA can replay other thresholds later
  (``inspector whatif``).
- A part the detector cannot judge raises `CannotJudge`: ERROR, never PASS.
- Measurements are named ``<quantity>_<unit>``: ``length_px``, ``length_mm``, ``angle_deg``.
  ``View.mm`` converts pixels to millimetres when the station has a calibration (``None``
  without one: then give no ``*_mm`` measurement).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

__all__ = [
    "Alarm",
    "Box",
    "Calibration",
    "CannotJudge",
    "Detector",
    "EmptyConfig",
    "Finding",
    "Frame",
    "FrameSource",
    "LineControl",
    "LineResult",
    "LineState",
    "PlcLink",
    "PluginConfig",
    "Pose",
    "Report",
    "Sink",
    "SourceContext",
    "Trigger",
    "View",
]

Box = tuple[int, int, int, int]
"""``(x, y, width, height)`` in pixels; ``x, y`` is the top-left corner."""

Verdict = Literal["PASS", "FAIL", "ERROR", "NOT_INSPECTED"]


def _members(annotation: Any) -> tuple[Any, ...]:
    """The types a field accepts, with ``Annotated`` and unions unwrapped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return tuple(m for a in get_args(annotation) for m in _members(a))
    return (annotation,)


def _bool_for_number(annotations: tuple[Any, ...], value: Any) -> bool:
    """Whether ``value`` holds a YAML ``true``/``false`` where a field of one of ``annotations``
    wants a number (pydantic's lax mode would read it as 1 or 0), at the top or inside a list,
    tuple or dict."""
    members = tuple(m for a in annotations for m in _members(a))
    if isinstance(value, bool):
        return any(m in (int, float) for m in members) and not any(m in (bool, Any, object) for m in members)
    if isinstance(value, list | tuple | set | frozenset | dict):
        inner: list[Any] = []
        for m in members:
            origin, args = get_origin(m), [a for a in get_args(m) if a is not Ellipsis]
            if origin is dict and len(args) == 2:
                inner.append(args[1])
            elif origin in (list, tuple, set, frozenset) and args:
                inner.extend(args)
        if not inner:
            return False
        items = value.values() if isinstance(value, dict) else value
        return any(_bool_for_number(tuple(inner), v) for v in items)
    return False


class PluginConfig(BaseModel):
    """Base for every plugin's typed config: unknown keys are refused, values are frozen.

    Numbers are strict where a station file is easy to get wrong: ``.inf`` and ``.nan`` are
    refused, and so is ``true``/``false`` for a number field (pydantic would read it as 1 or
    0). A subclass that wants either sets ``model_config = ConfigDict(allow_inf_nan=True)``
    or types the field ``int | bool``.

    The host validates a station's ``steps[i].config`` (and ``source.config``, ``sinks[i].config``)
    with the validation context ``{"station_dir": Path, "check_files": bool}``, so a validator
    (``info.context``) can check the files the config names, relative to the station file's
    folder, when ``check_files`` is true (it is false for commands that create those files,
    such as ``inspector teach``). Without a context (a config built in code), skip such checks.

    Give every field a ``description`` and, where it has a unit, put the unit in its name
    (``min_length_mm``, ``max_shift_px``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _bool_for_number((field.annotation,), value):
            raise ValueError(
                "must be a number, not true/false"
                if isinstance(value, bool)
                else "holds true/false where a number is meant"
            )
        return value


class EmptyConfig(PluginConfig):
    """A config with no fields, for plugins that need none."""


@dataclasses.dataclass(frozen=True, slots=True)
class Calibration:
    """How the station's pixels map to the part. ``mm_per_px`` is ``None`` when unknown."""

    mm_per_px: float | None = None


@dataclasses.dataclass(slots=True)
class Frame:
    """One part's image as a source captured it.

    A source that cannot read a part (a corrupt file, a camera timeout on a triggered part)
    still yields a Frame, with ``image=None`` and ``error`` saying why: the host records that
    part as ERROR instead of losing it.
    """

    part_id: str
    image: np.ndarray | None
    captured_at: datetime
    """Capture time, timezone-aware UTC."""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Source metadata (file path, camera index, frame number, ...); JSON-serialisable."""
    error: str | None = None
    trigger: Trigger | None = None
    """The trigger this frame answers, when a PLC (or a software trigger) drives the station;
    ``None`` for a free-running source. A triggered source sets it on the frame it grabbed for
    that trigger, and ``part_id`` from ``trigger.part_id`` when the PLC sent one."""


@dataclasses.dataclass(frozen=True, slots=True)
class Trigger:
    """One "part here" from the line: the PLC's trigger (or a software trigger).

    ``counter`` is the PLC's part counter (or the host's own, counting from 1, when the PLC
    sends none): the key that ties the PLC's trigger to the result it reads back.
    """

    counter: int
    at: datetime
    """When the host saw the trigger, timezone-aware UTC."""
    at_monotonic: float
    """The same instant on ``time.monotonic()`` (latencies are measured on this clock)."""
    deadline_s: float
    """Seconds after ``at_monotonic`` by which the PLC must hold a result."""
    part_id: str | None = None
    """The part's serial / DMC when the PLC sent one; stored as the inspection's part id."""
    product: str | None = None
    """The product (recipe) code the PLC sent with the trigger, if any."""


@dataclasses.dataclass(frozen=True, slots=True)
class Pose:
    """Where a part lies against where it was taught: a shift, a rotation about a stated
    centre and, optionally, a scale (a similarity).

    A point at ``p`` on the taught part lies at ``R @ (p - centre) + centre + (dx, dy)`` on this
    one, where ``R = scale * [[cos a, sin a], [-sin a, cos a]]`` and ``a = angle_deg``. Pixels
    have y down, so a positive angle turns the part counter-clockwise on screen: `matrix` is
    OpenCV's ``getRotationMatrix2D(centre, angle_deg, scale)`` with ``(dx, dy)`` added.

    A detector publishes one with `View.publish`, **in its view's pixels** (as it returns its
    boxes); the host moves it into frame pixels before a later step reads it in `View.poses`.
    Checked when built: every number finite, ``scale`` in [0.25, 4].
    """

    dx: float = 0.0
    """Shift of the centre, px (positive: to the right)."""
    dy: float = 0.0
    """Shift of the centre, px (positive: down)."""
    angle_deg: float = 0.0
    """Rotation about ``centre``, degrees, counter-clockwise on screen."""
    centre: tuple[float, float] = (0.0, 0.0)
    """``(x, y)`` of the point the rotation turns about, on the taught part, px."""
    scale: float = 1.0
    """Size on this part / size on the taught one (1: the same distance to the camera)."""

    def __post_init__(self) -> None:
        for name in ("dx", "dy", "angle_deg", "scale"):
            object.__setattr__(self, name, _finite(f"Pose.{name}", getattr(self, name)))
        if not isinstance(self.centre, tuple | list | np.ndarray) or len(self.centre) != 2:
            raise TypeError(f"Pose.centre must be (x, y) (got {self.centre!r})")
        object.__setattr__(self, "centre", tuple(_finite("Pose.centre", v) for v in self.centre))
        if not 0.25 <= self.scale <= 4.0:
            raise ValueError(f"Pose.scale must be in [0.25, 4] (got {self.scale!r})")

    def matrix(self) -> np.ndarray:
        """The pose as a 2x3 affine matrix (float64): taught point -> point on this part."""
        a = self.scale * math.cos(math.radians(self.angle_deg))
        b = self.scale * math.sin(math.radians(self.angle_deg))
        cx, cy = self.centre
        return np.array([[a, b, (1 - a) * cx - b * cy + self.dx], [-b, a, b * cx + (1 - a) * cy + self.dy]], np.float64)

    def apply(self, x: float, y: float) -> tuple[float, float]:
        """Where the taught point ``(x, y)`` lies on this part."""
        m = self.matrix()
        return (float(m[0, 0] * x + m[0, 1] * y + m[0, 2]), float(m[1, 0] * x + m[1, 1] * y + m[1, 2]))

    def translated(self, ox: float, oy: float) -> Pose:
        """The same motion in coordinates whose origin lies at ``(-ox, -oy)``: from a view's
        pixels to its frame's, ``(ox, oy)`` being the view's `View.origin`."""
        return Pose(self.dx, self.dy, self.angle_deg, (self.centre[0] + ox, self.centre[1] + oy), self.scale)

    @classmethod
    def from_matrix(cls, matrix: Any, centre: tuple[float, float] = (0.0, 0.0)) -> Pose:
        """The pose of a 2x3 similarity matrix (``[[a, b, tx], [-b, a, ty]]``; an affine one is
        read by its first row), stated about ``centre``."""
        m = np.asarray(matrix, np.float64)
        if m.shape != (2, 3):
            raise ValueError(f"Pose.from_matrix: a 2x3 matrix is needed (got shape {m.shape})")
        a, b = float(m[0, 0]), float(m[0, 1])
        cx, cy = float(centre[0]), float(centre[1])
        dx = float(m[0, 0] * cx + m[0, 1] * cy + m[0, 2]) - cx
        dy = float(m[1, 0] * cx + m[1, 1] * cy + m[1, 2]) - cy
        return cls(dx, dy, math.degrees(math.atan2(b, a)), (cx, cy), math.hypot(a, b))


@dataclasses.dataclass(frozen=True, slots=True)
class View:
    """What a detector sees: its region of interest of one frame.

    ``image`` is a numpy view into the frame, not a copy. ``origin`` is where the view's
    top-left pixel lies in the frame; the host uses it to move findings into frame pixels.

    A step with a fixture (``steps[i].fixture``: an earlier step that publishes a `Pose`) sees
    its ROI placed by that pose (``placement``), in one of two ways, which ``warped`` and
    ``meta["fixture"]["mode"]`` say:

    - ``"shift"``: the pose moves the ROI without turning it (its rotation and scale move no
      corner by more than 0.25 px): ``image`` is still a no-copy view of the frame, ``origin``
      the moved ROI's top-left (the shift rounded to whole pixels).
    - ``"warp"``: the pose turns (or scales) the ROI: ``image`` is a copy of the ROI's size,
      resampled (bilinear) so that the part appears as it was taught; ``origin`` is the ROI's
      taught top-left, and view pixel ``(x, y)`` shows frame point
      ``placement.apply(x + origin[0], y + origin[1])`` (`to_frame`). The host maps the boxes
      and masks a detector returns back into frame pixels; lengths, angles and other
      measurements stay as the detector measured them, on the part as taught.
    """

    image: np.ndarray
    part_id: str
    origin: tuple[int, int] = (0, 0)
    calibration: Calibration = Calibration()
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    frame_size: tuple[int, int] | None = None
    """``(width, height)`` of the whole frame the view was cut from; ``None`` when not known.
    A detector taught on frames of one size can tell a frame of another size (whose ROI no
    longer frames the same region) from a part that is missing."""
    poses: Mapping[str, Pose] = dataclasses.field(default_factory=dict)
    """The poses published for this part by the steps this one waited for (its fixture, and
    that step's own fixture, ...), by step name, in frame pixels. Read-only. Empty for a step
    without a fixture: a part's steps run side by side, so a step sees only the poses of the
    steps it waits for."""
    placement: Pose | None = None
    """The pose this view's ROI was placed by (its fixture's, frame px); ``None`` without one."""
    warped: bool = False
    """``True`` when ``image`` is a resampled copy placed by a rotating pose (see above)."""
    _published: list[Pose] = dataclasses.field(default_factory=list, init=False, repr=False, compare=False)
    _levels: _Pyramid = dataclasses.field(default_factory=lambda: _Pyramid(), init=False, repr=False, compare=False)

    def mm(self, px: float) -> float | None:
        """``px`` in millimetres, or ``None`` when the station has no calibration."""
        if self.calibration.mm_per_px is None:
            return None
        return px * self.calibration.mm_per_px

    @property
    def gray(self) -> np.ndarray:
        """The view as a single-channel image (a new array only for colour frames)."""
        if self.image.ndim == 2:
            return self.image
        import cv2

        return cv2.cvtColor(self.image, cv2.COLOR_BGR2GRAY)

    def pyramid(self, level: int) -> np.ndarray:
        """Level ``level`` of the view's Gaussian pyramid, ``(H, W)`` uint8, **read-only**:
        level 0 is `gray`, level ``k`` is ``cv2.pyrDown`` of level ``k - 1`` (so about
        ``ceil(W / 2**k) x ceil(H / 2**k)``; a level never gets smaller than 1x1, and a level past the
        first 1x1 one is a ``ValueError``).

        Use it instead of your own ``cv2.pyrDown`` of ``view.gray``: each level is computed once
        per part, and the host gives the steps of one part whose views have the same pixels (same
        frame, same ROI, not warped) one shared pyramid, so the second step asking for a level gets
        the first one's array (a step asking while another computes it waits for it). It is
        freed with the part's views. The result is bit-identical to ``cv2.pyrDown`` of
        ``view.gray`` applied ``level`` times. Safe to call from several threads. Copy a level
        before writing into it (``np.array(view.pyramid(1))``)."""
        return self._levels.level(level, self)

    def publish(self, pose: Pose) -> None:
        """Publish where the part lies, in this view's pixels (a call again replaces it).

        Call it from `Detector.inspect` for the part being inspected, whether or not you
        return findings (a good part lies somewhere too). The host keeps it only when
        ``inspect`` returns normally; a step fixtured to this one is ERROR, naming why, for a
        part this step published no pose for (it found no part, it raised). Works the same with
        ``isolation: process``."""
        if not isinstance(pose, Pose):
            raise TypeError(f"View.publish needs a Pose (got {type(pose).__name__})")
        self._published[:] = [pose]

    @property
    def published(self) -> Pose | None:
        """What `publish` was given for this view, if anything (the host reads it)."""
        return self._published[-1] if self._published else None

    def to_frame(self, x: float, y: float) -> tuple[float, float]:
        """Frame pixel coordinates of the view's point ``(x, y)``."""
        ox, oy = self.origin
        if self.warped and self.placement is not None:
            return self.placement.apply(x + ox, y + oy)
        return (x + ox, y + oy)

    def frame_matrix(self) -> np.ndarray:
        """`to_frame` as a 2x3 affine matrix (float64): view pixel -> frame pixel."""
        ox, oy = self.origin
        if self.warped and self.placement is not None:
            m = self.placement.matrix()
            m[:, 2] += m[:, :2] @ np.array([ox, oy], np.float64)
            return m
        return np.array([[1.0, 0.0, ox], [0.0, 1.0, oy]], np.float64)


class _Pyramid:
    """The pyrDown levels of one view's pixels, each computed once, by the first caller; a
    caller asking while another computes waits for it (one lock: a level needs the one above)."""

    __slots__ = ("_lock", "_levels")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._levels: list[np.ndarray] = []

    def level(self, k: int, view: View) -> np.ndarray:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
            raise ValueError(f"View.pyramid: the level must be an integer >= 0 (got {k!r})")
        k = int(k)
        last = (max(view.image.shape[:2]) - 1).bit_length()  # halvings down to 1x1
        if k > last:
            h, w = view.image.shape[:2]
            raise ValueError(
                f"View.pyramid: level {k} of a {w}x{h} view does not exist; its last level (1x1) is {last}"
            )
        levels = self._levels
        if k < len(levels):  # a list's append is atomic: a level once there stays there
            return levels[k]
        with self._lock:
            import cv2

            if not levels:
                levels.append(_read_only(view.gray))
            while len(levels) <= k:
                levels.append(_read_only(cv2.pyrDown(levels[-1])))
            return levels[k]

    def __reduce__(self) -> tuple[type[_Pyramid], tuple[()]]:
        # A deep-copied or pickled view starts a pyramid of its own (a lock does not travel); a
        # shallow copy (copy.copy) shares it, as it shares the pixels.
        return (_Pyramid, ())


def _read_only(image: np.ndarray) -> np.ndarray:
    """``image`` as a read-only array (a new numpy view of the same memory where it is writeable)."""
    if image.flags.writeable:
        image = image.view()
        image.flags.writeable = False
    return image


@dataclasses.dataclass(slots=True)
class Finding:
    """One thing a detector found on a part.

    ``box`` is in the coordinates of the `View` the detector received (the host moves it
    into frame pixels). ``mask``, when given, is a ``uint8``/``bool`` array of the box's shape
    (``height, width``), non-zero on the defect. ``size_px`` is the finding's characteristic
    extent (a scratch's length, a dent's diameter, a region's larger side): verdict rules with
    ``min_size_px`` / ``min_size_mm`` compare against it.

    Checked when built, and again by the host after ``inspect`` returns (a finding that fails
    the check makes the part ERROR, naming the detector and its plugin): ``score`` a finite
    number in [0, 1]; ``box`` four finite numbers (truncated to int) with width and height
    >= 0, inside the view (a box partly outside it is clipped, one wholly outside is
    refused); ``message`` a ``str``; ``size_px`` and every measurement a finite number
    (``size_px`` >= 0); ``mask`` a 2-D ``uint8``/``bool`` array; ``raw_score`` a finite number.
    """

    kind: str
    score: float
    box: Box
    message: str = ""
    size_px: float | None = None
    measurements: dict[str, float] = dataclasses.field(default_factory=dict)
    mask: np.ndarray | None = None
    raw_score: float | None = None
    """Optional: the detector's own score before it was normalised and clipped into ``score``
    (an anomaly distance, a contrast in sigma), any finite number, larger = more defective. The
    store keeps it beside ``score`` (``defects.raw_score``; a step's highest in
    ``step_results.raw_score``), so QA can rank parts (AUROC) where ``score`` saturates at 0 or 1.
    A finding below the detector's ``report_floor`` is not stored, but its raw score still counts
    for its step's: return it to have a part that scores 0 ranked by its raw score."""

    def __post_init__(self) -> None:
        # The host checks findings again after ``inspect`` returns (a dataclass can be changed
        # after it is built): see inspector_core.runtime.steps.check_findings.
        if not isinstance(self.kind, str) or not self.kind:
            raise TypeError(f"Finding.kind must be a non-empty str (got {self.kind!r})")
        score = _finite("Finding.score", self.score)
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"Finding.score must be in [0, 1] (got {self.score!r})")
        self.score = score
        if not isinstance(self.box, tuple | list | np.ndarray) or len(self.box) != 4:
            raise TypeError(f"Finding.box must be (x, y, width, height) (got {self.box!r})")
        x, y, w, h = (_pixel("Finding.box", v) for v in self.box)
        if w < 0 or h < 0:
            raise ValueError(f"Finding.box width and height must be >= 0 (got {self.box!r})")
        self.box = (x, y, w, h)
        if not isinstance(self.message, str):
            raise TypeError(f"Finding.message must be a str (got {type(self.message).__name__})")
        if self.size_px is not None:
            size = _finite("Finding.size_px", self.size_px)
            if size < 0:
                raise ValueError(f"Finding.size_px must be >= 0 (got {self.size_px!r})")
            self.size_px = size
        if not isinstance(self.measurements, dict):
            raise TypeError(
                f"Finding.measurements must be a dict of str to number (got {type(self.measurements).__name__})"
            )
        measurements = {}
        for key, v in self.measurements.items():
            if not isinstance(key, str) or not key:
                raise TypeError(f"Finding.measurements keys must be non-empty str (got {key!r})")
            measurements[key] = _finite(f"Finding.measurements[{key!r}]", v)
        self.measurements = measurements
        if self.mask is not None:
            if not isinstance(self.mask, np.ndarray) or self.mask.dtype not in (np.uint8, np.bool_):
                what = self.mask.dtype if isinstance(self.mask, np.ndarray) else type(self.mask).__name__
                raise TypeError(f"Finding.mask must be a uint8 or bool array (got {what})")
            if self.mask.shape != (h, w):
                raise ValueError(f"Finding.mask must have the box's shape {(h, w)} (got {self.mask.shape})")
        if self.raw_score is not None:
            self.raw_score = _finite("Finding.raw_score", self.raw_score)


_MAX_PIXEL = 2**31 - 1


def _finite(what: str, v: object) -> float:
    """``v`` as a float, if it is a finite real number (``bool`` is not a number here)."""
    import math
    import numbers

    if isinstance(v, bool | np.bool_) or not isinstance(v, numbers.Real):
        raise TypeError(f"{what} must be a number (got {type(v).__name__} {v!r:.40})")
    try:
        f = float(v)
    except OverflowError:
        raise ValueError(f"{what} must be a finite number (got {v!r:.40})") from None
    if not math.isfinite(f):
        raise ValueError(f"{what} must be a finite number (got {v!r})")
    return f


def _pixel(what: str, v: object) -> int:
    f = _finite(what, v)
    if abs(f) > _MAX_PIXEL:
        raise ValueError(f"{what} values must be within +-{_MAX_PIXEL} px (got {v!r:.40})")
    return int(f)


class CannotJudge(Exception):
    """Raise it from `Detector.inspect` when this part cannot be judged: the view holds
    no part, the image is too dark to see the surface, the frame is not the size the
    detector's reference was taught on. Say why in the message (the operator reads it).

    The part is recorded as ERROR (a reject: the line fails closed, never PASS), with the step's
    ``step_results.status`` ``cannot_judge`` and the inspection's ``error``
    ``step NAME: cannot judge: MESSAGE``. Any other exception is recorded with status ``error``
    (a crash: a bug to fix), an overrun with ``timeout``; QA can tell the three apart.
    """


class Detector:
    """Base class of a detector plugin. Subclass it, set the class attributes, and register the
    class through `inspector_core.hookspecs.inspector_register_detectors`.

    The host makes one instance per station step, from a validated ``Config``; instances are
    never shared between stations or steps. ``inspect`` is called from one thread at a time,
    but not always the same thread. A detector must be deterministic: the same view and config
    give the same findings.
    """

    name: ClassVar[str]
    """The key a station config uses (``detector: scratch``)."""
    kinds: ClassVar[tuple[str, ...]]
    """The finding kinds this detector may emit."""
    Config: ClassVar[type[PluginConfig]] = EmptyConfig
    """Its typed config; a station's ``steps[i].config`` is validated against it."""
    report_floor: ClassVar[float] = 0.1
    """Candidates scoring below this are not worth storing. The detector's default: a station
    sets its own per step (``steps[i].report_floor``), and the host applies that one."""

    def __init__(self, config: PluginConfig, *, station_dir: Path) -> None:
        """``station_dir`` is the folder of the station file: resolve relative paths from it."""
        self.config = config
        self.station_dir = station_dir

    def warm_up(self, example: np.ndarray | None = None) -> None:
        """Called once before the first part (load models, allocate buffers, JIT paths).

        ``example`` is a blank image of the station's frame size, when known."""

    def inspect(self, view: View) -> list[Finding]:
        """Inspect one part's view and return its findings (possibly none).

        Raise `CannotJudge` when the part cannot be judged (no part in view, a frame of
        the wrong size): the part is ERROR with status ``cannot_judge``. Any other exception is
        recorded as a crash (status ``error``); both make the part ERROR, never PASS."""
        raise NotImplementedError

    def files(self) -> dict[str, Path]:
        """Files this instance depends on (models, references): the host records their
        SHA-256 in the run's provenance. Key: a short label."""
        return {}

    def close(self) -> None:
        """Release resources. Called once when the station stops."""


class SourceContext:
    """What the host offers a frame source besides its config."""

    def __init__(self, station_dir: Path, event: Any, recorded: Callable[[list[str]], set[str]] | None = None) -> None:
        self.station_dir = station_dir
        self._event = event
        self._recorded = recorded

    def event(self, kind: str, message: str) -> None:
        """Record something that happened to the source (a camera gap, a reconnect) in the
        run's event log, where QA can see it beside the verdicts."""
        self._event(kind, message)

    def recorded(self, part_ids: Iterable[str]) -> set[str]:
        """Which of ``part_ids`` already have an inspection recorded at this station, in any
        run: for a source that resumes where an earlier run stopped (the folder source's
        ``resume: true``) instead of inspecting the same parts again. One call may ask about
        many ids; call it from ``frames()``.

        Raises ``NotImplementedError`` when the host has no store to ask.
        """
        if self._recorded is None:
            raise NotImplementedError("this host cannot tell which parts are recorded (no store)")
        return self._recorded(list(part_ids))


CaptureState = Literal["ready", "opening", "down"]
"""A triggerable source's readiness for a trigger (:meth:`FrameSource.capture_state`)."""


class FrameSource:
    """Base class of a frame source (folder, video, camera, synthetic, ...)."""

    name: ClassVar[str]
    Config: ClassVar[type[PluginConfig]] = EmptyConfig

    def __init__(self, config: PluginConfig, context: SourceContext) -> None:
        self.config = config
        self.context = context

    @classmethod
    def frame_size(cls, config: PluginConfig) -> tuple[int, int] | None:
        """``(width, height)`` in pixels of every frame this source will yield under ``config``,
        when it is known before capturing (a generator, a camera with a fixed mode); ``None``
        (the default) when it is not. The host uses it to refuse, at validation, a step's ROI
        that lies outside the frame. Must not open a device or read a file."""
        return None

    triggerable: ClassVar[bool] = False
    """``True`` when the source grabs on `trigger` (a camera in trigger mode) instead of
    free-running. A station with a ``line:`` drives a triggerable source by its triggers; it
    paces any other source (folder, synthetic) by handing out its next frame per trigger."""

    def frames(self) -> Iterator[Frame]:
        """Yield frames in capture order until the source is exhausted. Blocking is fine:
        the host calls this from its own capture thread. Every part the source knows of must
        be yielded, a broken one as a Frame with ``error`` set."""
        raise NotImplementedError

    def trigger(self, trigger: Trigger) -> None:
        """Grab one frame for ``trigger`` (only when ``triggerable``). Called from the line's
        thread; must return quickly (start the exposure, do not wait for the image). The frame
        is then yielded by `frames`, with ``frame.trigger = trigger``, in trigger order,
        and ``meta["trigger_to_exposure_ms"]`` when the source knows it. A trigger the camera
        cannot serve still yields a Frame, with ``error`` set (the part becomes ERROR)."""
        raise NotImplementedError(f"source {self.name!r} is not triggerable")

    def capture_state(self) -> CaptureState:
        """Whether a trigger now would be served (only asked of a ``triggerable`` source, from
        the line's thread; must return at once). ``"ready"`` (the default): it would;
        ``"opening"``: the camera is being opened for the first time (the PLC sees BUSY, so a
        PLC that triggers on Ready waits); ``"down"``: it cannot serve triggers now (the camera
        did not open or was lost; the PLC sees ERROR). A trigger that comes anyway is still
        answered: with its frame, or with an error frame (ERROR, never a pass)."""
        return "ready"

    def close(self) -> None:
        """Stop capturing; called from another thread than ``frames``."""


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    """A committed verdict, as handed to sinks."""

    station: str
    run_id: int
    inspection_uid: str
    part_id: str
    verdict: Verdict
    captured_at: datetime
    latency_ms: float
    error: str | None
    defects: tuple[dict[str, Any], ...]
    """Failing findings: ``{"kind", "score", "box", "size_px", "size_mm", "message", "step"}``, and
    ``"view"`` on a multi-view part (docs/views.md: the box is in that view's frame)."""
    recipe: str | None = None
    """The recipe (product) the part was inspected under (``inspections.recipe``, docs/recipes.md);
    ``None`` on a station without recipes."""
    recipe_hash: str | None = None
    """sha256 of that recipe's resolved config (``inspections.recipe_hash``)."""

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["captured_at"] = self.captured_at.isoformat()
        d["defects"] = [dict(x) for x in self.defects]
        return d


class Sink:
    """Base class of a verdict sink (MQTT, webhook, PLC, a file).

    ``send`` is called only after the verdict is committed to the store, in commit order,
    from this sink's own thread (a slow sink delays no other). It must return only once the
    receiver has the report and raise otherwise: the host retries with backoff for as long as
    the station runs, and resumes after a restart (the sink's cursor is in the store), so
    verdicts already committed are never lost because a sink is down. Delivery is *at least
    once*: after a crash a report may come again; ``Report.inspection_uid`` is the key to
    deduplicate by. ``close`` is called from the same thread. See ``docs/sinks.md``.
    """

    name: ClassVar[str]
    Config: ClassVar[type[PluginConfig]] = EmptyConfig

    def __init__(self, config: PluginConfig, *, station_dir: Path) -> None:
        self.config = config
        self.station_dir = station_dir

    def send(self, report: Report) -> None:
        raise NotImplementedError

    def send_many(self, reports: Sequence[Report]) -> None:
        """Deliver several committed reports at once, in commit order: for a sink that makes them
        durable together (the file sink: one fsync for all). Optional; the host calls it, with the
        reports waiting for the sink (up to the delivery batch), only where a sink's class defines
        it at or below the class that defines its ``send`` (a subclass that changes ``send`` alone
        keeps ``send``). Same promise as ``send`` for every report: return only once the receiver
        has them all, raise otherwise; the host then sends the whole group again (at least once:
        a receiver may get the reports before the failing one twice). The default sends them one
        by one."""
        for report in reports:
            self.send(report)

    def send_alarm(self, alarm: Alarm) -> None:
        """Deliver one SPC alarm (``inspector measurements --alarm``): a control-chart rule
        tripped by a phase II point. Not a verdict, so not a `Report`. Same promise as
        ``send``: return only once the receiver has it, raise otherwise; at least once,
        ``Alarm.uid`` is the key to deduplicate by. The default does nothing (a sink that
        ignores alarms keeps working); the file and MQTT sinks implement it."""

    def close(self) -> None:
        """Flush and release; called once when the station stops."""


@dataclasses.dataclass(frozen=True, slots=True)
class Alarm:
    """One SPC rule violation on a measurement series (``docs/qa.md``, SPC on measurements)."""

    uid: str
    """Stable key of (station, series, point, rule): a rerun yields the same uid."""
    station: str
    series: str
    """``KIND.MEASUREMENT``, e.g. ``scratch.length_mm``."""
    rule: str
    """``WE1``..``WE4``, ``N3`` or ``R`` (``inspector_core.qa.measurements.RULES``)."""
    description: str
    point: int
    """Index of the point on the chart (a value, or a subgroup for X-bar / R)."""
    value: float
    centre: float
    lcl: float
    ucl: float
    at: datetime | None
    """Capture time (UTC) of the point's last part."""
    inspection_ids: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kind"] = "alarm"
        d["at"] = self.at.isoformat() + "Z" if self.at else None
        d["inspection_ids"] = list(self.inspection_ids)
        return d


# ---------------------------------------------------------------------------- the line (PLC)

LineState = Literal["READY", "BUSY", "ERROR", "HALTED"]
"""The station as the PLC sees it. READY: a trigger is accepted now. BUSY: a part is being
captured (a trigger now is an overrun), or the camera is still being opened at start (a trigger
now waits for it, at most its grab timeout). ERROR: the station cannot inspect (camera or store
down); triggers are answered with the default result. HALTED: the station is stopping."""


@dataclasses.dataclass(frozen=True, slots=True)
class LineResult:
    """The answer to one trigger, as written to the PLC.

    Published only once the verdict is committed to the store (or, for a deadline default,
    once the default itself is recorded): the PLC never holds a result the store lacks.
    """

    counter: int
    """The trigger's counter: the PLC matches the result to its trigger by it."""
    part_id: str
    code: int
    """The result code the PLC acts on (station ``line.codes``: by default 1 OK, 2 NOK, 3 RECHECK)."""
    verdict: Verdict | None
    """The real verdict, or ``None`` when this is the deadline default."""
    defect_code: int = 0
    """A code of the first failing finding's kind (station ``line.defect_codes``), 0 for none."""
    is_default: bool = False
    """``True`` when the deadline passed before the verdict: ``code`` is the configured default."""
    overrun: bool = False
    """A trigger came while the station was BUSY with this part (recorded, answered per policy)."""
    missed_trigger: bool = False
    """The PLC's counter jumped: at least one trigger before this one was never seen."""
    inspection_uid: str | None = None
    defects: tuple[dict[str, Any], ...] = ()
    """Failing findings as in `Report` (``kind``, ``score``, ``box``, ...)."""


class LineControl:
    """What the host hands a `PlcLink`: the calls a link makes when the PLC acts.
    Every method is thread-safe and returns quickly."""

    def trigger(self, *, counter: int | None = None, part_id: str | None = None, product: str | None = None) -> Trigger:
        """The PLC signalled "part here". ``counter`` is the PLC's part counter when it sends
        one (else the host counts). Returns the `Trigger` the host accepted (with its
        deadline); an overrun or a trigger while not READY is still accepted and answered
        (per the station's ``line.overrun`` policy), never ignored."""
        raise NotImplementedError

    def acknowledge(self, counter: int) -> None:
        """The PLC has read the result of trigger ``counter`` (it cleared ResultValid / set Ack)."""
        raise NotImplementedError

    def connection(self, connected: bool, peer: str = "") -> None:
        """The PLC connected or dropped off (recorded as a station event)."""
        raise NotImplementedError

    def select_recipe(self, name: str) -> str | None:
        """The PLC asked for a product changeover to recipe ``name`` (a recipe's name or one of
        its product codes). Unlike the others this call may take seconds: it returns the active
        recipe's name once it is active (its detectors started and warmed), so a link calls it
        off its I/O loop; it raises for a recipe the station does not have or cannot start (the
        link answers the PLC with the protocol's refusal)."""
        raise NotImplementedError


class PlcLink:
    """Base class of a line protocol (Modbus TCP, OPC UA, ...): the station's side of the PLC
    handshake. Registered by ``inspector_register_plc_links``; a station selects one by
    ``line.protocol`` and validates ``line.config`` against its ``Config``.

    The host calls ``start`` once, then ``set_state`` and ``publish`` from its line thread for
    as long as the station runs, then ``close``. The link serves the protocol (a Modbus server,
    an OPC UA server), turns what the PLC writes into `LineControl` calls, and turns
    ``publish``/``set_state`` into what the PLC reads. See ``docs/line.md`` for the handshake.
    """

    name: ClassVar[str]
    Config: ClassVar[type[PluginConfig]] = EmptyConfig

    def __init__(self, config: PluginConfig, *, station_dir: Path) -> None:
        self.config = config
        self.station_dir = station_dir

    def start(self, control: LineControl) -> None:
        """Begin serving (bind the port, start the server); return once the PLC can connect."""
        raise NotImplementedError

    def set_state(self, state: LineState) -> None:
        """Show the station's state to the PLC (Ready / Busy / Error / Halted)."""
        raise NotImplementedError

    def show_recipe(self, name: str, products: tuple[str, ...]) -> None:
        """The station's active recipe changed (whoever asked: the PLC, ``inspector recipe``, a
        program): show it to the PLC. ``products`` are the recipe's product codes. Called from
        the line thread like ``set_state``; optional: the default shows nothing."""

    def publish(self, result: LineResult) -> None:
        """Make ``result`` readable by the PLC (result code, defect code, counter, then
        ResultValid), replacing the previous one. Must return within a few milliseconds."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop serving; called once when the station stops."""
