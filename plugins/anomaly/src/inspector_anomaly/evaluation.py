"""Measure a trained model on labelled images, through the runtime detector (what a station runs)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from inspector_anomaly.metrics import auroc, f1


@dataclasses.dataclass
class Figures:
    image_auroc: float
    pixel_auroc: float
    f1: float
    """Image-level F1 at the card's (or the station's) threshold."""
    per_class: dict[str, dict[str, float]]
    """Per defect class, against all good test images: image_auroc, pixel_auroc, f1, recall."""
    false_alarm_rate: float
    n_good: int
    n_bad: int
    scores: list[float] = dataclasses.field(default_factory=list)
    """Every sample's raw part score, in the order given (another threshold can be replayed)."""
    labels: list[str] = dataclasses.field(default_factory=list)
    """Every sample's label (``good`` or its defect class), in the same order."""


def evaluate(detector, samples: Sequence, pixel_step: int = 2) -> Figures:
    """``samples`` have ``.image()``, ``.mask()``, ``.label`` (``good`` or a class), ``.is_anomalous``."""
    raw_scores: list[float] = []
    is_bad: list[bool] = []
    names: list[str] = []
    pix_s: list[np.ndarray] = []
    pix_l: list[np.ndarray] = []
    for s in samples:
        m = detector.anomaly_map(s.image())
        raw_scores.append(m.score_raw)
        is_bad.append(s.is_anomalous)
        names.append(s.label)
        raw = np.nan_to_num(m.raw, nan=float(np.nanmin(m.raw)))
        pix_s.append(raw[::pixel_step, ::pixel_step].ravel())
        pix_l.append(s.mask()[::pixel_step, ::pixel_step].ravel())
    scores, labels, classes = np.array(raw_scores), np.array(is_bad), np.array(names)
    pred = scores >= detector.image_threshold
    per_class = {}
    good: np.ndarray = classes == "good"
    for cls in sorted(set(classes) - {"good"}):
        sel = good | (classes == cls)
        ps = np.concatenate([pix_s[i] for i in np.flatnonzero(sel)])
        pl = np.concatenate([pix_l[i] for i in np.flatnonzero(sel)])
        per_class[cls] = {
            "n": int((classes == cls).sum()),
            "image_auroc": auroc(labels[sel], scores[sel]),
            "pixel_auroc": auroc(pl, ps),
            "f1": f1(labels[sel], pred[sel]),
            "recall": float(pred[classes == cls].mean()),
        }
    return Figures(
        image_auroc=auroc(labels, scores),
        pixel_auroc=auroc(np.concatenate(pix_l), np.concatenate(pix_s)),
        f1=f1(labels, pred),
        per_class=per_class,
        false_alarm_rate=float(pred[good].mean()) if good.any() else float("nan"),
        n_good=int(good.sum()),
        n_bad=int((~good).sum()),
        scores=[float(v) for v in scores],
        labels=[str(c) for c in classes],
    )
