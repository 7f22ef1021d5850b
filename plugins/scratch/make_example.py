"""Render the README's annotated example: a synthetic scratched plate (the demo's parts) seen
through the recommended ROI, every finding drawn with its score and measurements.

    python plugins/scratch/make_example.py   # writes plugins/scratch/example.png
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from inspector_scratch import ScratchConfig, ScratchDetector
from inspector_sources.synthetic import render_part

from inspector_core import Calibration, View

ROI = (200, 172, 624, 424)  # 8 px inside the demo plate (1024x768 frame, 640x440 plate)


def annotate(image: np.ndarray, roi: tuple[int, int, int, int], det: ScratchDetector, title: str) -> np.ndarray:
    x, y, w, h = roi
    view = View(image[y : y + h, x : x + w], "example", (x, y), Calibration(0.1))
    vis = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    cv2.rectangle(vis, (x, y), (x + w, y + h), (255, 160, 0), 1)
    cv2.putText(vis, "ROI", (x + 4, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 160, 0), 1, cv2.LINE_AA)
    for f in det.inspect(view):
        fx, fy, fw, fh = f.box
        colour = (0, 0, 255) if f.score >= 0.5 else (0, 200, 255)
        region = vis[y + fy : y + fy + fh, x + fx : x + fx + fw]
        region[f.mask > 0] = (0.4 * region[f.mask > 0] + 0.6 * np.array(colour)).astype(np.uint8)
        cv2.rectangle(vis, (x + fx - 3, y + fy - 3), (x + fx + fw + 3, y + fy + fh + 3), colour, 1)
        m = f.measurements
        label = f"{f.score:.2f}  {f.message}  w {m['width_px']:.1f} px  c {m['contrast_gray']:.0f}"
        cv2.putText(vis, label, (x + fx, max(y + fy - 8, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 2, cv2.LINE_AA)
    cv2.putText(vis, title, (150, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
    return vis


def main() -> Path:
    det = ScratchDetector(ScratchConfig(), station_dir=Path.cwd())
    det.warm_up()
    tiles = []
    for seed, index in ((7, 0), (7, 9)):
        part = render_part(seed, index, "scratch")
        tiles.append(annotate(part.image, ROI, det, f"synthetic part seed {seed} #{index}: scratch (0.1 mm/px)"))
    good = render_part(8, 2, "good")
    tiles.append(annotate(good.image, ROI, det, "good part: brushing, label, holes - no finding"))
    tiles.append(
        annotate(
            good.image,
            (0, 0, good.image.shape[1], good.image.shape[0]),
            det,
            "same good part, whole frame: plate edges and bevel are not scratches",
        )
    )
    # The plates and a margin of fixture (the titles sit in the margin).
    tiles = [t[0:660, 140:884] for t in tiles]
    for t in tiles:
        t[:28] = t[:28] // 2
    top, bottom = np.hstack(tiles[:2]), np.hstack(tiles[2:])
    sheet = cv2.resize(np.vstack([top, bottom]), None, fx=0.42, fy=0.42, interpolation=cv2.INTER_AREA)
    out = Path(__file__).with_name("example.png")
    cv2.imwrite(str(out), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return out


if __name__ == "__main__":
    print(main())
