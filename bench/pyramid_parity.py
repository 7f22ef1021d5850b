"""Findings and poses of dent and misalignment, written out exactly (floats as ``repr``), to compare
two versions of the code bit for bit (issue 12: the detectors' pyramid levels taken from
``View.pyramid`` must change nothing).

Cases: dent on the real car photos (``car_dents/images``, colour JPEG, whole image, and a
non-contiguous ROI of each) and on rendered dent panels (5 MP mono, 1024x768 colour, an ROI);
misalignment taught from MVTec transistor ``train/good`` (through its ROI) on ``test/good`` and
``test/misplaced``, and taught from the demo's synthetic parts at 2448x2048 (where it refines at
half resolution, so its levels come from the view's pyramid) on good and misaligned parts. Each
case runs twice: on a fresh view and on a view whose pyramid another step filled first
(``share_pyramids``), so a result that depends on who computed a level shows.

    python bench/pyramid_parity.py --write before.json     # on the old code
    python bench/pyramid_parity.py --compare before.json   # on the new: exit 1 on any difference
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from shared_data import DATA  # noqa: E402

FRAME = (2448, 2048)


def _finding(f: Any) -> dict[str, Any]:
    mask = None if f.mask is None else hashlib.sha256(np.ascontiguousarray(f.mask).tobytes()).hexdigest()[:16]
    return {
        "kind": f.kind,
        "score": repr(f.score),
        "box": list(f.box),
        "size_px": repr(f.size_px),
        "raw_score": repr(f.raw_score),
        "message": f.message,
        "measurements": {k: repr(v) for k, v in sorted(f.measurements.items())},
        "mask": mask,
    }


def _run(det: Any, view: Any) -> dict[str, Any]:
    try:
        found = det.inspect(view)
    except Exception as exc:  # noqa: BLE001 - a refusal is a result too
        return {"error": f"{type(exc).__name__}: {exc}"}
    p = view.published
    pose = None if p is None else [repr(x) for x in (p.dx, p.dy, p.angle_deg, *p.centre, p.scale)]
    return {"findings": [_finding(f) for f in found], "pose": pose}


def _views(image: np.ndarray, part: str, origin: tuple[int, int] = (0, 0)) -> Iterator[tuple[str, Any]]:
    """A fresh view, and one whose pyramid a sibling view of the same pixels filled first (when the
    contract has ``View.pyramid``; on older code the same fresh view again)."""
    from inspector_core import View

    yield "fresh", View(image, part, origin)
    v = View(image, part, origin)
    sibling = View(image, part, origin)
    try:
        from inspector_core.runtime.pyramids import share_pyramids
    except ImportError:
        yield "shared", v
        return
    share_pyramids([sibling, v])
    for k in range(7):
        sibling.pyramid(k)
    yield "shared", v


def dent_cases(tmp: Path) -> Iterator[tuple[str, Any, Any, tuple[int, int]]]:
    from inspector_dent import DentConfig, DentDetector
    from inspector_sources.synthetic import render_dent_panel

    det = DentDetector(DentConfig(), station_dir=tmp)
    det.warm_up()
    photos = sorted((DATA / "car_dents" / "images").glob("*.jpg"))[::4]
    for p in photos:
        img: Any = cv2.imread(str(p), cv2.IMREAD_COLOR)
        yield f"dent/car/{p.name}", det, img, (0, 0)
        yield f"dent/car-roi/{p.name}", det, img[37:597, 51:611], (51, 37)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        big = render_dent_panel(rng, (FRAME[1], FRAME[0]), diameter_px=200, depth_px=6, noise_sigma=2).image
        if big.ndim == 3:
            big = cv2.cvtColor(big, cv2.COLOR_BGR2GRAY)
        yield f"dent/panel5mp/{seed}", det, big, (0, 0)
        yield f"dent/panel5mp-roi/{seed}", det, big[100:1900, 300:2300], (300, 100)
        small = render_dent_panel(rng, (768, 1024), diameter_px=60, depth_px=4, noise_sigma=2).image
        yield f"dent/panel1024/{seed}", det, small, (0, 0)


def misalignment_cases(tmp: Path) -> Iterator[tuple[str, Any, Any, tuple[int, int]]]:
    from eval_misalignment import MVTEC_ROI, PART, TRANSISTOR, _detector, _teach_into, crop, gray, roi_of
    from inspector_sources.synthetic import render_part

    train = sorted((TRANSISTOR / "train" / "good").glob("*.png"))[:10]
    frames = [gray(p) for p in train]
    roi = roi_of(frames[0].shape, MVTEC_ROI)
    folder = tmp / "transistor"
    folder.mkdir()
    _teach_into(folder, [crop(f, roi) for f in frames], part=PART)
    det = _detector(folder)
    for cls in ("good", "misplaced"):
        for p in sorted((TRANSISTOR / "test" / cls).glob("*.png"))[:8]:
            yield f"misalignment/transistor/{cls}/{p.name}", det, crop(gray(p), roi), roi[:2]
    folder = tmp / "synthetic"
    folder.mkdir()

    def part(seed: int, i: int, truth: Any) -> np.ndarray:
        return cv2.resize(render_part(seed, i, truth, color=False).image, FRAME, interpolation=cv2.INTER_CUBIC)

    _teach_into(folder, [part(7, i, "good") for i in range(4)])
    det = _detector(folder)
    for seed, i, truth in [(11, 0, "good"), (11, 1, "good"), (11, 2, "misalignment"), (12, 3, "misalignment")]:
        yield f"misalignment/synthetic5mp/{seed}-{i}-{truth}", det, part(seed, i, truth), (0, 0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", type=Path, help="write the results to this JSON file")
    g.add_argument("--compare", type=Path, help="compare with the results in this JSON file")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        for gen in (dent_cases, misalignment_cases):
            tmp = Path(d) / gen.__name__
            tmp.mkdir()
            for name, det, image, origin in gen(tmp):
                for how, view in _views(image, name, origin):
                    out[f"{name} [{how}]"] = _run(det, view)
    n_find = sum(len(v.get("findings", [])) for v in out.values())
    n_pose = sum(1 for v in out.values() if v.get("pose"))
    print(f"pyramid_parity: {len(out)} runs, {n_find} findings, {n_pose} poses")
    if args.write:
        args.write.write_text(json.dumps(out, indent=1, sort_keys=True))
        return 0
    before = json.loads(args.compare.read_text())
    diff = [k for k in sorted(set(before) | set(out)) if before.get(k) != out.get(k)]
    for k in diff[:20]:
        print(f"DIFFERENT {k}:\n  before {before.get(k)}\n  now    {out.get(k)}")
    print(f"pyramid_parity: {len(out) - len(diff)} of {len(out)} runs identical, {len(diff)} different")
    return 1 if diff else 0


if __name__ == "__main__":
    raise SystemExit(main())
