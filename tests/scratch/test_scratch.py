"""The ``scratch`` detector: contract, measurements, joining, edges, and its figures on real
steel (NEU-DET) and on real good surfaces, with floors a little under what was measured
(docs/detectors/scratch.md)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from inspector_scratch import ScratchConfig, ScratchDetector
from inspector_sources.synthetic import render_part

from inspector_core import Calibration, View
from inspector_core.testing import check_detector, run_station

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import eval_scratch  # noqa: E402

SYNTHETIC_ROI = eval_scratch.SYNTHETIC_ROI


def make(**cfg) -> ScratchDetector:
    det = ScratchDetector(ScratchConfig(**cfg), station_dir=ROOT)
    det.warm_up()
    return det


def brushed(h: int = 300, w: int = 400, seed: int = 0) -> np.ndarray:
    """A brushed-metal surface: horizontal streaks and fine noise around grey 130."""
    rng = np.random.default_rng(seed)
    streaks = cv2.GaussianBlur(rng.normal(0, 5, (h, 1)).astype(np.float32), (1, 0), 1.2)
    img = 130 + np.repeat(streaks, w, axis=1) + cv2.blur(rng.normal(0, 4, (h, w)).astype(np.float32), (9, 1))
    return img + rng.normal(0, 2, (h, w))


def draw_line(img: np.ndarray, p0, p1, contrast: float, thickness: int = 2) -> np.ndarray:
    layer = np.zeros(img.shape, np.float32)
    cv2.line(
        layer,
        (round(p0[0] * 4), round(p0[1] * 4)),
        (round(p1[0] * 4), round(p1[1] * 4)),
        1.0,
        thickness,
        cv2.LINE_AA,
        shift=2,
    )
    layer = cv2.GaussianBlur(layer, (0, 0), 0.7)
    return img + contrast * layer / layer.max()


def u8(img: np.ndarray) -> np.ndarray:
    return np.clip(img, 0, 255).astype(np.uint8)


def test_conforms_to_the_detector_contract(tmp_path):
    check_detector(ScratchDetector, tmp_path=tmp_path)


def test_measures_length_width_and_angle_of_a_dark_scratch():
    img = u8(draw_line(brushed(), (80, 220), (300, 90), -45, thickness=2))
    findings = [f for f in make().inspect(View(img, "p", calibration=Calibration(0.05))) if f.score >= 0.5]
    assert len(findings) == 1
    f = findings[0]
    true_len = math.hypot(220, 130)
    true_angle = math.degrees(math.atan2(130, 220))  # counter-clockwise from the x axis
    assert abs(f.measurements["length_px"] - true_len) / true_len < 0.08
    assert abs(f.measurements["angle_deg"] - true_angle) < 2.0
    assert 2.5 <= f.measurements["width_px"] <= 4.5  # a 2 px AA line, blurred: about 3.3 px FWHM
    assert f.measurements["length_mm"] == pytest.approx(f.measurements["length_px"] * 0.05, rel=1e-3)
    assert f.size_px == f.measurements["length_px"]
    assert f.message.startswith("dark scratch") and " mm long at " in f.message
    x, y, w, h = f.box
    assert x <= 82 and y <= 92 and x + w >= 298 and y + h >= 218
    assert f.mask is not None and f.mask.shape == (h, w) and f.mask.any()


def test_score_rises_with_contrast_and_length():
    det = make()
    base = brushed()

    def best(img):
        return max((f.score for f in det.inspect(View(u8(img), "p"))), default=0.0)

    faint, strong = best(draw_line(base, (50, 150), (250, 150), 12)), best(draw_line(base, (50, 150), (250, 150), 40))
    short, long_ = best(draw_line(base, (100, 60), (145, 240), 20)), best(draw_line(base, (100, 20), (180, 280), 20))
    assert faint < strong and strong > 0.8
    assert short < long_


def test_a_broken_scratch_is_one_finding():
    img = brushed()
    img = draw_line(img, (40, 60), (170, 140), 40)
    img = draw_line(img, (188, 151), (330, 238), 40)  # the same line after a 20 px gap
    findings = [f for f in make().inspect(View(u8(img), "p")) if f.score >= 0.5]
    assert len(findings) == 1
    f = findings[0]
    assert f.measurements["pieces"] >= 2
    assert f.measurements["length_px"] > 300


def test_step_edges_holes_and_a_label_are_not_scratches():
    img = brushed()
    img[:, 250:] += 70  # a step: the part's edge
    img[100:180, 60:180] = 230  # a label
    cv2.circle(img, (330, 230), 20, 30, -1)  # a hole
    assert [f for f in make().inspect(View(u8(img), "p")) if f.score >= 0.5] == []


def test_good_synthetic_plates_pass_and_scratched_ones_fail():
    det = make()
    x, y, w, h = SYNTHETIC_ROI
    caught = 0
    for i in range(12):
        good = render_part(31, i, "good").image[y : y + h, x : x + w]
        assert [f for f in det.inspect(View(good, "g")) if f.score >= 0.5] == [], f"good part {i}"
        part = render_part(31, i, "scratch")
        bx, by, bw, bh = part.box
        found = [f for f in det.inspect(View(part.image[y : y + h, x : x + w], "s")) if f.score >= 0.5]
        caught += any(eval_scratch._overlap(f.box, (bx - x, by - y, bx - x + bw, by - y + bh))[0] > 0 for f in found)
    assert caught >= 11


def test_ignore_mask_hides_a_known_line(tmp_path):
    img = u8(draw_line(brushed(), (50, 150), (350, 150), 40))
    mask = np.zeros(img.shape, np.uint8)
    mask[140:160, :] = 255
    cv2.imwrite(str(tmp_path / "ignore.png"), mask)
    assert any(f.score >= 0.5 for f in make().inspect(View(img, "p")))
    det = ScratchDetector(ScratchConfig(ignore_mask="ignore.png"), station_dir=tmp_path)
    assert [f for f in det.inspect(View(img, "p")) if f.score >= 0.5] == []


def test_polarity_and_grey_or_colour_agree():
    img = u8(draw_line(brushed(), (50, 100), (350, 200), 40))
    assert [f for f in make(polarity="dark").inspect(View(img, "p")) if f.score >= 0.5] == []
    gray = make().inspect(View(img, "p"))
    colour = make().inspect(View(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), "p"))
    assert [(f.box, round(f.score, 6)) for f in gray] == [(f.box, round(f.score, 6)) for f in colour]


def test_in_a_station_on_synthetic_parts(tmp_path):
    """The demo's step: ROI inside the plate; scratched parts fail, good and dented ones pass
    (misaligned plates are left out: their edges move into the ROI, and they fail anyway)."""
    from inspector_sources.synthetic import truth_for

    x, y, w, h = SYNTHETIC_ROI
    result = run_station(
        {
            "source": {"type": "synthetic", "config": {"count": 40, "seed": 5, "defect_rate": 0.5}},
            "steps": [{"detector": "scratch", "roi": {"x": x, "y": y, "width": w, "height": h}}],
            "rules": {"scratch": {"min_score": 0.5}},
        },
        tmp_path,
    )
    rng = np.random.default_rng(5)  # the source's own sequence of truths
    truth = {f"syn-5-{i:05d}": truth_for(i, 0.5, rng) for i in range(40)}
    verdicts = {i.part_id: i.verdict for i in result.inspections()}
    scratched = [p for p, t in truth.items() if t == "scratch"]
    clean = [p for p, t in truth.items() if t in ("good", "dent")]
    assert len(scratched) >= 5 and len(clean) >= 20
    assert sum(verdicts[p] == "FAIL" for p in scratched) >= len(scratched) - 1, verdicts
    assert all(verdicts[p] == "PASS" for p in clean), {p: truth[p] for p in clean if verdicts[p] != "PASS"}


# ---------------------------------------------------------------------------------------------
# Real data: floors a little under the figures in docs/detectors/scratch.md.

needs_data = pytest.mark.usefixtures("data_dir")  # skips locally without the data, fails in CI


@pytest.fixture(scope="module")
def neu_splits(data_dir):
    return eval_scratch.neu_items(data_dir)


@pytest.mark.data
@needs_data
def test_neu_det_held_out_half_stays_above_floors(neu_splits):
    r = eval_scratch.neu_figures(make(), neu_splits["holdout"])
    assert r["f1"] >= HOLDOUT_F1_FLOOR, r
    assert r["box_recall"] >= HOLDOUT_BOX_RECALL_FLOOR, r
    assert r["precision"] >= HOLDOUT_PRECISION_FLOOR, r


@pytest.mark.data
@needs_data
def test_neu_det_tuning_half_stays_above_floors(neu_splits):
    r = eval_scratch.neu_figures(make(), neu_splits["tune"])
    assert r["f1"] >= TUNE_F1_FLOOR, r
    assert r["box_recall"] >= TUNE_BOX_RECALL_FLOOR, r


@pytest.mark.data
@needs_data
def test_real_good_surfaces_rarely_flagged(data_dir):
    r = eval_scratch.good_surfaces(make(), data_dir)
    assert r["magnetic_tile_MT_Free"]["false_alarms_per_image"] <= MT_FREE_FA_CEILING, r
    assert r["mvtec_transistor_train_good"]["false_alarms_per_image"] <= TRANSISTOR_FA_CEILING, r


@pytest.mark.data
@needs_data
def test_in_a_station_on_real_steel(tmp_path, neu_splits):
    """A folder station over held-out NEU-DET images: scratched strips fail, others pass."""
    folder = tmp_path / "parts"
    folder.mkdir()
    scratched = [p for p, _ in neu_splits["holdout"] if p.stem.startswith("scratches")][:15]
    others = [p for p, _ in neu_splits["holdout"] if not p.stem.startswith("scratches")][::25][:15]
    for p in scratched + others:
        (folder / p.name).symlink_to(p)
    result = run_station(
        {
            "source": {"type": "folder", "config": {"path": str(folder), "pattern": "*.jpg"}},
            "steps": [{"detector": "scratch"}],
            "rules": {"scratch": {"min_score": 0.5}},
        },
        tmp_path,
    )
    verdicts = {i.part_id: i.verdict for i in result.inspections()}
    assert len(verdicts) == 30
    failed_scratched = sum(verdicts[p.stem] == "FAIL" for p in scratched)
    passed_others = sum(verdicts[p.stem] == "PASS" for p in others)
    assert failed_scratched >= 13, verdicts
    assert passed_others >= 13, verdicts
    insp = next(i for i in result.inspections() if i.verdict == "FAIL")
    assert any(d.kind == "scratch" for d in insp.defects)


# Measured figures are in docs/detectors/scratch.md; floors sit a little under them. The
# good-surface ceilings are high on purpose: ground tiles carry real grinding lines and the
# transistor board real leads and traces, which this detector reports as lines (see the doc).
TUNE_F1_FLOOR = 0.90
TUNE_BOX_RECALL_FLOOR = 0.88
HOLDOUT_F1_FLOOR = 0.94
HOLDOUT_BOX_RECALL_FLOOR = 0.92
HOLDOUT_PRECISION_FLOOR = 0.90
# Untaught (no suppress_edges_from / suppress_lines_from): 1.90 and 7.37 per image since the
# robust centre-line refit (1.75 and 6.94 before it); the taught figures have tests of their own.
MT_FREE_FA_CEILING = 2.1
TRANSISTOR_FA_CEILING = 8.0


@pytest.mark.parametrize("n", [1000, 2047, 2048, 9856, 33400, 33401, 250_001])
def test_the_fast_noise_median_is_numpys_to_the_last_bit(n):
    # The noise level uses a selection that partitions only the values near the middle (speed on
    # 5 MP frames); it must give np.median's float exactly, ties and skewed spreads included.
    from inspector_scratch import _median

    rng = np.random.default_rng(n)
    cases = [
        np.abs(rng.standard_normal(n)).astype(np.float32),
        np.round(rng.exponential(3.0, n)).astype(np.float32),  # heavy ties
        np.full(n, 7.25, np.float32),
        rng.standard_normal(n),  # float64
        np.concatenate([np.zeros(n // 2, np.float32), rng.random(n - n // 2).astype(np.float32) + 100]),
    ]
    for x in cases:
        assert _median(x) == float(np.median(x))


# ---------------------------------------------------------------------------------------------
# Taught edges (suppress_edges_from) and glass (AGDD).


def board(seed: int) -> np.ndarray:
    """A good 'part' with strong structure of its own: a bright strip (a lead), a dark groove
    and a step edge, plus sensor noise."""
    rng = np.random.default_rng(seed)
    img = np.full((240, 320), 110.0) + rng.normal(0, 2, (240, 320))
    img[:, 200:] += 50  # step edge at x = 200
    img = draw_line(img, (40, 20), (60, 220), 60, thickness=3)  # the part's own lead
    img = draw_line(img, (90, 30), (170, 200), -50, thickness=2)  # a groove
    return img


def test_taught_edges_drop_the_parts_own_lines_and_keep_a_new_scratch(tmp_path):
    ref = tmp_path / "good"
    ref.mkdir()
    for i in range(3):
        cv2.imwrite(str(ref / f"good_{i}.png"), u8(board(i)))
    good = u8(board(10))
    assert any(f.score >= 0.5 for f in make().inspect(View(good, "p"))), "the part's lines look like scratches"
    det = make(suppress_edges_from=str(ref))
    assert [f for f in det.inspect(View(good, "p")) if f.score >= 0.5] == []
    assert set(det.files()) == {"edge_reference_0", "edge_reference_1", "edge_reference_2"}
    scratched = u8(draw_line(board(11), (230, 40), (300, 200), 35))  # on the bright side, clear of the edge
    found = [f for f in det.inspect(View(scratched, "p")) if f.score >= 0.5]
    assert len(found) == 1 and found[0].box[0] >= 220, found


def test_taught_edges_refuse_a_view_of_another_shape_and_an_empty_folder(tmp_path):
    ref = tmp_path / "good"
    ref.mkdir()
    with pytest.raises(ValueError, match="holds no image"):
        make(suppress_edges_from=str(ref))
    cv2.imwrite(str(ref / "good.png"), u8(board(0)))
    det = make(suppress_edges_from=str(ref))
    with pytest.raises(ValueError, match="ROI"):
        det.inspect(View(u8(board(1))[:, :120], "p"))
    # One image (e.g. the misalignment step's taught reference, <station>.reference/<step>.png).
    one = make(suppress_edges_from=str(ref / "good.png"))
    assert [f for f in one.inspect(View(u8(board(2)), "p")) if f.score >= 0.5] == []
    assert one.files() == {"edge_reference_0": ref / "good.png"}


@pytest.mark.data
@needs_data
def test_taught_edges_on_held_out_transistors(data_dir):
    # Measured (docs/detectors/scratch.md): held-out 17 good images, 7.35 -> 0.41 per image.
    r = eval_scratch.edge_suppression(data_dir, painted=False)
    assert r["holdout_without"]["per_image"] >= 5.0, r  # the part's edges do fire without it
    assert r["holdout_with"]["per_image"] <= 0.8, r
    assert r["holdout_with"]["flagged"] <= 8, r


@pytest.mark.data
@needs_data
def test_glass_held_out_half_with_the_glass_configs_per_lighting(data_dir):
    # Measured on the odd (held-out) half (docs/detectors/scratch.md), configs chosen on the even
    # half: back light (`images`, AGDD_BACK_CONFIG) 21/24 found by box overlap, 19/24 on the scratch
    # itself, 6/324 good tiles; forward light (`image`, AGDD_FRONT_CONFIG) 16/24 by box, 8/24 on
    # the scratch, 0/324; either 22/24 by box, 20/24 on the scratch.
    stems = eval_scratch.agdd_items(data_dir)["holdout"]
    dets = {"image": make(**eval_scratch.AGDD_FRONT_CONFIG), "images": make(**eval_scratch.AGDD_BACK_CONFIG)}
    r = eval_scratch.agdd_figures(dets, data_dir, stems)
    assert r["images"]["scratched"] == 24 and r["either"]["scratched"] == 24, r
    assert r["images"]["found_rate"] >= 0.85 and r["images"]["found_on_scratch_rate"] >= 0.75, r
    assert r["either"]["found_rate"] >= 0.875 and r["either"]["found_on_scratch_rate"] >= 0.80, r
    assert r["image"]["found_rate"] >= 0.625 and r["image"]["found_on_scratch_rate"] >= 0.30, r
    assert r["images"]["good_tile_rate"] <= 0.03 and r["image"]["good_tile_rate"] <= 0.01, r


def test_the_glass_station_runs_the_configs_the_bench_measured():
    # The figures of the test above are the bench constants'; the station file must say the same.
    import yaml

    station = yaml.safe_load((ROOT / "stations" / "glass-two-lights.yaml").read_text())
    by_view = {s["view"]: ScratchConfig(**s["config"]) for s in station["steps"] if s["detector"] == "scratch"}
    assert by_view == {
        "front_light": ScratchConfig(**eval_scratch.AGDD_FRONT_CONFIG),
        "back_light": ScratchConfig(**eval_scratch.AGDD_BACK_CONFIG),
    }


def ground(seed: int) -> np.ndarray:
    """A ground tile: vertical grinding lines at places of their own on every part (upper half)."""
    rng = np.random.default_rng(seed)
    img = np.full((240, 320), 100.0) + rng.normal(0, 2, (240, 320))
    for x in rng.uniform(20, 300, 4):
        img = draw_line(img, (x, 10), (x + rng.uniform(-2, 2), 130), rng.uniform(25, 35), thickness=2)
    return img


def test_lines_taught_by_direction_drop_grinding_marks_and_keep_a_scratch_across_them(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    for i in range(8):
        cv2.imwrite(str(good / f"g{i}.png"), u8(ground(i)))
    part = u8(ground(20))
    assert any(f.score >= 0.5 for f in make().inspect(View(part, "p"))), "grinding marks look like scratches"
    det = make(suppress_lines_from=str(good))
    assert [f for f in det.inspect(View(part, "p")) if f.score >= 0.5] == []
    assert len([k for k in det.files() if k.startswith("good_lines_")]) == 8
    # Across the grinding direction, below the marks (a scratch that crosses them merges with
    # them into one region, which this detector does not untangle, taught or not).
    scratched = u8(draw_line(ground(21), (30, 160), (290, 225), 30))
    found = [f for f in det.inspect(View(scratched, "p")) if f.score >= 0.5]
    assert len(found) == 1 and 150 < found[0].measurements["angle_deg"] < 175, found


@pytest.mark.data
@needs_data
def test_lines_taught_on_held_out_magnetic_tiles(data_dir):
    # Measured (docs/detectors/scratch.md): held-out 238 MT_Free images, 1.90 -> 0.31 per image
    # (here every other one of them, for time).
    r = eval_scratch.line_teaching(data_dir, defects=False, measure=("holdout",), stride=2)
    assert r["holdout_without"]["images"] == 119, r
    assert r["holdout_without"]["per_image"] >= 1.4, r
    assert r["holdout_with"]["per_image"] <= 0.4, r
    assert r["holdout_with"]["flagged"] <= 40, r
