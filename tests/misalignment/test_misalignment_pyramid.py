"""Misalignment takes its pyramid levels from ``View.pyramid`` where its finest level is a pyrDown
level (a view over 1300 px: a 5 MP frame is refined at half resolution): the same pose and
findings, bit for bit, whether it computes them or another step of the part did first
(bench/pyramid_parity.py compares the code before and after the change: 0 of 266 runs different)."""

from __future__ import annotations

import cv2
import numpy as np
from inspector_misalignment import MisalignmentConfig, MisalignmentDetector
from inspector_misalignment.reference import save, teach
from inspector_sources.synthetic import render_part

from inspector_core import View
from inspector_core.runtime.pyramids import share_pyramids

FRAME = (2448, 2048)


def _part(seed: int, i: int, truth: str) -> np.ndarray:
    return cv2.resize(render_part(seed, i, truth, color=False).image, FRAME, interpolation=cv2.INTER_CUBIC)


def test_a_5mp_pose_is_the_same_from_a_shared_pyramid_and_its_levels_come_from_the_view(tmp_path):
    cv2.setNumThreads(1)
    save(teach([_part(7, i, "good") for i in range(3)]), tmp_path / "ref", "step", {})
    det = MisalignmentDetector(MisalignmentConfig(reference="ref/step.png"), station_dir=tmp_path)
    det.warm_up()
    ref = det._ref
    assert ref is not None and ref.k_fine == 1
    for seed, i, truth in [(11, 0, "good"), (11, 2, "misalignment")]:
        image = _part(seed, i, truth)
        fresh = View(image, "p")
        alone = det.inspect(fresh)
        other, mine = View(image, "p"), View(image, "p")
        share_pyramids([other, mine])
        for k in range(7):
            other.pyramid(k)
        shared = det.inspect(mine)
        assert [(f.score, f.box, f.measurements) for f in shared] == [(f.score, f.box, f.measurements) for f in alone]
        assert fresh.published == mine.published and fresh.published is not None
        # Its levels 1..k_coarse are the view's own (computed there, not by the detector).
        levels = fresh._levels._levels
        assert len(levels) == ref.k_coarse + 1
        own = ref.view_pyramid(image)
        assert all(np.array_equal(a, b) for a, b in zip(own, levels[1:], strict=True))
