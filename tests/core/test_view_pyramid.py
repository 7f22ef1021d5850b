"""``View.pyramid`` (issue 12): a view's pyrDown levels, computed once per part and shared by the
steps whose views show the same pixels (same frame, same ROI, not warped), thread-safe, freed with
the part, and working in an ``isolation: process`` step (whose worker computes its own)."""

from __future__ import annotations

import gc
import hashlib
import os
import threading
import time
import weakref

import cv2
import numpy as np
import pytest
from pydantic import Field

from inspector_core import Detector, Finding, PluginConfig, View, hookimpl
from inspector_core.runtime.pyramids import share_pyramids
from inspector_core.testing import run_station

RNG = np.random.default_rng(12)
FRAME = RNG.integers(0, 256, (480, 640), np.uint8)


def _chain(gray: np.ndarray, k: int) -> np.ndarray:
    for _ in range(k):
        gray = cv2.pyrDown(gray)
    return gray


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:12]


# ---------------------------------------------------------------------------- the contract


@pytest.mark.parametrize(
    "image",
    [FRAME, FRAME[37:401, 51:600], np.dstack([FRAME, FRAME[::-1], 255 - FRAME]), np.zeros((1, 3), np.uint8)],
    ids=["gray", "roi", "bgr", "tiny"],
)
def test_each_level_is_cv2_pyrdown_of_the_one_above_and_read_only(image):
    view = View(image, "p")
    last = (max(image.shape[:2]) - 1).bit_length()  # the first 1x1 level
    for k in range(min(6, last + 1)):
        level = view.pyramid(k)
        assert np.array_equal(level, _chain(view.gray, k)) and level.dtype == np.uint8 and level.ndim == 2
        assert not level.flags.writeable
        assert view.pyramid(k) is level  # memoised
    if image.ndim == 2:
        assert np.shares_memory(view.pyramid(0), image)  # level 0 of a gray view is the view, not a copy
    assert image.flags.writeable  # the frame itself is left writeable for its owner
    with pytest.raises(ValueError, match="level must be an integer >= 0"):
        view.pyramid(-1)
    assert view.pyramid(last).shape == (1, 1)
    with pytest.raises(ValueError, match=f"last level \\(1x1\\) is {last}"):
        view.pyramid(last + 1)  # a plugin's bug must not build levels without end under the part's lock


def test_share_pyramids_groups_views_of_the_same_pixels_only():
    a, b = View(FRAME, "p"), View(FRAME, "p", meta={"other": 1})
    roi, roi_again = View(FRAME[10:200, 20:300], "p", (20, 10)), View(FRAME[10:200, 20:300], "p", (20, 10))
    warped = View(FRAME, "p", warped=True)
    copy = View(FRAME.copy(), "p")
    share_pyramids([a, None, b, roi, roi_again, warped, copy])
    assert b.pyramid(2) is a.pyramid(2)
    assert roi_again.pyramid(1) is roi.pyramid(1) and roi.pyramid(1) is not a.pyramid(1)
    assert warped.pyramid(1) is not a.pyramid(1) and copy.pyramid(1) is not a.pyramid(1)
    assert np.array_equal(copy.pyramid(3), a.pyramid(3))


def test_a_second_caller_waits_for_the_first_instead_of_computing_again(monkeypatch):
    calls = []
    real = cv2.pyrDown

    def slow(img, *args, **kwargs):
        calls.append(img.shape)
        time.sleep(0.02)  # wide enough for every thread to arrive while the first computes
        return real(img, *args, **kwargs)

    monkeypatch.setattr(cv2, "pyrDown", slow)
    views = [View(FRAME, "p") for _ in range(8)]
    share_pyramids(views)
    start = threading.Barrier(len(views))
    got: list[np.ndarray] = []

    def run(v: View) -> None:
        start.wait()
        got.append(v.pyramid(4))

    threads = [threading.Thread(target=run, args=(v,)) for v in views]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 4  # levels 1..4 once each, for eight threads
    assert len(got) == 8 and all(g is got[0] for g in got)
    monkeypatch.setattr(cv2, "pyrDown", real)
    assert np.array_equal(got[0], _chain(FRAME, 4))


def test_a_deep_copied_or_pickled_view_starts_a_pyramid_of_its_own():
    import copy
    import pickle

    v = View(FRAME, "p")
    v.pyramid(2)
    for other in (copy.deepcopy(v), pickle.loads(pickle.dumps(v))):
        assert np.array_equal(other.pyramid(2), v.pyramid(2)) and other.pyramid(2) is not v.pyramid(2)


# ---------------------------------------------------------------------------- in a station

SEEN: list[tuple[str, str, int, weakref.ref]] = []
"""(step tag, part id, the level's data address, a weak reference to it), in this process."""
_lock = threading.Lock()


class ProbeConfig(PluginConfig):
    level: int = Field(2, description="the pyramid level read")
    tag: str = Field("a", description="names the step in SEEN")


class Probe(Detector):
    """Reads one level of its view's pyramid; says what it saw (digest, whether it is the chained
    pyrDown of ``view.gray``, its pid) and, in-process, notes the array in ``SEEN``."""

    name = "pyramid_probe"
    kinds = ("pyramid_probe",)
    Config = ProbeConfig

    def inspect(self, view: View) -> list[Finding]:
        level = view.pyramid(self.config.level)
        exact = np.array_equal(level, _chain(view.gray, self.config.level))
        with _lock:
            live = sum(1 for _, p, _, r in SEEN if p != view.part_id and r() is not None)
            SEEN.append((self.config.tag, view.part_id, level.__array_interface__["data"][0], weakref.ref(level)))
        msg = f"{_digest(level)} exact={exact} pid={os.getpid()} live_other_parts={live}"
        return [Finding("pyramid_probe", 0.9, (0, 0, 1, 1), msg)]


class ProbePlugin:
    @staticmethod
    @hookimpl
    def inspector_register_detectors(register):
        register(Probe)


@pytest.fixture(autouse=True)
def _clear():
    SEEN.clear()
    yield
    SEEN.clear()


def _frames(n: int, shape=(480, 640)) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, shape, np.uint8) for _ in range(n)]


def test_steps_of_one_part_with_the_same_roi_share_one_pyramid_and_others_not(tmp_path):
    roi = {"x": 40, "y": 30, "width": 400, "height": 300}
    steps = [
        {"detector": "pyramid_probe", "name": "a", "config": {"tag": "a"}},
        {"detector": "pyramid_probe", "name": "b", "config": {"tag": "b", "level": 2}},
        {"detector": "pyramid_probe", "name": "c", "config": {"tag": "c"}, "roi": roi},
        {"detector": "pyramid_probe", "name": "d", "config": {"tag": "d"}, "roi": roi},
    ]
    images = _frames(6)
    result = run_station({"steps": steps}, tmp_path, images=images, plugins=[("probe", ProbePlugin)])
    rows = result.inspections()
    assert [r.verdict for r in rows] == ["FAIL"] * 6
    for r in rows:
        assert all("exact=True" in d.message for d in r.defects), [d.message for d in r.defects]
    at = {(tag, part): addr for tag, part, addr, _ in SEEN if not part.startswith("warm")}
    parts = sorted({p for _, p in at})
    assert len(parts) == 6
    for p in parts:
        assert at["a", p] == at["b", p]  # the whole frame: one pyramid for both steps
        assert at["c", p] == at["d", p]  # the same roi: one for both
        assert at["a", p] != at["c", p]
    # Each part its own pyramid (the level's data differs; addresses may be reused once freed).
    digests = [{d.message.split()[0] for d in r.defects if d.step in ("a", "b")} for r in rows]
    assert all(len(d) == 1 for d in digests) and len({next(iter(d)) for d in digests}) == 6


def test_a_parts_pyramid_is_freed_with_the_part(tmp_path):
    steps = [
        {"detector": "pyramid_probe", "name": "a", "config": {"tag": "a", "level": 1}},
        {"detector": "pyramid_probe", "name": "b", "config": {"tag": "b", "level": 1}},
    ]
    images = _frames(30, (1024, 1224))
    result = run_station({"steps": steps}, tmp_path, images=images, plugins=[("probe", ProbePlugin)])
    rows = result.inspections()
    assert len(rows) == 30
    live = [int(d.message.rsplit("=", 1)[1]) for r in rows for d in r.defects]
    # While a part is inspected, the levels of only the few parts in flight (the pipeline's window)
    # are still alive, never the run's: they go with their part's views.
    assert max(live) <= 6, live
    gc.collect()
    assert all(ref() is None for *_, ref in SEEN)


def test_rss_does_not_grow_with_the_parts_inspected(tmp_path):
    """Levels 1-3 of a 5 MP frame are about 1.6 MB per part: kept past their part, four rounds of
    40 parts would add some 190 MB after the first. Measured: RSS moves +-25 MB from round to round
    (malloc), with no trend."""

    def rss_mb() -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    steps = [
        {"detector": "pyramid_probe", "name": "a", "config": {"tag": "a", "level": 3}},
        {"detector": "pyramid_probe", "name": "b", "config": {"tag": "b", "level": 1}},
    ]
    frame = np.random.default_rng(5).integers(0, 256, (2048, 2448), np.uint8)
    after = []
    for round_ in range(4):
        images = {f"r{round_}-{i:03d}": frame for i in range(40)}
        run_station({"steps": steps}, tmp_path / str(round_), images=images, plugins=[("probe", ProbePlugin)])
        SEEN.clear()
        gc.collect()
        after.append(rss_mb())
    assert after[-1] - after[0] < 60, f"RSS after each round of 40 parts: {after} MB"


def test_an_isolated_step_computes_its_own_pyramid_in_its_worker(tmp_path):
    steps = [
        {"detector": "pyramid_probe", "name": "a", "config": {"tag": "a", "level": 2}},
        {
            "detector": "pyramid_probe",
            "name": "iso",
            "isolation": "process",
            "budget_ms": 20000,
            "roi": {"x": 33, "y": 21, "width": 500, "height": 400},
            "config": {"tag": "iso", "level": 3},
        },
    ]
    images = _frames(3)
    result = run_station({"steps": steps}, tmp_path, images=images, plugins=[("probe", ProbePlugin)])
    rows = result.inspections()
    assert [r.verdict for r in rows] == ["FAIL"] * 3
    for r, image in zip(rows, images, strict=True):
        (d,) = [d for d in r.defects if d.step == "iso"]
        digest, exact, pid, _ = d.message.split()
        assert exact == "exact=True" and int(pid.split("=")[1]) != os.getpid()
        assert digest == _digest(_chain(image[21:421, 33:533], 3))


def test_steps_fixtured_alike_on_the_same_roi_share_the_placed_views_pyramid(tmp_path):
    from inspector_core import Pose
    from tests.core.test_fixture import CENTRE, ROI, part

    other = {**ROI, "x": 80}
    locate = {"detector": "part_pose", "name": "locate", "config": {"taught_x": CENTRE[0], "taught_y": CENTRE[1]}}
    steps = [
        locate,
        {"detector": "pyramid_probe", "name": "a", "fixture": "locate", "roi": ROI, "config": {"tag": "a"}},
        {"detector": "pyramid_probe", "name": "b", "fixture": "locate", "roi": ROI, "config": {"tag": "b"}},
        {"detector": "pyramid_probe", "name": "c", "fixture": "locate", "roi": other, "config": {"tag": "c"}},
    ]
    moves = [Pose(6.0, -4.0, 0.0, CENTRE), Pose(-3.0, 5.0, 0.0, CENTRE), Pose(4.0, 2.0, 8.0, CENTRE)]
    images = [part(p) for p in moves]
    result = run_station({"steps": steps}, tmp_path, images=images, plugins=[("probe", ProbePlugin)], installed=True)
    rows = result.inspections()
    assert [r.verdict for r in rows] == ["FAIL"] * 3, [r.error for r in rows]
    for r in rows:
        assert all("exact=True" in d.message for d in r.defects if d.kind == "pyramid_probe")
    at = {(tag, p): addr for tag, p, addr, _ in SEEN if not p.startswith("warm")}
    shifted, turned = [r.part_id for r in rows[:2]], rows[2].part_id
    for p in shifted:  # placed by a shift: a and b see the same pixels, c another roi
        assert at["a", p] == at["b", p] and at["a", p] != at["c", p]
    assert at["a", turned] != at["b", turned]  # warped copies: each its own
