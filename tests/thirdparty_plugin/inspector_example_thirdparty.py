"""A third-party plugin, as small as one can be and still real.

``bright_spot`` finds saturated spots (glare, a missing coating showing bare metal) by
thresholding; ``raiser``, ``sleeper`` and ``crasher`` misbehave on purpose so that the host's
guards can be tested through a real entry point (``crasher`` ends its process: a segfault, an
``os._exit``; run it only with ``isolation: process``). ``part_pose`` finds a bright part and
publishes its pose (``View.publish``) for steps fixtured to it; ``pose_reader`` reports the
poses it was handed (``View.poses``).
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import time

import cv2
import numpy as np
from pydantic import Field

from inspector_core import Detector, Finding, PluginConfig, Pose, View, hookimpl


class BrightSpotConfig(PluginConfig):
    threshold: int = Field(250, ge=0, le=255, description="grey level counted as saturated")
    min_area_px: int = Field(20, ge=1, description="smallest spot reported, px")


class BrightSpot(Detector):
    name = "bright_spot"
    kinds = ("bright_spot",)
    Config = BrightSpotConfig

    def inspect(self, view: View) -> list[Finding]:
        _, mask = cv2.threshold(view.gray, self.config.threshold - 1, 255, cv2.THRESH_BINARY)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        out = []
        for i in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[i])
            if area >= self.config.min_area_px:
                score = min(1.0, 0.5 + 0.5 * area / (50 * self.config.min_area_px))
                out.append(
                    Finding(
                        "bright_spot",
                        score,
                        (x, y, w, h),
                        f"saturated spot {area} px",
                        size_px=float(max(w, h)),
                        measurements={"area_px": float(area)},
                    )
                )
        return out


class RaiserConfig(PluginConfig):
    every_nth: int = Field(1, ge=1, description="raise on every n-th part")


class Raiser(Detector):
    name = "raiser"
    kinds = ("raiser",)
    Config = RaiserConfig

    def __init__(self, config, *, station_dir):
        super().__init__(config, station_dir=station_dir)
        self.n = 0

    def inspect(self, view: View) -> list[Finding]:
        self.n += 1
        if self.n % self.config.every_nth == 0:
            raise RuntimeError(f"simulated failure on part {view.part_id}")
        return []


class SleeperConfig(PluginConfig):
    sleep_ms: float = Field(5000, ge=0, description="how long to hang")
    part_suffix: str = Field("", description="hang only on parts whose id ends with this")


class Sleeper(Detector):
    name = "sleeper"
    kinds = ("sleeper",)
    Config = SleeperConfig

    def inspect(self, view: View) -> list[Finding]:
        if view.part_id.endswith(self.config.part_suffix):
            time.sleep(self.config.sleep_ms / 1000)
        return []


class CrasherConfig(PluginConfig):
    how: str = Field("segfault", pattern="^(segfault|sigsegv|exit)$", description="how the process ends")
    part_suffix: str = Field("", description="crash only on parts whose id ends with this")


class Crasher(Detector):
    """Ends its own process on the parts it is told to: a NULL read in C (``segfault``), a
    SIGSEGV sent to itself (``sigsegv``) or ``os._exit(7)`` (``exit``), as broken native code
    would. Finds a defect naming the part on every other part."""

    name = "crasher"
    kinds = ("crasher",)
    Config = CrasherConfig

    def inspect(self, view: View) -> list[Finding]:
        if self.config.part_suffix and view.part_id.endswith(self.config.part_suffix):
            if self.config.how == "segfault":
                ctypes.string_at(0)
            elif self.config.how == "sigsegv":
                os.kill(os.getpid(), signal.SIGSEGV)
            else:
                os._exit(7)
        return [Finding("crasher", 0.9, (1, 1, 4, 4), f"defect of {view.part_id} in pid {os.getpid()}")]


class PartPoseConfig(PluginConfig):
    taught_x: float = Field(description="x of the part's centre in the view when taught, px")
    taught_y: float = Field(description="y of the part's centre in the view when taught, px")
    taught_angle_deg: float = Field(0.0, description="its long axis then, degrees counter-clockwise on screen")
    threshold: int = Field(128, ge=1, le=255, description="grey level from which a pixel is the part")
    min_area_px: int = Field(100, ge=1, description="a smaller bright region is no part")


class PartPose(Detector):
    """Finds the part (the largest region at least ``threshold`` bright) and publishes where it lies
    against where it was taught: its centroid's shift and its long axis's turn (image moments).
    Finds no defect: a fixture for later steps. Publishes nothing when there is no part."""

    name = "part_pose"
    kinds = ("part_pose",)
    Config = PartPoseConfig

    def inspect(self, view: View) -> list[Finding]:
        cfg = self.config
        mask = (view.gray >= cfg.threshold).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
        if n < 2:
            return []
        best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        if stats[best, cv2.CC_STAT_AREA] < cfg.min_area_px:
            return []
        m = cv2.moments((labels == best).astype(np.uint8), binaryImage=True)
        cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
        # The long axis, clockwise on screen (y down); the pose turns counter-clockwise.
        axis = 0.5 * math.degrees(math.atan2(2 * m["mu11"], m["mu20"] - m["mu02"]))
        turn = -axis - cfg.taught_angle_deg
        view.publish(Pose(cx - cfg.taught_x, cy - cfg.taught_y, turn, (cfg.taught_x, cfg.taught_y)))
        return []


class PoseReader(Detector):
    """Reports each pose it was handed (``View.poses``: those of the steps it is fixtured to) as a
    finding below the decision boundary, with the pose in its measurements."""

    name = "pose_reader"
    kinds = ("pose_reader",)

    def inspect(self, view: View) -> list[Finding]:
        return [
            Finding(
                "pose_reader",
                0.2,
                (0, 0, 1, 1),
                f"pose of step {step}" + (" (warped view)" if view.warped else ""),
                measurements={"dx_px": pose.dx, "dy_px": pose.dy, "angle_deg": pose.angle_deg},
            )
            for step, pose in sorted(view.poses.items())
        ]


@hookimpl
def inspector_register_detectors(register):
    register(BrightSpot)
    register(Raiser)
    register(Sleeper)
    register(Crasher)
    register(PartPose)
    register(PoseReader)
