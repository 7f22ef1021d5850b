"""The part's own structure, taught from good images: a mask of its strong edges and lines.

A scratch detector sees a part's own edges, leads, traces and grooves as lines. On a taught
station (the part sits in the same place every time) they are where they were on the good
parts: the median of a few good images keeps them and drops whatever marks one good part
happens to carry. Its step edges (gradient) and its own ridges (the detector's ridge strength
at the hysteresis level) form the mask, dilated by ``tolerance_px`` for placement jitter;
the detector then ignores scratch evidence inside it (a scratch that crosses the part's
structure is still found on either side).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

__all__ = ["IMAGE_SUFFIXES", "reference_images", "structure_mask"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Structure at half the boundary contrast (where a scratch's seed starts) is taught; fainter
# detail is left to the texture allowance (tuned on the even half of MVTec transistor good).
EDGE_FLOOR = 0.5
# A smoothed step of height h (Gaussian sigma s) has a peak gradient of h / (s sqrt(2 pi)).
_STEP_GAIN = 1.0 / (1.5 * np.sqrt(2.0 * np.pi))


def reference_images(path: Path, limit: int, field: str = "suppress_edges_from") -> list[Path]:
    """The good images under ``path`` (a folder, sorted by name, at most ``limit`` spread
    evenly over it) or ``path`` itself when it is one image file."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ValueError(f"scratch: {field} {path} is neither a folder of good images nor an image file")
    found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise ValueError(
            f"scratch: {field} {path} holds no image ({', '.join(IMAGE_SUFFIXES)}); put a few good parts' images there"
        )
    if len(found) > limit:
        step = len(found) / limit
        found = [found[int(i * step)] for i in range(limit)]
    return found


def median_image(paths: list[Path]) -> np.ndarray:
    """Pixel-wise median of the images (grey), all resized to the first one's size."""
    first = None
    stack = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise ValueError(f"scratch: suppress_edges_from: {p} cannot be read as an image")
        if first is None:
            first = img.shape
        elif img.shape != first:
            img = cv2.resize(img, (first[1], first[0]), interpolation=cv2.INTER_AREA)
        stack.append(img)
    return np.median(np.stack(stack), axis=0).astype(np.uint8)


def structure_mask(
    reference: np.ndarray,
    ridges: Callable[[np.ndarray], np.ndarray],
    min_contrast_gray: float,
    tolerance_px: float,
) -> np.ndarray:
    """Boolean mask (the reference's size) of the part's own structure: step edges and the
    lines ``ridges`` reports on the reference (grey levels of line contrast, same size) of at
    least ``EDGE_FLOOR`` times ``min_contrast_gray``, dilated by ``tolerance_px``."""
    g = cv2.GaussianBlur(reference.astype(np.float32), (0, 0), 1.5)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    floor = EDGE_FLOOR * min_contrast_gray
    mask = cv2.magnitude(gx, gy) > 8.0 * floor * _STEP_GAIN  # Sobel 3x3 scales gradients by 8
    mask |= ridges(reference) > floor
    r = max(0, int(round(tolerance_px)))
    if r:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        mask = cv2.dilate(mask.astype(np.uint8), kernel) > 0
    return mask
