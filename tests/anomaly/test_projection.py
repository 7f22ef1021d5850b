"""The feature projection in front of PatchCore's search (``TrainSettings.feature_dim``).

Marked ``train`` (needs the [train] extra): a small PatchCore is fitted on synthetic parts with a
64-dimension PCA projection, exported, and the ONNX graph is checked against anomalib's torch
module and for the size of its search.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from inspector_sources.synthetic import render_part

pytestmark = pytest.mark.train

ROI = (172, 144, 680, 480)


def _crop(img: np.ndarray) -> np.ndarray:
    x, y, w, h = ROI
    return img[y : y + h, x : x + w]


def test_principal_axes_and_random_projection():
    import torch
    from inspector_anomaly.projection import principal_axes, projection_matrix

    g = torch.Generator().manual_seed(0)
    # 3 strong directions in 10 dimensions plus a little noise, shifted away from the origin
    x = torch.randn(5000, 3, generator=g) @ torch.randn(3, 10, generator=g) * 5 + 0.1 * torch.randn(
        5000, 10, generator=g
    )
    x = x + 7.0
    basis = principal_axes(x)
    assert torch.allclose(basis.T @ basis, torch.eye(10), atol=1e-4)
    p3 = projection_matrix(basis, 3, "pca")
    # three axes keep nearly all of the squared distances between points
    d_full = torch.cdist(x[:200], x[200:400]) ** 2
    d_proj = torch.cdist(x[:200] @ p3, x[200:400] @ p3) ** 2
    assert float(d_proj.sum() / d_full.sum()) > 0.99
    assert float((d_proj / d_full).median()) > 0.99
    r = projection_matrix(basis, 8, "random", seed=1)
    assert r.shape == (10, 8) and torch.equal(r, projection_matrix(basis, 8, "random", seed=1))
    with pytest.raises(ValueError, match="feature_dim"):
        projection_matrix(basis, 11, "pca")


def test_projected_patchcore_exports_a_smaller_search_that_matches_torch(tmp_path: Path):
    import onnx
    import onnxruntime as ort
    import torch
    from inspector_anomaly.preprocess import prepare
    from inspector_anomaly.reference import part_score
    from inspector_anomaly.training import TrainSettings, build_model, export_onnx, fit

    settings = TrainSettings(size=(224, 224), memory_bank=1024, feature_dim=64, input_shape="fixed")
    images = [_crop(render_part(seed=7, index=i, truth="good").image) for i in range(10)]
    module, _ = build_model(settings)
    fit(module, images, settings, progress=lambda m: None)
    assert tuple(module.model.memory_bank.shape) == (1024, 64)
    path = export_onnx(module, tmp_path / "proj.onnx", settings.size)
    graph = onnx.load(str(path)).graph
    dims = [tuple(t.dims) for t in graph.initializer if len(t.dims) == 2]
    # the projection (152 -> 64) and a bank of 64 columns, no bank of all 152 features
    assert (152, 64) in dims and (1024, 64) in dims and (1024, 152) not in dims, dims
    products = [n.input for n in graph.node if n.op_type == "MatMul"]
    assert any("feature_projection" in name for ins in products for name in ins), products
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tests = [_crop(render_part(seed=3, index=i, truth=t).image) for i, t in enumerate(("good", "scratch", "dent"))]
    t_scores, o_scores = [], []
    for img in tests:
        x = prepare(img, settings.size, "letterbox", settings.photometric).tensor
        with torch.no_grad():
            ref = module(torch.from_numpy(x)).anomaly_map.numpy()
        got = sess.run(["anomaly_map"], {"input": x})[0]
        assert np.abs(ref.reshape(got.shape) - got).max() < 1e-3 * max(1.0, float(np.abs(ref).max()))
        t_scores.append(part_score(ref, "top_mean", 0.01))
        o_scores.append(part_score(got, "top_mean", 0.01))
    assert np.argsort(t_scores).tolist() == np.argsort(o_scores).tolist()
    # a defect still scores above the good part in the projected model
    assert max(o_scores[1:]) > o_scores[0]


def test_the_default_training_projects_and_the_card_records_it(tmp_path: Path):
    """``inspector train anomaly --feature-dim 96``: 96 PCA features in the search, said in the card;
    the defaults (all features, sigma 6, top 2 %) too."""
    import cv2
    import onnx
    from click.testing import CliRunner
    from inspector_anomaly.cli import train
    from inspector_anomaly.training import TrainSettings

    d = TrainSettings()
    assert (d.memory_bank, d.feature_dim, d.projection, d.map_sigma, d.top_fraction) == (8192, 0, "pca", 6.0, 0.02)
    good = tmp_path / "good"
    good.mkdir()
    for i in range(8):
        cv2.imwrite(str(good / f"g{i}.png"), _crop(render_part(seed=5, index=i, truth="good").image))
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(
        train,
        ["anomaly", str(good), "--out", str(out), "--size", "64", "--memory-bank", "32", "--feature-dim", "96"],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    import json

    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["settings"]["feature_dim"] == 96
    assert card["training"]["settings"]["projection"] == "pca"
    assert card["training"]["settings"]["memory_bank"] == 32
    dims = [tuple(t.dims) for t in onnx.load(str(out)).graph.initializer if len(t.dims) == 2]
    # the bank as 32 rows of 96, or already folded into the augmented product's [97, 32]
    assert (152, 96) in dims and ({(32, 96), (97, 32)} & set(dims)), dims
    # the defaults: the search on all features, the card says so, and the map settings
    out0 = tmp_path / "m0.onnx"
    args = ["anomaly", str(good), "--out", str(out0), "--size", "64", "--memory-bank", "32"]
    result = CliRunner().invoke(train, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    card0 = json.loads(out0.with_suffix(".json").read_text())
    assert card0["training"]["settings"]["feature_dim"] is None
    assert card0["training"]["settings"]["map_sigma"] == 6.0 and card0["thresholds"]["top_fraction"] == 0.02
    dims0 = [tuple(t.dims) for t in onnx.load(str(out0)).graph.initializer if len(t.dims) == 2]
    assert {(32, 152), (153, 32)} & set(dims0) and (152, 96) not in dims0, dims0
