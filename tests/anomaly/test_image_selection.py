"""Which files ``inspector train anomaly`` trains on: masks beside images are never good parts."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from inspector_anomaly.cli import train
from inspector_anomaly.image_selection import ImageSelectionError, select_images


def write(folder: Path, *names: str) -> None:
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((8, 8), 128, np.uint8))
    (folder / "notes.txt").write_text("not an image")


def rel(folder: Path, paths: list[Path]) -> list[str]:
    return [p.relative_to(folder).as_posix() for p in paths]


def test_default_excludes_drop_mask_files_and_mask_folders(tmp_path: Path):
    write(
        tmp_path,
        "a.png",
        "b.jpg",
        "c_mask.png",
        "d_MASK.png",
        "masks/e.png",
        "ground_truth/f.png",
        "gt/g.png",
        "sub/ground_truth/h.png",
        "sub/i.png",
    )
    assert rel(tmp_path, select_images(tmp_path)) == ["a.png", "b.jpg", "sub/i.png"]


def test_an_image_and_its_mask_with_the_same_stem_are_refused(tmp_path: Path):
    write(tmp_path, "001.jpg", "001.png", "002.jpg", "002.png")
    with pytest.raises(ImageSelectionError, match=r"001\.jpg and .*001\.png share a name.*--exclude '\*\.png'"):
        select_images(tmp_path)
    assert rel(tmp_path, select_images(tmp_path, exclude=["*.png"])) == ["001.jpg", "002.jpg"]
    assert rel(tmp_path, select_images(tmp_path, include=["*.jpg"])) == ["001.jpg", "002.jpg"]


def test_the_same_stem_in_different_folders_is_fine(tmp_path: Path):
    write(tmp_path, "line1/001.png", "line2/001.png")
    assert rel(tmp_path, select_images(tmp_path)) == ["line1/001.png", "line2/001.png"]


def test_include_and_exclude_are_repeatable_globs_on_the_path_or_the_name(tmp_path: Path):
    write(tmp_path, "cam1/a.png", "cam1/b.png", "cam2/c.png", "cam3/d.png")
    assert rel(tmp_path, select_images(tmp_path, include=["cam1/*", "cam2/*"])) == [
        "cam1/a.png",
        "cam1/b.png",
        "cam2/c.png",
    ]
    assert rel(tmp_path, select_images(tmp_path, exclude=["cam1/*", "D.PNG"])) == ["cam2/c.png"]


def test_default_excludes_can_be_turned_off(tmp_path: Path):
    write(tmp_path, "masked_part.png", "plain.png")
    assert rel(tmp_path, select_images(tmp_path)) == ["plain.png"]
    assert rel(tmp_path, select_images(tmp_path, default_excludes=False)) == ["masked_part.png", "plain.png"]


def test_nothing_left_names_the_patterns(tmp_path: Path):
    write(tmp_path, "a_mask.png")
    with pytest.raises(ImageSelectionError, match=r"no images .* exclude \['\*mask\*'"):
        select_images(tmp_path)


def test_cli_refuses_masks_beside_images_before_training(tmp_path: Path):
    write(tmp_path / "good", *(f"{i:03d}.{ext}" for i in range(3) for ext in ("jpg", "png")))
    out = tmp_path / "models" / "plate.onnx"
    result = CliRunner().invoke(train, ["anomaly", str(tmp_path / "good"), "--out", str(out)])
    assert result.exit_code == 1 and "share a name with different extensions" in result.output, result.output
    assert "features" not in result.output and not out.exists()
