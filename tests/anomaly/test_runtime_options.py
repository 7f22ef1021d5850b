"""Issue 12 runtime options on the hand-written brightness model (no training): the OpenVINO
runtime behind its parity check, the lean-memory session, the export's output pruning, and the
leave-one-out threshold's tail rule."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from inspector_anomaly.card import sha256_file
from inspector_anomaly.detector import Anomaly, AnomalyConfig
from inspector_anomaly.reference import REFERENCE_INPUTS, reference_inputs

from inspector_core import View

from .conftest import dark_part, write_brightness_model


def _detector(model: Path, **cfg) -> Anomaly:
    det = Anomaly(AnomalyConfig(model=model.name, threads=1, **cfg), station_dir=model.parent)
    det.warm_up()
    return det


def _with_reference(model: Path, scores: list[float]) -> None:
    card_path = model.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["reference"] = {"inputs": REFERENCE_INPUTS, "scores": scores, "tolerance": 0.01}
    card_path.write_text(json.dumps(card))


def _true_reference_scores(model: Path) -> list[float]:
    det = _detector(model)
    return [det._reference_score(det.session, x) for x in reference_inputs(64, 64)]


def test_openvino_runtime_passes_the_parity_check_and_finds_what_onnxruntime_finds(brightness_model: Path):
    _with_reference(brightness_model, _true_reference_scores(brightness_model))
    ov = _detector(brightness_model, runtime="openvino")
    cpu = _detector(brightness_model)
    assert type(ov.session).__name__ == "OpenVinoSession"
    assert ov.parity is not None and ov.parity["n"] == 6 and ov.parity["worst"] <= ov.parity["tolerance"]
    part = View(dark_part(spots=((30, 40, 12), (150, 70, 8))), "p")
    a, b = ov.inspect(part), cpu.inspect(part)
    assert len(a) == len(b) == 2
    assert [f.box for f in a] == [f.box for f in b]
    assert np.allclose([f.score for f in a], [f.score for f in b], atol=1e-4)


def test_a_runtime_whose_scores_differ_from_the_cards_reference_is_refused(brightness_model: Path):
    scores = _true_reference_scores(brightness_model)
    _with_reference(brightness_model, [s + 0.02 for s in scores])  # spread 0.5: tolerance 0.005
    det = Anomaly(AnomalyConfig(model=brightness_model.name, runtime="openvino"), station_dir=brightness_model.parent)
    with pytest.raises(ValueError, match=r"runtime 'openvino' fails the parity check .* remove `runtime:`"):
        det.load()
    assert det.session is None
    # onnxruntime's CPU provider, the default, is not subject to the check
    assert _detector(brightness_model).session is not None


def test_openvino_missing_names_the_extra(brightness_model: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    det = Anomaly(AnomalyConfig(model=brightness_model.name, runtime="openvino"), station_dir=brightness_model.parent)
    with pytest.raises(ValueError, match=r"pip install 'inspector-anomaly\[openvino\]'"):
        det.load()


def test_lean_memory_session_gives_the_same_map(brightness_model: Path):
    img = dark_part(spots=((30, 40, 12),))
    a = _detector(brightness_model).anomaly_map(img)  # lean_memory is the default
    b = _detector(brightness_model, lean_memory=False).anomaly_map(img)
    assert np.array_equal(a.raw, b.raw) and a.score_raw == b.score_raw


def test_keep_outputs_drops_the_unread_output_and_what_feeds_only_it(tmp_path: Path):
    import onnx
    from inspector_anomaly.export_graph import keep_outputs

    model = write_brightness_model(tmp_path)
    before = onnx.load(str(model))
    assert [n.op_type for n in before.graph.node] == ["ReduceMean", "ReduceMax"]
    assert keep_outputs(model) == ["pred_score"]
    after = onnx.load(str(model))
    assert [o.name for o in after.graph.output] == ["anomaly_map"]
    assert [n.op_type for n in after.graph.node] == ["ReduceMean"]
    assert [t.name for t in after.graph.initializer] == ["axes1"]  # axes23 fed only ReduceMax
    card_path = model.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card.update(onnx_sha256=sha256_file(model), outputs={"anomaly_map": "anomaly_map"})
    card_path.write_text(json.dumps(card))
    assert len(_detector(model).inspect(View(dark_part(spots=((30, 40, 12),)), "p"))) == 1
    with pytest.raises(ValueError, match="no output"):
        keep_outputs(model, ("pred_score",))


def test_tolerance_bound_matches_the_tables_and_never_fails_a_known_good_score():
    from inspector_anomaly.metrics import tail_threshold, tolerance_factor

    # one-sided normal tolerance factors, 99 % coverage at 95 % confidence (NIST/SEMATECH tables)
    for n, exact in ((10, 3.981), (20, 3.295), (50, 2.863)):
        assert tolerance_factor(n, 0.99, 0.95) == pytest.approx(exact, rel=0.015)
    assert tolerance_factor(5, 0.999, 0.95) > tolerance_factor(200, 0.999, 0.95) > 3.09  # few scores: wider
    scores = np.array([1.0, 1.1, 0.9, 1.05, 0.95, 1.02, 0.98, 1.01])
    k = tolerance_factor(len(scores), 0.999, 0.95)
    assert tail_threshold(scores, 0.999, 0.95) == pytest.approx(scores.mean() + k * scores.std(ddof=1))
    outlier = np.array([1.0, 1.0, 1.01, 1.0, 5.0])
    assert tail_threshold(outlier, 0.6, 0.5) == 5.0  # never below the largest good score
    with pytest.raises(ValueError, match="at least 3"):
        tolerance_factor(2, 0.99, 0.95)
