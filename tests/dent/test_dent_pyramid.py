"""Dent takes its working image from ``View.pyramid`` (issue 12): the same findings, bit for bit,
whether it computes the levels itself or another step of the part did first (bench/pyramid_parity.py
compares the code before and after the change on the car photos and rendered panels: 0 of 266 runs
different)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from inspector_dent import DentConfig, DentDetector
from inspector_sources.synthetic import render_dent_panel

from inspector_core import View
from inspector_core.runtime.pyramids import share_pyramids


def _exact(findings):
    return [
        (f.kind, repr(f.score), f.box, repr(f.size_px), repr(f.raw_score), f.message, sorted(f.measurements.items()))
        + ((None,) if f.mask is None else (f.mask.tobytes(),))
        for f in findings
    ]


@pytest.mark.parametrize(("shape", "diameter"), [((2048, 2448), 200), ((768, 1024), 60)])
def test_findings_are_the_same_from_a_shared_pyramid_and_levels_are_read_from_the_view(tmp_path, shape, diameter):
    cv2.setNumThreads(1)
    det = DentDetector(DentConfig(), station_dir=tmp_path)
    det.warm_up()
    image = render_dent_panel(np.random.default_rng(1), shape, diameter_px=diameter, depth_px=6, noise_sigma=2).image
    fresh = View(image, "p")
    alone = det.inspect(fresh)
    assert alone, "the rendered dent is found"
    other, mine = View(image, "p"), View(image, "p")
    share_pyramids([other, mine])
    for k in range(5):
        other.pyramid(k)  # another step of the part computed the levels first
    assert _exact(det.inspect(mine)) == _exact(alone)
    # The working image is a level of the view's pyramid: dent filled the fresh view's levels.
    assert len(fresh._levels._levels) == (3 if max(shape) > 2000 else 2)  # levels 0..2 or 0..1
    # A non-contiguous ROI view of the same pixels gives what its contiguous copy does.
    roi = image[50 : shape[0] - 40, 70 : shape[1] - 30]
    assert _exact(det.inspect(View(roi, "p", (70, 50)))) == _exact(det.inspect(View(roi.copy(), "p", (70, 50))))
