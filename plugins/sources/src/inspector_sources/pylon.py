"""A GenICam camera through pypylon (Basler's official binding), triggered per part.

With ``trigger_source: Software`` the host's trigger (the PLC's, or one from the CLI/API) is
sent to the camera as ``TriggerSoftware``; with ``Line1`` (``Line2``, ...) the PLC's wire
triggers the camera itself and each frame is paired, in order, with the trigger the host
received. Install with ``pip install 'inspector-sources[pylon]'``. ``PYLON_CAMEMU=1`` in the
environment gives pylon's emulated camera (tests, demos).
"""

from __future__ import annotations

import collections
import dataclasses
import importlib.util
import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from inspector_core import Frame, FrameSource, PluginConfig, SourceContext
from inspector_core.contract import CaptureState, Trigger
from inspector_sources.triggered import PendingTriggers

__all__ = ["PylonConfig", "PylonSource"]

log = logging.getLogger(__name__)

FeatureValue = bool | int | float | str

DROPPED_EVENT_S = 10.0
"""At most one ``frame_without_trigger`` event this often (the others are counted in the next)."""

GIGE_BLOCK_ID_MAX = 65535
"""A GigE Vision 1.x block ID is 16 bits and wraps from 65535 to 1 (0 is never used)."""


def exposure_ordinal(last_block: int | None, last_ordinal: int, block: int) -> int:
    """Which exposure of a camera session an image is (0 for the first), from its block ID
    (the camera's frame counter, one per exposure) and the previous image's: a gap in the
    block IDs is images the camera lost, whose triggers then time out instead of taking the
    images of the parts after them."""
    if last_block is None:
        return 0
    delta = block - last_block
    if delta <= 0:  # wrapped (GigE Vision 1.x); a 64-bit block ID (USB3, GigE 2) never wraps
        delta += GIGE_BLOCK_ID_MAX
    return last_ordinal + delta


@dataclasses.dataclass(slots=True)
class _Session:
    """One opening of the camera. Its software triggers count its exposures (``sent``), and
    an image's block ID tells which of them it answers."""

    number: int
    camera: Any
    sent: int = 0
    last_block: int | None = None
    last_ordinal: int = -1
    broken: str | None = None
    """Why the trigger thread gave up on this session (a trigger command failed): reopen."""


INSTALL = "pip install 'inspector-sources[pylon]'"


def _pylon() -> tuple[Any, Any]:
    """pypylon's ``pylon`` and ``genicam`` modules, or an error that says how to install them."""
    try:
        from pypylon import genicam, pylon  # type: ignore[import-untyped]
    except ImportError as exc:
        raise RuntimeError(f"source pylon needs pypylon, which is not installed: {INSTALL}") from exc
    return pylon, genicam


def _reason(exc: BaseException) -> str:
    """The first line of an exception's message (pylon's run long), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PylonConfig(PluginConfig):
    serial: str | None = Field(
        None, min_length=1, description="the camera's serial number; default: the first camera pylon finds"
    )
    trigger_source: str = Field(
        "Software",
        pattern=r"^(Software|Line[0-9]+)$",
        description="Software: the host triggers the camera (PLC message, CLI/API); "
        "Line1, Line2, ...: the PLC's wire triggers the camera directly",
    )
    trigger_activation: Literal["RisingEdge", "FallingEdge"] | None = Field(
        None, description="which edge of a hardware trigger line starts the exposure (camera default if unset)"
    )
    exposure_us: float | None = Field(None, gt=0, description="exposure time, microseconds (auto exposure off)")
    gain_db: float | None = Field(None, ge=0, description="gain, dB (auto gain off)")
    pixel_format: str | None = Field(
        None, min_length=1, description="the camera's PixelFormat (Mono8, BayerRG8, RGB8Packed, ...)"
    )
    width: int | None = Field(None, ge=1, description="image width, px (the camera's Width)")
    height: int | None = Field(None, ge=1, description="image height, px (the camera's Height)")
    offset_x: int | None = Field(None, ge=0, description="left edge of the image on the sensor, px")
    offset_y: int | None = Field(None, ge=0, description="top edge of the image on the sensor, px")
    gray: bool = Field(False, description="single-channel frames even from a colour camera")
    grab_timeout_ms: float = Field(
        1000, gt=0, le=600_000, description="a trigger with no image this long after it is a part with an error"
    )
    trigger_ready_timeout_ms: float | None = Field(
        None,
        gt=0,
        le=60_000,
        description="how long a software trigger waits for the camera to be ready (the previous exposure done); "
        "default: what is left of the trigger's grab timeout",
    )
    pair_window_ms: float = Field(
        250,
        gt=0,
        le=60_000,
        description="hardware trigger: an image is paired with a host trigger at most this far from it, either way "
        "(keep it below the time between two parts)",
    )
    features: dict[str, FeatureValue] = Field(
        default_factory=dict,
        description="other GenICam features to set, in order, after the ones above (e.g. LineDebouncerTime)",
    )
    reconnect_initial_ms: float = Field(200, gt=0, description="first wait before reopening a camera that went away")
    reconnect_max_ms: float = Field(5000, gt=0, description="longest wait between reopening attempts")
    part_prefix: str = Field("pylon", description="part ids are '<prefix>-<trigger counter>' when the PLC sends none")

    @model_validator(mode="after")
    def _pypylon_installed(self, info: ValidationInfo) -> PylonConfig:
        # Checked when a station file is validated, so 'inspector validate' does not say ok
        # for a station that cannot start.
        if info.context and importlib.util.find_spec("pypylon") is None:
            raise ValueError(f"the pylon source needs pypylon, which is not installed here: {INSTALL}")
        return self

    @field_validator("features")
    @classmethod
    def _feature_names(cls, features: dict[str, FeatureValue]) -> dict[str, FeatureValue]:
        for name in features:
            if not name.isidentifier():
                raise ValueError(f"{name!r} is not a GenICam feature name (letters, digits, underscores)")
        return features

    @property
    def hardware(self) -> bool:
        return self.trigger_source != "Software"


class PylonSource(FrameSource):
    """A Basler (or any pylon-supported GenICam) camera in trigger mode.

    The camera is opened, configured (``TriggerSelector FrameStart``, ``TriggerMode On``,
    ``TriggerSource``, pixel format, size, exposure, gain, then ``features``) and grabbed from
    in the source's own thread. Each trigger is answered with its image, in trigger order,
    ``meta["trigger_to_frame_ms"]`` the delay from the trigger to the image on the host and,
    for a software trigger, ``meta["trigger_to_exposure_ms"]`` the delay until the camera
    acknowledged the trigger command (an upper bound of when its exposure began). A trigger
    the camera cannot serve (not ready, a failed grab, no image within ``grab_timeout_ms``,
    the camera gone) is a part with an error. A camera that goes away is reopened with backoff
    (``camera_lost``, then ``camera_gap`` when it is back)."""

    name = "pylon"
    Config = PylonConfig
    config: PylonConfig
    triggerable = True

    @classmethod
    def frame_size(cls, config: PluginConfig) -> tuple[int, int] | None:
        assert isinstance(config, PylonConfig)
        if config.width is None or config.height is None:
            return None
        return config.width, config.height

    def __init__(self, config: PylonConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        self._pylon, self._genicam = _pylon()
        self.label = f"camera {config.serial}" if config.serial else "pylon camera"
        self.pending = PendingTriggers(
            prefix=config.part_prefix, timeout_s=config.grab_timeout_ms / 1000, meta={"camera": self.label}
        )
        self._stop = threading.Event()
        self._commands: queue.Queue[Trigger] = queue.Queue()
        self._session: _Session | None = None
        self._sessions = 0
        self._camera_ready = threading.Event()
        self._early: collections.deque[tuple[float, np.ndarray, dict[str, Any]]] = collections.deque()
        self._early_lock = threading.Lock()
        self._dropped_lock = threading.Lock()
        self._dropped_at: float | None = None
        self._dropped_since = 0
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ the host's side
    def capture_state(self) -> CaptureState:
        return self.pending.state()

    def trigger(self, trigger: Trigger) -> None:
        self.pending.add(trigger)
        if self.config.hardware:
            self._pair_early()
        else:
            self._commands.put(trigger)

    def frames(self) -> Iterator[Frame]:
        self._threads = [threading.Thread(target=self._camera_loop, name=f"grab {self.label}", daemon=True)]
        if not self.config.hardware:
            self._threads.append(threading.Thread(target=self._trigger_loop, name=f"trigger {self.label}", daemon=True))
        for t in self._threads:
            t.start()
        timeout = self.config.grab_timeout_ms

        def why(t: Trigger) -> str:
            return f"{self.label} gave no image within {timeout:g} ms of trigger {t.counter}"

        try:
            while (frame := self.pending.next_frame(why)) is not None:
                yield frame
        finally:
            self.close()
            for t in self._threads:
                t.join(5)

    def close(self) -> None:
        self._stop.set()
        self.pending.close()

    # ------------------------------------------------------------------ the camera
    def _open(self) -> Any:
        """The opened, configured camera; raises with a message naming what failed."""
        pylon = self._pylon
        factory = pylon.TlFactory.GetInstance()
        devices = factory.EnumerateDevices()
        if self.config.serial is not None:
            devices = [d for d in devices if d.GetSerialNumber() == self.config.serial]
        if not devices:
            raise LookupError(
                f"{self.label} not found (is it connected and powered, on this PC's subnet, not open in another "
                "program? PYLON_CAMEMU=1 gives pylon's emulated camera for tests)"
            )
        camera = pylon.InstantCamera(factory.CreateDevice(devices[0]))
        camera.Open()
        try:
            self._configure(camera)
            camera.StartGrabbing(pylon.GrabStrategy_OneByOne)
        except BaseException:
            camera.Close()
            raise
        return camera

    def _configure(self, camera: Any) -> None:
        c = self.config
        nodes = camera.GetNodeMap()
        serial = camera.GetDeviceInfo().GetSerialNumber()
        self.pending.meta["serial"] = serial

        def node(name: str) -> Any | None:
            n = nodes.GetNode(name)
            return n if n is not None and self._genicam.IsWritable(n) else None

        def put(name: str, value: FeatureValue, field: str | None = None) -> None:
            """Set feature ``name``; ``field`` is the config key it comes from (``None``: a
            feature set only where the camera has it)."""
            n = node(name)
            if n is None:
                if field is not None:
                    raise ValueError(f"camera {serial}: has no writable feature {name!r}: remove source.config.{field}")
                return
            if isinstance(value, bool) and hasattr(n, "GetSymbolics"):
                value = "On" if value else "Off"  # YAML reads an unquoted On / Off as true / false
            try:
                if isinstance(value, str) and hasattr(n, "FromString") and not hasattr(n, "GetSymbolics"):
                    n.FromString(value)
                else:
                    n.SetValue(value)
            except (self._genicam.GenericException, TypeError) as exc:
                allowed = ""
                if hasattr(n, "GetSymbolics"):
                    allowed = f" (it allows {', '.join(n.GetSymbolics())})"
                elif hasattr(n, "GetMin") and hasattr(n, "GetMax"):
                    allowed = f" (it allows {n.GetMin()} to {n.GetMax()})"
                where = f": change source.config.{field}" if field else ""
                raise ValueError(f"camera {serial}: {name} = {value!r} refused{allowed}{where}") from exc

        put("TriggerSelector", "FrameStart")
        if node("TriggerMode") is None:
            raise ValueError(f"camera {serial}: has no TriggerMode, so it cannot be triggered per part")
        put("TriggerMode", "On")
        put("TriggerSource", c.trigger_source, "trigger_source")
        if c.trigger_activation is not None:
            put("TriggerActivation", c.trigger_activation, "trigger_activation")
        if c.pixel_format is not None:
            put("PixelFormat", c.pixel_format, "pixel_format")
        # Offsets first to 0, so a larger Width/Height fits; then the size; then the offsets.
        for axis, size, offset in (("X", c.width, c.offset_x), ("Y", c.height, c.offset_y)):
            if size is not None or offset is not None:
                put(f"Offset{axis}", 0)
            if size is not None:
                put("Width" if axis == "X" else "Height", size, "width" if axis == "X" else "height")
            if offset is not None:
                put(f"Offset{axis}", offset, f"offset_{axis.lower()}")
        if c.exposure_us is not None:
            put("ExposureAuto", "Off")
            put("ExposureTime" if node("ExposureTime") is not None else "ExposureTimeAbs", c.exposure_us, "exposure_us")
        if c.gain_db is not None:
            put("GainAuto", "Off")
            if node("Gain") is None:
                raise ValueError(
                    f"camera {serial}: gain in dB needs the feature 'Gain' (this camera has only GainRaw: "
                    "remove source.config.gain_db and set GainRaw under source.config.features)"
                )
            put("Gain", c.gain_db, "gain_db")
        for name, value in c.features.items():
            put(name, value, f"features.{name}")

    def _camera_loop(self) -> None:
        c = self.config
        wait = c.reconnect_initial_ms / 1000
        gap_started: float | None = None
        try:
            while not self._stop.is_set():
                try:
                    camera = self._open()
                except Exception as exc:  # noqa: BLE001 - whatever fails, the camera is not open: recorded, retried
                    why = _reason(exc)
                    if gap_started is None:
                        gap_started = time.monotonic()
                        self.context.event("camera_unavailable", f"{self.label} did not open: {why}; retrying")
                    self.pending.down(f"{self.label} is not open ({why}); a part triggered now has no image")
                    if self._stop.wait(wait):
                        return
                    wait = min(wait * 2, c.reconnect_max_ms / 1000)
                    continue
                if gap_started is not None:
                    gap = time.monotonic() - gap_started
                    self.context.event("camera_gap", f"{self.label} back after {gap:.2f} s without images")
                    gap_started = None
                self._sessions += 1
                session = self._session = _Session(self._sessions, camera)
                opened = time.monotonic()
                self.pending.down(None)
                self._camera_ready.set()
                try:
                    lost = self._grab(session)
                except Exception as exc:  # an unexpected failure is a lost camera: logged, recorded, reopened
                    log.exception("%s: grabbing failed", self.label)
                    lost = f"failed while grabbing: {_reason(exc)}"
                finally:
                    self._camera_ready.clear()
                    self._session = None
                    try:
                        camera.StopGrabbing()
                        camera.Close()
                        camera.DestroyDevice()
                    except self._genicam.GenericException as exc:
                        log.warning("%s: closing failed: %s", self.label, exc)
                if lost is not None:
                    gap_started = time.monotonic()
                    self.context.event("camera_lost", f"{self.label} {lost}; reopening")
                    self.pending.down(f"{self.label} {lost} (reopening; a part triggered now has no image)")
                    # A camera that keeps going as soon as it is opened is retried ever more slowly
                    # (bounded), not reopened five times a second with two events each time.
                    lasted = gap_started - opened
                    wait = c.reconnect_initial_ms / 1000 if lasted > c.reconnect_max_ms / 1000 else wait
                    if self._stop.wait(wait):
                        return
                    wait = min(wait * 2, c.reconnect_max_ms / 1000)
        finally:
            if gap_started is not None:
                gap = time.monotonic() - gap_started
                self.context.event(
                    "camera_gap", f"{self.label} gave no images for the last {gap:.2f} s before the source stopped"
                )
            with self._dropped_lock:
                if self._dropped_since:
                    self.context.event(
                        "frame_without_trigger",
                        f"{self.label}: {self._dropped_since} more images dropped (no trigger answered by them) "
                        "since the last such event, before the source stopped",
                    )

    def _grab(self, session: _Session) -> str | None:
        """Retrieve images until the source stops (``None``) or the camera goes (why)."""
        pylon = self._pylon
        camera = session.camera
        converter = pylon.ImageFormatConverter()
        while not self._stop.is_set():
            if session.broken is not None:
                return session.broken
            try:
                result = camera.RetrieveResult(100, pylon.TimeoutHandling_Return)
            except self._genicam.GenericException as exc:
                return f"failed: {str(exc).strip().splitlines()[0]}"
            if result is None or not result.IsValid():
                if camera.IsCameraDeviceRemoved():
                    return "was removed (cable, power)"
                continue
            arrived = time.monotonic()
            try:
                self._deliver(session, result, arrived, converter)
            finally:
                result.Release()
        return None

    def _deliver(self, session: _Session, result: Any, arrived: float, converter: Any) -> None:
        pylon = self._pylon
        block = int(result.GetBlockID())
        meta: dict[str, Any] = {"block_id": block, "image_number": int(result.GetImageNumber())}
        if self.config.hardware:  # the wire triggered it: the oldest trigger within the pairing window
            entry = self.pending.claim(arrived, window_s=self.config.pair_window_ms / 1000)
        else:  # the answer to the software trigger sent as this exposure
            if block >= 2**63:  # no block ID on this result (a failed grab): the next exposure
                ordinal = session.last_ordinal + 1
            else:
                ordinal = exposure_ordinal(session.last_block, session.last_ordinal, block)
                session.last_block = block
            session.last_ordinal = ordinal
            entry = self.pending.claim_sent((session.number, ordinal))
        if not result.GrabSucceeded():
            why = f"{self.label}: the grab failed: {result.GetErrorDescription()} (error {result.GetErrorCode():#x})"
            if entry is not None:
                self.pending.fail(entry.trigger, why)
            else:
                self.context.event("camera_grab_failed", why)
            return
        pixel_type = result.GetPixelType()
        mono = self.config.gray or pylon.IsMonoImage(pixel_type)
        try:
            if pixel_type == (pylon.PixelType_Mono8 if mono else pylon.PixelType_BGR8packed):
                image = result.GetArray().copy()  # the grab buffer goes back to the camera
            else:
                converter.OutputPixelFormat = pylon.PixelType_Mono8 if mono else pylon.PixelType_BGR8packed
                image = converter.Convert(result).GetArray()
        except Exception as exc:
            if entry is not None:  # this part is ERROR now, not after the grab timeout
                self.pending.fail(entry.trigger, f"{self.label}: the image could not be converted: {_reason(exc)}")
            raise
        if entry is None:
            if self.config.hardware:
                with self._early_lock:
                    self._early.append((arrived, image, meta))
                self._pair_early()
            else:
                self._dropped_image(
                    f"{self.label}: image {block} came after its trigger was answered (no image within "
                    f"{self.config.grab_timeout_ms:g} ms) or without a trigger; dropped"
                )
            return
        if entry.acknowledged_at is not None:
            meta["trigger_to_exposure_ms"] = round((entry.acknowledged_at - entry.trigger.at_monotonic) * 1000, 3)
        self.pending.answer(entry, self.pending.frame(entry.trigger, image, arrived, meta))

    def _dropped_image(self, message: str) -> None:
        """A ``frame_without_trigger`` event, at most one per ``DROPPED_EVENT_S`` with the count
        of those left out: a wire that pulses while the PLC's messages do not come would
        otherwise record an event per image, at the line's rate."""
        now = time.monotonic()
        with self._dropped_lock:
            if self._dropped_at is not None and now - self._dropped_at < DROPPED_EVENT_S:
                self._dropped_since += 1
                return
            more = f" ({self._dropped_since} more dropped since the last such event)" if self._dropped_since else ""
            self._dropped_at, self._dropped_since = now, 0
        self.context.event("frame_without_trigger", message + more)

    def _pair_early(self) -> None:
        """Hardware trigger: pair images that came before their host trigger, oldest first;
        drop (with an event) those older than ``pair_window_ms``."""
        window = self.config.pair_window_ms / 1000
        with self._early_lock:
            while self._early:
                arrived, image, meta = self._early[0]
                if time.monotonic() - arrived > window:
                    self._early.popleft()
                    self._dropped_image(
                        f"{self.label}: an image (block {meta['block_id']}) had no trigger within "
                        f"{self.config.pair_window_ms:g} ms; dropped"
                    )
                    continue
                entry = self.pending.claim(arrived, window_s=window)
                if entry is None:
                    return
                self._early.popleft()
                self.pending.answer(entry, self.pending.frame(entry.trigger, image, arrived, meta))

    def _trigger_loop(self) -> None:
        """Software trigger: send each host trigger to the camera, in order, once it is ready."""
        pylon = self._pylon
        while not self._stop.is_set():
            try:
                trigger = self._commands.get(timeout=0.1)
            except queue.Empty:
                continue
            # A trigger that comes while the camera is first being opened waits for it (a camera
            # known to be down has answered it already: pending.down).
            left = trigger.at_monotonic + self.config.grab_timeout_ms / 1000 - time.monotonic()
            session = self._session if self._camera_ready.wait(max(left, 0.0)) else None
            if session is None or session.broken is not None:
                self.pending.fail(trigger, f"{self.label} is not open; a part triggered now has no image")
                continue
            camera = session.camera
            # A part that comes while the camera still exposes or reads out the one before
            # waits its turn, for at most what is left of its grab timeout.
            left_ms = (trigger.at_monotonic + self.config.grab_timeout_ms / 1000 - time.monotonic()) * 1000
            limit = self.config.trigger_ready_timeout_ms
            ready_ms = max(1, int(left_ms if limit is None else min(limit, left_ms)))
            try:
                if not camera.WaitForFrameTriggerReady(ready_ms, pylon.TimeoutHandling_Return):
                    self.pending.fail(
                        trigger,
                        f"{self.label} was not ready for trigger {trigger.counter} within {ready_ms} ms "
                        "(still exposing or reading out: parts come faster than the camera's frame rate)",
                    )
                    continue
                if not self.pending.sending(trigger, (session.number, session.sent)):
                    continue  # already answered (the camera went down meanwhile)
                session.sent += 1
                camera.ExecuteSoftwareTrigger()
                self.pending.acknowledged(trigger, time.monotonic())
            except Exception as exc:  # noqa: BLE001 - this part is ERROR; the camera is reopened
                why = f"refused a software trigger ({_reason(exc)})"
                self.pending.fail(trigger, f"{self.label} {why}")
                # Whether the camera took it is unknown, so its exposures can no longer be
                # told apart: open a new session.
                session.broken = why
