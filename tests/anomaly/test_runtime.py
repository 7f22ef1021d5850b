"""The ``anomaly`` detector at run time: loading guards, findings, ignore mask, tiling, no torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from inspector_anomaly.detector import Anomaly, AnomalyConfig
from inspector_anomaly.preprocess import prepare

from inspector_core import View
from inspector_core.testing import check_detector

from .conftest import dark_part, write_brightness_model


def make(model: Path, **cfg) -> Anomaly:
    det = Anomaly(AnomalyConfig(model=model.name, **cfg), station_dir=model.parent)
    det.warm_up()
    return det


def test_conforms_to_the_detector_contract(brightness_model: Path):
    check_detector(Anomaly, {"model": str(brightness_model)})


def test_good_part_has_no_finding_and_a_spot_is_one_region(brightness_model: Path):
    det = make(brightness_model)
    assert det.inspect(View(dark_part(), "good")) == []
    findings = det.inspect(View(dark_part(spots=((150, 30, 20),)), "bad"))
    assert len(findings) == 1
    f = findings[0]
    assert f.kind == "anomaly" and f.score > 0.5
    x, y, w, h = f.box
    # the box is in view pixels and covers the spot (the map is smoothed by the resize only)
    assert abs(x - 150) <= 3 and abs(y - 30) <= 3 and abs(w - 20) <= 6 and abs(h - 20) <= 6
    assert f.mask is not None and f.mask.shape == (h, w) and f.measurements["area_px"] > 200


def test_two_spots_are_two_findings_strongest_first(brightness_model: Path):
    det = make(brightness_model)
    img = dark_part(spots=((20, 20, 12), (140, 70, 25)))
    img[20:32, 20:32] = 200  # dimmer
    findings = det.inspect(View(img, "two"))
    assert len(findings) == 2
    assert findings[0].score >= findings[1].score
    assert findings[0].box[0] > 100


def test_score_is_half_at_the_threshold_and_station_can_override(brightness_model: Path):
    det = make(brightness_model)
    assert det.normalise(0.5) == pytest.approx(0.5)
    assert det.normalise(0.75) == pytest.approx(1.0)
    assert det.normalise(0.25) == pytest.approx(0.0)
    strict = make(brightness_model, image_threshold=0.1, pixel_threshold=0.1)
    assert strict.inspect(View(dark_part(), "good"))  # grey 40/255 = 0.16 > 0.1: all anomalous


def test_ignore_mask_hides_a_label(brightness_model: Path):
    mask = np.zeros((120, 200), np.uint8)
    mask[25:55, 145:175] = 255
    cv2.imwrite(str(brightness_model.parent / "ignore.png"), mask)
    det = make(brightness_model, ignore_mask="ignore.png")
    assert det.inspect(View(dark_part(spots=((150, 30, 20),)), "label")) == []
    assert len(det.inspect(View(dark_part(spots=((20, 60, 20),)), "elsewhere"))) == 1


def test_letterbox_keeps_aspect_and_marks_the_valid_rectangle():
    p = prepare(np.zeros((50, 200), np.uint8), (64, 64), "letterbox")
    assert p.tensor.shape == (1, 3, 64, 64) and p.tensor.dtype == np.float32
    assert p.valid == (0, 24, 64, 16)
    s = prepare(np.zeros((50, 200, 3), np.uint8), (64, 64), "stretch")
    assert s.valid == (0, 0, 64, 64)


def test_tiling_finds_a_small_spot_that_shrinking_loses(tmp_path: Path):
    model = write_brightness_model(tmp_path, image_t=0.6, pixel_t=0.6)
    big = dark_part(h=1024, w=1024, spots=((700, 300, 6),))
    whole = make(model)
    assert whole.inspect(View(big, "p")) == []  # 6 px become 0.4 px at 64 px input
    tiled = make(model, tiling={"tile_px": 128, "overlap_px": 16})
    findings = tiled.inspect(View(big, "p"))
    assert len(findings) == 1
    x, y, w, h = findings[0].box
    assert 690 <= x <= 702 and 290 <= y <= 302


def test_refuses_a_model_whose_hash_differs_from_its_card(brightness_model: Path):
    with open(brightness_model, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="does not match its card"):
        make(brightness_model)


def test_refuses_a_hash_other_than_the_stations(brightness_model: Path):
    with pytest.raises(ValueError, match="station's steps"):
        make(brightness_model, sha256="0" * 64)


def test_refuses_anything_but_onnx_and_never_unpickles(tmp_path: Path):
    import pickle

    class Boom:
        def __reduce__(self):
            return (Path("pickle-was-loaded").touch, ())

    (tmp_path / "model.pt").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ValueError, match="only ONNX"):
        make(tmp_path / "model.pt")
    (tmp_path / "disguised.onnx").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ValueError, match="pickle"):
        make(tmp_path / "disguised.onnx")
    assert not Path("pickle-was-loaded").exists()


def test_missing_card_names_the_remedy(brightness_model: Path):
    brightness_model.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match="inspector train anomaly"):
        make(brightness_model)


def test_unknown_config_key_is_refused():
    with pytest.raises(Exception, match="treshold"):
        AnomalyConfig(model="m.onnx", treshold=0.3)


def test_runtime_never_imports_torch(brightness_model: Path, tmp_path: Path):
    """A whole station with the anomaly step, in a fresh interpreter: torch stays unloaded."""
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from inspector_core.testing import run_station
        result = run_station({{
            "source": {{"type": "synthetic", "config": {{"count": 3, "width": 320, "height": 240}}}},
            "steps": [{{"detector": "anomaly", "config": {{"model": {str(brightness_model)!r}}}}}],
        }}, Path({str(tmp_path)!r}))
        assert sum(result.verdicts().values()) == 3, result.verdicts()
        heavy = sorted(m for m in ("torch", "anomalib", "torchvision", "lightning", "timm") if m in sys.modules)
        print("HEAVY", heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "HEAVY []" in out.stdout, out.stdout


def test_tiles_mode_of_the_card_keeps_scale_and_finds_the_spot(tmp_path: Path):
    model = write_brightness_model(tmp_path, resize="tiles", scale=0.5, tile_overlap=8)
    det = make(model)
    img = dark_part(h=300, w=500, spots=((400, 210, 16),))
    findings = det.inspect(View(img, "p"))
    assert len(findings) == 1
    x, y, w, h = findings[0].box
    assert abs(x - 400) <= 3 and abs(y - 210) <= 3 and abs(w - 16) <= 4 and abs(h - 16) <= 4
    assert det.inspect(View(dark_part(h=300, w=500), "good")) == []


def test_regions_far_from_the_map_origin_keep_their_place_and_masks(brightness_model: Path):
    """The regions are labelled inside the bounding box of the map's pixels over the level: their
    boxes, masks and peaks are those of labelling the whole map."""
    det = make(brightness_model)
    img = dark_part(spots=((170, 90, 14), (120, 20, 10)))
    findings = det.inspect(View(img, "far"))
    assert len(findings) == 2
    boxes = sorted(f.box for f in findings)
    (x1, y1, _, _), (x2, y2, _, _) = boxes
    assert abs(x1 - 120) <= 3 and abs(y1 - 20) <= 3 and abs(x2 - 170) <= 3 and abs(y2 - 90) <= 3
    for f in findings:
        assert f.mask is not None and f.mask.shape == (f.box[3], f.box[2]) and f.mask.any()


@pytest.mark.parametrize("ignored", [False, True])
def test_regions_of_a_busy_map_are_those_of_32_bit_labels_and_of_a_nan_free_copy(
    brightness_model: Path, monkeypatch: pytest.MonkeyPatch, ignored: bool
):
    """Many regions (a noisy map): the findings with 16-bit labels and the map used without a
    copy equal those of 32-bit labels on a NaN-free copy, as labelled before both cuts; NaN
    pixels (ignored) never join a region."""
    det = make(brightness_model)
    det.load()
    rng = np.random.default_rng(5)
    noise = cv2.GaussianBlur(rng.random((64, 64)).astype(np.float32), (0, 0), 1.2)
    coarse = 0.5 + (noise - float(noise.mean())) * 6.0  # pixel threshold 0.5: half of the map, in blobs
    if ignored:
        coarse[20:40, 10:50] = np.nan
        det._ignore_src = np.zeros((64, 64), bool)  # the score path of a station with an ignore mask
    view = View(np.zeros((120, 200), np.uint8), "busy")
    got = det._findings(view, coarse.copy())
    real = cv2.connectedComponentsWithStats

    def labels_32(img: np.ndarray, connectivity: int = 8, ltype: int = cv2.CV_32S):
        return real(img, connectivity=connectivity, ltype=cv2.CV_32S)

    monkeypatch.setattr(cv2, "connectedComponentsWithStats", labels_32)
    want = det._findings(view, coarse.copy())
    assert len(got) == len(want) >= 5
    for a, b in zip(got, want, strict=True):
        assert (a.box, a.score, a.measurements) == (b.box, b.score, b.measurements)
        assert np.array_equal(a.mask, b.mask)
    if ignored:
        for f in got:
            x, y, w, h = f.box
            inside = x >= 200 * 10 / 64 and x + w <= 200 * 50 / 64 and y >= 120 * 20 / 64 and y + h <= 120 * 40 / 64
            assert not inside


@pytest.mark.parametrize("over", ["everywhere", "a rectangle", "two rectangles"])
def test_regions_that_fill_their_boxes(brightness_model: Path, monkeypatch: pytest.MonkeyPatch, over: str):
    """A part anomalous all over (every map pixel of the box over the level) is not labelled, and
    a region that fills its bounding box gets a mask of ones without resizing; boxes and peaks
    are those of the map."""
    det = make(brightness_model)
    det.load()
    rng = np.random.default_rng(9)
    values = (0.6 + 0.3 * rng.random((48, 64))).astype(np.float32)  # pixel threshold 0.5
    rects = {"everywhere": [(0, 0, 64, 48)], "a rectangle": [(7, 10, 64, 30)]}.get(
        over, [(5, 5, 20, 15), (40, 30, 60, 40)]
    )
    coarse = np.full((48, 64), 0.1, np.float32)
    for x0, y0, x1, y1 in rects:
        coarse[y0:y1, x0:x1] = values[y0:y1, x0:x1]
    view = View(np.zeros((300, 500), np.uint8), "all over")
    labelled = []
    real = cv2.connectedComponentsWithStats

    def counting(img: np.ndarray, *args: object, **kwargs: object):
        labelled.append(img.shape)
        return real(img, *args, **kwargs)

    monkeypatch.setattr(cv2, "connectedComponentsWithStats", counting)
    got = det._findings(view, coarse.copy())
    assert (labelled == []) == (len(rects) == 1)  # one rectangle: the box over the level is it
    assert len(got) == len(rects)
    sx, sy = 500 / 64, 300 / 48
    want_boxes = {
        (int(x0 * sx), int(y0 * sy), int(np.ceil(x1 * sx)) - int(x0 * sx), int(np.ceil(y1 * sy)) - int(y0 * sy))
        for x0, y0, x1, y1 in rects
    }
    assert {f.box for f in got} == want_boxes
    peaks = sorted(float(coarse[y0:y1, x0:x1].max()) for x0, y0, x1, y1 in rects)
    assert sorted(f.measurements["peak_raw"] for f in got) == peaks
    for f in got:
        assert f.mask is not None and f.mask.dtype == np.uint8 and f.mask.shape == (f.box[3], f.box[2])
        assert f.mask.all()


def test_the_card_says_how_a_large_view_is_shrunk_and_old_cards_keep_exact_area(tmp_path: Path):
    """A card without ``downscale`` (every card trained before it) keeps exact area averaging; a
    card with ``halving`` gets the halving, on the runtime side exactly as at training."""
    rng = np.random.default_rng(3)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (2048, 2448), dtype=np.uint8), (0, 0), 1.0)
    old = make(write_brightness_model(tmp_path, name="old"))
    new = make(write_brightness_model(tmp_path, name="new", downscale="halving"))
    old.load()
    new.load()
    assert old.card.input.downscale == "area" and new.card.input.downscale == "halving"
    for det, method in ((old, "area"), (new, "halving")):
        p = prepare(frame, (64, 64), "letterbox", "none", method)
        want = det.session.run(["anomaly_map"], {"input": p.tensor})[0][0, 0]
        x, y, w, h = p.valid
        np.testing.assert_array_equal(det._run(frame), want[y : y + h, x : x + w])
    assert not np.array_equal(old._run(frame), new._run(frame))
