"""Fixtured regions of interest (``steps[i].fixture``, runtime/fixture.py, docs/fixture.md): a
step's ROI placed on the part by the pose an earlier step published. The part here is drawn: a
bright bar with a saturated dot on it, moved by known shifts and turns; ``part_pose`` (the
third-party test plugin) finds it and publishes its pose, ``bright_spot`` (fixtured) finds the
dot, ``pose_reader`` (fixtured) reports the poses it was handed."""

from __future__ import annotations

import pickle
import threading
from datetime import UTC, datetime

import cv2
import numpy as np
import pytest
import yaml

from inspector_core import Detector, Finding, FrameSource, PluginConfig, Pose, View
from inspector_core.contract import Frame
from inspector_core.plugins import load
from inspector_core.runtime.config import ConfigError, load_station
from inspector_core.runtime.fixture import SHIFT_ONLY_PX, place, to_frame
from inspector_core.runtime.inspection import begin, judge
from inspector_core.runtime.pipeline import Pipeline
from inspector_core.runtime.steps import StepWorker, close_steps
from inspector_core.testing import run_station

W, H = 320, 240
CENTRE = (160.0, 120.0)
DOT = (205.0, 120.0)
"""Where the dot lies on the taught part."""
ROI = {"x": 90, "y": 80, "width": 150, "height": 80}


def part(pose: Pose | None = None, *, dot: bool = True) -> np.ndarray:
    """The frame of the taught part, moved by ``pose`` (about its centre): the taught frame
    resampled (bilinear), so the truth is exact."""
    img = np.full((H, W), 30, np.uint8)
    cv2.rectangle(img, (100, 100), (220, 140), 180, -1)  # centred on CENTRE
    if dot:
        cv2.circle(img, (round(DOT[0]), round(DOT[1])), 4, 255, -1)
    if pose is None:
        return img
    return cv2.warpAffine(img, pose.matrix(), (W, H), flags=cv2.INTER_LINEAR, borderValue=30)


def steps(**extra) -> list[dict]:
    return [
        {"detector": "part_pose", "name": "locate", "config": {"taught_x": CENTRE[0], "taught_y": CENTRE[1]}},
        {
            "detector": "bright_spot",
            "name": "spots",
            "fixture": "locate",
            "roi": ROI,
            "config": {"min_area_px": 5},
            **extra,
        },
        {
            "detector": "pose_reader",
            "name": "reader",
            "fixture": "locate",
            "roi": {"x": 140, "y": 100, "width": 40, "height": 30},
        },
    ]


def station(tmp_path, step_list, **top):
    path = tmp_path / "station.yaml"
    cfg = {
        "name": "fixture",
        "source": {"type": "folder", "config": {"path": "."}},
        "steps": step_list,
        "store": {"url": f"sqlite:///{tmp_path / 'x.db'}"},
        **top,
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return load_station(path, load())


def inspect(st, images, workers: int = 2):
    """Each image through begin, the pipeline's lanes and judge, as the station runs a part: the
    judged part and what each step answered (the view it inspected among it)."""
    abort = threading.Event()
    steps_ = [StepWorker(s, st.directory) for s in st.steps]
    pipeline = Pipeline(steps_, cores=workers, abort=abort, window=len(images) + 1)  # all put, then read
    out = []
    try:
        for i, image in enumerate(images):
            begun = begin(Frame(f"p{i}", image, datetime.now(UTC)), st)
            assert not isinstance(begun, str)
            assert pipeline.put(begun, begun.views)
        pipeline.end()
        for job in pipeline.results():
            out.append((judge(st, job.payload, job.outcomes), job.outcomes))
    finally:
        pipeline.close()
        close_steps(steps_)
    return out


def dot_box(judged):
    (d,) = [d for d in judged.defects if d.kind == "bright_spot"]
    return d.box


def inside(box, x, y, margin=1.0):
    bx, by, bw, bh = box
    return bx - margin <= x <= bx + bw + margin and by - margin <= y <= by + bh + margin


# ---------------------------------------------------------------------------- the contract


def test_a_pose_is_opencvs_rotation_matrix_plus_its_shift_and_survives_a_pickle():
    p = Pose(3.5, -2.0, 10.0, (50.0, 40.0), 1.05)
    m = cv2.getRotationMatrix2D((50.0, 40.0), 10.0, 1.05)
    m[:, 2] += (3.5, -2.0)
    assert np.allclose(p.matrix(), m)
    assert p.apply(50.0, 40.0) == pytest.approx((53.5, 38.0))
    q = Pose.from_matrix(m, (50.0, 40.0))
    assert (q.dx, q.dy, q.angle_deg, q.scale) == pytest.approx((3.5, -2.0, 10.0, 1.05))
    # The same motion about another centre, and in coordinates offset by a view's origin.
    r = Pose.from_matrix(m, (0.0, 0.0))
    assert np.allclose(r.matrix(), m)
    t = p.translated(100, 20)
    assert t.apply(150.0, 60.0) == pytest.approx(tuple(np.add(p.apply(50.0, 40.0), (100, 20))))
    assert pickle.loads(pickle.dumps(p)) == p  # isolation: process sends it over a pipe


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dx": float("nan")}, "Pose.dx must be a finite number"),
        ({"angle_deg": True}, "Pose.angle_deg must be a number"),
        ({"scale": 0.0}, r"Pose.scale must be in \[0.25, 4\]"),
        ({"centre": (1.0,)}, r"Pose.centre must be \(x, y\)"),
    ],
)
def test_a_pose_with_a_bad_number_is_refused_when_built(kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        Pose(**kwargs)


def test_a_view_publishes_one_pose_and_refuses_anything_else():
    view = View(np.zeros((4, 4), np.uint8), "p")
    assert view.published is None
    view.publish(Pose(1.0, 2.0))
    view.publish(Pose(3.0, 4.0))  # a second call replaces the first
    assert view.published == Pose(3.0, 4.0)
    with pytest.raises(TypeError, match="View.publish needs a Pose"):
        view.publish((1.0, 2.0))  # type: ignore[arg-type]
    assert view.to_frame(1, 1) == (1, 1) and View(view.image, "p", (5, 7)).to_frame(1, 1) == (6, 8)


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("fixture", "where", "message"),
    [
        ("nowhere", 1, "'nowhere' is not a step; name an earlier step that publishes the part's pose"),
        ("reader", 1, "'reader' comes after it"),
        ("spots", 1, "'spots' is this step itself"),
    ],
)
def test_a_fixture_must_be_an_earlier_step(tmp_path, fixture, where, message):
    bad = steps()
    bad[where]["fixture"] = fixture
    with pytest.raises(ConfigError) as exc:
        station(tmp_path, bad)
    assert f"steps[{where}].fixture: {message}" in str(exc.value)
    assert "(earlier steps: 'locate')" in str(exc.value)


def test_a_fixtured_step_needs_a_roi_to_place(tmp_path):
    bad = steps()
    del bad[1]["roi"]
    with pytest.raises(ConfigError, match=r"steps\[1\].fixture: a fixtured step needs a roi"):
        station(tmp_path, bad)
    st = station(tmp_path, steps())
    assert [s.fixture for s in st.steps] == [None, "locate", "locate"]


# ---------------------------------------------------------------------------- placing the roi


def test_a_pure_shift_keeps_the_view_a_no_copy_view_of_the_frame_with_its_origin_moved(tmp_path):
    st = station(tmp_path, steps())
    taught, moved = part(), part(Pose(7.0, -4.0, 0.0, CENTRE))
    (j0, o0), (j1, o1) = inspect(st, [taught, moved])
    assert j0.verdict == j1.verdict == "FAIL" and j0.error is None and j1.error is None
    for image, outcomes, shift in ((taught, o0, (0, 0)), (moved, o1, (7, -4))):
        view = outcomes[1].view
        assert np.shares_memory(view.image, image) and not view.warped
        assert view.origin == (ROI["x"] + shift[0], ROI["y"] + shift[1])
        assert view.meta["fixture"]["mode"] == "shift" and view.meta["fixture"]["shift_px"] == list(shift)
        assert view.meta["fixture"]["step"] == "locate"
    # The dot is found where it lies on each part, in frame pixels.
    assert inside(dot_box(j0), *DOT) and inside(dot_box(j1), DOT[0] + 7, DOT[1] - 4)
    b0, b1 = dot_box(j0), dot_box(j1)
    assert (b1[0] - b0[0], b1[1] - b0[1], b1[2:]) == (7, -4, b0[2:])


@pytest.mark.parametrize("angle", [6.0, -9.0])
def test_a_turned_part_gives_a_warped_copy_and_the_boxes_come_back_in_frame_pixels(tmp_path, angle):
    st = station(tmp_path, steps())
    pose = Pose(-5.0, 3.0, angle, CENTRE)
    image = part(pose)
    ((judged, outcomes),) = inspect(st, [image])
    assert judged.error is None, judged.error
    view = outcomes[1].view
    assert view.warped and view.meta["fixture"]["mode"] == "warp" and not np.shares_memory(view.image, image)
    assert view.image.shape == (ROI["height"], ROI["width"]) and view.origin == (ROI["x"], ROI["y"])
    # In the warped view the part lies as taught: the dot is where it was on the taught part.
    ys, xs = np.nonzero(view.image >= 250)
    assert abs(xs.mean() + ROI["x"] - DOT[0]) < 1.0 and abs(ys.mean() + ROI["y"] - DOT[1]) < 1.0
    # Its box in the store is in frame pixels, around where the dot lies on the turned part.
    x, y = pose.apply(*DOT)
    box = dot_box(judged)
    assert inside(box, x, y) and box[2] < 16 and box[3] < 16, (box, (x, y))
    # The pose the reader was handed is the one locate found (in frame pixels: locate saw the
    # whole frame), about the true one (the moments of a drawn bar are a rough instrument).
    (reader,) = [d for d in judged.defects if d.kind == "pose_reader"]
    found = outcomes[0].pose
    assert reader.measurements == pytest.approx({"dx_px": found.dx, "dy_px": found.dy, "angle_deg": found.angle_deg})
    assert (found.dx, found.dy, found.angle_deg) == pytest.approx((-5.0, 3.0, angle), abs=0.5)


def test_a_mask_is_mapped_back_with_its_box():
    pose = Pose(0.0, 0.0, 30.0, (50.0, 50.0))
    view = View(np.zeros((40, 60), np.uint8), "p", (20, 30), frame_size=(200, 150), placement=pose, warped=True)
    mask = np.zeros((10, 20), np.uint8)
    mask[2:8, 5:15] = 1
    f = Finding("x", 0.9, (10, 10, 20, 10), mask=mask)
    to_frame(f, view)
    x, y, w, h = f.box
    assert f.mask is not None and f.mask.shape == (h, w)
    # Every marked pixel of the view maps into a marked frame pixel of the new mask (nearest).
    ys, xs = np.nonzero(mask)
    for vx, vy in zip(xs + 10, ys + 10, strict=True):
        px, py = view.to_frame(float(vx), float(vy))
        assert f.mask[round(py) - y, round(px) - x] == 1
    assert abs(int(f.mask.sum()) - int(mask.sum())) <= 0.25 * mask.sum()


def test_a_turn_too_small_to_move_a_corner_is_placed_as_a_shift(tmp_path):
    st = station(tmp_path, steps())
    step = st.steps[1]
    image = part()
    nominal = View(image[80:160, 90:240], "p", (90, 80), frame_size=(W, H))
    half_diagonal = np.hypot(ROI["width"] - 1, ROI["height"] - 1) / 2
    limit = np.degrees(SHIFT_ONLY_PX / half_diagonal)  # the turn that moves a corner by SHIFT_ONLY_PX
    below = place(image, step, nominal, Pose(2.4, 1.6, 0.9 * limit, CENTRE), {}, "locate")
    above = place(image, step, nominal, Pose(2.4, 1.6, 1.1 * limit, CENTRE), {}, "locate")
    assert isinstance(below, View) and isinstance(above, View)
    assert (
        below.meta["fixture"]["mode"] == "shift" and below.origin == (92, 82) and np.shares_memory(below.image, image)
    )
    assert above.meta["fixture"]["mode"] == "warp" and above.warped and above.image.flags.owndata
    assert nominal.meta == {}  # the frame's metadata is not written into


# ---------------------------------------------------------------------------- no pose: never PASS


def test_no_pose_makes_the_fixtured_steps_an_error_naming_why_and_the_part_error(tmp_path):
    st = station(tmp_path, steps())
    empty = np.full((H, W), 30, np.uint8)  # no part: locate publishes nothing
    ((judged, outcomes),) = inspect(st, [empty])
    assert judged.verdict == "ERROR"
    assert outcomes[0].status == "ok" and outcomes[0].pose is None
    assert [s.status for s in judged.steps] == ["ok", "error", "error"]
    assert judged.steps[1].error == (
        "no pose: its fixture step 'locate' (detector 'part_pose') published none for this part "
        "(it found no part, or the detector does not publish poses: View.publish)"
    )


def test_a_fixture_step_that_fails_leaves_its_fixtured_steps_without_a_pose(tmp_path):
    bad = steps()
    bad.insert(0, {"detector": "raiser", "name": "locate"})
    bad[1]["name"] = "unused"
    st = station(tmp_path, bad)
    ((judged, _),) = inspect(st, [part()])
    assert judged.verdict == "ERROR"
    assert judged.steps[2].error.startswith("no pose: its fixture step 'locate' did not judge this part (error)")


def test_a_roi_moved_partly_outside_the_frame_is_an_error_not_a_clipped_view(tmp_path):
    st = station(tmp_path, steps())
    ((shifted, _), (turned, _)) = inspect(st, [part(Pose(90.0, 0.0, 0.0, CENTRE)), part(Pose(85.0, 0.0, 8.0, CENTRE))])
    for judged in (shifted, turned):
        assert judged.verdict == "ERROR"
        msg = judged.steps[1].error
        assert msg.startswith("its roi 90,80 150x80, placed by the pose of step 'locate' (+") and (
            "partly outside the 320x240 frame" in msg
        ), msg


# ---------------------------------------------------------------------------- in a station


def test_a_station_with_one_worker_runs_its_fixtured_steps_without_a_deadlock(tmp_path):
    images = {f"p{i}": part(Pose(3.0 * i, -2.0 * i, 2.5 * i, CENTRE)) for i in range(6)}
    images["p6"] = np.full((H, W), 30, np.uint8)
    result = {}
    done = threading.Thread(
        target=lambda: result.update(r=run_station({"steps": steps(), "workers": 1}, tmp_path, images=images))
    )
    done.start()
    done.join(120)
    assert not done.is_alive(), "the station did not finish: the fixtured steps deadlocked"
    rows = result["r"].inspections()
    assert [r.verdict for r in rows] == ["FAIL"] * 6 + ["ERROR"]
    for i, r in enumerate(rows[:6]):
        (d,) = [d for d in r.defects if d.kind == "bright_spot"]
        assert inside(d.box, *Pose(3.0 * i, -2.0 * i, 2.5 * i, CENTRE).apply(*DOT)), (r.part_id, d.box)
    assert "no pose: its fixture step 'locate'" in rows[6].error


def test_fixtured_steps_run_with_process_isolation_publishing_and_reading_poses(tmp_path):
    iso = steps(isolation="process", budget_ms=20000)
    iso[0].update(isolation="process", budget_ms=20000)
    pose = Pose(-6.0, 4.0, -7.0, CENTRE)
    rows = run_station({"steps": iso}, tmp_path, images=[part(), part(pose)]).inspections()
    assert [r.verdict for r in rows] == ["FAIL", "FAIL"], [r.error for r in rows]
    box = [d for d in rows[1].defects if d.kind == "bright_spot"][0].box
    assert inside(box, *pose.apply(*DOT))
    (reader,) = [d for d in rows[1].defects if d.kind == "pose_reader"]
    assert reader.measurements["angle_deg"] == pytest.approx(-7.0, abs=0.5)
    assert reader.message == "pose of step locate (warped view)"


class _Chained(Detector):
    """Publishes the pose it was handed, unchanged: a second fixture in a chain."""

    name = "chained"
    kinds = ("chained",)

    def inspect(self, view):
        view.publish(Pose())  # in its (already placed) view the part lies as taught
        return []


def test_a_fixture_chain_hands_every_pose_down_in_frame_pixels(tmp_path):
    from inspector_core import hookimpl

    class P:
        @staticmethod
        @hookimpl
        def inspector_register_detectors(register):
            register(_Chained)

    registry = load(extra=[("chain", P)])
    chain = steps()
    chain.insert(1, {"detector": "chained", "name": "again", "fixture": "locate", "roi": ROI})
    chain[3]["fixture"] = "again"
    path = tmp_path / "station.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "chain",
                "source": {"type": "folder", "config": {"path": "."}},
                "steps": chain,
                "store": {"url": f"sqlite:///{tmp_path / 'x.db'}"},
            }
        )
    )
    st = load_station(path, registry)
    pose = Pose(4.0, -3.0, 5.0, CENTRE)
    ((judged, outcomes),) = inspect(st, [part(pose)])
    assert judged.error is None, judged.error
    poses = outcomes[3].view.poses
    assert set(poses) == {"locate", "again"}
    for name in ("locate", "again"):
        assert poses[name].apply(*DOT) == pytest.approx(pose.apply(*DOT), abs=0.5), name


def test_the_misalignment_step_publishes_the_pose_it_measured_and_places_a_fixtured_step(tmp_path):
    taught = part(dot=False)
    cv2.imwrite(str(tmp_path / "align.png"), taught)
    align = {"detector": "misalignment", "name": "align", "config": {"reference": "align.png"}}
    spots = {**steps()[1], "fixture": "align"}
    moves = [Pose(0.0, 0.0, 0.0, CENTRE), Pose(6.3, -2.7, 0.0, CENTRE), Pose(-4.0, 3.5, 4.0, CENTRE)]
    rows = run_station({"steps": [align, spots]}, tmp_path, images=[part(p) for p in moves]).inspections()
    for pose, row in zip(moves, rows, strict=True):
        assert row.error is None, row.error
        (dot,) = [d for d in row.defects if d.kind == "bright_spot"]
        assert inside(dot.box, *pose.apply(*DOT)), (pose, dot.box)
        if pose.dx:  # moved beyond the default tolerance (3 px): its own finding says by how much
            (mis,) = [d for d in row.defects if d.kind == "misalignment"]
            assert mis.measurements["shift_x_px"] == pytest.approx(pose.dx, abs=0.3)
            assert mis.measurements["rotation_deg"] == pytest.approx(pose.angle_deg, abs=0.2)


CALLS: list[tuple[str, str, float, float]] = []
_calls_lock = threading.Lock()


class _SlowLocate(Detector):
    """Publishes the taught pose after a nap (releasing the GIL, as OpenCV does)."""

    name = "slow_locate"
    kinds = ("slow_locate",)

    def inspect(self, view):
        import time

        t0 = time.perf_counter()
        time.sleep(0.04)
        view.publish(Pose(centre=CENTRE))
        with _calls_lock:
            CALLS.append(("locate", view.part_id, t0, time.perf_counter()))
        return []


class _SlowLook(Detector):
    name = "slow_look"
    kinds = ("slow_look",)

    def inspect(self, view):
        import time

        t0 = time.perf_counter()
        time.sleep(0.06)
        with _calls_lock:
            CALLS.append(("look", view.part_id, t0, time.perf_counter()))
        return [Finding("slow_look", 0.9, (1, 1, 2, 2), f"defect of {view.part_id}")]


def test_fixtured_steps_keep_the_pipelines_promises_order_one_at_a_time_and_overlap(tmp_path):
    from inspector_core import hookimpl

    class P:
        @staticmethod
        @hookimpl
        def inspector_register_detectors(register):
            register(_SlowLocate)
            register(_SlowLook)

    CALLS.clear()
    cfg = {
        "steps": [
            {"detector": "slow_locate", "name": "locate"},
            {"detector": "slow_look", "name": "look", "fixture": "locate", "roi": ROI},
        ],
        "workers": 2,
    }
    images = {f"p{i:02d}": part() for i in range(8)}
    rows = run_station(cfg, tmp_path, images=images, plugins=[("slow", P)]).inspections()
    assert [r.part_id for r in rows] == sorted(images) and [r.verdict for r in rows] == ["FAIL"] * 8
    assert all([d.message for d in r.defects] == [f"defect of {r.part_id}"] for r in rows)
    spans = {(step, p): (s, e) for step, p, s, e in CALLS}
    for step in ("locate", "look"):
        calls = [(p, s, e) for st, p, s, e in CALLS if st == step]
        assert [p for p, _, _ in calls] == sorted(images)  # in capture order
        assert all(calls[i][2] <= calls[i + 1][1] for i in range(7))  # one at a time
    # A fixtured step starts once its fixture step of the same part has answered ...
    assert all(spans[("look", p)][0] >= spans[("locate", p)][1] for p in images)
    # ... while the fixture step goes on with the next parts (no core held waiting).
    assert any(spans[("locate", f"p{n + 1:02d}")][0] < spans[("look", f"p{n:02d}")][1] for n in range(7)), (
        "the steps did not overlap"
    )


def test_a_recipes_fixtured_steps_are_placed_by_its_own_fixture(tmp_path):
    base = steps()[:2]
    reader = {k: v for k, v in steps()[2].items() if k != "name"}
    cfg = {
        "steps": base,
        "recipes": {
            "a": {},
            "b": {"steps": {"spots": {"roi": {"x": 95, "y": 85, "width": 140, "height": 70}}, "reader": reader}},
        },
        "recipe": "b",
    }
    pose = Pose(5.0, -3.0, 4.0, CENTRE)
    rows = run_station(cfg, tmp_path, images=[part(pose)]).inspections()
    (row,) = rows
    assert row.error is None, row.error
    (dot,) = [d for d in row.defects if d.kind == "bright_spot"]
    assert inside(dot.box, *pose.apply(*DOT))
    (read,) = [d for d in row.defects if d.kind == "pose_reader"]
    assert read.measurements["angle_deg"] == pytest.approx(4.0, abs=0.5)


class _TwoViewsConfig(PluginConfig):
    parts: int = 2


class _TwoViews(FrameSource):
    """Each part twice, as views ``top`` and ``side`` (``meta["view"]``), moved by different poses."""

    name = "two_views"
    Config = _TwoViewsConfig

    def frames(self):
        for i in range(self.config.parts):
            for view, pose in _VIEW_POSES[i].items():
                yield Frame(f"part{i}", part(pose), datetime.now(UTC), {"view": view})


_VIEW_POSES = [
    {"top": Pose(4.0, 2.0, 3.0, CENTRE), "side": Pose(-6.0, 1.0, -5.0, CENTRE)},
    {"top": Pose(-3.0, -4.0, 0.0, CENTRE), "side": Pose(2.0, 5.0, 8.0, CENTRE)},
]


def test_each_view_of_a_multi_view_part_is_fixtured_by_its_own_pose(tmp_path):
    from inspector_core import hookimpl

    class P:
        @staticmethod
        @hookimpl
        def inspector_register_sources(register):
            register(_TwoViews)

    chain = []
    for view in ("top", "side"):
        locate, spots = steps()[:2]
        chain.append({**locate, "name": f"locate_{view}", "view": view})
        chain.append({**spots, "name": f"spots_{view}", "view": view, "fixture": f"locate_{view}"})
    cfg = {"source": {"type": "two_views"}, "views": {"top": {}, "side": {}}, "steps": chain}
    rows = run_station(cfg, tmp_path, plugins=[("views", P)], installed=True).inspections()
    assert [r.part_id for r in rows] == ["part0", "part1"]
    for r, poses in zip(rows, _VIEW_POSES, strict=True):
        assert r.error is None, r.error
        for view, pose in poses.items():
            (dot,) = [d for d in r.defects if d.step == f"spots_{view}"]
            assert inside(dot.box, *pose.apply(*DOT)), (r.part_id, view, dot.box)
    across = [dict(chain[0]), {**chain[3], "fixture": "locate_top"}, chain[1], chain[2]]
    with pytest.raises(ConfigError, match=r"'locate_top' looks at view 'top', this step at 'side'"):
        station(tmp_path, across, views={"top": {}, "side": {}})
