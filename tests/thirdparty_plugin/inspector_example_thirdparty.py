"""A third-party plugin, as small as one can be and still real.

``bright_spot`` finds saturated spots (glare, a missing coating showing bare metal) by
thresholding; ``raiser`` and ``sleeper`` misbehave on purpose so that the host's guards can
be tested through a real entry point.
"""

from __future__ import annotations

import time

import cv2
from pydantic import Field

from inspector_core import Detector, Finding, PluginConfig, View, hookimpl


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


@hookimpl
def inspector_register_detectors(register):
    register(BrightSpot)
    register(Raiser)
    register(Sleeper)
