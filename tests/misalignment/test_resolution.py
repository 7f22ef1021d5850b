"""Misalignment at another resolution or scale than taught: the reference records the frame size
it was taught on, an ROI cut from a frame of another size is a clear ERROR (not "part missing"),
old references still load, and ``scale_range`` searches the part's scale."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from inspector_misalignment import MisalignmentConfig, MisalignmentDetector
from inspector_misalignment.cli import teach as teach_command
from inspector_misalignment.reference import save, taught_frame_size, teach
from inspector_misalignment.registration import search_scales
from inspector_sources.synthetic import render_part
from pydantic import ValidationError

from inspector_core import View
from inspector_core.testing import run_station

ROI = (100, 80, 824, 608)  # x, y, width, height on the 1024x768 synthetic frame


def crop(img: np.ndarray, roi: tuple[int, int, int, int] = ROI) -> np.ndarray:
    x, y, w, h = roi
    return img[y : y + h, x : x + w]


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A station with one ROI step, taught by ``inspector teach`` from 1024x768 frames."""
    folder = tmp_path_factory.mktemp("station")
    good = folder / "good"
    good.mkdir()
    for i in range(4):
        cv2.imwrite(str(good / f"{i}.png"), render_part(7, i, "good").image)
    x, y, w, h = ROI
    (folder / "line.yaml").write_text(
        "name: line\nsource: {type: synthetic}\nsteps:\n  - detector: misalignment\n    name: align\n"
        f"    roi: {{x: {x}, y: {y}, width: {w}, height: {h}}}\n"
    )
    result = CliRunner().invoke(teach_command, [str(folder / "line.yaml"), "--from", str(good)])
    assert result.exit_code == 0, result.output
    return folder


def make(folder: Path, reference: str = "line.reference/align.png", **cfg) -> MisalignmentDetector:
    det = MisalignmentDetector(MisalignmentConfig(reference=reference, **cfg), station_dir=folder)
    det.warm_up()
    return det


def test_teach_records_the_frame_size(station: Path):
    meta = json.loads((station / "line.reference" / "align.json").read_text())
    assert meta["frame"] == {"width": 1024, "height": 768}
    assert taught_frame_size(station / "line.reference" / "align.png") == (1024, 768)


def test_teach_refuses_frames_of_several_sizes(tmp_path: Path):
    good = tmp_path / "good"
    good.mkdir()
    for i in range(3):
        cv2.imwrite(str(good / f"{i}.png"), render_part(7, i, "good").image)
    cv2.imwrite(str(good / "big.png"), cv2.resize(render_part(7, 3, "good").image, (2048, 1536)))
    (tmp_path / "line.yaml").write_text("name: line\nsource: {type: synthetic}\nsteps:\n  - detector: misalignment\n")
    result = CliRunner().invoke(teach_command, [str(tmp_path / "line.yaml"), "--from", str(good)])
    assert result.exit_code == 1 and "1024x768, 2048x1536" in result.output, result.output


def test_an_roi_of_a_frame_of_another_size_is_an_error_naming_both_sizes(station: Path):
    det = make(station)
    good = render_part(21, 0, "good").image
    assert det.inspect(View(crop(good), "same", frame_size=(1024, 768))) == []  # taught size: judged
    big = cv2.resize(good, (2048, 1536), interpolation=cv2.INTER_CUBIC)
    with pytest.raises(ValueError, match="taught on") as err:
        det.inspect(View(crop(big), "big", frame_size=(2048, 1536)))
    text = str(err.value)
    assert "2048x1536" in text and "1024x768" in text and "re-teach" in text and "scale_range" in text
    assert "missing" not in text.replace("not a missing part", "")


def test_in_a_station_the_part_is_error_not_fail_missing(station: Path, tmp_path: Path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        cv2.imwrite(str(frames / f"{i}.png"), cv2.resize(render_part(21, i, "good").image, (2048, 1536)))
    x, y, w, h = ROI
    result = run_station(
        {
            "source": {"type": "folder", "config": {"path": str(frames)}},
            "steps": [
                {
                    "detector": "misalignment",
                    "roi": {"x": x, "y": y, "width": w, "height": h},
                    "config": {"reference": str(station / "line.reference" / "align.png")},
                }
            ],
        },
        tmp_path,
    )
    rows = result.inspections()
    assert len(rows) == 2 and {r.verdict for r in rows} == {"ERROR"}, [(r.verdict, r.error) for r in rows]
    assert all("2048x1536" in (r.error or "") and "1024x768" in (r.error or "") for r in rows), rows[0].error


def test_a_whole_frame_at_another_resolution_is_still_compared(tmp_path: Path):
    (tmp_path / "line.yaml").write_text("name: line\nsource: {type: synthetic}\nsteps:\n  - detector: misalignment\n")
    good = tmp_path / "good"
    good.mkdir()
    for i in range(3):
        cv2.imwrite(str(good / f"{i}.png"), render_part(7, i, "good").image)
    assert CliRunner().invoke(teach_command, [str(tmp_path / "line.yaml"), "--from", str(good)]).exit_code == 0
    det = make(tmp_path, reference="line.reference/misalignment.png")
    half = cv2.resize(render_part(21, 1, "good").image, (512, 384), interpolation=cv2.INTER_AREA)
    assert det.inspect(View(half, "half", frame_size=(512, 384))) == []


def test_an_old_reference_without_the_frame_size_still_loads(tmp_path: Path):
    save(teach([crop(render_part(7, i, "good", color=False).image) for i in range(3)]), tmp_path / "r", "align", {})
    assert "frame" not in json.loads((tmp_path / "r" / "align.json").read_text())
    det = make(tmp_path, reference="r/align.png")
    assert det._taught_frame is None
    assert det.inspect(View(crop(render_part(21, 0, "good").image), "p", frame_size=(2048, 1536))) == []


def test_scale_range_lets_a_frame_of_that_ratio_through(station: Path):
    det = make(station, scale_range=(0.5, 2.5))
    big = cv2.resize(render_part(21, 0, "good").image, (2048, 1536), interpolation=cv2.INTER_CUBIC)
    det.inspect(View(crop(big), "big", frame_size=(2048, 1536)))  # judged (on its pose), no error
    with pytest.raises(ValueError, match="containing 3"):
        det.inspect(View(crop(cv2.resize(big, (3072, 2304))), "bigger", frame_size=(3072, 2304)))


def test_scale_range_is_checked():
    assert MisalignmentConfig(scale_range=[0.9, 1.1]).scale_range == (0.9, 1.1)
    for bad in ([1.1, 1.2], [0.9, 0.95], [1.0, 1.0], [0.1, 1.1], [0.9]):
        with pytest.raises(ValidationError, match="scale_range"):
            MisalignmentConfig(scale_range=bad)
    assert search_scales(None) == (1.0,)
    scales = search_scales((0.9, 1.1))
    assert scales[0] == 0.9 and scales[-1] == 1.1 and 1.0 in scales
    assert max(b / a for a, b in zip(scales, scales[1:], strict=False)) <= 1.05 + 1e-9


@pytest.mark.parametrize("scale", [1.4, 0.6])
def test_scale_search_registers_a_part_at_another_scale(tmp_path: Path, scale: float):
    """A synthetic part imaged 1.4x larger (0.6x smaller), far off its place and turned: the scale
    search finds it. Without a scale range the pose stays at scale 1 (a rigid motion: the
    refinement's scale is held to the configured range, issue 11) and the part fails."""
    save(teach([render_part(7, i, "good", color=False).image for i in range(5)]), tmp_path / "r", "align", {})
    part = render_part(22, 0, "good", color=False).image
    h, w = part.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 4.0, scale)
    m[:, 2] += (150, 90)
    moved = cv2.warpAffine(part, m, (w, h), borderValue=35)
    tolerant = {"max_scale_change": 0.7, "max_shift_px": 500, "max_rotation_deg": 10}

    def measured(det: MisalignmentDetector) -> tuple[dict[str, float], np.ndarray]:
        ref = det._ref
        assert ref is not None
        base = np.vstack([ref.register(part).matrix, [0, 0, 1]])
        expected = np.vstack([m, [0, 0, 1]]) @ base
        c = np.array([*ref.centre, 1.0])
        (f,) = det.inspect(View(moved, "moved"))
        return f.measurements, (expected @ c)[:2] - c[:2]

    plain, truth = measured(make(tmp_path, reference="r/align.png", **tolerant))
    searched, _ = measured(make(tmp_path, reference="r/align.png", scale_range=(0.55, 1.5), **tolerant))
    assert plain["scale"] == 1.0
    assert make(tmp_path, reference="r/align.png").inspect(View(moved, "moved"))[0].score >= 0.5
    assert searched["scale"] == pytest.approx(scale, abs=0.005)
    assert abs(searched["shift_x_px"] - truth[0]) < 0.5 and abs(searched["shift_y_px"] - truth[1]) < 0.5
    assert searched["rotation_deg"] == pytest.approx(4.0, abs=0.05)
