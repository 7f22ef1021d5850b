"""Inspector's built-in frame sources: folder, video, camera, synthetic, and the triggered ones
(``triggered_camera``, an OpenCV camera; ``pylon``, a GenICam camera through pypylon)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np
from pydantic import Field

from inspector_core import Frame, FrameSource, PluginConfig, hookimpl
from inspector_sources.folder import IMAGE_SUFFIXES, FolderConfig, FolderSource
from inspector_sources.images import ImageLimits, read_image
from inspector_sources.pylon import PylonConfig, PylonSource
from inspector_sources.synthetic import KINDS, PartGeometry, Truth, render_part, truth_for
from inspector_sources.triggered import TriggeredCameraConfig, TriggeredCameraSource

__all__ = [
    "IMAGE_SUFFIXES",
    "CameraConfig",
    "CameraSource",
    "FolderConfig",
    "FolderSource",
    "ImageLimits",
    "PylonConfig",
    "PylonSource",
    "SyntheticConfig",
    "SyntheticSource",
    "TriggeredCameraConfig",
    "TriggeredCameraSource",
    "VideoConfig",
    "VideoSource",
    "read_image",
]


log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class VideoConfig(PluginConfig):
    path: str = Field(description="video file; relative to the station file")
    every_nth: int = Field(1, ge=1, description="inspect every n-th frame")
    max_frames: int | None = Field(None, ge=1, description="stop after this many inspected frames")


class VideoSource(FrameSource):
    """Frames of a video file; the part id is ``<file stem>-<frame number>``."""

    name = "video"
    Config = VideoConfig
    config: VideoConfig

    def __init__(self, config: VideoConfig, context) -> None:
        super().__init__(config, context)
        p = Path(config.path)
        self.path = p if p.is_absolute() else context.station_dir / p
        if not self.path.is_file():
            raise FileNotFoundError(f"source.config.path: video {self.path} does not exist")
        self._closed = False

    def frames(self) -> Iterator[Frame]:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise RuntimeError(f"cannot open video {self.path}: not a video OpenCV can decode")
        n = emitted = 0
        try:
            while not self._closed:
                ok, image = cap.read()
                if not ok:
                    break
                if n % self.config.every_nth == 0:
                    yield Frame(f"{self.path.stem}-{n:06d}", image, _now(), {"path": str(self.path), "frame": n})
                    emitted += 1
                    if self.config.max_frames and emitted >= self.config.max_frames:
                        break
                n += 1
        finally:
            cap.release()

    def close(self) -> None:
        self._closed = True


class CameraConfig(PluginConfig):
    device: int | str = Field(0, description="a device index (0) or a stream URL (rtsp://..., a file for testing)")
    width: int | None = Field(None, ge=1, description="requested capture width, px")
    height: int | None = Field(None, ge=1, description="requested capture height, px")
    gray: bool = Field(False, description="convert frames to single-channel")
    reconnect_initial_ms: float = Field(200, gt=0, description="first wait before reconnecting")
    reconnect_max_ms: float = Field(5000, gt=0, description="longest wait between reconnect attempts")
    max_frames: int | None = Field(None, ge=1, description="stop after this many frames (tests)")
    part_prefix: str = Field("cam", description="part ids are '<prefix>-<sequence>'")


class CameraSource(FrameSource):
    """A live camera through OpenCV. When the camera drops out (no frame, or its driver
    raises), it reconnects with exponential backoff and records the gap: ``camera_lost`` when
    frames stop, ``camera_gap`` with its length when they come back (or when the source stops
    during the gap), so QA can see that no parts were captured then."""

    name = "camera"
    Config = CameraConfig
    config: CameraConfig

    def __init__(self, config: CameraConfig, context) -> None:
        super().__init__(config, context)
        self._stop = threading.Event()

    def _open(self) -> cv2.VideoCapture | None:
        dev = self.config.device
        try:
            cap = cv2.VideoCapture(dev if isinstance(dev, int) else str(dev))
            if not cap.isOpened():
                cap.release()
                return None
        except cv2.error as exc:
            log.warning("camera %r: opening failed: %s", dev, exc)
            return None
        if self.config.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.config.width)
        if self.config.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.config.height)
        return cap

    def _read(self, cap: cv2.VideoCapture | None) -> tuple[np.ndarray | None, str]:
        """A frame, or ``None`` and why there is none."""
        if cap is None:
            return None, "not open"
        try:
            ok, image = cap.read()
        except cv2.error as exc:  # a driver that raises is a camera that dropped out
            return None, f"its driver failed: {str(exc).strip().splitlines()[-1]}"
        return (image, "") if ok and image is not None else (None, "stopped giving frames")

    def frames(self) -> Iterator[Frame]:
        seq = 0
        device = self.config.device
        cap = self._open()
        if cap is None:
            self.context.event("camera_unavailable", f"camera {device!r} did not open; retrying")
        gap_started: float | None = None if cap is not None else time.monotonic()
        wait = self.config.reconnect_initial_ms / 1000
        try:
            while not self._stop.is_set():
                image, why = self._read(cap)
                if image is not None:
                    if gap_started is not None:
                        gap = time.monotonic() - gap_started
                        self.context.event("camera_gap", f"camera {device!r} back after {gap:.2f} s without frames")
                        gap_started, wait = None, self.config.reconnect_initial_ms / 1000
                    if self.config.gray and image.ndim == 3:
                        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
                    yield Frame(
                        f"{self.config.part_prefix}-{seq:08d}", image, _now(), {"device": str(device), "seq": seq}
                    )
                    seq += 1
                    if self.config.max_frames and seq >= self.config.max_frames:
                        return
                    continue
                if gap_started is None:
                    gap_started = time.monotonic()
                    self.context.event("camera_lost", f"camera {device!r} {why}; reconnecting")
                if cap is not None:
                    cap.release()
                    cap = None
                if self._stop.wait(wait):  # close() ends the wait at once
                    break
                wait = min(wait * 2, self.config.reconnect_max_ms / 1000)
                cap = self._open()
        finally:
            if cap is not None:
                cap.release()
            if gap_started is not None:
                gap = time.monotonic() - gap_started
                self.context.event(
                    "camera_gap", f"camera {device!r} gave no frames for the last {gap:.2f} s before the source stopped"
                )

    def close(self) -> None:
        self._stop.set()


class SyntheticConfig(PluginConfig):
    count: int = Field(100, ge=1, le=10_000_000, description="how many parts to make")
    seed: int = Field(1, ge=0, le=2**32 - 1, description="the same seed gives the same parts (0 to 2^32 - 1)")
    defect_rate: float = Field(
        0.3, ge=0, le=1, description="share of parts with a defect (scratch, dent, misalignment in turn)"
    )
    width: int = Field(1024, ge=320, le=4096, description="frame width, px (320 to 4096)")
    height: int = Field(768, ge=240, le=4096, description="frame height, px (240 to 4096)")
    color: bool = Field(True, description="BGR frames (else single-channel)")
    interval_ms: float = Field(
        0, ge=0, le=3_600_000, description="pause between parts, to simulate a line's takt (at most an hour)"
    )


class SyntheticSource(FrameSource):
    """The project's own deterministic parts. Each frame's ``meta`` carries its truth
    (``good``, ``scratch``, ``dent``, ``misalignment``) and the defect's box, for tests."""

    name = "synthetic"
    Config = SyntheticConfig
    config: SyntheticConfig

    @classmethod
    def frame_size(cls, config: PluginConfig) -> tuple[int, int]:
        assert isinstance(config, SyntheticConfig)
        return config.width, config.height

    def __init__(self, config: SyntheticConfig, context) -> None:
        super().__init__(config, context)
        self._stop = threading.Event()
        c = config
        plate_w, plate_h = round(c.width * 0.625), round(c.height * 0.573)
        self.geometry = PartGeometry(c.width, c.height, plate_w, plate_h)

    def frames(self) -> Iterator[Frame]:
        rng = np.random.default_rng(self.config.seed)
        for i in range(self.config.count):
            if self._stop.is_set():
                return
            truth = truth_for(i, self.config.defect_rate, rng)
            part = render_part(self.config.seed, i, truth, self.geometry, self.config.color)
            meta: dict[str, Any] = {"truth": truth, "seed": self.config.seed, "index": i}
            if part.box is not None:
                meta["truth_box"] = list(part.box)
            yield Frame(f"syn-{self.config.seed}-{i:05d}", part.image, _now(), meta)
            if self.config.interval_ms and self._stop.wait(self.config.interval_ms / 1000):
                return  # close() ends the pause at once

    def close(self) -> None:
        self._stop.set()


@hookimpl
def inspector_register_sources(register) -> None:
    for cls in (FolderSource, VideoSource, CameraSource, SyntheticSource, TriggeredCameraSource, PylonSource):
        register(cls)


@click.command()
@click.option("--to", "out", required=True, type=click.Path(file_okay=False), help="folder to write PNG files into")
@click.option("--count", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(KINDS),
    help="only these kinds of part (repeatable); default: good parts with some defective ones",
)
@click.option("--gray", is_flag=True, help="single-channel images")
def synth(out: str, count: int, seed: int, kinds: tuple[Truth, ...], gray: bool) -> None:
    """Write synthetic parts (the demo's generator) as image files, e.g. good parts to teach from."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        truth = kinds[i % len(kinds)] if kinds else truth_for(i, 0.3, rng)
        part = render_part(seed, i, truth, color=not gray)
        cv2.imwrite(str(folder / f"syn-{seed}-{i:05d}-{truth}.png"), part.image)
    click.echo(f"wrote {count} parts to {folder}")


@hookimpl
def inspector_register_commands(register) -> None:
    register(synth)
