"""Render plugins/misalignment/example.png: a misaligned synthetic part, the reference's part
outline where it should be (green) and where the detector found it (red), and the message.

    python plugins/misalignment/make_example.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
from inspector_misalignment import MisalignmentConfig, MisalignmentDetector
from inspector_misalignment.reference import save, teach
from inspector_sources.synthetic import render_part

from inspector_core import View

HERE = Path(__file__).resolve().parent


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        save(teach([render_part(7, i, "good", color=False).image for i in range(10)]), folder / "ref", "align", {})
        det = MisalignmentDetector(MisalignmentConfig(reference="ref/align.png"), station_dir=folder)
        det.warm_up()
        part = render_part(11, 2, "misalignment")
        (finding,) = det.inspect(View(part.image, "example"))
        ref = det._ref
        pose = ref.register(cv2.cvtColor(part.image, cv2.COLOR_BGR2GRAY))
    img = part.image.copy()
    # The plate's outline in the reference (the demo plate: 640x440, centred) and as found.
    h, w = img.shape[:2]
    x0, y0 = (w - 640) / 2, (h - 440) / 2
    plate = np.array([[x0, y0], [x0 + 640, y0], [x0 + 640, y0 + 440], [x0, y0 + 440]])
    found = plate @ pose.matrix[:, :2].T + pose.matrix[:, 2]
    cv2.polylines(img, [np.round(plate * 4).astype(np.int32)], True, (0, 200, 0), 2, cv2.LINE_AA, shift=2)
    cv2.polylines(img, [np.round(found * 4).astype(np.int32)], True, (0, 0, 255), 2, cv2.LINE_AA, shift=2)
    c = np.array(ref.centre)
    cv2.arrowedLine(
        img, tuple(int(v) for v in c), tuple(int(v) for v in c + pose.shift), (0, 0, 255), 2, cv2.LINE_AA, tipLength=0.3
    )
    x, y, bw, bh = finding.box
    cv2.rectangle(img, (x, y), (x + bw, y + bh), (0, 200, 255), 1)
    img = cv2.resize(img, (640, 480), interpolation=cv2.INTER_AREA)
    cv2.putText(
        img,
        f"FAIL {finding.score:.2f}: {finding.message}",
        (8, 18),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.42,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )
    cv2.putText(
        img,
        f"truth: dx {part.pose[0]:+.1f} px, dy {part.pose[1]:+.1f} px, {part.pose[2]:+.2f} deg."
        " Green: reference, red: found",
        (8, 470),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.42,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )
    small = img
    cv2.imwrite(str(HERE / "example.png"), small, [cv2.IMWRITE_PNG_COMPRESSION, 9])


if __name__ == "__main__":
    main()
