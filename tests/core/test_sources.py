"""The built-in frame sources: folder order and ids, video, camera reconnects, synthetic."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from inspector_sources.synthetic import render_part
from sqlalchemy import select

from inspector_core.store import schema
from inspector_core.testing import run_station


def write_video(path, n=10, size=(320, 240)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    assert writer.isOpened()
    for i in range(n):
        img = np.full((size[1], size[0], 3), 20 * i % 255, np.uint8)
        writer.write(img)
    writer.release()


def test_folder_order_and_part_ids(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("b-2.png", "a-1.png", "c 3.jpg", "notes.txt"):
        if name.endswith("txt"):
            (folder / name).write_text("not an image")
        else:
            cv2.imwrite(str(folder / name), render_part(1, 0, "good", color=False).image)
    cfg = {"source": {"type": "folder", "config": {"path": str(folder)}}, "steps": [{"detector": "bright_spot"}]}
    rows = run_station(cfg, tmp_path).inspections()
    assert [r.part_id for r in rows] == ["a-1", "b-2", "c 3"]


def test_video_every_nth(tmp_path):
    write_video(tmp_path / "line.avi", 10)
    cfg = {
        "source": {"type": "video", "config": {"path": str(tmp_path / "line.avi"), "every_nth": 3}},
        "steps": [{"detector": "bright_spot"}],
    }
    rows = run_station(cfg, tmp_path).inspections()
    assert [r.part_id for r in rows] == ["line-000000", "line-000003", "line-000006", "line-000009"]


def test_camera_that_drops_out_reconnects_and_records_the_gap(tmp_path):
    # A stream that ends is a camera that stopped giving frames: the source must reconnect
    # (with backoff) and record the gap as an event, then go on.
    write_video(tmp_path / "cam.avi", 5)
    cfg = {
        "source": {
            "type": "camera",
            "config": {
                "device": str(tmp_path / "cam.avi"),
                "max_frames": 12,
                "reconnect_initial_ms": 20,
                "reconnect_max_ms": 100,
            },
        },
        "steps": [{"detector": "bright_spot"}],
    }
    result = run_station(cfg, tmp_path)
    rows = result.inspections()
    assert [r.part_id for r in rows] == [f"cam-{i:08d}" for i in range(12)]
    with result.session() as s:
        events = s.scalars(select(schema.Event).where(schema.Event.run_id == result.run_id)).all()
    kinds = [e.kind for e in events]
    assert kinds.count("camera_lost") == 2 and kinds.count("camera_gap") == 2
    assert all("back after" in e.message for e in events if e.kind == "camera_gap")


def test_missing_folder_refuses_to_start(tmp_path):
    from inspector_core.runtime.station import StationError

    cfg = {
        "source": {"type": "folder", "config": {"path": str(tmp_path / "nope")}},
        "steps": [{"detector": "bright_spot"}],
    }
    with pytest.raises(StationError, match=r"source \(folder\) failed to start: .*nope does not exist"):
        run_station(cfg, tmp_path)


def test_synthetic_is_deterministic_and_labelled():
    a = render_part(5, 3, "scratch")
    b = render_part(5, 3, "scratch")
    assert np.array_equal(a.image, b.image) and a.box == b.box
    assert not np.array_equal(a.image, render_part(5, 4, "scratch").image)
    m = render_part(5, 3, "misalignment")
    assert max(abs(m.pose[0]), abs(m.pose[1])) >= 8 and abs(m.pose[2]) >= 1.5


def test_folder_pattern_is_a_name_glob(tmp_path):
    from inspector_sources import FolderConfig
    from pydantic import ValidationError

    assert FolderConfig(path=".", pattern="*.png").pattern == "*.png"
    with pytest.raises(ValidationError, match=r"pattern\n.*must be a glob of file names without '/'.*recursive: true"):
        FolderConfig(path=".", pattern="sub/*.png")


def test_an_empty_folder_says_so_in_the_event_log(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a part")
    cfg = {
        "source": {"type": "folder", "config": {"path": str(folder), "pattern": "*.png"}},
        "steps": [{"detector": "bright_spot"}],
    }
    result = run_station(cfg, tmp_path)
    assert result.inspections() == []
    with result.session() as s:
        events = {
            e.kind: e.message for e in s.scalars(select(schema.Event).where(schema.Event.run_id == result.run_id))
        }
    assert "no entry named like an image matches '*.png'" in events["source_empty"]
    assert "notes.txt: does not match the pattern '*.png'" in events["source_skipped"]


def test_folder_resume_and_undecodable_names_on_postgresql(tmp_path, pg_url):
    # A file name that is not valid UTF-8 must give a part id PostgreSQL can store (no
    # surrogates), and resume must find the parts there.
    folder = tmp_path / "in"
    folder.mkdir()
    img = render_part(1, 0, "good", color=False).image
    for raw in (b"caf\xe9.png", b"plain.png", b"z\xff.png"):
        with open(os.fsencode(folder) + b"/" + raw, "wb") as f:
            f.write(cv2.imencode(".png", img)[1].tobytes())
    cfg = {
        "source": {"type": "folder", "config": {"path": str(folder), "resume": True}},
        "steps": [{"detector": "bright_spot"}],
    }
    first = run_station(cfg, tmp_path, db_url=pg_url, limit=2)
    assert [r.part_id for r in first.inspections()] == ["caf\\xe9", "plain"]
    assert first.inspections()[0].source_meta["path_hex"].endswith(b"caf\xe9.png".hex())
    second = run_station(cfg, tmp_path, db_url=pg_url)
    assert [r.part_id for r in second.inspections()] == ["z\\xff"]
    assert [r.verdict for r in first.inspections() + second.inspections()] == ["PASS"] * 3


def test_camera_whose_driver_raises_reconnects_and_records_why(tmp_path, monkeypatch):
    write_video(tmp_path / "cam.avi", 5)
    real = cv2.VideoCapture
    reads = []

    class FlakyDriver:  # the real capture, whose third read raises as a failing driver does
        def __init__(self, device):
            self.cap = real(device)

        def read(self):
            reads.append(1)
            if len(reads) == 3:
                raise cv2.error("simulated driver failure")
            return self.cap.read()

        def __getattr__(self, name):
            return getattr(self.cap, name)

    monkeypatch.setattr(cv2, "VideoCapture", FlakyDriver)
    cfg = {
        "source": {
            "type": "camera",
            "config": {"device": str(tmp_path / "cam.avi"), "max_frames": 8, "reconnect_initial_ms": 20},
        },
        "steps": [{"detector": "bright_spot"}],
    }
    result = run_station(cfg, tmp_path)
    assert [r.part_id for r in result.inspections()] == [f"cam-{i:08d}" for i in range(8)]
    with result.session() as s:
        events = s.scalars(select(schema.Event).where(schema.Event.run_id == result.run_id)).all()
    lost = [e.message for e in events if e.kind == "camera_lost"]
    assert lost[0].endswith("its driver failed: simulated driver failure; reconnecting")
    assert len([e for e in events if e.kind == "camera_gap"]) == len(lost) == 2


def test_camera_close_during_a_gap_ends_at_once_and_records_the_gap(tmp_path):
    import threading
    import time

    from inspector_sources import CameraConfig, CameraSource

    from inspector_core import SourceContext

    events = []
    config = CameraConfig(device=str(tmp_path / "no-such-camera.avi"), reconnect_initial_ms=5000)
    source = CameraSource(config, SourceContext(tmp_path, lambda kind, msg: events.append((kind, msg))))
    frames = []
    capture = threading.Thread(target=lambda: frames.extend(source.frames()))
    capture.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    source.close()
    capture.join(4)
    assert not capture.is_alive() and time.monotonic() - t0 < 2.0  # not the 5 s backoff
    assert frames == []
    assert [k for k, _ in events] == ["camera_unavailable", "camera_gap"]
    assert "gave no frames for the last" in events[1][1] and "before the source stopped" in events[1][1]
