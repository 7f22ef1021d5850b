"""Every figure of the misalignment detector.

1. MVTec AD transistor (../shared/data/mvtec_ad/transistor): teach from train/good through the
   step's ROI (the transistor's body: ``MVTEC_ROI`` as fractions of the image), tolerances as
   ``suggest_tolerances`` derives them from the taught spread (train images only); then
   test/misplaced must fail, test/good pass; the other defect classes are reported.
2. Registration error on synthetic motions of real good images: each image is moved by a
   random shift and rotation within the capture range (``warpAffine`` of the whole frame, then
   the ROI is cut), registered, and compared with the move composed with the unmoved image's
   own pose. Error: the part centre's position (px) and the rotation (deg).
3. Synthetic parts (the demo's generator, 1024x768): a reference taught from 10 good parts;
   the default config on good / scratch / dent / misaligned parts, and the pose error against
   the generator's truth; plus synthetic motions of good parts as in 2.
4. Latency on one core: the transistor ROI, the 1024x768 demo frame, a 2448x2048 mono frame.

    python bench/eval_misalignment.py
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from shared_data import DATA  # noqa: E402

TRANSISTOR = DATA / "mvtec_ad" / "transistor"
MVTEC_ROI = (0.16, 0.0, 0.68, 0.78)
"""x, y, width, height as fractions of the image: the transistor's case with a margin wider than
the capture range (the former (0.25, 0.08, 0.49, 0.50) cut the case's edges off when it moved)."""
PART = "dark"
"""``teach(part=...)``: register on the dark case and a band around it, not on the board."""
CAPTURE_SHIFT_PX = 20.0
"""Synthetic motions: shifts up to this many px in x and y (a 512 px transistor image)..."""
CAPTURE_ROTATION_DEG = 5.0
"""... and rotations up to this many degrees."""
SYN_CAPTURE_SHIFT_PX = 30.0
SYN_CAPTURE_ROTATION_DEG = 6.0


def roi_of(shape: tuple[int, ...], frac=MVTEC_ROI) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    return (int(frac[0] * w), int(frac[1] * h), int(frac[2] * w), int(frac[3] * h))


def crop(img: np.ndarray, roi) -> np.ndarray:
    x, y, w, h = roi
    return img[y : y + h, x : x + w]


def gray(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise FileNotFoundError(path)
    return img


def _detector(folder: Path, **cfg: Any):
    from inspector_misalignment import MisalignmentConfig, MisalignmentDetector

    det = MisalignmentDetector(MisalignmentConfig(reference="ref/step.png", **cfg), station_dir=folder)
    det.warm_up()
    return det


def _teach_into(folder: Path, images: list[np.ndarray], part: str | None = None):
    from inspector_misalignment.reference import save, teach

    taught = teach(images, part=part)
    save(taught, folder / "ref", "step", {})
    return taught


def _m3(m: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(m, np.float64)[:2], [0.0, 0.0, 1.0]])


def motion_errors(
    ref, frames: list[np.ndarray], roi, max_shift: float, max_rot: float, per_image: int, seed: int
) -> dict[str, float]:
    """Move whole frames, cut the ROI, register; error against the move composed with the
    unmoved frame's pose (all in ROI pixels)."""
    rng = np.random.default_rng(seed)
    x, y, w, h = roi
    to_roi = np.array([[1, 0, -x], [0, 1, -y], [0, 0, 1]], np.float64)
    c = np.array(ref.centre) + (x, y)
    errs_px, errs_deg = [], []
    for frame in frames:
        base = ref.register(crop(frame, roi))
        p0 = _m3(base.matrix)
        for _ in range(per_image):
            dx, dy = rng.uniform(-max_shift, max_shift, 2)
            ang = rng.uniform(-max_rot, max_rot)
            m = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), ang, 1.0)
            m[:, 2] += (dx, dy)
            moved = cv2.warpAffine(
                frame, m, (frame.shape[1], frame.shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
            )
            truth = to_roi @ _m3(m) @ np.linalg.inv(to_roi) @ p0
            est = _m3(ref.register(crop(moved, roi)).matrix)
            cc = np.array([*ref.centre, 1.0])
            errs_px.append(float(np.hypot(*(est @ cc - truth @ cc)[:2])))
            errs_deg.append(abs(math.degrees(math.atan2(est[0, 1], est[0, 0]) - math.atan2(truth[0, 1], truth[0, 0]))))
    e, a = np.array(errs_px), np.array(errs_deg)
    return {
        "n": len(e),
        "shift_err_px_mean": round(float(e.mean()), 4),
        "shift_err_px_p95": round(float(np.quantile(e, 0.95)), 4),
        "shift_err_px_max": round(float(e.max()), 4),
        "rot_err_deg_mean": round(float(a.mean()), 4),
        "rot_err_deg_p95": round(float(np.quantile(a, 0.95)), 4),
        "rot_err_deg_max": round(float(a.max()), 4),
    }


def eval_transistor(tmp: Path) -> dict[str, Any]:
    from inspector_misalignment import suggest_tolerances

    from inspector_core import View

    train = sorted((TRANSISTOR / "train" / "good").glob("*.png"))
    frames = [gray(p) for p in train]
    roi = roi_of(frames[0].shape)
    taught = _teach_into(tmp, [crop(f, roi) for f in frames], part=PART)
    tol = suggest_tolerances(taught.spread())
    det = _detector(tmp, **tol)
    out: dict[str, Any] = {
        "roi": roi,
        "taught_images": len(frames),
        "spread": taught.spread(),
        "tolerances": tol,
        "classes": {},
        "images": [],
    }
    for cls in ("good", "misplaced", "bent_lead", "cut_lead", "damaged_case"):
        files = sorted((TRANSISTOR / "test" / cls).glob("*.png"))
        failed = 0
        for p in files:
            findings = det.inspect(View(crop(gray(p), roi), p.name))
            f = max(findings, key=lambda f: f.score, default=None)
            fail = f is not None and f.score >= 0.5
            failed += fail
            meas = f.measurements if f else {}
            out["images"].append(
                {
                    "image": f"{cls}/{p.name}",
                    "fail": fail,
                    "score": round(f.score, 3) if f else 0.0,
                    "message": f.message if f else "within tolerance (score below 0.1)",
                    **meas,
                }
            )
        out["classes"][cls] = {"images": len(files), "failed": failed}
    g, m = out["classes"]["good"], out["classes"]["misplaced"]
    out["misplaced_fail_rate"] = m["failed"] / m["images"]
    out["good_pass_rate"] = 1 - g["failed"] / g["images"]
    moving = [gray(p) for p in sorted((TRANSISTOR / "test" / "good").glob("*.png"))] + frames[:10]
    out["motion"] = motion_errors(det._ref, moving, roi, CAPTURE_SHIFT_PX, CAPTURE_ROTATION_DEG, 8, 1)
    out["latency_ms"] = _latency(det, crop(frames[0], roi))
    return out


def eval_synthetic(tmp: Path) -> dict[str, Any]:
    from inspector_sources.synthetic import render_part

    from inspector_core import View

    taught_parts = [render_part(7, i, "good", color=False) for i in range(10)]
    _teach_into(tmp, [p.image for p in taught_parts])
    det = _detector(tmp)
    h, w = taught_parts[0].image.shape
    centre = (w / 2, h / 2)

    def pose_m(pose):
        m = cv2.getRotationMatrix2D(centre, pose[2], 1.0)
        m[:, 2] += pose[:2]
        return _m3(m)

    ref_pose = np.mean([pose_m(p.pose) for p in taught_parts], axis=0)
    out: dict[str, Any] = {"classes": {}}
    errs_px, errs_deg = [], []
    for truth in ("good", "scratch", "dent", "misalignment"):
        failed, n = 0, 40
        for i in range(n):
            part = render_part(11, i, truth)
            findings = det.inspect(View(part.image, str(i)))
            failed += any(f.score >= 0.5 for f in findings)
            if truth == "misalignment":
                pose = det._ref.register(cv2.cvtColor(part.image, cv2.COLOR_BGR2GRAY))
                t = pose_m(part.pose) @ np.linalg.inv(ref_pose)
                cc = np.array([*det._ref.centre, 1.0])
                est = _m3(pose.matrix)
                errs_px.append(float(np.hypot(*(est @ cc - t @ cc)[:2])))
                errs_deg.append(abs(pose.rotation_deg - math.degrees(math.atan2(t[0, 1], t[0, 0]))))
        out["classes"][truth] = {"images": n, "failed": failed}
    out["misaligned_pose_err_px_max"] = round(max(errs_px), 4)
    out["misaligned_pose_err_deg_max"] = round(max(errs_deg), 4)
    goods = [render_part(13, i, "good", color=False).image for i in range(6)]
    out["motion"] = motion_errors(det._ref, goods, (0, 0, w, h), SYN_CAPTURE_SHIFT_PX, SYN_CAPTURE_ROTATION_DEG, 8, 2)
    out["latency_ms"] = _latency(det, render_part(11, 0, "good", color=False).image)
    out["latency_ms_bgr"] = _latency(det, render_part(11, 0, "good").image)
    return out


def eval_big(tmp: Path) -> dict[str, Any]:
    """2448x2048 mono: the synthetic part scaled up; reference from 3 scaled good parts."""
    from inspector_sources.synthetic import render_part

    def big(seed: int, i: int, truth: Literal["good", "misalignment"]) -> np.ndarray:
        return cv2.resize(render_part(seed, i, truth, color=False).image, (2448, 2048), interpolation=cv2.INTER_CUBIC)

    _teach_into(tmp, [big(7, i, "good") for i in range(3)])
    det = _detector(tmp)
    return {"good_ms": _latency(det, big(11, 0, "good")), "misaligned_ms": _latency(det, big(11, 2, "misalignment"))}


def _latency(det, image: np.ndarray, runs: int = 15) -> float:
    from inspector_core import View

    view = View(image, "t")
    det.inspect(view)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        det.inspect(view)
        times.append((time.perf_counter() - t0) * 1000)
    return round(float(np.median(times)), 2)


def main() -> dict[str, Any]:
    cv2.setNumThreads(1)
    sys.path.insert(0, str(ROOT / "plugins" / "misalignment"))
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "t").mkdir()
        (tmp / "s").mkdir()
        (tmp / "b").mkdir()
        if TRANSISTOR.is_dir():
            figures["transistor"] = eval_transistor(tmp / "t")
        figures["synthetic"] = eval_synthetic(tmp / "s")
        figures["latency_2448x2048_mono"] = eval_big(tmp / "b")
    _print(figures)
    return figures


def _print(f: dict[str, Any]) -> None:
    t = f.get("transistor")
    if t:
        print("== MVTec AD transistor: teach from train/good, ROI", t["roi"], f"({t['taught_images']} images)")
        print("taught spread:", t["spread"])
        print("tolerances (suggest_tolerances of the spread):", t["tolerances"])
        for cls, c in t["classes"].items():
            print(f"  {cls:13s} failed {c['failed']}/{c['images']}")
        print(f"misplaced fail rate {t['misplaced_fail_rate']:.2f}, good pass rate {t['good_pass_rate']:.2f}")
        for im in t["images"]:
            print(f"  {im['image']:22s} {'FAIL' if im['fail'] else 'pass'} score {im['score']:.3f}  {im['message']}")
        m = t["motion"]
        print(
            f"synthetic motions of real good images (+-{CAPTURE_SHIFT_PX:g} px, +-{CAPTURE_ROTATION_DEG:g} deg, "
            f"n={m['n']}): centre error mean {m['shift_err_px_mean']} / p95 {m['shift_err_px_p95']} / "
            f"max {m['shift_err_px_max']} px; rotation error mean {m['rot_err_deg_mean']} / "
            f"p95 {m['rot_err_deg_p95']} / max {m['rot_err_deg_max']} deg"
        )
        print(f"latency, {t['roi'][2]}x{t['roi'][3]} ROI: {t['latency_ms']} ms")
    s = f["synthetic"]
    print("== Synthetic parts (1024x768), reference from 10 good parts, default config")
    for cls, c in s["classes"].items():
        print(f"  {cls:13s} failed {c['failed']}/{c['images']}")
    print(
        f"misaligned parts' pose against the generator's truth: max error {s['misaligned_pose_err_px_max']} px, "
        f"{s['misaligned_pose_err_deg_max']} deg"
    )
    m = s["motion"]
    print(
        f"synthetic motions of good parts (+-{SYN_CAPTURE_SHIFT_PX:g} px, +-{SYN_CAPTURE_ROTATION_DEG:g} deg, "
        f"n={m['n']}): centre error mean {m['shift_err_px_mean']} / p95 {m['shift_err_px_p95']} / "
        f"max {m['shift_err_px_max']} px; "
        f"rotation error mean {m['rot_err_deg_mean']} / p95 {m['rot_err_deg_p95']} / max {m['rot_err_deg_max']} deg"
    )
    print(f"latency 1024x768: mono {s['latency_ms']} ms, BGR {s['latency_ms_bgr']} ms")
    b = f["latency_2448x2048_mono"]
    print(f"== latency 2448x2048 mono, one core: good part {b['good_ms']} ms, misaligned part {b['misaligned_ms']} ms")


if __name__ == "__main__":
    main()
