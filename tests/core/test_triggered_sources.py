"""Triggered capture (issue 13): the OpenCV ``triggered_camera`` and the GenICam ``pylon`` source.

Triggers are software triggers sent from a thread while ``frames()`` is iterated, as the line
does. The pylon tests run against pylon's own camera emulator (``PYLON_CAMEMU``), not a mock;
the real-data ones make it serve photographs from ``../shared/data`` (``ImageFilename``).
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from inspector_sources import PylonConfig, PylonSource, TriggeredCameraConfig, TriggeredCameraSource
from inspector_sources.triggered import PendingTriggers

from inspector_core import Frame, SourceContext
from inspector_core.cli import main
from inspector_core.contract import Trigger
from tests.conftest import unavailable

TRANSISTORS = "mvtec_ad/transistor/train/good"


@pytest.fixture
def camemu(monkeypatch: pytest.MonkeyPatch) -> None:
    """pylon's camera emulator in this test's environment (pylon reads it at each enumeration)."""
    if importlib.util.find_spec("pypylon") is None:
        unavailable("pypylon is not installed (make test installs it): pip install -e 'plugins/sources[pylon]'")
    monkeypatch.setenv("PYLON_CAMEMU", "1")


class Capture:
    """``frames()`` in the host's capture thread, and the source's events."""

    def __init__(self, make: Callable[[SourceContext], TriggeredCameraSource | PylonSource], tmp_path: Path) -> None:
        self.events: list[tuple[str, str]] = []
        self.source = make(SourceContext(tmp_path, lambda kind, message: self.events.append((kind, message))))
        self.frames: list[Frame] = []
        self._cond = threading.Condition()
        self._counter = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        it: Iterator[Frame] = self.source.frames()
        for frame in it:
            with self._cond:
                self.frames.append(frame)
                self._cond.notify_all()

    def trigger(self, part_id: str | None = None) -> Trigger:
        self._counter += 1
        t = Trigger(self._counter, datetime.now(UTC), time.monotonic(), 2.0, part_id=part_id)
        # From another thread than frames(), as the line calls it.
        caller = threading.Thread(target=self.source.trigger, args=(t,))
        caller.start()
        caller.join()
        return t

    def wait(self, n: int, timeout: float = 10.0) -> list[Frame]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.frames) >= n, timeout), (self.frames, self.events)
            return list(self.frames)

    def wait_event(self, kind: str, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while not any(k == kind for k, _ in self.events):
            assert time.monotonic() < end, f"no {kind} event: {self.events}"
            time.sleep(0.01)

    def close(self) -> None:
        self.source.close()
        self.thread.join(10)
        assert not self.thread.is_alive()


def write_video(path: Path, n: int, size: tuple[int, int] = (160, 120)) -> None:
    """Frame i is flat grey 2*i (mod 256), so a frame's content says which one it is."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 50, size)
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), 2 * i % 256, np.uint8))
    writer.release()


# ----------------------------------------------------------------- OpenCV: triggered_camera


def test_opencv_trigger_takes_a_fresh_frame_after_the_trigger_not_a_buffered_one(tmp_path):
    write_video(tmp_path / "cam.avi", 120)
    cfg = TriggeredCameraConfig(device=str(tmp_path / "cam.avi"), pace_fps=50, settle_ms=5, grab_timeout_ms=1000)
    cap = Capture(lambda ctx: TriggeredCameraSource(cfg, ctx), tmp_path)
    try:
        time.sleep(0.3)  # the camera runs before the first part comes
        triggers = []
        for i in range(4):
            triggers.append(cap.trigger(part_id=f"DMC-{i}" if i % 2 == 0 else None))
            time.sleep(0.25)
        frames = cap.wait(4)
    finally:
        cap.close()
    assert [f.trigger for f in frames] == triggers
    assert [f.part_id for f in frames] == ["DMC-0", "cam-00000002", "DMC-2", "cam-00000004"]
    assert all(f.error is None and f.image is not None for f in frames)
    seqs = [f.meta["seq"] for f in frames]
    # The frame is the one grabbed just after the trigger: its content is that frame (not an
    # older one decoded late) and 0.25 s of 50 fps lie between two triggers' frames, where a
    # queue of buffered frames would hand out consecutive ones.
    for f in frames:
        assert f.image is not None
        assert abs(float(f.image.mean()) - 2 * (f.meta["seq"] - 1)) < 1.5  # JPEG-lossy; neighbours differ by 2
    assert all(b - a >= 5 for a, b in zip(seqs, seqs[1:], strict=False)), seqs  # about 12 apart
    delays = [f.meta["trigger_to_frame_ms"] for f in frames]
    assert all(5 <= d < 1000 for d in delays), delays  # at least settle_ms; within the grab timeout


def test_opencv_camera_that_is_gone_gives_error_parts_then_comes_back(tmp_path):
    device = tmp_path / "cam.avi"
    cfg = TriggeredCameraConfig(device=str(device), pace_fps=100, reconnect_initial_ms=20, reconnect_max_ms=50)
    cap = Capture(lambda ctx: TriggeredCameraSource(cfg, ctx), tmp_path)
    try:
        cap.wait_event("camera_unavailable")
        assert cap.source.capture_state() == "down"  # the PLC sees Error, not Ready
        t0 = time.monotonic()
        cap.trigger(part_id="P1")
        first = cap.wait(1)[0]
        assert time.monotonic() - t0 < 0.9  # answered at once, not after the grab timeout (1 s)
        write_video(tmp_path / "new.avi", 500)
        (tmp_path / "new.avi").rename(device)  # the camera is plugged in
        cap.wait_event("camera_gap")
        assert cap.source.capture_state() == "ready"
        cap.trigger(part_id="P2")
        second = cap.wait(2)[1]
    finally:
        cap.close()
    assert first.part_id == "P1" and first.image is None
    assert first.error is not None and "did not open" in first.error and "reopening" in first.error
    assert second.part_id == "P2" and second.error is None and second.image is not None
    assert "back after" in dict(cap.events)["camera_gap"]


def test_opencv_camera_that_stops_delivering_is_reopened_and_records_the_gap(tmp_path):
    write_video(tmp_path / "cam.avi", 10)  # 0.1 s of frames, then the stream ends
    cfg = TriggeredCameraConfig(device=str(tmp_path / "cam.avi"), pace_fps=100, reconnect_initial_ms=1000)
    cap = Capture(lambda ctx: TriggeredCameraSource(cfg, ctx), tmp_path)
    try:
        cap.wait_event("camera_lost")
        cap.trigger(part_id="during-the-gap")
        gone = cap.wait(1)[0]
        write_video(tmp_path / "long.avi", 500)  # what the reopened camera gives: 5 s of frames
        (tmp_path / "long.avi").rename(tmp_path / "cam.avi")
        cap.wait_event("camera_gap")
        cap.trigger(part_id="after")
        back = cap.wait(2)[1]
    finally:
        cap.close()
    assert gone.error is not None and "stopped giving frames" in gone.error and gone.image is None
    assert back.error is None and back.image is not None
    kinds = [k for k, _ in cap.events]
    assert kinds[:2] == ["camera_lost", "camera_gap"]


def test_opencv_camera_that_opens_but_gives_nothing_is_one_gap_not_an_event_per_retry(tmp_path):
    writer = cv2.VideoWriter(str(tmp_path / "empty.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    writer.release()  # opens, and has no frame
    cfg = TriggeredCameraConfig(device=str(tmp_path / "empty.avi"), reconnect_initial_ms=10, reconnect_max_ms=100)
    cap = Capture(lambda ctx: TriggeredCameraSource(cfg, ctx), tmp_path)
    try:
        time.sleep(1.0)  # a dozen reopening attempts
        cap.trigger(part_id="P")
        frame = cap.wait(1)[0]
    finally:
        cap.close()
    assert frame.image is None and frame.error is not None and "stopped giving frames" in frame.error
    assert [k for k, _ in cap.events] == ["camera_lost", "camera_gap"], cap.events
    assert "before the source stopped" in cap.events[1][1]


def test_opencv_grabber_that_fails_unforeseen_is_recorded_and_reopened(tmp_path, monkeypatch):
    write_video(tmp_path / "cam.avi", 500)
    real = cv2.VideoCapture
    grabs = []

    class Backend:  # the real capture, whose fifth grab raises what no backend should
        def __init__(self, device):
            self.cap = real(device)

        def grab(self):
            grabs.append(1)
            if len(grabs) == 5:
                raise RuntimeError("backend bug")
            return self.cap.grab()

        def __getattr__(self, name):
            return getattr(self.cap, name)

    monkeypatch.setattr(cv2, "VideoCapture", Backend)
    cfg = TriggeredCameraConfig(device=str(tmp_path / "cam.avi"), pace_fps=100, reconnect_max_ms=100)
    cap = Capture(lambda ctx: TriggeredCameraSource(cfg, ctx), tmp_path)
    try:
        cap.wait_event("camera_lost")
        time.sleep(0.3)  # reopened
        cap.trigger(part_id="after")
        frame = cap.wait(1)[0]
    finally:
        cap.close()
    assert "the grabber failed: RuntimeError: backend bug" in dict(cap.events)["camera_lost"]
    assert frame.error is None and frame.image is not None  # the grabber runs again


# ----------------------------------------------------------------- pylon (GenICam) on the emulator


def pylon_test_image(**kw: object) -> Callable[[SourceContext], PylonSource]:
    config = PylonConfig.model_validate({"exposure_us": 1000, **kw})
    return lambda ctx: PylonSource(config, ctx)


def test_a_triggered_source_is_opening_until_its_camera_first_opens_then_ready_or_down():
    pending = PendingTriggers(prefix="cam-", timeout_s=1.0, meta={})
    assert pending.state() == "opening"  # the PLC sees Busy, not Ready
    pending.down("not found")
    assert pending.state() == "down"  # never opened, and it says why: Error
    pending.down(None)
    assert pending.state() == "ready"
    pending.down("lost")
    assert pending.state() == "down"
    pending.down(None)
    assert pending.state() == "ready"


def test_pylon_software_trigger_answers_each_trigger_in_order(tmp_path, camemu):
    cap = Capture(pylon_test_image(pixel_format="Mono8", width=320, height=240, serial="0815-0000"), tmp_path)
    try:
        triggers = [cap.trigger(part_id="SN-1"), cap.trigger(), cap.trigger(part_id="SN-3")]
        frames = cap.wait(3)
    finally:
        cap.close()
    assert [f.trigger for f in frames] == triggers
    assert [f.part_id for f in frames] == ["SN-1", "pylon-00000002", "SN-3"]
    for f in frames:
        assert f.error is None and f.image is not None
        assert f.image.shape == (240, 320) and f.image.dtype == np.uint8
        assert f.meta["serial"] == "0815-0000"
        assert 0 <= f.meta["trigger_to_exposure_ms"] <= f.meta["trigger_to_frame_ms"]
    assert [f.meta["block_id"] for f in frames] == [0, 1, 2]  # one exposure per trigger


def test_pylon_hardware_trigger_without_a_pulse_is_an_error_part_after_the_grab_timeout(tmp_path, camemu):
    cap = Capture(pylon_test_image(trigger_source="Line1", grab_timeout_ms=300), tmp_path)
    try:
        time.sleep(0.5)  # opened and waiting for the wire
        t = cap.trigger(part_id="NO-PULSE")
        frame = cap.wait(1)[0]
    finally:
        cap.close()
    assert frame.trigger == t and frame.part_id == "NO-PULSE" and frame.image is None
    assert frame.error is not None and "gave no image within 300 ms of trigger 1" in frame.error
    assert time.monotonic() - t.at_monotonic >= 0.3


def test_pylon_camera_not_found_is_an_error_part_until_it_appears(tmp_path, camemu, monkeypatch):
    monkeypatch.delenv("PYLON_CAMEMU")  # no camera on this machine
    cap = Capture(pylon_test_image(serial="0815-0000", reconnect_initial_ms=20, reconnect_max_ms=50), tmp_path)
    try:
        cap.wait_event("camera_unavailable")
        assert cap.source.capture_state() == "down"
        cap.trigger(part_id="A")
        missing = cap.wait(1)[0]
        monkeypatch.setenv("PYLON_CAMEMU", "1")  # the camera is plugged in
        cap.wait_event("camera_gap")
        assert cap.source.capture_state() == "ready"
        cap.trigger(part_id="B")
        found = cap.wait(2)[1]
    finally:
        cap.close()
    assert missing.image is None and missing.error is not None
    assert "camera 0815-0000 not found" in missing.error and "PYLON_CAMEMU" in missing.error
    assert found.part_id == "B" and found.error is None and found.image is not None
    assert "back after" in dict(cap.events)["camera_gap"]


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"width": 5000}, "Width = 5000 refused (it allows 1 to 4096): change source.config.width"),
        ({"features": {"PixelFormat": 3}}, "PixelFormat = 3 refused (it allows Mono8, "),
        ({"features": {"NoSuchFeature": 1}}, "no writable feature 'NoSuchFeature': remove source.config.features."),
    ],
)
def test_pylon_setting_the_camera_refuses_names_the_feature_and_the_remedy(tmp_path, camemu, config, words):
    cap = Capture(pylon_test_image(reconnect_initial_ms=5000, **config), tmp_path)
    try:
        cap.wait_event("camera_unavailable")
        cap.trigger()
        frame = cap.wait(1)[0]
    finally:
        cap.close()
    assert frame.image is None and frame.error is not None
    assert words in frame.error and words in dict(cap.events)["camera_unavailable"]


def test_pylon_camera_that_free_runs_gives_no_part_anothers_image(tmp_path, camemu):
    # A camera left free-running (a feature set after the trigger mode): its images answer no
    # trigger sent, so they are dropped (one event, the rest counted), and the part is ERROR.
    cap = Capture(
        pylon_test_image(width=320, height=240, features={"TriggerMode": "Off"}, grab_timeout_ms=500), tmp_path
    )
    try:
        cap.wait_event("frame_without_trigger")
        time.sleep(0.3)
        cap.trigger(part_id="P")
        frame = cap.wait(1)[0]
    finally:
        cap.close()
    assert frame.part_id == "P" and frame.image is None and frame.error is not None
    dropped = [m for k, m in cap.events if k == "frame_without_trigger"]
    assert len(dropped) == 2, cap.events  # the first, then one count at the stop
    assert "more images dropped" in dropped[1] and int(dropped[1].split(": ")[1].split()[0]) >= 3


@pytest.mark.data
def test_pylon_grabs_real_photographs_through_the_emulator(tmp_path, camemu, data_dir):
    folder = data_dir / TRANSISTORS
    files = sorted(folder.glob("*.png"))[:3]
    assert len(files) == 3, f"no transistor photographs in {folder}"
    # As a station file has it: YAML reads the unquoted Off / On as false / true.
    features = yaml.safe_load(f"{{TestImageSelector: Off, ImageFileMode: On, ImageFilename: '{folder}'}}")
    assert features["ImageFileMode"] is True
    make = pylon_test_image(pixel_format="RGB8Packed", width=512, height=512, features=features, grab_timeout_ms=5000)
    cap = Capture(make, tmp_path)
    try:
        for i in range(3):  # one part after the other, as on a line (the emulator reads each file then)
            cap.trigger(part_id=f"T{i}")
            frames = cap.wait(i + 1)
    finally:
        cap.close()
    for f, path in zip(frames, files, strict=True):
        assert f.error is None and f.image is not None
        assert np.array_equal(f.image, cv2.imread(str(path))), path  # BGR, pixel for pixel


def test_a_wire_triggered_image_pairs_only_with_a_host_trigger_near_it():
    # A camera on the PLC's wire (trigger_source: Line1): its images and the host's triggers
    # come by two paths. A pulse that never reached the camera must cost that one part, not
    # shift every later image onto the part before it.
    pending = PendingTriggers(prefix="p", timeout_s=0.2, meta={})
    t0 = time.monotonic() - 1.0
    lost = Trigger(1, datetime.now(UTC), t0, 1.0, part_id="pulse-lost")
    second = Trigger(2, datetime.now(UTC), t0 + 0.5, 1.0, part_id="second")
    third = Trigger(3, datetime.now(UTC), t0 + 0.8, 1.0, part_id="third")
    for t in (lost, second, third):
        pending.add(t)
    image2, image3 = np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8)
    entry = pending.claim(t0 + 0.53, window_s=0.25)  # the second part's image, 30 ms after its trigger
    assert entry is not None and entry.trigger is second
    pending.answer(entry, pending.frame(second, image2, t0 + 0.53, {}))
    entry = pending.claim(t0 + 0.78, window_s=0.25)  # the third's, 20 ms before the host heard of it
    assert entry is not None and entry.trigger is third
    pending.answer(entry, pending.frame(third, image3, t0 + 0.78, {}))
    assert pending.claim(t0 + 2.0, window_s=0.25) is None  # an image no trigger is near
    got = [pending.next_frame(lambda t: f"no image for trigger {t.counter}") for _ in range(3)]
    assert [f.part_id for f in got if f is not None] == ["pulse-lost", "second", "third"]
    assert got[0] is not None and got[0].image is None and got[0].error == "no image for trigger 1"
    assert got[1] is not None and got[1].image is image2 and got[1].meta["trigger_to_frame_ms"] == pytest.approx(30)
    assert got[2] is not None and got[2].image is image3 and got[2].meta["trigger_to_frame_ms"] == pytest.approx(-20)


def test_an_image_that_comes_after_its_trigger_timed_out_is_not_the_next_parts():
    # Software trigger: each trigger sent is one exposure of the camera session; an image's
    # block ID says which. Exposure 0 came too late (its part is ERROR already): it must not
    # become the image of the part triggered next.
    pending = PendingTriggers(prefix="p", timeout_s=0.0, meta={})
    first, second = (Trigger(i, datetime.now(UTC), time.monotonic(), 1.0) for i in (1, 2))
    pending.add(first)
    assert pending.sending(first, (1, 0))
    timed_out = pending.next_frame(lambda t: f"no image within the grab timeout of trigger {t.counter}")
    assert timed_out is not None and timed_out.trigger is first and timed_out.image is None
    pending.add(second)
    assert pending.sending(second, (1, 1))
    assert pending.claim_sent((1, 0)) is None  # the late image of the first part: dropped
    entry = pending.claim_sent((1, 1))
    assert entry is not None and entry.trigger is second


def test_a_frame_claimed_by_a_camera_thread_that_died_does_not_hold_up_the_line():
    pending = PendingTriggers(prefix="p", timeout_s=0.1, meta={})
    first, second = (Trigger(i, datetime.now(UTC), time.monotonic(), 1.0) for i in (1, 2))
    pending.add(first)
    pending.add(second)
    assert pending.claim(time.monotonic()) is not None  # claimed for `first`, never answered
    t0 = time.monotonic()
    got = [pending.next_frame(lambda t: f"no frame for trigger {t.counter}") for _ in range(2)]
    assert [f.trigger for f in got if f is not None] == [first, second]
    assert all(f is not None and f.error is not None for f in got)
    assert time.monotonic() - t0 < 3.0  # the grab timeout plus the grace, not for ever


def test_exposure_ordinal_follows_block_ids_through_a_gap_and_the_gige_wrap():
    from inspector_sources.pylon import exposure_ordinal

    assert exposure_ordinal(None, -1, 17) == 0  # the session's first image answers its first trigger
    assert exposure_ordinal(17, 0, 18) == 1
    assert exposure_ordinal(18, 1, 20) == 3  # exposure 2 lost by the camera: its trigger times out
    assert exposure_ordinal(65535, 9, 1) == 10  # GigE Vision 1.x: 65535 -> 1


# ----------------------------------------------------------------- station files


LINE = {"protocol": "modbus", "config": {"host": "127.0.0.1", "port": 0}}


def station(tmp_path: Path, source: dict[str, object], roi: dict[str, int] | None = None, *, line: bool = True) -> Path:
    step: dict[str, object] = {"detector": "bright_spot"}
    if roi:
        step["roi"] = roi
    path = tmp_path / "line3.yaml"
    spec = {"name": "line3", "source": source, "steps": [step], "store": {"url": f"sqlite:///{tmp_path}/i.db"}}
    if line:
        spec["line"] = LINE
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_station_with_triggered_sources_validates_and_typos_are_refused(tmp_path):
    runner = CliRunner()
    ok_pylon = station(
        tmp_path,
        {"type": "pylon", "config": {"serial": "40012345", "trigger_source": "Line1", "width": 1024, "height": 768}},
        roi={"x": 0, "y": 0, "width": 1024, "height": 768},
    )
    result = runner.invoke(main, ["validate", str(ok_pylon)])
    assert result.exit_code == 0 and "ok (station 'line3', source pylon" in result.output, result.output

    ok_cv = station(tmp_path, {"type": "triggered_camera", "config": {"device": 0, "settle_ms": 20}})
    result = runner.invoke(main, ["validate", str(ok_cv)])
    assert result.exit_code == 0 and "source triggered_camera" in result.output, result.output

    for source, words in [
        ({"type": "pylon", "config": {"exposure": 5000}}, ["exposure"]),
        ({"type": "pylon", "config": {"trigger_source": "line1"}}, ["trigger_source"]),
        ({"type": "triggered_camera", "config": {"grab_timeout": 100}}, ["grab_timeout"]),
    ]:
        result = runner.invoke(main, ["validate", str(station(tmp_path, source))])
        assert result.exit_code != 0, result.output
        assert all(w in result.output for w in words), result.output

    # frame_size() comes from the config: an ROI outside a 1024x768 frame is refused.
    outside = station(
        tmp_path,
        {"type": "pylon", "config": {"width": 1024, "height": 768}},
        roi={"x": 900, "y": 0, "width": 200, "height": 100},
    )
    result = runner.invoke(main, ["validate", str(outside)])
    assert result.exit_code != 0 and "1024x768" in result.output, result.output

    # Without a line nothing would trigger it: the run would wait for ever, so it is refused.
    result = runner.invoke(main, ["validate", str(station(tmp_path, {"type": "pylon"}, line=False))])
    assert result.exit_code != 0, result.output
    assert "the 'pylon' source grabs a part only when triggered: add a line: section" in result.output


def test_triggered_sources_say_they_are_triggerable():
    assert TriggeredCameraSource.triggerable and PylonSource.triggerable
    assert PylonSource.frame_size(PylonConfig(width=640, height=480)) == (640, 480)
    assert PylonSource.frame_size(PylonConfig(width=640)) is None
