"""Render the README's annotated example: rendered dents on a painted and a metal panel, a
demo part, each with the detector's findings drawn in (green: score >= 0.5).

    .venv/bin/python plugins/dent/make_example.py   # writes plugins/dent/example.png
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from inspector_dent import DentConfig, DentDetector
from inspector_sources.synthetic import render_dent_panel, render_part

from inspector_core import Calibration, View

HERE = Path(__file__).resolve().parent


def annotate(img: np.ndarray, findings, origin=(0, 0)) -> np.ndarray:
    out = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img.copy()
    for f in findings:
        x, y, w, h = f.box
        x, y = x + origin[0], y + origin[1]
        colour = (0, 200, 0) if f.score >= 0.5 else (0, 160, 255)
        cv2.circle(out, (x + w // 2, y + h // 2), max(w, h) // 2 + 3, colour, 2, cv2.LINE_AA)
        label = (
            f"{f.measurements.get('diameter_mm', f.size_px):.1f}{' mm' if 'diameter_mm' in f.measurements else ' px'}"
            f"  {f.measurements['shading_contrast_pct']:.0f}%  s={f.score:.2f}"
        )
        cv2.putText(out, label, (x, max(12, y - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return out


def main() -> Path:
    det = DentDetector(DentConfig(), station_dir=HERE)
    tiles = []
    for k, (mat, d, depth, az, el) in enumerate([("paint", 70, 2.0, 135, 25), ("metal", 50, 1.5, 20, 35)]):
        s = render_dent_panel(
            np.random.default_rng(10 + k),
            (300, 400),
            diameter_px=d,
            depth_px=depth,
            light_azimuth_deg=az,
            light_elevation_deg=el,
            material=mat,
            noise_sigma=2.0,
        )
        fs = [f for f in det.inspect(View(s.image, "ex", calibration=Calibration(0.1))) if f.score >= det.report_floor]
        tile = annotate(s.image, fs[:3])
        cv2.putText(
            tile,
            f"{mat}, light {az} deg / {el} deg up, V={s.visibility:.1f}",
            (8, 290),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
        tiles.append(tile)
    part = render_part(7, 2, "dent")
    x0, y0, w, h = 192, 164, 640, 440
    fs = [f for f in det.inspect(View(part.image[y0 : y0 + h, x0 : x0 + w], "demo", origin=(x0, y0))) if f.score >= 0.5]
    demo = annotate(part.image, fs, origin=(x0, y0))
    cv2.rectangle(demo, (x0, y0), (x0 + w, y0 + h), (255, 120, 0), 1)
    demo = cv2.resize(demo, (640, 480), interpolation=cv2.INTER_AREA)
    cv2.putText(
        demo,
        "demo part: ROI (blue) = the plate",
        (8, 470),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )
    left = np.vstack(tiles)
    left = cv2.resize(left, (320, 480), interpolation=cv2.INTER_AREA)
    out = np.hstack([left, demo])
    # Fewer grey levels keep the PNG small (< 300 KB) without hiding the shading.
    out = (out // 4 * 4).astype(np.uint8)
    path = HERE / "example.png"
    cv2.imwrite(str(path), out, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return path


if __name__ == "__main__":
    print(main())
