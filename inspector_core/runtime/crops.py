"""Crops: the evidence of a finding, encoded for the store."""

from __future__ import annotations

import cv2
import numpy as np

from inspector_core.runtime.config import CropPolicy
from inspector_core.store import (
    CropRecord,
)

# ---------------------------------------------------------------------------- crops


def encode_crop(image: np.ndarray, box: tuple[int, int, int, int], policy: CropPolicy) -> CropRecord | None:
    """The padded box of ``image``, scaled so its longer side is at most ``max_size_px``."""
    h, w = image.shape[:2]
    x, y, bw, bh = box
    p = policy.padding_px
    x0, y0 = max(0, x - p), max(0, y - p)
    x1, y1 = min(w, x + bw + p), min(h, y + bh + p)
    if x1 <= x0 or y1 <= y0:
        return None
    crop = image[y0:y1, x0:x1]
    scale = min(1.0, policy.max_size_px / max(x1 - x0, y1 - y0))
    if scale < 1.0:
        crop = cv2.resize(
            crop, (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))), interpolation=cv2.INTER_AREA
        )
    if policy.format == "jpeg":
        ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, policy.jpeg_quality])
    else:
        ok, buf = cv2.imencode(".png", crop)
    if not ok:
        return None
    return CropRecord(policy.format, crop.shape[1], crop.shape[0], x0, y0, scale, buf.tobytes())
