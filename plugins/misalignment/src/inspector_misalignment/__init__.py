"""Misalignment detector: compares each part's pose with a golden reference.

The reference is taught from good parts (``inspector teach STATION --from DIR``, see
:mod:`inspector_misalignment.reference`) or named directly in the config. Each view is
registered onto it (:mod:`inspector_misalignment.registration`: a global normalised
cross-correlation search, then sub-pixel Lucas-Kanade on a pyramid); the part fails when its
shift, rotation or scale is outside tolerance, or when it does not match the reference at all
(missing, upside down, the wrong part). It publishes the pose it found (``View.publish``) for
every part it recognises, so that later steps can be fixtured to it (``steps[i].fixture``).

Score: ``r / (1 + r)`` where ``r`` is the largest of ``shift / max_shift``,
``|rotation| / max_rotation``, ``|scale - 1| / max_scale_change`` and
``(1 - match) / (1 - min_match)``; so 0.5 exactly at a tolerance, rising with the excess.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from inspector_core import Detector, Finding, PluginConfig, Pose, View, hookimpl

if TYPE_CHECKING:
    from inspector_misalignment.registration import Reference

__all__ = ["MisalignmentConfig", "MisalignmentDetector", "suggest_tolerances"]


_TEACH = "teach it with `inspector teach STATION_FILE --from GOOD_IMAGES_DIR` and add the lines it prints"


def _station_file(value: str, info: ValidationInfo, what: str) -> Path | None:
    """The file ``value`` names, relative to the station's folder, checked to be a readable
    image; ``None`` when there is no station to check against (a config built in code, or a
    command such as ``inspector teach`` that is about to write it)."""
    ctx = info.context or {}
    if ctx.get("station_dir") is None or not ctx.get("check_files", True):
        return None
    path = (Path(ctx["station_dir"]) / value).resolve()
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder, not an image file")
    if not path.exists():
        raise ValueError(f"{what} {path} does not exist; {_TEACH}, or fix the path (relative to the station file)")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {path} ({exc.strerror})") from exc
    if cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) is None:
        raise ValueError(f"{what} {path} is not an image OpenCV can read; {_TEACH}")
    return path


class MisalignmentConfig(PluginConfig):
    """Settings of the misalignment detector. Pixels are view (ROI) pixels.

    In a station file ``reference`` is required and checked at validation (it exists, is a
    readable image, matches ``reference_sha256``); ``inspector teach`` is the one command that
    loads a station without it, to write it."""

    reference: str | None = Field(
        None,
        validate_default=True,
        description="The golden reference image (PNG, the ROI's size), "
        "relative to the station file's folder. `inspector teach STATION --from DIR` writes one to "
        "`<station>.reference/<step>.png` and prints this line. Required in a station file.",
    )
    reference_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="SHA-256 of the reference file; when given, a "
        "different file is refused at validation and start-up (the reference was replaced without "
        "updating the station).",
    )
    weight: str | None = Field(
        None,
        description="Optional mask (PNG, same size; non-zero = part) restricting registration to "
        "the part. Default: `<reference>.weight.png` beside the reference when it exists, else the "
        "whole reference.",
    )
    max_shift_px: float = Field(
        3.0, gt=0, description="Largest allowed shift of the part's centre from the reference, px."
    )
    max_shift_mm: float | None = Field(
        None,
        gt=0,
        description="Largest allowed shift in mm; used instead of max_shift_px when the station has a calibration.",
    )
    max_rotation_deg: float = Field(0.75, gt=0, description="Largest allowed rotation from the reference, degrees.")
    max_scale_change: float = Field(
        0.02,
        gt=0,
        description="Largest allowed relative change of scale (0.02 = 2 %), e.g. a part lifted toward the camera. "
        "The scale is measured only with a scale_range; without one it is 1.",
    )
    min_match: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="Smallest correlation (0-1) between the registered part and the "
        "reference; below it the part is reported missing or not recognised.",
    )
    scale_range: tuple[float, float] | None = Field(
        None,
        description="[low, high] scales (part size in the view / in the reference) the coarse "
        "search tries, e.g. [0.9, 1.1], for parts imaged at a varying distance; the refinement keeps the "
        "scale inside it. Default: scale 1 (shift and rotation only). A frame of another size than the reference "
        "was taught on is refused unless its size ratio lies in this range. The found scale is still "
        "judged against max_scale_change.",
    )

    @field_validator("reference")
    @classmethod
    def _reference_is_an_image(cls, value: str | None, info: ValidationInfo) -> str | None:
        ctx = info.context or {}
        if value is None:
            if ctx.get("station_dir") is not None and ctx.get("check_files", True):
                raise ValueError(f"required: the golden reference image of this step; {_TEACH}")
            return None
        _station_file(value, info, "reference")
        return value

    @field_validator("reference_sha256")
    @classmethod
    def _reference_unchanged(cls, value: str | None, info: ValidationInfo) -> str | None:
        reference = info.data.get("reference")
        if value is None or reference is None:
            return value
        path = _station_file(reference, info, "reference")
        if path is not None:
            from inspector_misalignment.reference import sha256_file

            actual = sha256_file(path)
            if actual != value.lower():
                raise ValueError(
                    f"the reference {path} has SHA-256 {actual}, not this one: it was replaced; "
                    "re-teach, or set this to the new file's hash if the new file is right"
                )
        return value

    @field_validator("scale_range")
    @classmethod
    def _scale_range_is_a_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is None:
            return None
        low, high = value
        if not (0.25 <= low <= 1.0 <= high <= 4.0) or low == high:
            raise ValueError(
                f"must be [low, high] with 0.25 <= low <= 1 <= high <= 4 and low < high (got {list(value)})"
            )
        return (float(low), float(high))

    @field_validator("weight")
    @classmethod
    def _weight_is_an_image(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            _station_file(value, info, "weight mask")
        return value


def suggest_tolerances(spread: dict[str, float]) -> dict[str, float]:
    """Tolerances that pass every taught good part with a margin: 1.25x the largest taught shift,
    1.5x the largest rotation and scale change, the smallest match less 0.05; never tighter
    than 2 px, 0.5 deg, 1 % (a fixture's parts within a fraction of a pixel would otherwise
    give tolerances below the registration's own repeatability on real parts)."""
    return {
        "max_shift_px": round(max(2.0, 1.25 * spread["shift_px_max"]), 1),
        "max_rotation_deg": round(max(0.5, 1.5 * spread["rotation_deg_max"]), 2),
        "max_scale_change": round(max(0.01, 1.5 * spread["scale_change_max"]), 3),
        "min_match": round(max(0.05, min(0.95, spread["match_min"] - 0.05)), 2),
    }


class MisalignmentDetector(Detector):
    """Fails parts that are shifted, turned, scaled or missing against a golden reference."""

    name = "misalignment"
    kinds = ("misalignment",)
    Config = MisalignmentConfig

    def __init__(self, config: MisalignmentConfig, *, station_dir: Path) -> None:
        super().__init__(config, station_dir=station_dir)
        self.config: MisalignmentConfig = config
        self._ref: Reference | None = None
        self._paths: dict[str, Path] = {}
        self._taught_frame: tuple[int, int] | None = None

    def _resolve(self) -> None:
        from inspector_misalignment.reference import sha256_file

        cfg = self.config
        if cfg.reference is None:
            raise RuntimeError(
                "misalignment: config.reference is not set; teach one with "
                "`inspector teach STATION_FILE --from GOOD_IMAGES_DIR` and add the printed line"
            )
        ref_path = (self.station_dir / cfg.reference).resolve()
        if not ref_path.is_file():
            raise FileNotFoundError(
                f"misalignment: reference {ref_path} not found; teach it with "
                "`inspector teach STATION_FILE --from GOOD_IMAGES_DIR` or fix config.reference"
            )
        if cfg.reference_sha256 and (actual := sha256_file(ref_path)) != cfg.reference_sha256.lower():
            raise ValueError(
                f"misalignment: reference {ref_path} has SHA-256 {actual}, the config expects "
                f"{cfg.reference_sha256}; re-teach, or update config.reference_sha256 if the new file is right"
            )
        self._paths = {"reference": ref_path}
        if cfg.weight is not None:
            w_path = (self.station_dir / cfg.weight).resolve()
            if not w_path.is_file():
                raise FileNotFoundError(f"misalignment: weight mask {w_path} not found (config.weight)")
            self._paths["weight"] = w_path
        else:
            w_path = ref_path.with_name(ref_path.stem + ".weight.png")
            if w_path.is_file():
                self._paths["weight"] = w_path

    def warm_up(self, example: np.ndarray | None = None) -> None:
        from inspector_misalignment.reference import taught_frame_size
        from inspector_misalignment.registration import Reference

        self._resolve()
        self._taught_frame = taught_frame_size(self._paths["reference"])
        image = cv2.imread(str(self._paths["reference"]), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise ValueError(f"misalignment: cannot read the reference {self._paths['reference']}")
        weight = None
        if "weight" in self._paths:
            weight = cv2.imread(str(self._paths["weight"]), cv2.IMREAD_GRAYSCALE)
            if weight is None:
                raise ValueError(f"misalignment: cannot read the weight mask {self._paths['weight']}")
        self._ref = Reference(image, weight, scale_range=self.config.scale_range)
        if example is not None:
            self.inspect(View(example, "warm-up"))

    def files(self) -> dict[str, Path]:
        if not self._paths:
            self._resolve()
        return dict(self._paths)

    def inspect(self, view: View) -> list[Finding]:
        if self._ref is None:
            self.warm_up()
        ref = self._ref
        assert ref is not None
        gray = view.pyramid(0)  # view.gray
        h, w = gray.shape
        rh, rw = ref.shape
        self._check_frame_size(view, (w, h))
        factor = 1.0
        # The view's pyrDown levels, shared with the part's other steps (View.pyramid).
        levels: Callable[[int], np.ndarray] | None = view.pyramid
        if (h, w) != (rh, rw):
            # The same ROI seen at another resolution: compare at the reference's.
            if abs(w / h - rw / rh) > 0.01 * (rw / rh):
                raise ValueError(
                    f"misalignment: the view is {w}x{h} px but the reference is {rw}x{rh} "
                    "(another aspect ratio): the step's ROI must match the taught one; re-teach"
                )
            factor = w / rw
            gray = cv2.resize(gray, (rw, rh), interpolation=cv2.INTER_AREA if factor > 1 else cv2.INTER_LINEAR)
            levels = None  # the resized view's levels are not the view's
        pose = ref.register(gray, levels=levels)
        cfg = self.config

        sx, sy = pose.shift
        sx, sy = sx * factor, sy * factor
        shift = math.hypot(sx, sy)
        rot = pose.rotation_deg
        scale = pose.scale
        match = pose.match
        shift_mm = view.mm(shift)
        if cfg.max_shift_mm is not None and shift_mm is not None:
            r_shift = shift_mm / cfg.max_shift_mm
        else:
            r_shift = shift / cfg.max_shift_px
        ratios = {
            "shift": r_shift,
            "rotation": abs(rot) / cfg.max_rotation_deg,
            "scale": abs(scale - 1.0) / cfg.max_scale_change,
            "match": (1.0 - match) / (1.0 - cfg.min_match),
        }
        r = max(ratios.values())
        score = r / (1.0 + r)
        if match >= cfg.min_match:
            # The part's pose, for steps fixtured to this one (docs/fixture.md), in view pixels.
            cx, cy = pose.centre
            view.publish(Pose(sx, sy, rot, (cx * factor, cy * factor), scale))
        if score < self.report_floor:
            return []

        measurements = {
            "shift_x_px": round(sx, 3),
            "shift_y_px": round(sy, 3),
            "shift_px": round(shift, 3),
            "rotation_deg": round(rot, 4),
            "scale": round(scale, 5),
            "match": round(match, 4),
        }
        if shift_mm is not None:
            measurements.update(
                shift_x_mm=round(view.mm(sx) or 0.0, 4),
                shift_y_mm=round(view.mm(sy) or 0.0, 4),
                shift_mm=round(shift_mm, 4),
            )
        missing = match < cfg.min_match
        # Box: where the part is found (the reference's part region moved by the pose); where it
        # should be when it is not found.
        x, y, bw, bh = ref.region
        corners = np.array([[x, y], [x + bw, y], [x, y + bh], [x + bw, y + bh]], np.float64)
        if not missing:
            corners = corners @ pose.matrix[:, :2].T + pose.matrix[:, 2]
        corners *= factor
        x0, y0 = np.clip(corners.min(0), 0, [w, h])
        x1, y1 = np.clip(corners.max(0), 0, [w, h])
        box = (int(x0), int(y0), max(0, int(math.ceil(x1)) - int(x0)), max(0, int(math.ceil(y1)) - int(y0)))
        box = (min(box[0], w), min(box[1], h), min(box[2], w - min(box[0], w)), min(box[3], h - min(box[1], h)))
        if missing:
            message = f"part missing or not recognised (match {match:.2f} < {cfg.min_match:.2f})"
        else:
            dist = f"{shift_mm:.2f} mm" if shift_mm is not None else f"{shift:.1f} px"
            message = f"part shifted {dist} ({sx:+.1f}, {sy:+.1f} px), turned {rot:+.2f} deg"
            if abs(scale - 1.0) >= 0.5 * cfg.max_scale_change:
                message += f", scale {100 * (scale - 1):+.1f} %"
            message += f" (match {match:.2f})"
        return [
            Finding(
                kind="misalignment",
                score=float(min(1.0, score)),
                box=box,
                message=message,
                size_px=float(shift),
                measurements=measurements,
            )
        ]

    def _check_frame_size(self, view: View, view_size: tuple[int, int]) -> None:
        """Refuse an ROI cut from a frame of another size than the reference was taught on: the ROI
        (in frame pixels) no longer frames the same region, and the part would read as missing.
        A whole frame at another resolution is compared at the reference's (see ``inspect``)."""
        taught, frame = self._taught_frame, view.frame_size
        if taught is None or frame is None or tuple(frame) == taught or tuple(frame) == view_size:
            return
        ratio = frame[0] / taught[0]
        scale_range = self.config.scale_range
        if scale_range is not None and scale_range[0] <= ratio <= scale_range[1]:
            return
        raise ValueError(
            f"misalignment: the frame is {frame[0]}x{frame[1]} px but the reference "
            f"{self._paths.get('reference')} was taught on {taught[0]}x{taught[1]} px frames, so the step's ROI "
            f"no longer frames the same region (this is not a missing part); re-teach at this resolution "
            f"(`inspector teach STATION_FILE --from GOOD_IMAGES_DIR` with frames of {frame[0]}x{frame[1]} px), "
            f"or, if the part's scale really varies, set config.scale_range to a range containing {ratio:.3g} "
            "(the found scale is still judged against max_scale_change)"
        )

    def close(self) -> None:
        self._ref = None


@hookimpl
def inspector_register_detectors(register):
    register(MisalignmentDetector)


@hookimpl
def inspector_register_commands(register):
    from inspector_misalignment.cli import teach

    register(teach)
