"""Fixtured ROIs on real parts moved by known motions (issue 14; docs/fixture.md).

MVTec AD transistor (../shared/data/mvtec_ad/transistor, 512 px). The misalignment step's
reference is taught from the TUNING half (train/good at even positions; ``teach(part="dark")``,
its ROI as in bench/eval_registration.py); a scratch step looks at the transistor's case through
a ROI fixtured to it (``fixture: align``). Frames of the HELD-OUT half (train/good at odd
positions, test/good) and the defect images (test/damaged_case, cut_lead, bent_lead) are moved
by known motions (``cv2.warpAffine`` about the part's centre, ``INTER_CUBIC``, ``BORDER_REFLECT``),
then run through the station's own path (inspection.begin, the pipeline's lanes, inspection.judge).

Two figures per move set, each also without the fixture (the ROI where the station file puts it):

- overlap: the region the fixtured step saw on the moved frame (its view's outline mapped into
  the frame) against the region it saw on the unmoved frame moved by the true motion: IoU, n,
  mean, worst;
- findings: every scratch finding on an unmoved frame (score >= its report floor), moved by the
  true motion, against the moved frame's findings: the share found again (a box of IoU >= 0.5)
  and the median IoU of the best match.

    python bench/fixture_overlap.py                       # both move sets
    python bench/fixture_overlap.py --png /tmp/fixture.png   # also one moved frame, drawn (not in the tree)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_registration import TRANSISTOR, halves, roi_of, taught_reference

from inspector_core import Pose, View
from inspector_core.contract import Frame
from inspector_core.plugins import load
from inspector_core.runtime.config import load_station
from inspector_core.runtime.fixture import place
from inspector_core.runtime.inspection import begin, judge
from inspector_core.runtime.pipeline import Pipeline
from inspector_core.runtime.steps import StepWorker, close_steps

CASE = (0.31, 0.17, 0.37, 0.35)
"""The fixtured step's ROI (fractions of the frame): the transistor's case face."""
MOVE_SETS = {
    "shift 20 px, turn 3 deg": (20.0, 3.0),
    "shift 10 px, turn 10 deg": (10.0, 10.0),
}
PER_IMAGE = 4
SEED = 14


def load1() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def station_file(d: Path, tune: list[Path], fixtured: bool) -> Path:
    from inspector_misalignment import suggest_tolerances
    from inspector_misalignment.reference import save

    if not (d / "ref" / "align.png").exists():
        taught, _, _ = taught_reference(tune)
        save(taught, d / "ref", "align", {})
        (d / "tolerances.json").write_text(json.dumps(suggest_tolerances(taught.spread())))
    tol = json.loads((d / "tolerances.json").read_text())
    frame = cv2.imread(str(tune[0]), cv2.IMREAD_GRAYSCALE)
    ax, ay, aw, ah = roi_of(frame.shape)
    cx, cy, cw, ch = roi_of(frame.shape, CASE)
    scratch: dict[str, Any] = {
        "detector": "scratch",
        "name": "case",
        "roi": {"x": cx, "y": cy, "width": cw, "height": ch},
    }
    if fixtured:
        scratch["fixture"] = "align"
    cfg = {
        "name": "fixture-bench",
        "source": {"type": "folder", "config": {"path": "."}},
        "steps": [
            {
                "detector": "misalignment",
                "name": "align",
                "roi": {"x": ax, "y": ay, "width": aw, "height": ah},
                "config": {"reference": "ref/align.png", **tol},
            },
            scratch,
        ],
        "store": {"url": f"sqlite:///{d / 'unused.db'}"},
    }
    path = d / ("fixtured.yaml" if fixtured else "fixed.yaml")
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run(station: Any, frames: list[np.ndarray]) -> list[tuple[Any, list[Any], list[Any]]]:
    """Each frame as the station inspects a part: (judged, outcomes, views it was begun with)."""
    workers = [StepWorker(s, station.directory) for s in station.steps]
    pipeline = Pipeline(workers, cores=1, abort=threading.Event(), window=len(frames) + 1)  # all put, then read
    out = []
    try:
        for i, frame in enumerate(frames):
            begun = begin(Frame(f"p{i}", frame, datetime.now(UTC)), station)
            assert not isinstance(begun, str), begun
            pipeline.put(begun, begun.views)
        pipeline.end()
        for job in pipeline.results():
            out.append((judge(station, job.payload, job.outcomes), job.outcomes, job.payload.views))
    finally:
        pipeline.close()
        close_steps(workers)
    return out


def outline(view: View) -> np.ndarray:
    """The view's pixel area in frame pixels: 4 corners."""
    h, w = view.image.shape[:2]
    pts = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    m = view.frame_matrix()
    return pts @ m[:, :2].T + m[:, 2]


def moved(poly: np.ndarray, m: np.ndarray) -> np.ndarray:
    return poly @ m[:, :2].T + m[:, 2]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    inter, _ = cv2.intersectConvexConvex(a32, b32)
    union = cv2.contourArea(a32) + cv2.contourArea(b32) - inter
    return float(inter / union) if union > 0 else 0.0


def box_poly(box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float64)


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax0, ay0, ax1, ay1 = a[0], a[1], a[0] + a[2], a[1] + a[3]
    bx0, by0, bx1, by1 = b[0], b[1], b[0] + b[2], b[1] + b[3]
    iw, ih = max(0, min(ax1, bx1) - max(ax0, bx0)), max(0, min(ay1, by1) - max(ay0, by0))
    union = a[2] * a[3] + b[2] * b[3] - iw * ih
    return iw * ih / union if union > 0 else 0.0


def bbox(poly: np.ndarray) -> tuple[int, int, int, int]:
    x0, y0 = np.floor(poly.min(0)).astype(int)
    x1, y1 = np.ceil(poly.max(0)).astype(int)
    return (int(x0), int(y0), int(x1 - x0), int(y1 - y0))


def case_view(views: list[Any], outcomes: list[Any]) -> View:
    return outcomes[1].view if outcomes[1].view is not None else views[1]


def measure(station: Any, paths: list[Path], shift: float, turn: float, rng: np.random.Generator) -> dict[str, Any]:
    frames = [cv2.imread(str(p)) for p in paths]
    base = run(station, frames)
    moves, moved_frames = [], []
    for k, frame in enumerate(frames):
        h, w = frame.shape[:2]
        cx, cy = w / 2, h * 0.36  # about the case's centre
        for _ in range(PER_IMAGE):
            dx, dy = rng.uniform(-shift, shift, 2)
            angle = float(rng.uniform(-turn, turn))
            m = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
            m[:, 2] += (dx, dy)
            moves.append(
                (k, m, f"{paths[k].parent.name}/{paths[k].name} moved ({dx:+.1f}, {dy:+.1f}) px {angle:+.2f} deg")
            )
            moved_frames.append(cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT))
    t0 = time.process_time()
    after = run(station, moved_frames)
    cpu_ms = (time.process_time() - t0) * 1000 / len(moved_frames)
    overlaps, errors, modes = [], [], {"shift": 0, "warp": 0, "none": 0}
    refound, best = 0, []
    for (k, m, what), (judged, outcomes, views) in zip(moves, after, strict=True):
        j0, o0, v0 = base[k]
        if judged.error is not None or j0.error is not None:
            errors.append(f"{what}: {judged.error or j0.error}")
            continue
        view1, view0 = case_view(views, outcomes), case_view(v0, o0)
        modes[view1.meta.get("fixture", {}).get("mode", "none")] += 1
        overlaps.append(iou(outline(view1), moved(outline(view0), m)))
        found = [d.box for d in judged.defects if d.step == "case"]
        for d in j0.defects:
            if d.step != "case":
                continue
            truth = bbox(moved(box_poly(d.box), m))
            score = max((box_iou(truth, b) for b in found), default=0.0)
            best.append(score)
            refound += score >= 0.5
    o = np.array(overlaps)
    return {
        "n": len(o),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "modes": modes,
        "iou_mean": round(float(o.mean()), 4) if len(o) else None,
        "iou_worst": round(float(o.min()), 4) if len(o) else None,
        "iou_p05": round(float(np.quantile(o, 0.05)), 4) if len(o) else None,
        "findings_on_unmoved": len(best),
        "findings_refound": refound,
        "findings_best_iou_median": round(float(np.median(best)), 3) if best else None,
        "cpu_ms_per_part": round(cpu_ms, 1),
        "loadavg": load1(),
    }


def cut_cost(station: Any, frame: np.ndarray) -> dict[str, Any]:
    """CPU time of placing the case ROI: a shift (a numpy view) against a turn (a warped copy)."""
    step = station.steps[1]
    r = step.roi
    nominal = View(frame[r.y : r.y + r.height, r.x : r.x + r.width], "p", (r.x, r.y), frame_size=frame.shape[1::-1])
    out = {}
    for name, pose in (("shift", Pose(3.2, -1.7, 0.0, (256, 180))), ("warp", Pose(3.2, -1.7, 2.5, (256, 180)))):
        times = []
        for _ in range(200):
            t0 = time.thread_time()
            v = place(frame, step, nominal, pose, {}, "align")
            times.append((time.thread_time() - t0) * 1000)
            assert isinstance(v, View) and v.meta["fixture"]["mode"] == name
        out[f"{name}_ms_median"] = round(float(np.median(times)), 4)
    out["loadavg"] = load1()
    return out


def draw(station: Any, path: Path, png: Path, rng: np.random.Generator) -> None:
    frame = cv2.imread(str(path))
    h, w = frame.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h * 0.36), 7.0, 1.0)
    m[:, 2] += (-9.0, 6.0)
    moved_frame = cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    ((j0, o0, v0), (j1, o1, v1)) = run(station, [frame, moved_frame])
    img = moved_frame.copy()
    r = station.steps[1].roi
    cv2.rectangle(img, (r.x, r.y), (r.x + r.width, r.y + r.height), (160, 160, 160), 1)  # the station file's ROI
    cv2.polylines(img, [np.round(moved(outline(case_view(v0, o0)), m)).astype(np.int32)], True, (0, 255, 0), 2)
    cv2.polylines(img, [np.round(outline(case_view(v1, o1))).astype(np.int32)], True, (255, 0, 255), 1)
    for d in j0.defects:
        if d.step == "case":
            x, y, bw, bh = bbox(moved(box_poly(d.box), m))
            cv2.rectangle(img, (x, y), (x + bw, y + bh), (0, 255, 255), 2)
    for d in j1.defects:
        if d.step == "case":
            x, y, bw, bh = d.box
            cv2.rectangle(img, (x, y), (x + bw, y + bh), (0, 0, 255), 1)
    view = case_view(v1, o1).image
    side = cv2.resize(view, (view.shape[1] * 2, view.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    canvas = np.zeros((max(h, side.shape[0]), w + side.shape[1] + 8, 3), np.uint8)
    canvas[:h, :w] = img
    canvas[: side.shape[0], w + 8 :] = side
    cv2.imwrite(str(png), canvas)
    mode = case_view(v1, o1).meta["fixture"]["mode"]
    print(f"wrote {png}: {path.parent.name}/{path.name} turned 7 deg, shifted (-9, +6) px; mode {mode}")


def main() -> dict[str, Any]:
    cv2.setNumThreads(1)
    tune, held = halves()
    defects = [
        p for c in ("damaged_case", "cut_lead", "bent_lead") for p in sorted((TRANSISTOR / "test" / c).glob("*.png"))
    ]
    out: dict[str, Any] = {"held_out_images": len(held), "defect_images": len(defects), "per_image": PER_IMAGE}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        registry = load()
        fixtured = load_station(station_file(d, tune, True), registry)
        fixed = load_station(station_file(d, tune, False), registry)
        for name, (shift, turn) in MOVE_SETS.items():
            for label, st in (("fixtured", fixtured), ("not fixtured", fixed)):
                rng = np.random.default_rng(SEED)
                out[f"{name}, held-out good, {label}"] = measure(st, held, shift, turn, rng)
                rng = np.random.default_rng(SEED + 1)
                out[f"{name}, defect images, {label}"] = measure(st, defects, shift, turn, rng)
                for key in (f"{name}, held-out good, {label}", f"{name}, defect images, {label}"):
                    print(key, json.dumps(out[key]), flush=True)
        out["cut cost (189x179 ROI)"] = cut_cost(fixtured, cv2.imread(str(held[0])))
        if "--png" in sys.argv:
            draw(fixtured, defects[0], Path(sys.argv[sys.argv.index("--png") + 1]), np.random.default_rng(SEED))
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
