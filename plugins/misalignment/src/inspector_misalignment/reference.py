"""Teaching a golden reference from good parts, and storing it beside the station.

A reference is three files in ``<station>.reference/``:

- ``<step>.png``: the reference image (8-bit gray, the step's ROI size): the pixel-wise
  median of the taught images after registering each onto the current reference.
- ``<step>.weight.png``: where the part is stable from one good part to the next (255) and
  where it is not (0): a board, fixture or background that moves independently of the part,
  or texture that differs from part to part. Registration and the match score use only the
  stable pixels, so the pose is the *part's* pose.
- ``<step>.json``: hashes of both images, the taught images' count and hash, the ROI, and the
  spread of the good parts' poses around the reference (the tolerances to choose from).

Teaching is iterative ("congealing"): start from the median of the images as captured,
weighted where they agree (the fixture holds the part near its nominal pose); register every
image onto it; take the median of the registered images as the new reference and the pixels
whose spread across them is small as the new weight; repeat. Things that move with the part
sharpen and stay; things that move independently blur into a high spread and are masked out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inspector_misalignment.registration import Pose, Reference, warp_to_reference

ROUNDS = 4
"""Register-and-median rounds of teaching."""
STABLE_QUANTILE = 0.5
"""A pixel is stable when its spread across the registered good parts is below this quantile
of the spread over the image times ``STABLE_FACTOR``, after smoothing."""
STABLE_FACTOR = 1.0
MIN_IMAGES = 3
PART_POLARITIES = ("dark", "bright")
"""``part`` of :func:`teach`: the part is darker (brighter) than what surrounds it."""
PART_OPEN_FRACTION = 0.05
"""Radius of the opening that cuts background blobs off the part, as a fraction of the shorter side."""


@dataclasses.dataclass(frozen=True)
class TaughtReference:
    image: np.ndarray
    weight: np.ndarray
    poses: list[Pose]
    """Each taught image's pose against the final reference."""
    names: list[str]

    def spread(self) -> dict[str, float]:
        """How far the good parts sit from the reference: max and standard deviation."""
        shift = np.array([math.hypot(*p.shift) for p in self.poses])
        rot = np.array([abs(p.rotation_deg) for p in self.poses])
        scale = np.array([abs(p.scale - 1.0) for p in self.poses])
        match = np.array([p.match for p in self.poses])
        return {
            "shift_px_max": round(float(shift.max()), 4),
            "shift_px_rms": round(float(np.sqrt(np.mean(shift**2))), 4),
            "rotation_deg_max": round(float(rot.max()), 4),
            "rotation_deg_rms": round(float(np.sqrt(np.mean(rot**2))), 4),
            "scale_change_max": round(float(scale.max()), 6),
            "match_min": round(float(match.min()), 4),
            "match_median": round(float(np.median(match)), 4),
        }


def stable_weight(stack: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """255 where the registered good parts agree with each other, 0 elsewhere."""
    spread = np.median(np.abs(stack - reference[None].astype(np.float32)), axis=0)
    h, w = reference.shape
    sigma = max(1.0, min(h, w) / 100.0)
    spread = cv2.GaussianBlur(spread.astype(np.float32), (0, 0), sigma)
    limit = STABLE_FACTOR * float(np.quantile(spread, STABLE_QUANTILE))
    weight = (spread <= limit).astype(np.uint8) * 255
    # Clean: drop specks, close small holes (a few px at the image's scale).
    r = max(1, int(round(min(h, w) / 200.0)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    weight = cv2.morphologyEx(weight, cv2.MORPH_OPEN, kernel)
    weight = cv2.morphologyEx(weight, cv2.MORPH_CLOSE, kernel)
    return weight


def part_mask(image: np.ndarray, polarity: str) -> np.ndarray:
    """The part's own region in ``image`` (uint8 gray): 255 on the part and a thin band around
    its outline, 0 on the background (a board, fixture or textured surface that does not move
    with the part).

    The part is the largest connected region darker (``polarity="dark"``) or brighter than
    Otsu's threshold, opened with a disk of radius ``PART_OPEN_FRACTION`` of the shorter side (blobs of the
    background that touch it, such as a board's holes, are cut off), then grown by a band of
    about 1.5 % of the shorter side so that the gradients of its outline are inside."""
    if polarity not in PART_POLARITIES:
        raise ValueError(f"part must be one of {', '.join(PART_POLARITIES)} (got {polarity!r})")
    h, w = image.shape
    side = min(h, w)
    blur = cv2.GaussianBlur(image, (0, 0), max(1.0, side / 250.0))
    mode = cv2.THRESH_BINARY_INV if polarity == "dark" else cv2.THRESH_BINARY
    _, fg = cv2.threshold(blur, 0, 255, mode + cv2.THRESH_OTSU)
    r_open = max(2, int(round(side * PART_OPEN_FRACTION)))
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r_open + 1,) * 2))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg)
    if n < 2:
        raise ValueError(
            f"no {polarity} part found in the reference: the part must be clearly {polarity}er than its "
            "background; paint a mask and pass it with --part-mask instead"
        )
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[largest, cv2.CC_STAT_AREA] < 0.01 * h * w:
        raise ValueError(f"the {polarity} part found in the reference covers under 1 % of it; pass --part-mask instead")
    mask = (labels == largest).astype(np.uint8) * 255
    r_close = max(2, int(round(side / 30.0)))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r_close + 1,) * 2))
    band = max(2, int(round(side / 65.0)))
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1,) * 2))


def teach(
    images: Sequence[np.ndarray],
    names: Sequence[str] | None = None,
    rounds: int = ROUNDS,
    mask_unstable: bool = False,
    part: str | np.ndarray | None = None,
) -> TaughtReference:
    """Build a reference from good parts' images (gray uint8, all the same shape).

    ``part`` restricts registration to the part's own structure: a mask (uint8, the images'
    shape, non-zero = the part as it sits in the first image; it follows the reference's mean
    pose from round to round), or ``"dark"`` / ``"bright"`` to find the part in the reference
    each round (:func:`part_mask`). Without it the whole image registers, and a textured
    background that moves independently of the part (a board, a fixture) pulls the pose."""
    if len(images) < MIN_IMAGES:
        raise ValueError(f"teaching needs at least {MIN_IMAGES} good images (got {len(images)})")
    shape = images[0].shape
    for i, im in enumerate(images):
        if im.shape != shape or im.ndim != 2:
            raise ValueError(f"image {names[i] if names else i} is {im.shape}, expected gray {shape}")
    given: np.ndarray | None = None
    if isinstance(part, np.ndarray):
        if part.shape != shape:
            raise ValueError(f"the part mask is {part.shape[1]}x{part.shape[0]} px, the images {shape[1]}x{shape[0]}")
        given = (part > 0).astype(np.uint8) * 255
        if given.sum() < 0.01 * 255 * given.size:
            raise ValueError("the part mask covers under 1 % of the image")
    if part is None:
        ref_img = np.median(np.stack(images), axis=0).round().astype(np.uint8)
        weight = np.full(shape, 255, np.uint8)
    else:
        # A real part, sharp, as the first reference: a median of parts at different poses over a
        # textured background is a blur in which the part's outline is lost.
        ref_img = images[0].copy()
        weight = given if given is not None else part_mask(ref_img, str(part))
    poses: list[Pose] = []
    for r in range(rounds):
        ref = Reference(ref_img, weight)
        poses = [ref.register(im) for im in images]
        if r == rounds - 1:
            break
        # Keep the reference at the good parts' mean pose (no drift from round to round).
        mean = np.mean([np.vstack([p.matrix, [0, 0, 1]]) for p in poses], axis=0)
        inv_mean = np.linalg.inv(mean)
        warped = np.stack(
            [
                warp_to_reference(im, (np.vstack([p.matrix, [0, 0, 1]]) @ inv_mean)[:2])
                for im, p in zip(images, poses, strict=True)
            ]
        )
        ref_img = np.median(warped, axis=0).round().astype(np.uint8)
        if given is not None:
            weight = warp_to_reference(weight, inv_mean[:2], border=0)
        elif part is not None:
            weight = part_mask(ref_img, str(part))
        if mask_unstable:
            weight = stable_weight(warped.astype(np.float32), ref_img)
    return TaughtReference(ref_img, weight, poses, list(names) if names else [str(i) for i in range(len(images))])


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (``hashlib.file_digest``)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def taught_frame_size(image_path: Path) -> tuple[int, int] | None:
    """``(width, height)`` of the frames the reference at ``image_path`` was taught on, from its
    ``<step>.json``; ``None`` when unknown (a reference taught before the size was recorded, or
    one without its JSON)."""
    meta_path = image_path.with_suffix(".json")
    if not meta_path.is_file():
        return None
    try:
        frame = json.loads(meta_path.read_text()).get("frame")
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(
            f"misalignment: cannot read the reference's description {meta_path}: {exc}; re-teach"
        ) from None
    if frame is None:
        return None
    try:
        width, height = int(frame["width"]), int(frame["height"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"misalignment: {meta_path}: 'frame' must be {{width, height}} in px (got {frame!r}); re-teach"
        ) from None
    if width <= 0 or height <= 0:
        raise ValueError(f"misalignment: {meta_path}: frame size {width}x{height} px is not a size; re-teach")
    return (width, height)


def images_hash(paths: Sequence[Path]) -> str:
    """One hash over the taught files' names and contents, in name order."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        h.update(p.name.encode())
        h.update(bytes.fromhex(sha256_file(p)))
    return h.hexdigest()


def save(taught: TaughtReference, folder: Path, step: str, extra: dict[str, Any]) -> Path:
    """Write ``<step>.png``, ``<step>.weight.png`` and ``<step>.json`` into ``folder``; return
    the path of the image."""
    folder.mkdir(parents=True, exist_ok=True)
    image_path = folder / f"{step}.png"
    weight_path = folder / f"{step}.weight.png"
    ok1, png = cv2.imencode(".png", taught.image)
    ok2, wpng = cv2.imencode(".png", taught.weight)
    if not (ok1 and ok2):
        raise RuntimeError("could not encode the reference as PNG")
    image_path.write_bytes(png.tobytes())
    weight_path.write_bytes(wpng.tobytes())
    meta = {
        "image": image_path.name,
        "image_sha256": sha256_bytes(png.tobytes()),
        "weight": weight_path.name,
        "weight_sha256": sha256_bytes(wpng.tobytes()),
        "width": int(taught.image.shape[1]),
        "height": int(taught.image.shape[0]),
        "taught_images": len(taught.poses),
        "spread": taught.spread(),
        "poses": [
            {
                "image": n,
                "shift_x_px": round(p.shift[0], 4),
                "shift_y_px": round(p.shift[1], 4),
                "rotation_deg": round(p.rotation_deg, 5),
                "scale": round(p.scale, 6),
                "match": round(p.match, 4),
            }
            for n, p in zip(taught.names, taught.poses, strict=True)
        ],
        **extra,
    }
    (folder / f"{step}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return image_path
