"""Registration accuracy on real parts moved by known motions (issue 11): MVTec AD transistor
frames, moved by fractional shifts and small rotations (bench/eval_registration.py measures the
same on 40 images); and the part mask that keeps the board out of the registration."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from inspector_misalignment.reference import part_mask, teach

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import eval_registration  # noqa: E402


def _board(seed: int = 0, size: tuple[int, int] = (240, 320)) -> np.ndarray:
    """A bright perforated board (dark holes on a grid) with a dark square part on it."""
    h, w = size
    img = np.full((h, w), 190, np.uint8)
    for y in range(12, h, 30):
        for x in range(12, w, 30):
            cv2.circle(img, (x, y), 6, 40, -1)
    cv2.rectangle(img, (110, 70), (210, 170), 30, -1)
    noise = np.random.default_rng(seed).normal(0, 3, (h, w))
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def test_part_mask_keeps_the_part_and_leaves_the_board_out():
    img = _board()
    mask = part_mask(img, "dark")
    assert mask[120, 160] == 255  # inside the part
    assert mask[70, 160] == 255 and mask[67, 160] == 255  # its outline and a band around it
    assert mask[42, 42] == 0 and mask[222, 282] == 0  # holes away from the part
    assert (mask > 0).mean() < 0.2
    with pytest.raises(ValueError, match="--part-mask"):
        part_mask(np.full((240, 320), 128, np.uint8), "dark")
    with pytest.raises(ValueError, match="dark, bright"):
        part_mask(img, "grey")


def test_teach_with_a_given_part_mask_checks_its_size():
    images = [_board(i) for i in range(3)]
    with pytest.raises(ValueError, match="part mask is"):
        teach(images, part=np.zeros((10, 10), np.uint8))
    mask = np.zeros((240, 320), np.uint8)
    mask[60:180, 100:220] = 255
    taught = teach(images, part=mask, rounds=2)
    assert taught.weight[120, 160] == 255 and taught.weight[20, 20] == 0


@pytest.mark.data
def test_real_parts_moved_by_known_motions_register_to_a_tenth_of_a_pixel(data_dir):
    """Reference from 9 train/good transistors (tuning half), 4 held-out frames moved 3 times each
    by up to 20 px and 3 deg: every error under 0.5 px, the mean under 0.1 px (measured: mean
    0.061, worst 0.14 px; with 6 taught images and 2 frames the mean was 0.12 px, train/good/001
    0.15-0.28 px). (With the former settings, whole image registered and ROI without margin: mean
    1.1 px, worst 7.9 px.)"""
    cv2.setNumThreads(1)
    tune, held = eval_registration.halves()
    _, ref, roi = eval_registration.taught_reference(tune[:9])
    summary, rows = eval_registration.moved_errors(ref, held[:4], roi, 3, 5)
    assert summary["n"] == 12
    assert summary["err_px_max"] < 0.5, rows
    assert summary["err_px_mean"] < 0.1
    assert summary["err_deg_max"] < 0.1


@pytest.mark.data
def test_a_part_with_two_optima_registers_the_same_wherever_it_sits(data_dir):
    """Held-out train/good/021 (its case sits lower on the board than the reference's: the board
    holes line up at one pose, the case at another). With the search's pose needing a 0.1 better
    match than the nominal start's, and a free scale, the first of these moves registered 24.5 px
    away from the unmoved frame's pose (the bench's worst held-out move before issue 11's third
    pass); now every move is within 0.1 px of it (measured 0.011-0.025 px)."""
    cv2.setNumThreads(1)
    tune, held = eval_registration.halves()
    _, ref, roi = eval_registration.taught_reference(tune)
    (path,) = [p for p in held if p.name == "021.png" and p.parent.parent.name == "train"]
    moves = [(18.513, -19.44, 1.736), (-12.169, -17.372, 1.976), (8.591, -10.503, -2.544), (20.0, 20.0, 3.0)]
    summary, rows = eval_registration.moved_errors(ref, [path], roi, 0, 0, moves=moves)
    assert summary["n"] == 4
    assert summary["err_px_max"] < 0.1, rows


def test_teach_command_takes_the_part_or_a_part_mask(tmp_path):
    from click.testing import CliRunner
    from inspector_misalignment.cli import teach as teach_command

    good = tmp_path / "good"
    good.mkdir()
    for i in range(3):
        cv2.imwrite(str(good / f"{i}.png"), _board(i))
    station = tmp_path / "line.yaml"
    station.write_text("name: line\nsource: {type: synthetic}\nsteps:\n  - detector: misalignment\n    name: align\n")
    result = CliRunner().invoke(teach_command, [str(station), "--from", str(good), "--part", "dark"])
    assert result.exit_code == 0, result.output
    weight = cv2.imread(str(tmp_path / "line.reference" / "align.weight.png"), cv2.IMREAD_GRAYSCALE)
    assert weight[120, 160] == 255 and weight[42, 42] == 0
    mask = np.zeros((240, 320), np.uint8)
    mask[60:180, 100:220] = 255
    cv2.imwrite(str(tmp_path / "part.png"), mask)
    result = CliRunner().invoke(
        teach_command, [str(station), "--from", str(good), "--part-mask", str(tmp_path / "part.png")]
    )
    assert result.exit_code == 0, result.output
    cv2.imwrite(str(tmp_path / "small.png"), mask[:100, :100])
    result = CliRunner().invoke(
        teach_command, [str(station), "--from", str(good), "--part-mask", str(tmp_path / "small.png")]
    )
    assert result.exit_code == 1 and "100x100 px is neither the frame's size" in result.output, result.output
