"""``inspector train anomaly`` as the README writes it: a relative ``--out``, the folder checked
before training, no provisional card after a failure, and ``--resize tiles``.

One tiny training run (6 small synthetic parts, 64 px input, 16 patch features) is shared by the
tests marked ``train``; the path checks themselves need no training.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from inspector_anomaly.cli import train
from inspector_anomaly.model_output import ModelOutputError, check_writable, resolve_model_path, staged_model
from inspector_sources.synthetic import render_part

from inspector_core import View

TINY = ["--size", "64", "--memory-bank", "16", "--photometric", "none"]


def write_good(folder: Path, n: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = render_part(seed=7, index=i, truth="good").image
        cv2.imwrite(str(folder / f"good_{i:02d}.png"), cv2.resize(img, (256, 192), interpolation=cv2.INTER_AREA))
    return folder


# -- the path, no training --------------------------------------------------------------------


def test_relative_out_is_resolved_once_from_the_current_directory(tmp_path: Path):
    assert resolve_model_path("models/plate.onnx", cwd=tmp_path) == tmp_path / "models" / "plate.onnx"
    assert resolve_model_path(tmp_path / "a" / "b.onnx", cwd=Path("/elsewhere")) == tmp_path / "a" / "b.onnx"
    assert resolve_model_path("x/../plate.ONNX", cwd=tmp_path) == tmp_path / "plate.ONNX"
    with pytest.raises(ModelOutputError, match=r"must end in \.onnx"):
        resolve_model_path("models/plate.pt", cwd=tmp_path)


def test_check_writable_creates_the_folder_and_refuses_what_is_in_the_way(tmp_path: Path):
    check_writable(tmp_path / "new" / "models" / "plate.onnx")
    assert (tmp_path / "new" / "models").is_dir() and not any((tmp_path / "new" / "models").iterdir())
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(ModelOutputError, match=r"cannot write the model into .*afile"):
        check_writable(tmp_path / "afile" / "plate.onnx")
    (tmp_path / "plate.json").mkdir()
    with pytest.raises(ModelOutputError, match="is a folder"):
        check_writable(tmp_path / "plate.onnx")


def test_staged_model_moves_both_files_only_on_success(tmp_path: Path):
    model = tmp_path / "plate.onnx"
    model.write_bytes(b"old model")
    model.with_suffix(".json").write_text("old card")
    with pytest.raises(RuntimeError), staged_model(model) as staged:
        staged.write_bytes(b"new model")
        staged.with_suffix(".json").write_text("provisional card")
        raise RuntimeError("thresholds failed")
    assert model.read_bytes() == b"old model" and model.with_suffix(".json").read_text() == "old card"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plate.json", "plate.onnx"]
    with staged_model(model) as staged:
        staged.write_bytes(b"new model")
        staged.with_suffix(".json").write_text("new card")
    assert model.read_bytes() == b"new model" and model.with_suffix(".json").read_text() == "new card"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plate.json", "plate.onnx"]


def test_unwritable_out_is_refused_before_any_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    good = write_good(tmp_path / "good")
    (tmp_path / "models").write_text("a file where the folder should be")
    monkeypatch.chdir(tmp_path)
    t0 = time.monotonic()
    result = CliRunner().invoke(train, ["anomaly", "good", "--out", "models/plate.onnx", *TINY])
    assert result.exit_code == 2, result.output
    assert "--out" in result.output and str(tmp_path / "models") in result.output
    assert "features" not in result.output and time.monotonic() - t0 < 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good", "models"] and good.is_dir()


def test_scale_without_tiles_is_a_usage_error(tmp_path: Path):
    good = write_good(tmp_path / "good", n=1)
    result = CliRunner().invoke(train, ["anomaly", str(good), "--out", str(tmp_path / "m.onnx"), "--scale", "0.5"])
    assert result.exit_code == 2 and "--resize tiles" in result.output


# -- one tiny training run, the README's form, tiles -------------------------------------------


@pytest.fixture(scope="module")
def readme_form(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """``inspector train anomaly good --out models/plate.onnx --resize tiles`` run from its folder."""
    root = tmp_path_factory.mktemp("readme_form")
    write_good(root / "good")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        result = CliRunner().invoke(
            train, ["anomaly", "good", "--out", "models/plate.onnx", "--resize", "tiles", "--scale", "0.5", *TINY]
        )
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return root, json.loads((root / "models" / "plate.json").read_text())


@pytest.mark.train
def test_relative_out_writes_the_model_where_the_readme_says(readme_form: tuple[Path, dict]):
    root, card = readme_form
    models = root / "models"
    assert sorted(p.name for p in models.iterdir()) == ["plate.json", "plate.onnx"]  # no staging left over
    assert not (models / "models").exists()
    assert card["thresholds"]["method"] != "provisional" and card["thresholds"]["image"] > 0
    assert card["onnx_file"] == "plate.onnx" and card["name"] == "plate"


@pytest.mark.train
def test_tiles_is_a_training_choice_and_the_model_runs(readme_form: tuple[Path, dict]):
    from inspector_anomaly.detector import Anomaly, AnomalyConfig

    root, card = readme_form
    assert card["input"]["resize"] == "tiles"
    assert card["input"]["scale"] == 0.5 and card["input"]["tile_overlap"] == 32
    det = Anomaly(AnomalyConfig(model="models/plate.onnx", threads=1), station_dir=root)  # as a station beside it
    det.warm_up()
    img = cv2.imread(str(root / "good" / "good_00.png"))
    amap = det.anomaly_map(img)
    assert amap.raw.shape == img.shape[:2] and np.isfinite(amap.score_raw)
    det.inspect(View(img, "good_00"))


@pytest.mark.train
def test_a_failed_run_leaves_no_provisional_card_and_keeps_the_old_model(
    readme_form: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from inspector_anomaly import training
    from inspector_anomaly.detector import Anomaly

    root, _ = readme_form
    old_model, old_card = (root / "models" / "plate.onnx").read_bytes(), (root / "models" / "plate.json").read_text()

    def crash(self: Anomaly) -> None:
        raise FileNotFoundError(f"simulated: cannot load {self.model_path}")

    monkeypatch.setattr(Anomaly, "load", crash)  # where the relative-path bug crashed: after export and card
    monkeypatch.chdir(root)
    with pytest.raises(FileNotFoundError, match="simulated"):
        training.train(
            training.list_images(root / "good"),
            Path("models/plate.onnx"),
            training.TrainSettings(size=(64, 64), memory_bank=16, photometric="none"),
            progress=lambda msg: None,
        )
    models = root / "models"
    assert sorted(p.name for p in models.iterdir()) == ["plate.json", "plate.onnx"]
    assert (models / "plate.onnx").read_bytes() == old_model and (models / "plate.json").read_text() == old_card


def test_good_images_are_held_out_for_thresholds_also_when_only_defective_validation_is_given():
    """``--val-bad`` alone used to turn the held-out good split off: training on a reviewed export
    (good/ and defect/) then stopped with 'no validation images'."""
    from inspector_anomaly.training import split_validation

    good = [Path(f"g{i:02d}.png") for i in range(20)]
    train, held = split_validation(good, (), 0.2, seed=3)
    assert len(held) == 4 and len(train) == 16 and not set(train) & set(held)
    assert split_validation(good, (), 0.2, seed=3) == (train, held)  # seeded
    given = [Path("v.png")]
    assert split_validation(good, given, 0.2, seed=3) == (good, given)
    with pytest.raises(ValueError, match="too few good images"):
        split_validation(good[:2], (), 0.2, seed=3)
