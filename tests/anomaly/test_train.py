"""Training end to end (marked ``train``: needs the [train] extra; run alone with ``-m train``).

A small PatchCore is trained on synthetic good parts through ``inspector train anomaly``, then
run in a real station on good and defective parts; and onnxruntime's output is checked against
anomalib's own prediction of the same model (parity).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from inspector_sources.synthetic import render_part

from inspector_core.testing import run_station

pytestmark = pytest.mark.train

ROI = (172, 144, 680, 480)  # the plate of a 1024x768 synthetic part, with a margin
PARITY_TOLERANCE = 1e-3
"""Largest allowed difference between onnxruntime and anomalib (torch), as a share of the
card's score spread (the raw range that maps to half of the normalised score)."""


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    for i in range(40):
        cv2.imwrite(str(folder / f"good_{i:03d}.png"), render_part(seed=7, index=i, truth="good").image)
    return folder


@pytest.fixture(scope="module")
def trained(good_folder: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "plate.onnx"
    from inspector_anomaly.cli import train

    result = CliRunner().invoke(
        train,
        [
            "anomaly",
            str(good_folder),
            "--out",
            str(out),
            "--size",
            "224",
            "--roi",
            ",".join(map(str, ROI)),
            "--memory-bank",
            "2048",
            "--photometric",
            "none",
        ],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out


def test_train_writes_a_small_onnx_and_a_complete_card(trained: Path):
    card = json.loads(trained.with_suffix(".json").read_text())
    assert trained.stat().st_size < 20e6
    assert card["model"] == "patchcore" and card["input"]["resize"] == "letterbox"
    assert card["input"]["downscale"] == "halving"  # the training default, so the runtime shrinks alike
    assert card["backbone"]["pretrained"] is True and card["backbone"]["name"] == "tf_efficientnet_lite0"
    assert card["training"]["images"] + card["training"]["validation_images"] == 40
    assert card["thresholds"]["image"] > 0 and "leave-one-out" in card["thresholds"]["method"]
    assert card["validation"]["loo_images"] == card["training"]["images"]
    assert card["outputs"] == {"anomaly_map": "anomaly_map"}  # pred_score is not computed on the line
    assert len(card["reference"]["scores"]) == 6 and card["reference"]["tolerance"] > 0
    assert card["validation"]["good_images"] == card["training"]["validation_images"]
    assert card["versions"]["anomalib"] == "2.7.0"
    import hashlib

    assert card["onnx_sha256"] == hashlib.sha256(trained.read_bytes()).hexdigest()


def test_trained_model_runs_in_a_station_and_rejects_defects(trained: Path, tmp_path: Path):
    result = run_station(
        {
            "source": {"type": "synthetic", "config": {"count": 24, "seed": 11, "defect_rate": 0.5}},
            "steps": [
                {
                    "detector": "anomaly",
                    "roi": dict(zip(("x", "y", "width", "height"), ROI, strict=True)),
                    "config": {"model": str(trained), "threads": 2},
                }
            ],
        },
        tmp_path,
    )
    rows = result.inspections()
    by_truth: dict[str, list[str]] = {}
    for r in rows:
        by_truth.setdefault(r.source_meta["truth"], []).append(r.verdict)
    assert len(rows) == 24 and "ERROR" not in {r.verdict for r in rows}
    good_pass = np.mean([v == "PASS" for v in by_truth["good"]])
    bad = [v for t, vs in by_truth.items() if t != "good" for v in vs]
    bad_fail = np.mean([v == "FAIL" for v in bad])
    assert good_pass >= 0.8, by_truth
    assert bad_fail >= 0.6, by_truth
    failing = [r for r in rows if r.verdict == "FAIL"]
    assert failing and all(d.kind == "anomaly" for r in failing for d in r.defects)


def test_leave_one_out_threshold_keeps_new_good_parts_and_still_fails_defects(trained: Path):
    """Issue 11: the good-only threshold rests on every training image's leave-one-out score, not
    on the handful held out: new good plates pass (<= 1 of 48 fails), defective ones still fail."""
    from inspector_anomaly.detector import Anomaly, AnomalyConfig

    det = Anomaly(AnomalyConfig(model=trained.name, threads=2), station_dir=trained.parent)
    det.warm_up()
    x, y, w, h = ROI

    def score(truth: str, i: int) -> float:
        return det.anomaly_map(render_part(seed=101, index=i, truth=truth).image[y : y + h, x : x + w]).score_raw

    good = np.array([score("good", i) for i in range(48)])
    bad = np.array([score(("scratch", "dent")[i % 2], i) for i in range(16)])
    card = json.loads(trained.with_suffix(".json").read_text())
    assert card["validation"]["loo_images"] >= 30  # 40 plates, 20 % held out
    assert (good >= det.image_threshold).sum() <= 1, (np.sort(good)[-5:], det.image_threshold)
    assert (bad >= det.image_threshold).mean() >= 0.6, (np.sort(bad), det.image_threshold)


def test_onnxruntime_matches_anomalib(good_folder: Path, tmp_path: Path):
    """Parity: the exported graph run by onnxruntime against the anomalib module in torch."""
    import torch
    from inspector_anomaly.preprocess import prepare
    from inspector_anomaly.training import (
        TrainSettings,
        build_model,
        export_onnx,
        fit,
        list_images,
        read_image,
    )

    settings = TrainSettings(size=(224, 224), roi=ROI, memory_bank=1024)
    images = [read_image(p, ROI) for p in list_images(good_folder)[:12]]
    module, _ = build_model(settings)
    fit(module, images, settings, progress=lambda m: None)
    onnx_path = export_onnx(module, tmp_path / "parity.onnx", settings.size)
    import onnxruntime as ort
    from inspector_anomaly.reference import part_score

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    # the export keeps only what the runtime reads; the search is ReduceMin, no ArgMin
    assert [o.name for o in sess.get_outputs()] == ["anomaly_map"]
    import onnx

    ops = {n.op_type for n in onnx.load(str(onnx_path)).graph.node}
    assert "ReduceMin" in ops and not {"ArgMin", "GatherElements", "TopK"} & ops, ops
    tests = [render_part(seed=3, index=i, truth=t).image for i, t in enumerate(("good", "scratch", "dent", "good"))]
    torch_scores, ort_scores, worst_map = [], [], 0.0
    for img in tests:
        x = prepare(img[ROI[1] : ROI[1] + ROI[3], ROI[0] : ROI[0] + ROI[2]], settings.size, "letterbox").tensor
        with torch.no_grad():
            ref = module(torch.from_numpy(x))
        got = sess.run(["anomaly_map"], {"input": x})[0]
        ref_map = ref.anomaly_map.numpy().reshape(got.shape)
        worst_map = max(worst_map, float(np.abs(ref_map - got).max()))
        torch_scores.append(part_score(ref_map, "top_mean", 0.01))
        ort_scores.append(part_score(got, "top_mean", 0.01))
    spread = float(np.ptp(torch_scores)) or 1.0
    assert np.max(np.abs(np.array(torch_scores) - np.array(ort_scores))) <= PARITY_TOLERANCE * spread
    assert worst_map <= PARITY_TOLERANCE * spread
    # and the ranking of parts is the same
    assert np.argsort(torch_scores).tolist() == np.argsort(ort_scores).tolist()


def test_fast_export_rewrites_compute_the_same_and_are_undone(monkeypatch: pytest.MonkeyPatch):
    """The export-time rewrites (augmented-matmul nearest neighbour searched in blocks of the
    bank, separable blur) give anomalib's results on anomalib's own blur module, and leave the
    model as it was."""
    import torch
    from anomalib.models.components.filters import GaussianBlur2d
    from inspector_anomaly import fast_export as fast_export_module
    from inspector_anomaly.fast_export import fast_export

    monkeypatch.setattr(fast_export_module, "SEARCH_CHUNK", 256)  # 700 rows: blocks of 256, 256, 188

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blur = GaussianBlur2d(sigma=4, channels=1, kernel_size=33)
            self.register_buffer("memory_bank", torch.randn(700, 24, generator=torch.Generator().manual_seed(1)))

        def nearest_neighbors(self, embedding, n_neighbors):
            d = torch.cdist(embedding, self.memory_bank)
            return d.min(1) if n_neighbors == 1 else d.topk(n_neighbors, largest=False, dim=1)

    g = torch.Generator().manual_seed(2)
    m, image, emb = Model(), torch.rand(1, 1, 80, 96, generator=g), torch.randn(300, 24, generator=g)
    blurred, (scores, where) = m.blur(image), m.nearest_neighbors(emb, 1)
    with fast_export(m):
        fast_blurred, (fast_scores, fast_where) = m.blur(image), m.nearest_neighbors(emb, 1)
        assert m.nearest_neighbors(emb, 9)[1].shape == (300, 9)  # k > 1 falls through to the original
    assert torch.allclose(fast_blurred, blurred, atol=1e-5)
    assert torch.allclose(fast_scores, scores, atol=1e-4)
    assert torch.equal(fast_where, where)
    assert not {"forward", "_col", "_row"} & set(m.blur.__dict__) and "nearest_neighbors" not in m.__dict__
