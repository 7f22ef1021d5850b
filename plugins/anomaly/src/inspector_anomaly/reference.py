"""Reference inputs and the parity check of a runtime (numpy only: the station imports this).

A runtime other than onnxruntime's CPU provider (OpenVINO) is accepted only when it scores the
same deterministic inputs as onnxruntime's CPU provider did, within a stated tolerance. The
inputs are generated, not stored: smooth random patterns (seeded) and the same patterns with a
bright and a dark spot, at the model's input size, so a card needs no image files and ships
nothing from any data set. Their raw part scores (the runtime's own score: mean of the map's top
share, see :func:`part_score`) are written into the card at export (``reference``).
"""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np

REFERENCE_SEEDS: Final = (0, 1, 2)
REFERENCE_INPUTS: Final = "inspector_anomaly.reference.reference_inputs v1: seeds 0, 1, 2; plain and spotted"
PARITY_TOLERANCE: Final = 0.01
"""Largest accepted difference of a reference score, as a share of the card's ``spread`` (the raw
range mapped to half the normalised score): 0.005 of normalised score."""


def reference_inputs(height: int, width: int) -> list[np.ndarray]:
    """Float32 ``[1, 3, H, W]`` tensors in [0, 1]: for each seed a smooth pattern, then the same
    with a bright and a dark square (an 'anomalous' one)."""
    out = []
    for seed in REFERENCE_SEEDS:
        rng = np.random.default_rng(seed)
        small = rng.random((max(2, height // 16), max(2, width // 16), 3), dtype=np.float32)
        base = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        base = np.clip(0.3 + 0.4 * base, 0.0, 1.0)
        spotted = base.copy()
        s = max(2, min(height, width) // 10)
        y, x = height // 3, width // 3
        spotted[y : y + s, x : x + s] = 1.0
        spotted[2 * y : 2 * y + s, 2 * x : 2 * x + s] = 0.0
        for img in (base, spotted):
            out.append(np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32))
    return out


def part_score(amap: np.ndarray, image_score: str, top_fraction: float) -> float:
    """The raw part score of an anomaly map: its maximum, or the mean of its top share."""
    values = amap.ravel()
    if image_score == "max":
        return float(values.max())
    k = max(1, int(round(values.size * top_fraction)))
    return float(np.partition(values, values.size - k)[values.size - k :].mean())
