"""Every figure of the scratch detector: NEU-DET quality, synthetic parts, false alarms on real
good surfaces, latency.

NEU-DET (../shared/data/neu_det): class ``scratches`` is positive, the five other classes are
negative. The defaults were tuned on the *tune* half of IMAGES (per class, files sorted by
number, even positions); the *holdout* half (odd positions) and the Validation_* folders were
only measured. An image is positive when a finding scores >= 0.5; a ground-truth scratch box is
found when such a finding's box overlaps it (intersection > 0; IoU >= 0.1 is reported too).

    python bench/eval_scratch.py [--data ../shared/data] [--synthetic 50]
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from shared_data import DATA  # noqa: E402

NEGATIVE_CLASSES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale")
# The demo plate (1024x768 frame, 640x440 plate centred) seen through an ROI 8 px inside its edges.
SYNTHETIC_ROI = (200, 172, 624, 424)


def _detector(**config: Any):
    from inspector_scratch import ScratchConfig, ScratchDetector

    det = ScratchDetector(ScratchConfig(**config), station_dir=ROOT)
    det.warm_up()
    return det


def _findings(det, image: np.ndarray, part_id: str = "x", min_score: float = 0.5):
    from inspector_core import View

    return [f for f in det.inspect(View(image=image, part_id=part_id)) if f.score >= min_score]


def neu_items(data: Path) -> dict[str, list[tuple[Path, Path]]]:
    """(image, annotation) pairs per split: tune, holdout (halves of IMAGES) and validation."""
    root = data / "neu_det"
    splits: dict[str, list[tuple[Path, Path]]] = {"tune": [], "holdout": [], "validation": []}
    by_class: dict[str, list[Path]] = {}
    for p in (root / "IMAGES").glob("*.jpg"):
        by_class.setdefault(p.stem.rsplit("_", 1)[0], []).append(p)
    for _cls, paths in sorted(by_class.items()):
        paths.sort(key=lambda p: int(re.findall(r"\d+$", p.stem)[0]))
        for i, p in enumerate(paths):
            splits["tune" if i % 2 == 0 else "holdout"].append((p, root / "ANNOTATIONS" / f"{p.stem}.xml"))
    for p in sorted((root / "Validation_Images").glob("*.jpg")):
        splits["validation"].append((p, root / "Validation_Annotations" / f"{p.stem}.xml"))
    return splits


def _boxes(xml: Path, cls: str = "scratches") -> list[tuple[int, int, int, int, bool]]:
    out = []
    for obj in ET.parse(xml).getroot().iter("object"):
        if obj.findtext("name") != cls:
            continue
        b = obj.find("bndbox")
        x0, y0, x1, y1 = (int(float(b.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax"))
        out.append((x0, y0, x1, y1, obj.findtext("difficult") == "1"))
    return out


def _overlap(box, gt) -> tuple[float, float]:
    """(intersection area, IoU) of a finding box (x, y, w, h) and a VOC box (x0, y0, x1, y1)."""
    x, y, w, h = box
    gx0, gy0, gx1, gy1 = gt[:4]
    ix = max(0, min(x + w, gx1 + 1) - max(x, gx0))
    iy = max(0, min(y + h, gy1 + 1) - max(y, gy0))
    inter = ix * iy
    union = w * h + (gx1 - gx0 + 1) * (gy1 - gy0 + 1) - inter
    return inter, inter / union if union else 0.0


def neu_figures(det, items: list[tuple[Path, Path]]) -> dict[str, Any]:
    tp = fp = fn = tn = 0
    boxes = found = found_iou = boxes_nd = found_nd = 0
    misses, false_alarms = [], []
    per_class_fp: dict[str, int] = {}
    for img_path, xml in items:
        cls = img_path.stem.rsplit("_", 1)[0]
        img = cv2.imread(str(img_path), cv2.IMREAD_GRAYSCALE)
        fs = _findings(det, img, img_path.name)
        positive = cls == "scratches"
        if positive:
            if fs:
                tp += 1
            else:
                fn += 1
                misses.append(img_path.name)
            for gt in _boxes(xml):
                ov = [_overlap(f.box, gt) for f in fs]
                hit = any(i > 0 for i, _ in ov)
                boxes += 1
                found += hit
                found_iou += any(u >= 0.1 for _, u in ov)
                if not gt[4]:
                    boxes_nd += 1
                    found_nd += hit
        elif fs:
            fp += 1
            per_class_fp[cls] = per_class_fp.get(cls, 0) + 1
            false_alarms.append(img_path.name)
        else:
            tn += 1
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "images": len(items),
        "positives": tp + fn,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "boxes": boxes,
        "box_recall": round(found / boxes, 4) if boxes else None,
        "box_recall_iou0.1": round(found_iou / boxes, 4) if boxes else None,
        "box_recall_not_difficult": round(found_nd / boxes_nd, 4) if boxes_nd else None,
        "false_alarms_by_class": per_class_fp,
        "misses": misses,
        "false_alarm_images": false_alarms,
    }


def synthetic_figures(det, n: int, seed: int = 7) -> dict[str, Any]:
    from inspector_sources.synthetic import render_part

    x, y, w, h = SYNTHETIC_ROI
    hits = 0
    length_err = []
    good_fa = good_findings = 0
    for i in range(n):
        part = render_part(seed, i, "scratch")
        fs = _findings(det, part.image[y : y + h, x : x + w])
        bx, by, bw, bh = part.box
        gt = (bx - x, by - y, bx - x + bw - 1, by - y + bh - 1)
        hit = [f for f in fs if _overlap(f.box, gt)[0] > 0]
        hits += bool(hit)
        if hit:
            best = max(hit, key=lambda f: f.size_px)
            # The drawn scratch's chord is the box diagonal less the 2 px margin each side.
            chord = math.hypot(bw - 5, bh - 5)
            length_err.append(abs(best.size_px - chord) / chord)
        good = render_part(seed + 1000, i, "good")
        gfs = _findings(det, good.image[y : y + h, x : x + w])
        good_fa += bool(gfs)
        good_findings += len(gfs)
    return {
        "scratch_parts": n,
        "detected": hits,
        "detection_rate": round(hits / n, 4),
        "median_length_error": round(float(np.median(length_err)), 4) if length_err else None,
        "good_parts": n,
        "good_parts_flagged": good_fa,
        "false_alarms_per_good_part": round(good_findings / n, 4),
    }


def synthetic_edges(det, n: int = 10, seed: int = 11) -> dict[str, Any]:
    """The whole frame of good parts (plate edges, bevel shadow, fixture in view): informative
    only, since a station's ROI is meant to leave the part's edges out."""
    from inspector_sources.synthetic import render_part

    flagged = 0
    for i in range(n):
        flagged += bool(_findings(det, render_part(seed, i, "good").image))
    return {"good_full_frames": n, "flagged": flagged}


def good_surfaces(det, data: Path) -> dict[str, Any]:
    out = {}
    sets = {
        "mvtec_transistor_train_good": sorted((data / "mvtec_ad" / "transistor" / "train" / "good").glob("*.png")),
        "magnetic_tile_MT_Free": sorted((data / "magnetic_tile" / "MT_Free" / "Imgs").glob("*.jpg")),
    }
    for name, paths in sets.items():
        flagged = findings = 0
        examples = []
        for p in paths:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            fs = _findings(det, img, p.name)
            flagged += bool(fs)
            findings += len(fs)
            if fs and len(examples) < 5:
                examples.append(p.name)
        out[name] = {
            "images": len(paths),
            "flagged": flagged,
            "false_alarms_per_image": round(findings / len(paths), 4) if paths else None,
            "examples": examples,
        }
    return out


def latency(det, image: np.ndarray, repeats: int = 20) -> dict[str, float]:
    from inspector_core import View

    view = View(image=image, part_id="t")
    det.inspect(view)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        det.inspect(view)
        times.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": round(float(np.median(times)), 2), "max_ms": round(float(np.max(times)), 2)}


def latency_figures(det, data: Path) -> dict[str, Any]:
    from inspector_sources.synthetic import render_part

    cv2.setNumThreads(1)
    neu = cv2.imread(str(data / "neu_det" / "IMAGES" / "scratches_1.jpg"), cv2.IMREAD_GRAYSCALE)
    part = render_part(3, 0, "scratch", color=False)
    big = cv2.resize(part.image, (2448, 2048), interpolation=cv2.INTER_LINEAR)
    x, y, w, h = SYNTHETIC_ROI
    out = {
        "neu_200x200_gray": latency(det, neu, 200),
        "synthetic_roi_624x424_bgr": latency(det, render_part(3, 0, "scratch").image[y : y + h, x : x + w], 50),
        "frame_2448x2048_mono": latency(det, big, 20),
    }
    cv2.setNumThreads(0)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--synthetic", type=int, default=50, help="synthetic scratch and good parts")
    ap.add_argument("--skip-good-surfaces", action="store_true")
    args = ap.parse_args(argv if argv is not None else [])
    if not (args.data / "neu_det").is_dir():
        raise SystemExit(f"eval_scratch: {args.data / 'neu_det'} not found; pass --data")
    det = _detector()
    results: dict[str, Any] = {"neu_det": {}}
    splits = neu_items(args.data)
    splits["all_images"] = splits["tune"] + splits["holdout"]
    for name in ("tune", "holdout", "validation", "all_images"):
        results["neu_det"][name] = neu_figures(det, splits[name])
    results["synthetic"] = synthetic_figures(det, args.synthetic)
    results["synthetic_full_frame"] = synthetic_edges(det)
    if not args.skip_good_surfaces:
        results["good_surfaces"] = good_surfaces(det, args.data)
    results["latency"] = latency_figures(det, args.data)
    return results


def _print(results: dict[str, Any]) -> None:
    print("# scratch detector: figures (bench/eval_scratch.py)\n")
    print("## NEU-DET: scratches vs the five other classes (image-level; box recall)")
    print(
        "| split | images | pos | TP | FP | FN | precision | recall | F1 | boxes | box recall "
        "| box recall IoU>=0.1 | box recall, not difficult |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results["neu_det"].items():
        print(
            f"| {name} | {r['images']} | {r['positives']} | {r['tp']} | {r['fp']} | {r['fn']} | {r['precision']:.3f} | "
            f"{r['recall']:.3f} | {r['f1']:.3f} | {r['boxes']} | {r['box_recall']:.3f} | "
            f"{r['box_recall_iou0.1']:.3f} | {r['box_recall_not_difficult']:.3f} |"
        )
    for name, r in results["neu_det"].items():
        print(
            f"- {name}: false alarms by class {r['false_alarms_by_class']}; misses {r['misses'][:8]}"
            f"{' ...' if len(r['misses']) > 8 else ''}; false alarms {r['false_alarm_images'][:8]}"
            f"{' ...' if len(r['false_alarm_images']) > 8 else ''}"
        )
    s = results["synthetic"]
    print("\n## Synthetic parts (inspector_sources.synthetic, ROI 8 px inside the plate)")
    print(
        f"- scratches detected: {s['detected']}/{s['scratch_parts']} ({s['detection_rate']:.3f}); "
        f"median length error vs chord {s['median_length_error']}"
    )
    print(
        f"- good parts flagged: {s['good_parts_flagged']}/{s['good_parts']}; "
        f"false alarms per good part {s['false_alarms_per_good_part']}"
    )
    e = results["synthetic_full_frame"]
    print(f"- good parts, whole frame (plate edges in view, no ROI): {e['flagged']}/{e['good_full_frames']} flagged")
    if "good_surfaces" in results:
        print("\n## False alarms on real good surfaces (whole image, default config)")
        for name, r in results["good_surfaces"].items():
            print(
                f"- {name}: {r['flagged']}/{r['images']} images flagged, {r['false_alarms_per_image']} "
                f"false alarms per image; e.g. {r['examples']}"
            )
    print("\n## Latency per image (one core, cv2.setNumThreads(1))")
    for name, r in results["latency"].items():
        print(f"- {name}: median {r['median_ms']} ms, max {r['max_ms']} ms")


if __name__ == "__main__":
    _print(main(sys.argv[1:]))
