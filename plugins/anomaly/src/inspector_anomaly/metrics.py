"""Evaluation metrics of training and of the benchmarks (the [train] extra: scikit-learn comes
with anomalib; the runtime detector needs none of this)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def auroc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (scikit-learn's ``roc_auc_score``: ties count half); NaN when
    one class is absent (a defect class with no good image to compare against, say)."""
    y = np.asarray(labels, dtype=bool).ravel()
    if y.all() or not y.any():
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, np.asarray(scores, dtype=np.float64).ravel()))


def f1(labels: ArrayLike, predicted: ArrayLike) -> float:
    y = np.asarray(labels, dtype=bool).ravel()
    p = np.asarray(predicted, dtype=bool).ravel()
    tp = int((y & p).sum())
    fp = int((~y & p).sum())
    fn = int((y & ~p).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def f1_optimal_threshold(labels: ArrayLike, scores: ArrayLike) -> float:
    """The score threshold (predict anomalous when score >= threshold) with the best F1."""
    y = np.asarray(labels, dtype=bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    best, best_t = -1.0, float(s.max())
    for t in np.unique(s):
        v = f1(y, s >= t)
        if v > best:
            best, best_t = v, float(t)
    return best_t


def tail_threshold(scores: ArrayLike, z: float) -> float:
    """``mean + z x sd`` of good scores, never below their maximum (no known good part fails)."""
    scores = np.asarray(scores, dtype=np.float64)
    return float(max(scores.mean() + z * scores.std(ddof=1), scores.max()))
