"""Image preprocessing shared by training and the runtime detector.

One function, :func:`prepare`, turns an image (a station's ROI view) into the model's input;
training calls the very same function on every training image, so the runtime sees what the
model learned from. numpy and OpenCV only: the runtime never imports torch.

``letterbox`` (the default) keeps the part's aspect ratio: the image is scaled to fit the
model's input and the rest is filled by replicating the border. The anomaly map is then read
only inside the image's own rectangle (``Prepared.valid``), so padding never raises a score.
``stretch`` is anomalib's plain resize, kept for comparison.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import cv2
import numpy as np

ResizeMode = Literal["letterbox", "stretch"]


@dataclasses.dataclass(frozen=True, slots=True)
class Prepared:
    """The model input for one image and how it maps back to the image."""

    tensor: np.ndarray
    """float32 ``[1, 3, H, W]``, RGB in [0, 1] (ImageNet normalisation is inside the model)."""
    valid: tuple[int, int, int, int]
    """``(x, y, w, h)`` of the image's pixels inside the model input."""
    scale: tuple[float, float]
    """Model pixels per image pixel, ``(sx, sy)``."""


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 gray or BGR (OpenCV order) to RGB uint8."""
    if image.dtype != np.uint8:
        raise ValueError(f"anomaly preprocessing: image must be uint8 (got {image.dtype})")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    raise ValueError(f"anomaly preprocessing: expected (H, W) or (H, W, 3) image, got shape {image.shape}")


def prepare(image: np.ndarray, size: tuple[int, int], mode: ResizeMode = "letterbox") -> Prepared:
    """Prepare one uint8 image (gray or BGR) for a model whose input is ``size = (H, W)``."""
    out_h, out_w = size
    h, w = image.shape[:2]
    if h < 2 or w < 2:
        raise ValueError(f"anomaly preprocessing: image too small ({w}x{h} px)")
    rgb = to_rgb(image)
    if mode == "stretch":
        canvas = cv2.resize(rgb, (out_w, out_h), interpolation=cv2.INTER_AREA if w > out_w else cv2.INTER_LINEAR)
        valid = (0, 0, out_w, out_h)
        scale = (out_w / w, out_h / h)
    elif mode == "letterbox":
        s = min(out_w / w, out_h / h)
        new_w, new_h = max(1, round(w * s)), max(1, round(h * s))
        resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        x0, y0 = (out_w - new_w) // 2, (out_h - new_h) // 2
        canvas = cv2.copyMakeBorder(
            resized, y0, out_h - new_h - y0, x0, out_w - new_w - x0, cv2.BORDER_REPLICATE
        )
        valid = (x0, y0, new_w, new_h)
        scale = (new_w / w, new_h / h)
    else:
        raise ValueError(f"anomaly preprocessing: unknown resize mode {mode!r} (use 'letterbox' or 'stretch')")
    tensor = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32)
    tensor *= 1.0 / 255.0
    return Prepared(tensor=tensor, valid=valid, scale=scale)


def valid_mask(size: tuple[int, int], valid: tuple[int, int, int, int]) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the image's pixels inside the model input."""
    m = np.zeros(size, dtype=bool)
    x, y, w, h = valid
    m[y : y + h, x : x + w] = True
    return m
