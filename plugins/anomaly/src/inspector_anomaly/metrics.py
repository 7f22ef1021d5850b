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


def tolerance_factor(n: int, coverage: float, confidence: float) -> float:
    """k of a one-sided normal tolerance bound: with ``confidence``, at least ``coverage`` of the
    population lies below ``mean + k x sd`` of ``n`` samples (Natrella's approximation of the
    non-central t, within about 1 % of the exact factor for n >= 5)."""
    from statistics import NormalDist

    if n < 3:
        raise ValueError(f"a tolerance bound needs at least 3 scores (got {n})")
    zp, zg = NormalDist().inv_cdf(coverage), NormalDist().inv_cdf(confidence)
    a = 1 - zg * zg / (2 * (n - 1))
    b = zp * zp - zg * zg / n
    return float((zp + (zp * zp - a * b) ** 0.5) / a)


def tail_threshold(scores: ArrayLike, coverage: float = 0.99999, confidence: float = 0.95) -> float:
    """Upper tolerance bound of good scores (``mean + k x sd``, :func:`tolerance_factor`): a
    normal fit's ``coverage`` quantile, estimated with ``confidence`` from however few scores
    there are; never below the largest good score (no known good part fails)."""
    s = np.asarray(scores, dtype=np.float64)
    k = tolerance_factor(len(s), coverage, confidence)
    return float(max(s.mean() + k * s.std(ddof=1), s.max()))
