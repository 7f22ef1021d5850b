"""Evaluate the dent detector (issue 4): rendered dents under controlled light, false alarms on
real good surfaces, real dents in field photos, latency.

    nice .venv/bin/python bench/eval_dent.py [--quick]

``main()`` returns every figure as a dict (bench/eval_detectors.py aggregates it).
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from pathlib import Path

import cv2
import numpy as np
from inspector_dent import DentConfig, DentDetector
from inspector_sources.synthetic import render_dent_panel
from shared_data import DATA
from sklearn.metrics import roc_auc_score

from inspector_core import View

VISIBILITY_THRESHOLD = 6.0
"""Documented visibility threshold: peak shading contrast over the panel's pixel noise sigma
(docs/detectors/dent.md says why 6 and not lower: the texture of real good surfaces)."""
VIS_BINS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 10.0, math.inf)
DENT_CLASSES = {2, 4, 8, 9, 10, 11, 12, 13, 14, 15, 16}  # the *-dent classes of classes.txt


def detector(**kw) -> DentDetector:
    det = DentDetector(DentConfig(**kw), station_dir=Path("."))
    det.warm_up()
    return det


def rendered_scenes(n: int, seed: int = 4):
    """Dents of random diameter, depth, light and panel, one per 480x640 panel."""
    rng = np.random.default_rng(seed)
    for k in range(n):
        d = float(np.exp(rng.uniform(math.log(36), math.log(150))))
        ratio = float(np.exp(rng.uniform(math.log(0.003), math.log(0.05))))
        yield render_dent_panel(
            np.random.default_rng([seed, k]),
            (480, 640),
            diameter_px=d,
            depth_px=d * ratio,
            light_azimuth_deg=float(rng.uniform(0, 360)),
            light_elevation_deg=float(rng.uniform(15, 60)),
            material="paint" if k % 2 == 0 else "metal",
            noise_sigma=float(rng.uniform(1, 4)),
            aspect=float(rng.uniform(0.7, 1.0)),
            angle_deg=float(rng.uniform(0, 180)),
        )


def match(findings, scene, min_score=0.5):
    """The best finding at or above min_score whose centre lies inside the true dent."""
    for f in findings:
        if f.score < min_score:
            continue
        x, y, w, h = f.box
        if math.hypot(x + w / 2 - scene.center[0], y + h / 2 - scene.center[1]) <= scene.diameter_px / 2:
            return f
    return None


def eval_rendered(n: int, seed: int = 4) -> dict:
    blind, lit = detector(), None
    rows = []
    for s in rendered_scenes(n, seed):
        lit = detector(light_direction_deg=s.light_azimuth_deg)
        view = View(s.image, "r")
        fb = match(blind.inspect(view), s)
        fl = match(lit.inspect(view), s)
        rows.append(
            (
                s.visibility,
                s.diameter_px,
                s.light_elevation_deg,
                s.material,
                fb.size_px if fb else None,
                fl.size_px if fl else None,
            )
        )
    vis = np.array([r[0] for r in rows])
    out: dict = {"rendered_dents": len(rows), "visibility_threshold": VISIBILITY_THRESHOLD, "bins": []}
    for lo, hi in itertools.pairwise(VIS_BINS):
        sel = [r for r in rows if lo <= r[0] < hi]
        if not sel:
            continue
        out["bins"].append(
            {
                "visibility": f"[{lo:g}, {hi:g})",
                "n": len(sel),
                "detected_light_unknown": round(sum(r[4] is not None for r in sel) / len(sel), 3),
                "detected_light_known": round(sum(r[5] is not None for r in sel) / len(sel), 3),
            }
        )
    above = [r for r in rows if r[0] >= VISIBILITY_THRESHOLD]
    out["n_at_or_above_threshold"] = len(above)
    out["detection_at_threshold_light_unknown"] = round(sum(r[4] is not None for r in above) / len(above), 3)
    out["detection_at_threshold_light_known"] = round(sum(r[5] is not None for r in above) / len(above), 3)
    for v in (3.0, 4.0):
        sel = [r for r in rows if r[0] >= v]
        out[f"detection_at_visibility_ge_{v:g}_light_unknown"] = round(sum(r[4] is not None for r in sel) / len(sel), 3)
    for mat in ("paint", "metal"):
        sel = [r for r in above if r[3] == mat]
        out[f"detection_at_threshold_{mat}"] = round(sum(r[4] is not None for r in sel) / max(len(sel), 1), 3)
    err = np.array([abs(r[4] - r[1]) / r[1] for r in above if r[4] is not None])
    out["diameter_error_median_pct"] = round(100 * float(np.median(err)), 1)
    out["diameter_error_p90_pct"] = round(100 * float(np.percentile(err, 90)), 1)
    bias = np.array([(r[4] - r[1]) / r[1] for r in above if r[4] is not None])
    out["diameter_bias_median_pct"] = round(100 * float(np.median(bias)), 1)
    # False alarms on rendered panels without a dent.
    fa = 0
    rng = np.random.default_rng(99)
    n_blank = max(n // 4, 20)
    for k in range(n_blank):
        s = render_dent_panel(
            np.random.default_rng([99, k]),
            (480, 640),
            diameter_px=None,
            material="paint" if k % 2 == 0 else "metal",
            noise_sigma=float(rng.uniform(1, 4)),
        )
        fa += sum(f.score >= 0.5 for f in blind.inspect(View(s.image, "b")))
    out["rendered_blank_panels"] = n_blank
    out["false_alarms_per_rendered_blank"] = round(fa / n_blank, 3)
    del vis
    return out


def good_images() -> list[Path]:
    return sorted((DATA / "magnetic_tile" / "MT_Free" / "Imgs").glob("*.jpg")) + sorted(
        (DATA / "mvtec_ad" / "transistor" / "train" / "good").glob("*.png")
    )


def eval_good(step: int = 1) -> dict:
    det = detector()
    per: dict[str, list[int]] = {"magnetic_tile": [], "transistor": []}
    worst = []
    for p in good_images()[::step]:
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        fs = [f for f in det.inspect(View(img, p.name)) if f.score >= 0.5]
        per["transistor" if "transistor" in str(p) else "magnetic_tile"].append(len(fs))
        for f in fs:
            worst.append((f.score, str(p.relative_to(DATA)), f.message))
    n = sum(len(v) for v in per.values())
    fa = sum(sum(v) for v in per.values())
    worst.sort(reverse=True)
    return {
        "good_images": n,
        "false_alarms_per_good_image": round(fa / n, 4),
        "false_alarms_magnetic_tile": f"{sum(per['magnetic_tile'])}/{len(per['magnetic_tile'])}",
        "false_alarms_transistor": f"{sum(per['transistor'])}/{len(per['transistor'])}",
        "worst_false_alarms": worst[:3],
    }


def car_labels(path: Path) -> list[tuple[int, float, float, float, float]]:
    lab = path.parent.parent / "labels" / (path.stem + ".txt")
    if not lab.exists():
        return []
    return [
        (int(a), float(b), float(c), float(d), float(e))
        for a, b, c, d, e in (line.split() for line in lab.read_text().splitlines() if line.strip())
    ]


def auroc(pos: list[float], neg: list[float]) -> float:
    """Image AUROC of the scores of dented (``pos``) against undented (``neg``) photos."""
    return float(roc_auc_score([1] * len(pos) + [0] * len(neg), pos + neg))


def eval_car_dents(det: DentDetector | None = None) -> dict:
    det = det or detector()
    pos, neg, inside, top_inside = [], [], 0, 0
    for p in sorted((DATA / "car_dents" / "images").glob("*.jpg")):
        img = cv2.imread(str(p))
        labels = car_labels(p)
        fs = det.inspect(View(img, p.name))
        score = max((f.score for f in fs), default=0.0)
        dents = [lb for lb in labels if lb[0] in DENT_CLASSES]
        if dents:
            pos.append(score)
            h, w = img.shape[:2]
            boxes = [
                ((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
                for _, cx, cy, bw, bh in dents
            ]

            def within(f, boxes=boxes):
                x, y, fw, fh = f.box
                fx, fy = x + fw / 2, y + fh / 2
                return any(x0 <= fx <= x1 and y0 <= fy <= y1 for x0, y0, x1, y1 in boxes)

            hits = [f for f in fs if f.score >= 0.5]
            if hits:
                inside += any(within(f) for f in hits)
                top_inside += within(max(hits, key=lambda f: f.score))
        else:
            neg.append(score)
    found = sum(s >= 0.5 for s in pos)
    return {
        "car_dent_images": len(pos),
        "car_no_dent_images": len(neg),
        "car_image_auroc": round(auroc(pos, neg), 3),
        "car_recall_at_default": round(found / len(pos), 3),
        "car_false_positive_rate_at_default": round(sum(s >= 0.5 for s in neg) / len(neg), 3),
        "car_found_with_a_finding_inside_a_dent_box": f"{inside}/{found}",
        "car_found_with_top_finding_inside_a_dent_box": f"{top_inside}/{found}",
    }


def eval_patch_model(model: Path) -> dict:
    """Image AUROC on car_dents of the optional patch classifier trained on rendered panels only
    (plugins/dent/train_patch_model.py): 96 px patches, stride 32, of the photo squeezed to
    192 or 288 px; the image's score is its highest patch probability."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    out = {}
    for size in (192, 288):
        pos, neg = [], []
        for p in sorted((DATA / "car_dents" / "images").glob("*.jpg")):
            g = cv2.resize(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), (size, size), interpolation=cv2.INTER_AREA)
            g = g.astype(np.float32)
            patches = np.stack(
                [g[y : y + 96, x : x + 96] for y in range(0, size - 95, 32) for x in range(0, size - 95, 32)]
            )[:, None]
            score = float(sess.run(None, {"patch": patches})[0].max())
            (pos if any(lb[0] in DENT_CLASSES for lb in car_labels(p)) else neg).append(score)
        out[f"patch_model_car_image_auroc_{size}px"] = round(auroc(pos, neg), 3)
    return out


def latency() -> dict:
    cv2.setNumThreads(1)
    det = detector()
    out = {}
    rng = np.random.default_rng(0)
    big = render_dent_panel(rng, (2048, 2448), diameter_px=200, depth_px=6, noise_sigma=2).image
    cases = {
        "latency_ms_2448x2048_mono": big,
        "latency_ms_640x640_bgr_car": cv2.imread(str(next((DATA / "car_dents" / "images").glob("*.jpg")))),
        "latency_ms_magnetic_tile": cv2.imread(str(good_images()[0]), cv2.IMREAD_UNCHANGED),
        "latency_ms_512x512_transistor": cv2.imread(str(good_images()[-1])),
    }
    for name, img in cases.items():
        view = View(img, "t")
        det.inspect(view)
        ts = []
        for _ in range(15):
            t0 = time.perf_counter()
            det.inspect(view)
            ts.append((time.perf_counter() - t0) * 1000)
        out[name] = round(float(np.median(ts)), 2)
    cv2.setNumThreads(0)
    return out


def main(quick: bool = False) -> dict:
    figures: dict = {}
    figures.update(eval_rendered(200 if quick else 600))
    # Seed 4 is the set the defaults were chosen on; seed 5 was rendered after they were fixed.
    fresh = eval_rendered(200 if quick else 600, seed=5)
    figures["fresh_seed_n_at_or_above_threshold"] = fresh["n_at_or_above_threshold"]
    figures["fresh_seed_detection_at_threshold_light_unknown"] = fresh["detection_at_threshold_light_unknown"]
    figures["fresh_seed_detection_at_threshold_light_known"] = fresh["detection_at_threshold_light_known"]
    figures["fresh_seed_diameter_error_median_pct"] = fresh["diameter_error_median_pct"]
    figures.update(eval_good(step=4 if quick else 1))
    figures.update(eval_car_dents())
    figures.update(latency())
    return figures


def print_figures(figs: dict) -> None:
    for k, v in figs.items():
        if k == "bins":
            print("detection by visibility (peak shading contrast / noise sigma):")
            for b in v:
                print(
                    f"  {b['visibility']:>12}  n={b['n']:4d}  light unknown {b['detected_light_unknown']:.3f}"
                    f"  light known {b['detected_light_known']:.3f}"
                )
        else:
            print(f"{k}: {v}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer rendered dents and good images")
    ap.add_argument("--patch-model", type=Path, help="also score car_dents with this ONNX patch classifier")
    args = ap.parse_args()
    figs = main(args.quick)
    if args.patch_model:
        figs.update(eval_patch_model(args.patch_model))
    print_figures(figs)
