"""The one AUROC (scikit-learn's, through ``inspector_anomaly.metrics.auroc``) against its
definition, and the model card's file hash against hashlib on the whole bytes."""

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
