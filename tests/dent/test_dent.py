"""The ``dent`` detector: contract, measurements, what is not a dent, the demo parts through a
station, and its figures on rendered dents and real good surfaces, with floors a little under
what was measured (docs/detectors/dent.md)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from inspector_dent import DentConfig, DentDetector
from inspector_sources.synthetic import (
    dent_height,
    render_dent_panel,
    render_dent_shading,
    truth_for,
)

from inspector_core import Calibration, View
from inspector_core.testing import check_detector, run_station

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import eval_dent  # noqa: E402

DEMO_ROI = {"x": 192, "y": 164, "width": 640, "height": 440}  # the plate of a 1024x768 demo part

# Floors: measured figures in docs/detectors/dent.md, minus a margin.
RENDERED_DETECTION_FLOOR = 0.70  # first renderer, visibility >= 3, seed 4 (measured 0.784 on 600; 240 here)
INDEPENDENT_DETECTION_FLOOR = 0.85  # report split, V >= 3 (50 of 150 here, all found 2026-12-04; 0.885 of 539)
GOOD_FALSE_ALARMS_CEILING = 0.05  # the goal; report half with the part's ROI (issue 11)
CAR_AUROC_FLOOR = 0.62  # all 219 photos


def make(**cfg) -> DentDetector:
    det = DentDetector(DentConfig(**cfg), station_dir=ROOT)
    det.warm_up()
    return det


def panel(**kw):
    kw.setdefault("diameter_px", 60.0)
    kw.setdefault("depth_px", 2.0)
    kw.setdefault("noise_sigma", 2.0)
    return render_dent_panel(np.random.default_rng(kw.pop("seed", 3)), (400, 520), **kw)


def hits(findings, min_score=0.5):
    return [f for f in findings if f.score >= min_score]


def test_conforms_to_the_detector_contract(tmp_path):
    check_detector(DentDetector, tmp_path=tmp_path)


def test_renderer_is_flat_away_from_the_dent_and_a_light_dark_pair_on_it():
    h = dent_height((81, 81), (40, 40), 60, 2.0)
    f = render_dent_shading(h, 0.0, 30.0)  # light at the right
    assert f[0, 0] == pytest.approx(1.0) and f[40, 40] == pytest.approx(1.0, abs=1e-3)
    assert f[40, 25] > 1.05 and f[40, 55] < 0.95  # the wall facing the light is bright


@pytest.mark.parametrize("azimuth", [0.0, 135.0, 250.0])
def test_finds_a_dent_and_measures_diameter_contrast_and_light(azimuth):
    s = panel(light_azimuth_deg=azimuth, light_elevation_deg=30, seed=int(azimuth))
    found = hits(make().inspect(View(s.image, "p", calibration=Calibration(0.1))))
    assert len(found) == 1, [f.message for f in found]
    f = found[0]
    x, y, w, h = f.box
    assert math.hypot(x + w / 2 - s.center[0], y + h / 2 - s.center[1]) < 6
    assert f.size_px == pytest.approx(60, rel=0.2)
    assert f.measurements["diameter_mm"] == pytest.approx(f.size_px * 0.1, rel=1e-3)
    assert 1.0 < f.measurements["shading_contrast_pct"] < 40.0
    dev = (f.measurements["light_direction_deg"] - azimuth + 180) % 360 - 180
    assert abs(dev) < 30, f.measurements
    assert f.mask is not None and f.mask.shape == (h, w) and f.mask.any()
    assert f.message.startswith("dent ") and "mm across" in f.message


def test_deeper_dents_score_higher_and_show_more_contrast():
    det = make()
    shallow = hits(det.inspect(View(panel(depth_px=1.0).image, "a")), 0.1)[0]
    deep = hits(det.inspect(View(panel(depth_px=2.5).image, "b")), 0.1)[0]
    assert deep.score > shallow.score
    assert deep.measurements["shading_contrast_pct"] > 1.5 * shallow.measurements["shading_contrast_pct"]


def test_known_light_keeps_dents_and_refuses_bumps():
    dent = panel(light_azimuth_deg=90, depth_px=2.0)
    bump = panel(light_azimuth_deg=270, depth_px=2.0)  # a dent lit from below reads as a bump lit from above
    det = make(light_direction_deg=90)
    assert len(hits(det.inspect(View(dent.image, "d")))) == 1
    assert hits(det.inspect(View(bump.image, "b"))) == []


def test_edges_lines_holes_and_blank_panels_are_not_dents():
    img = np.full((300, 400), 140, np.float32)
    img[:, 200:] = 90  # a step edge
    cv2.line(img, (20, 40), (380, 60), 200, 2)  # a bright line
    cv2.circle(img, (100, 200), 9, 30, -1)  # a hole
    cv2.circle(img, (300, 220), 12, 230, -1)  # a bright spot
    img += np.random.default_rng(0).normal(0, 2, img.shape)
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    det = make()
    assert hits(det.inspect(View(np.clip(img, 0, 255).astype(np.uint8), "e"))) == []
    blank = panel(diameter_px=None)
    assert hits(det.inspect(View(blank.image, "b"))) == []


def test_mounting_holes_of_the_plates_are_not_dents_without_a_roi():
    # The whole demo frame: four holes (dark discs with a step edge) beside the plate's edges.
    # A light-dark pair there is a step, not a ramp: the edge test refuses it.
    r = eval_dent.eval_plates(8)
    assert r["plates_without_roi_best_score_on_a_hole"] < 0.5, r


def test_a_step_is_refused_where_a_ramp_of_the_same_contrast_is_a_dent():
    # The same bright-dark pair, once as smooth walls (a dent's shading) and once with a step.
    yy, xx = np.mgrid[0:240, 0:320].astype(np.float32)
    u = (xx - 160) / 20.0
    ramp = 140 + 30 * u * np.exp(-0.5 * u * u) * np.exp(-0.5 * ((yy - 120) / 20.0) ** 2)
    step = np.where(np.abs(ramp - 140) > 6, 140 + 24 * np.sign(ramp - 140), 140).astype(np.float32)
    noise = np.random.default_rng(1).normal(0, 1.5, ramp.shape)
    det = make()
    smooth = hits(det.inspect(View(np.clip(ramp + noise, 0, 255).astype(np.uint8), "r")))
    sharp = det.inspect(View(np.clip(cv2.GaussianBlur(step, (0, 0), 0.7) + noise, 0, 255).astype(np.uint8), "s"))
    assert smooth and smooth[0].measurements["edge_sharpness"] < 2.0, [f.measurements for f in smooth]
    assert hits(sharp) == [], [(f.score, f.measurements) for f in sharp]


def test_gray_and_colour_views_give_the_same_findings():
    s = panel()
    det = make()
    gray = det.inspect(View(s.image, "g"))
    colour = det.inspect(View(cv2.cvtColor(s.image, cv2.COLOR_GRAY2BGR), "c"))
    assert [(f.box, round(f.score, 6)) for f in gray] == [(f.box, round(f.score, 6)) for f in colour]


def test_rendered_dents_above_the_visibility_threshold_are_found():
    r = eval_dent.eval_rendered(240)
    assert r["detection_at_threshold_light_unknown"] >= RENDERED_DETECTION_FLOOR, r
    assert r["diameter_error_median_pct"] <= 15.0, r
    assert r["false_alarms_per_rendered_blank"] <= 0.05, r


def test_demo_station_fails_dented_parts_and_passes_the_others(tmp_path):
    result = run_station(
        {
            "source": {"type": "synthetic", "config": {"count": 36, "seed": 11, "defect_rate": 0.6}},
            "steps": [{"detector": "dent", "roi": DEMO_ROI}],
            "rules": {"dent": {"min_score": 0.5}},
        },
        tmp_path,
    )
    rng = np.random.default_rng(11)  # the source's own sequence of truths
    truth = {f"syn-11-{i:05d}": truth_for(i, 0.6, rng) for i in range(36)}
    verdicts = {i.part_id: i.verdict for i in result.inspections()}
    dented = [p for p, t in truth.items() if t == "dent"]
    others = [p for p, t in truth.items() if t in ("good", "scratch")]
    assert len(dented) >= 5 and len(others) >= 15
    assert all(verdicts[p] == "FAIL" for p in dented), {p: verdicts[p] for p in dented}
    # One known false alarm here: the upper end of the scratch on syn-11-00030 (a dark line
    # whose darkness fades along it reads as a light-dark pair; docs/detectors/dent.md).
    wrong = {p: truth[p] for p in others if verdicts[p] != "PASS"}
    assert len(wrong) <= 1, wrong


# ---------------------------------------------------------------------------------------------
# Real data: floors a little under the figures in docs/detectors/dent.md.

needs_data = pytest.mark.usefixtures("data_dir")  # skips locally without the data, fails in CI


@pytest.mark.data
@needs_data
def test_real_good_surfaces_raise_few_false_alarms():
    # The half nobody tuned on (odd-numbered files), each inside the part's own ROI.
    r = eval_dent.eval_good("report")
    assert r["good_images"] == 258
    assert r["false_alarms_per_good_image"] <= GOOD_FALSE_ALARMS_CEILING, r


@pytest.mark.data
@needs_data
def test_independent_renders_of_the_report_split_are_found():
    # bench/dent_renders.py: other profiles (caps, Gaussians, creases, ellipses), an extended
    # light, GGX gloss, real textures of the split nobody tuned on, shot noise, blur, JPEG.
    r = eval_dent.eval_independent("report", 150, 20)
    assert r["indep_report_n_at_or_above_3"] >= 25, r
    assert r["indep_report_detection_at_3"] >= INDEPENDENT_DETECTION_FLOOR, r


def test_a_long_narrow_dent_is_found():
    # A crease-like dent (aspect 0.15: 90 px long, 13 px wide) fails a compact test.
    s = panel(diameter_px=90.0, depth_px=1.5, aspect=0.15, angle_deg=30.0, light_azimuth_deg=120.0)
    found = hits(make().inspect(View(s.image, "c")))
    assert any(
        math.hypot(f.box[0] + f.box[2] / 2 - s.center[0], f.box[1] + f.box[3] / 2 - s.center[1]) < 45 for f in found
    ), [f.message for f in found]


@pytest.mark.data
@needs_data
def test_car_dent_photos_auroc_stays_above_its_floor():
    r = eval_dent.eval_car_dents(make())
    assert r["car_dent_images"] == 144 and r["car_no_dent_images"] == 75
    assert r["car_image_auroc"] >= CAR_AUROC_FLOOR, r


@pytest.mark.data
@needs_data
def test_station_passes_real_good_tiles(tmp_path, data_dir):
    folder = tmp_path / "parts"
    folder.mkdir()
    tiles = sorted((data_dir / "magnetic_tile" / "MT_Free" / "Imgs").glob("*.jpg"))[::24][:20]
    for p in tiles:
        (folder / p.name).symlink_to(p)
    result = run_station(
        {
            "source": {"type": "folder", "config": {"path": str(folder), "pattern": "*.jpg"}},
            "steps": [{"detector": "dent"}],
            "rules": {"dent": {"min_score": 0.5}},
        },
        tmp_path,
    )
    verdicts = [i.verdict for i in result.inspections()]
    assert len(verdicts) == 20
    assert sum(v == "FAIL" for v in verdicts) <= 1, verdicts
    assert "ERROR" not in verdicts


@pytest.mark.parametrize("n", [1000, 2047, 2048, 9856, 33400, 33401, 250_001])
def test_the_fast_noise_median_is_numpys_to_the_last_bit(n):
    # The noise level uses a selection that partitions only the values near the middle (speed on
    # 5 MP frames); it must give np.median's float exactly, ties and skewed spreads included.
    from inspector_dent import _median

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


@pytest.mark.parametrize("scale", [0.495, 0.7, 0.99, 1.2345])
def test_the_vertical_derivative_is_opencvs_sobel_to_the_last_bit(scale):
    # The band's d/dy is computed in numpy (faster than OpenCV's column pass); it must stay the
    # very same floats as cv2.Sobel(ksize=1), signs of zeros and borders included.
    from inspector_dent import _d_dy

    rng = np.random.default_rng(7)
    for shape in ((512, 612), (17, 16), (3, 40), (2, 9)):
        img = cv2.GaussianBlur((rng.standard_normal(shape) * 40).astype(np.float32), (0, 0), 1.2)
        ref = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=1, scale=scale)
        assert np.array_equal(_d_dy(img, scale).view(np.uint32), ref.view(np.uint32))


def _narrow_pair(even: bool = False, length: float = 44.0, amp: float = 14.0, seed: int = 5) -> np.ndarray:
    """A crease 5 px wide, 44 px long at 30 deg, lit across (a bright flank beside a dark one),
    or with ``even`` a dark line of the same contrast (a printed line or a scratch)."""
    yy, xx = np.mgrid[0:240, 0:320].astype(np.float32)
    a = math.radians(30)
    u = (xx - 160) * math.cos(a) + (yy - 120) * math.sin(a)
    v = -(xx - 160) * math.sin(a) + (yy - 120) * math.cos(a)
    s = 1.3
    across = -np.exp(-0.5 * (v / s) ** 2) if even else (v / s) * np.exp(0.5 - 0.5 * (v / s) ** 2)
    taper = np.clip(1 - (2 * u / length) ** 2, 0, None) ** 1.5 if length < 400 else 1.0
    img = 140 + amp * across * taper + np.random.default_rng(seed).normal(0, 2.0, u.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_a_narrow_crease_is_found_by_its_line_sum_and_a_line_is_not():
    # 5 px wide: below every compact scale; the pair summed along its line stands out.
    img = _narrow_pair()
    found = [
        f
        for f in hits(make().inspect(View(img, "c")))
        if math.hypot(f.box[0] + f.box[2] / 2 - 160, f.box[1] + f.box[3] / 2 - 120) < 24
    ]
    assert found and found[0].message.startswith("crease"), [f.message for f in found]
    assert hits(make(line_crease_sigma=None).inspect(View(img, "c"))) == []  # the line sum finds it
    # A dark line of the same contrast is even: no light-dark pair (the dark-line path, off
    # here, takes a soft one 3 px wide for a fold's walls; see the dark-fold tests below).
    assert hits(make(dark_fold_sigma=None).inspect(View(_narrow_pair(even=True), "l"))) == []
    # The same pair running through the whole view is a part's edge or a streak, not a fold.
    assert hits(make().inspect(View(_narrow_pair(length=1e9), "e"))) == []


def _dark_line(
    width_sigma: float = 2.5,
    length: float = 70.0,
    angle: float = 30.0,
    sharp: bool = False,
    seed: int = 5,
    scale: int = 1,
    tapered: bool = True,
    centre_y: float | None = None,
):
    """A dark line 14 grey levels deep on a noisy surface (sigma 2), centred in a 320 x 240 view
    (``scale`` times larger on both sides, the line's length too): a fold's two walls turned
    from a high light (soft, ``width_sigma`` px, tapered ends), or with ``sharp`` a scratch (a box
    profile ``2 * width_sigma`` px wide, square ends), or with a ``length`` beyond the view a line
    that runs through it. ``centre_y``: the line's centre that far down the view instead."""
    h, w = 240 * scale, 320 * scale
    cy = h / 2 if centre_y is None else centre_y
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = math.radians(angle)
    u = (xx - w / 2) * math.cos(a) + (yy - cy) * math.sin(a)
    v = -(xx - w / 2) * math.sin(a) + (yy - cy) * math.cos(a)
    length *= scale
    if sharp:  # anti-aliased: 2 * width_sigma px wide at any angle
        across = -np.clip(width_sigma + 0.5 - np.abs(v), 0, 1) * (np.abs(u) <= length / 2)
        taper = 1.0
    else:
        across = -np.exp(-0.5 * (v / width_sigma) ** 2)
        taper = np.clip(1 - (2 * u / length) ** 2, 0, None) ** 1.5 if length < 400 * scale else 1.0
        if not tapered:  # evenly dark, its ends rounded over a width
            taper = np.clip((length / 2 - np.abs(u)) / (2 * width_sigma) + 0.5, 0, 1)
    img = 140 + 14.0 * across * taper + np.random.default_rng(seed).normal(0, 2.0, u.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _near_centre(findings):
    return [f for f in hits(findings) if math.hypot(f.box[0] + f.box[2] / 2 - 160, f.box[1] + f.box[3] / 2 - 120) < 24]


@pytest.mark.parametrize("angle", [0.0, 30.0, 75.0, 120.0])
def test_a_fold_seen_as_one_dark_line_is_found_once(angle):
    det = make()
    img = _dark_line(angle=angle, seed=int(angle))
    found = hits(det.inspect(View(img, "f")))
    assert len(found) == 1 and _near_centre(found), [(f.box, f.message) for f in found]
    f = found[0]
    assert "(one dark line)" in f.message, f.message
    assert f.measurements["dark_line_width_px"] == pytest.approx(2.355 * 2.5, abs=2.0), f.measurements
    assert hits(make(dark_fold_sigma=None).inspect(View(img, "f"))) == []  # the dark-line path finds it


@pytest.mark.parametrize("angle", [0.0, 30.0, 75.0, 120.0])
def test_a_scratch_and_a_dark_line_through_the_view_are_not_folds(angle):
    det = make()
    for half_width in (0.5, 1.0):  # 1-2 px wide, as sharp as the pixels: a fine scratch
        scratch = _dark_line(half_width, angle=angle, sharp=True, seed=int(angle))
        assert hits(det.inspect(View(scratch, "s"))) == [], half_width
    # A part's edge, a pattern's line or a ground surface's streak runs on: a fold ends.
    through = _dark_line(length=1e9, angle=angle, seed=int(angle))
    assert hits(det.inspect(View(through, "t"))) == []


def test_on_a_large_view_a_fold_is_found_once_with_its_width_and_a_fine_scratch_is_not():
    # 2560 x 1920: the detector works on a view shrunk 4 times; the width is measured on the view.
    det = make()
    found = hits(det.inspect(View(_dark_line(10.0, scale=8), "f")))
    assert len(found) == 1 and "(one dark line)" in found[0].message, [f.message for f in found]
    assert found[0].measurements["dark_line_width_px"] == pytest.approx(2.355 * 10.0, rel=0.25)
    assert found[0].size_px == found[0].measurements["dark_line_width_px"]
    for half_width in (0.5, 1.0):
        assert hits(det.inspect(View(_dark_line(half_width, sharp=True, scale=8), "s"))) == [], half_width


def test_with_a_known_light_the_dark_flank_of_a_long_bump_is_not_a_fold(monkeypatch):
    # A long dent lit from below reads as a long bump lit from above: under a light known to be
    # above, its dark flank is a dark line with the brighter side toward the light.
    bump = panel(light_azimuth_deg=270, depth_px=2.0, aspect=0.25, diameter_px=90)
    dent = panel(light_azimuth_deg=90, depth_px=2.0, aspect=0.25, diameter_px=90)
    det = make(light_direction_deg=90)
    assert len(hits(det.inspect(View(dent.image, "d")))) == 1
    assert hits(det.inspect(View(bump.image, "b"))) == []
    import inspector_dent

    monkeypatch.setattr(inspector_dent, "_DARK_FOLD_EVEN", 0.0)  # no line is uneven: the test is off
    flank = hits(make(light_direction_deg=90).inspect(View(bump.image, "b")))
    assert flank and "(one dark line)" in flank[0].message, [f.message for f in flank]


@pytest.mark.parametrize("length", [120.0, 200.0])
def test_an_evenly_dark_long_fold_is_one_finding(length):
    found = hits(make().inspect(View(_dark_line(length=length, angle=20.0, tapered=False), "f")))
    assert len(found) == 1 and "(one dark line)" in found[0].message, [(f.box, f.message) for f in found]
    assert "light from" not in found[0].message  # a dark line does not say where the light is
    assert "light_direction_deg" not in found[0].measurements


def test_a_fold_beside_the_views_border_is_found_and_a_line_along_it_is_not():
    det = make()
    for cy in (25.0, 35.0):  # 25-35 px from the top, parallel to it
        fold = _dark_line(angle=0.0, seed=1, centre_y=cy)
        assert len(hits(det.inspect(View(fold, "f")))) == 1, cy
        along = _dark_line(length=1e9, angle=0.0, seed=1, centre_y=cy)
        assert hits(det.inspect(View(along, "t"))) == [], cy
