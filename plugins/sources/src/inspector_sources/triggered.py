"""Triggered capture: a camera that grabs a part when the line says "part here".

:class:`PendingTriggers` holds the triggers waiting for their frame, in trigger order, and
answers each exactly once: with the frame grabbed for it, or with an error frame when the
camera cannot serve it (down, not ready, no frame within the grab timeout). Both triggered
sources (this module's OpenCV camera and :mod:`inspector_sources.pylon`) use it.

:class:`TriggeredCameraSource` is an OpenCV ``VideoCapture`` (a device index, a stream URL, or
a video file for tests) that keeps reading in a grabber thread, so the driver's buffer never
holds stale frames, and answers a trigger with the first frame that arrived after it.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import Field

from inspector_core import Frame, FrameSource, PluginConfig, SourceContext
from inspector_core.contract import CaptureState, Trigger

__all__ = ["PendingTriggers", "TriggeredCameraConfig", "TriggeredCameraSource", "part_id_for"]

log = logging.getLogger(__name__)


CLAIM_GRACE_S = 1.0
"""How much longer than the grab timeout a trigger whose frame is being read may wait."""


def _now() -> datetime:
    return datetime.now(UTC)


def part_id_for(trigger: Trigger, prefix: str) -> str:
    """The PLC's part id when it sent one, else ``<prefix>-<trigger counter>``."""
    return trigger.part_id if trigger.part_id else f"{prefix}-{trigger.counter:08d}"


@dataclasses.dataclass(slots=True)
class _Waiting:
    trigger: Trigger
    sent: tuple[int, int] | None = None
    """(camera session, exposure ordinal) once a software trigger was sent to the camera."""
    acknowledged_at: float | None = None
    """When the camera acknowledged that command."""
    claimed: bool = False
    """A frame is being read for this trigger (it no longer times out)."""
    frame: Frame | None = None


class PendingTriggers:
    """The triggers a source has accepted and not yet yielded, in trigger order.

    Thread-safe: ``add`` from the line's thread, ``claim``/``answer``/``down`` from the
    source's camera threads, ``next_frame`` from the host's capture thread (``frames()``).
    Every added trigger comes out of ``next_frame`` exactly once, in the order added.
    """

    def __init__(self, *, prefix: str, timeout_s: float, meta: dict[str, Any]) -> None:
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.meta = meta
        self._queue: collections.deque[_Waiting] = collections.deque()
        self._cond = threading.Condition()
        self._down: str | None = None
        self._opened = False
        """The camera has been open once (``down(None)``): until then it is still opening."""
        self._closed = False

    def error_frame(self, trigger: Trigger, why: str) -> Frame:
        return Frame(
            part_id_for(trigger, self.prefix),
            None,
            _now(),
            {**self.meta, "trigger_counter": trigger.counter},
            error=why,
            trigger=trigger,
        )

    def frame(self, trigger: Trigger, image: np.ndarray, arrived_at: float, meta: dict[str, Any]) -> Frame:
        meta = {
            **self.meta,
            **meta,
            "trigger_counter": trigger.counter,
            "trigger_to_frame_ms": round((arrived_at - trigger.at_monotonic) * 1000, 3),
        }
        return Frame(part_id_for(trigger, self.prefix), image, _now(), meta, trigger=trigger)

    def add(self, trigger: Trigger) -> None:
        with self._cond:
            entry = _Waiting(trigger)
            if self._down is not None:
                entry.frame = self.error_frame(trigger, self._down)
            elif self._closed:
                entry.frame = self.error_frame(trigger, "the source was stopping when this trigger came")
            self._queue.append(entry)
            self._cond.notify_all()

    def down(self, why: str | None) -> None:
        """The camera cannot serve triggers (``why``), or can again (``None``). While it is
        down, every waiting trigger and every new one is answered at once with ``why``."""
        with self._cond:
            self._down = why
            self._opened = self._opened or why is None
            if why is not None:
                for entry in self._queue:
                    if entry.frame is None and not entry.claimed:
                        entry.frame = self.error_frame(entry.trigger, why)
                self._cond.notify_all()

    def state(self) -> CaptureState:
        """``FrameSource.capture_state`` of the source: down while ``down(why)`` holds, opening
        until the first ``down(None)``, then ready."""
        if self._down is not None:
            return "down"
        return "ready" if self._opened else "opening"

    def sending(self, trigger: Trigger, key: tuple[int, int]) -> bool:
        """Mark ``trigger`` as the exposure ``key`` (camera session, ordinal) about to be sent
        to the camera; ``False`` when it is already answered (do not send it)."""
        with self._cond:
            for entry in self._queue:
                if entry.trigger is trigger:
                    if entry.frame is not None:
                        return False
                    entry.sent = key
                    return True
            return False

    def claim_sent(self, key: tuple[int, int]) -> _Waiting | None:
        """The unanswered trigger sent as exposure ``key``; ``None`` when it is answered
        already (timed out: the image came late) or was never sent."""
        with self._cond:
            for entry in self._queue:
                if entry.sent == key and entry.frame is None and not entry.claimed:
                    entry.claimed = True
                    return entry
            return None

    def acknowledged(self, trigger: Trigger, at: float) -> None:
        with self._cond:
            for entry in self._queue:
                if entry.trigger is trigger:
                    entry.acknowledged_at = at

    def claim(self, arrived_at: float, *, after_s: float = 0.0, window_s: float | None = None) -> _Waiting | None:
        """The oldest unanswered trigger a frame that arrived at ``arrived_at`` answers, or
        ``None`` when it answers none (a free-running frame):

        - by default, the oldest trigger at least ``after_s`` before the frame;
        - with ``window_s`` (a camera triggered by the wire, whose frame may come before or
          after the host's trigger), the oldest trigger within ``window_s`` of the frame either
          way; older ones are passed over (they time out), so that a lost pulse costs one part,
          not the identity of every part after it.
        """
        with self._cond:
            for entry in self._queue:
                if entry.frame is not None or entry.claimed:
                    continue
                at = entry.trigger.at_monotonic
                if window_s is not None:
                    if at < arrived_at - window_s:
                        continue
                    if at > arrived_at + window_s:
                        return None
                elif at + after_s > arrived_at:
                    return None
                entry.claimed = True
                return entry
            return None

    def answer(self, entry: _Waiting, frame: Frame) -> None:
        with self._cond:
            entry.frame = frame
            entry.claimed = False
            self._cond.notify_all()

    def fail(self, trigger: Trigger, why: str) -> None:
        with self._cond:
            for entry in self._queue:
                if entry.trigger is trigger and entry.frame is None:
                    entry.frame = self.error_frame(trigger, why)
                    entry.claimed = False
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def next_frame(self, timeout_why: Callable[[Trigger], str]) -> Frame | None:
        """The frame of the oldest trigger, once it is answered or has waited ``timeout_s``
        (then an error frame saying ``timeout_why(trigger)``); ``None`` once closed and empty.
        Blocks until then."""
        with self._cond:
            while True:
                if self._queue:
                    head = self._queue[0]
                    if head.frame is not None:
                        self._queue.popleft()
                        return head.frame
                    left = head.trigger.at_monotonic + self.timeout_s - time.monotonic()
                    # A claimed trigger's frame is being read; it waits CLAIM_GRACE_S longer, so
                    # that a camera thread that died holding the claim cannot hold up every part.
                    stuck = left <= -CLAIM_GRACE_S
                    if self._closed and (not head.claimed or stuck):
                        self._queue.popleft()
                        return self.error_frame(head.trigger, "the source stopped before this trigger's frame came")
                    if left <= 0 and (not head.claimed or stuck):
                        self._queue.popleft()
                        return self.error_frame(head.trigger, timeout_why(head.trigger))
                    self._cond.wait(max(left, 0.005) if not head.claimed else 0.005)
                elif self._closed:
                    return None
                else:
                    self._cond.wait()


class TriggeredCameraConfig(PluginConfig):
    device: int | str = Field(
        0,
        description="a device index (0), a stream URL (rtsp://...), a device file (/dev/video0) or a video file "
        "(tests; relative to the station file)",
    )
    width: int | None = Field(None, ge=1, description="requested capture width, px (the camera may not honour it)")
    height: int | None = Field(None, ge=1, description="requested capture height, px (the camera may not honour it)")
    gray: bool = Field(False, description="convert frames to single-channel")
    grab_timeout_ms: float = Field(
        1000, gt=0, le=600_000, description="a trigger with no frame this long after it is a part with an error"
    )
    settle_ms: float = Field(
        0,
        ge=0,
        le=10_000,
        description="answer a trigger with the first frame that arrived at least this long after it "
        "(the camera's exposure plus transfer time, so a frame exposed before the trigger is never taken)",
    )
    pace_fps: float | None = Field(
        None, gt=0, le=10_000, description="read a video file at this rate, as a live camera would deliver it (tests)"
    )
    reconnect_initial_ms: float = Field(200, gt=0, description="first wait before reopening a camera that stopped")
    reconnect_max_ms: float = Field(5000, gt=0, description="longest wait between reopening attempts")
    part_prefix: str = Field("cam", description="part ids are '<prefix>-<trigger counter>' when the PLC sends none")


class TriggeredCameraSource(FrameSource):
    """An OpenCV camera that answers each trigger with the first frame after it.

    A grabber thread keeps reading (``grab()``, no decoding) so the driver's buffer never
    holds stale frames; a trigger is answered by the first frame whose arrival is at least
    ``settle_ms`` after the trigger, decoded then (``retrieve()``), one frame per trigger.
    ``meta["trigger_to_frame_ms"]`` is the trigger-to-arrival delay (OpenCV does not tell
    when the exposure began). A camera that stops delivering is reopened with backoff
    (``camera_lost``, then ``camera_gap`` when it is back); triggers meanwhile are parts with
    an error, and so is a trigger with no frame within ``grab_timeout_ms``.
    """

    name = "triggered_camera"
    Config = TriggeredCameraConfig
    config: TriggeredCameraConfig
    triggerable = True

    def __init__(self, config: TriggeredCameraConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        self._stop = threading.Event()
        self.pending = PendingTriggers(
            prefix=config.part_prefix, timeout_s=config.grab_timeout_ms / 1000, meta={"device": str(config.device)}
        )
        self._grabber: threading.Thread | None = None

    def trigger(self, trigger: Trigger) -> None:
        self.pending.add(trigger)

    def capture_state(self) -> CaptureState:
        return self.pending.state()

    def frames(self) -> Iterator[Frame]:
        self._grabber = threading.Thread(target=self._grab_loop, name=f"grabber {self.config.device}", daemon=True)
        self._grabber.start()
        timeout = self.config.grab_timeout_ms

        def why(t: Trigger) -> str:
            return f"camera {self.config.device!r} gave no frame within {timeout:g} ms of trigger {t.counter}"

        try:
            while (frame := self.pending.next_frame(why)) is not None:
                yield frame
        finally:
            self._stop.set()
            self.pending.close()
            self._grabber.join(5)

    def close(self) -> None:
        self._stop.set()
        self.pending.close()

    def _open(self) -> tuple[cv2.VideoCapture | None, str]:
        dev = self.config.device
        if isinstance(dev, str) and "://" not in dev and not Path(dev).is_absolute():
            dev = str(self.context.station_dir / dev)
        try:
            cap = cv2.VideoCapture(dev)
            if not cap.isOpened():
                cap.release()
                return None, "did not open"
        except cv2.error as exc:
            return None, f"did not open: {str(exc).strip().splitlines()[-1]}"
        if self.config.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.config.width)
        if self.config.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.config.height)
        return cap, ""

    def _grab_loop(self) -> None:
        """The grabber thread. A failure nobody foresaw (a backend raising something else than
        ``cv2.error``) must not end it silently, leaving every later trigger to time out: it
        is logged and recorded, and the camera reopened."""
        while not self._stop.is_set():
            try:
                self._grab_until_stopped()
                return
            except Exception as exc:
                log.exception("camera %r: the grabber failed", self.config.device)
                why = f"the grabber failed: {type(exc).__name__}: {str(exc).strip()[:200]}"
                self.context.event("camera_lost", f"camera {self.config.device!r}: {why}; reopening")
                self.pending.down(
                    f"camera {self.config.device!r}: {why} (reopening; a part triggered now has no image)"
                )
                if self._stop.wait(self.config.reconnect_max_ms / 1000):
                    return

    def _grab_until_stopped(self) -> None:
        c, device = self.config, self.config.device
        cap: cv2.VideoCapture | None = None
        gap_started: float | None = None
        wait = c.reconnect_initial_ms / 1000
        seq = 0
        period = 1 / c.pace_fps if c.pace_fps else 0.0
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                if cap is None:
                    cap, why = self._open()
                    if cap is None:
                        if gap_started is None:
                            gap_started = time.monotonic()
                            self.context.event("camera_unavailable", f"camera {device!r} {why}; retrying")
                        self.pending.down(f"camera {device!r} {why} (reopening; a part triggered now has no image)")
                        if self._stop.wait(wait):
                            break
                        wait = min(wait * 2, c.reconnect_max_ms / 1000)
                        continue
                    # Triggers wait for the first frame now (or time out); the gap ends with
                    # that frame, not with the opening: a device that opens and gives nothing
                    # is still down, and is retried with the growing wait, without new events.
                    self.pending.down(None)
                    next_at = time.monotonic()
                if period:
                    next_at += period
                    if self._stop.wait(max(0.0, next_at - time.monotonic())):
                        break
                try:
                    ok = cap.grab()
                    why = "stopped giving frames"
                except cv2.error as exc:  # a driver that raises is a camera that dropped out
                    ok, why = False, f"its driver failed: {str(exc).strip().splitlines()[-1]}"
                arrived = time.monotonic()
                if not ok:
                    cap.release()
                    cap = None
                    if gap_started is None:
                        gap_started = arrived
                        self.context.event("camera_lost", f"camera {device!r} {why}; reopening")
                    self.pending.down(f"camera {device!r} {why} (reopening; a part triggered now has no image)")
                    if self._stop.wait(wait):
                        break
                    wait = min(wait * 2, c.reconnect_max_ms / 1000)
                    continue
                if gap_started is not None:
                    gap = arrived - gap_started
                    self.context.event("camera_gap", f"camera {device!r} back after {gap:.2f} s without frames")
                    gap_started, wait = None, c.reconnect_initial_ms / 1000
                seq += 1
                entry = self.pending.claim(arrived, after_s=c.settle_ms / 1000)
                if entry is None:
                    continue
                try:
                    self._retrieve(cap, entry, arrived, seq)
                except Exception:
                    self.pending.fail(entry.trigger, f"camera {device!r}: reading the frame failed")
                    raise
        finally:
            if cap is not None:
                cap.release()
            if gap_started is not None:
                gap = time.monotonic() - gap_started
                self.context.event(
                    "camera_gap", f"camera {device!r} gave no frames for the last {gap:.2f} s before the source stopped"
                )

    def _retrieve(self, cap: cv2.VideoCapture, entry: _Waiting, arrived: float, seq: int) -> None:
        try:
            ok, image = cap.retrieve()
        except cv2.error as exc:
            ok, image = False, None
            log.warning("camera %r: retrieve failed: %s", self.config.device, exc)
        if not ok or image is None:
            self.pending.fail(entry.trigger, f"camera {self.config.device!r} could not decode the frame it grabbed")
            return
        if self.config.gray and image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        self.pending.answer(entry, self.pending.frame(entry.trigger, image, arrived, {"seq": seq}))
