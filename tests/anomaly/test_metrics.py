"""The one AUROC (scikit-learn's, through ``inspector_anomaly.metrics.auroc``) against its
definition, the model card's file hash against hashlib on the whole bytes, and which coverage
the leave-one-out threshold uses for few and for many pooled scores."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
from inspector_anomaly.card import sha256_file
from inspector_anomaly.metrics import auroc


def pairwise_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """The definition: the share of (defective, good) pairs ranked right, ties counted half."""
    pos, neg = scores[labels], scores[~labels]
    right = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(right / (len(pos) * len(neg)))


def test_auroc_is_the_pairwise_definition_with_ties_counted_half():
    rng = np.random.default_rng(10)
    for _ in range(100):
        n = int(rng.integers(2, 50))
        labels = rng.random(n) < 0.4
        labels[0], labels[1] = True, False
        scores = rng.integers(0, 4, n).astype(float)  # few values: many ties
        assert auroc(labels, scores) == pytest.approx(pairwise_auroc(labels, scores), abs=1e-12)
    assert auroc([True, True, False, False], [0.9, 0.8, 0.1, 0.2]) == 1.0
    assert auroc([True, False], [0.5, 0.5]) == 0.5


def test_auroc_is_nan_when_one_class_is_absent():
    assert math.isnan(auroc([False, False, False], [0.1, 0.5, 0.9]))
    assert math.isnan(auroc([True, True], [0.1, 0.5]))


def test_card_hash_is_the_sha256_of_the_whole_file(tmp_path: Path):
    path = tmp_path / "model.onnx"
    data = np.random.default_rng(1).bytes(3 * (1 << 20) + 17)  # several read chunks and a tail
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


class _Scores:
    """Stands in for the runtime detector: each 'image' is its own raw score."""

    def anomaly_map(self, image):  # type: ignore[no-untyped-def]
        import types

        return types.SimpleNamespace(score_raw=float(image))


def test_loo_threshold_uses_the_far_tail_until_the_tail_is_observed():
    pytest.importorskip("sklearn")
    from inspector_anomaly.metrics import tail_threshold
    from inspector_anomaly.training import TrainSettings, choose_thresholds

    rng = np.random.default_rng(0)
    settings = TrainSettings()
    few_loo, few_val = rng.normal(30, 2, 16), rng.normal(30, 2, 4)
    t_few, _ = choose_thresholds(_Scores(), list(few_val), [], settings, loo_good=few_loo)
    pooled = np.r_[few_loo, few_val]
    assert t_few.image == pytest.approx(tail_threshold(pooled, 0.99999, 0.95))
    assert "99.999% of good parts" in t_few.method
    many_loo, many_val = rng.normal(30, 2, 200), rng.normal(30, 2, 76)
    t_many, metrics = choose_thresholds(_Scores(), list(many_val), [], settings, loo_good=many_loo)
    pooled = np.r_[many_loo, many_val]
    assert t_many.image == pytest.approx(tail_threshold(pooled, 0.999, 0.95))
    assert t_many.image >= pooled.max() and "99.900% of good parts" in t_many.method
    assert t_many.image < tail_threshold(pooled, 0.99999, 0.95)
    assert metrics["false_alarm_rate"] == 0.0
