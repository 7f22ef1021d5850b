"""The project's own deterministic generator of parts: good ones and ones with a scratch, a
dent or a misalignment. Used by the demo station (``source: {type: synthetic}``), the tests
and the pytest kit. The same seed and index always give the same image.

A part is a brushed-metal plate with four mounting holes and a label, lying on a dark
fixture, lit unevenly from the upper left. Its nominal pose is the centre of the frame.
Each defect is drawn by its own function (``draw_scratch``, ``draw_dent``), so a detector's
author can make the synthetic defect as realistic as their detector's measurement needs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import cv2
import numpy as np

Truth = Literal["good", "scratch", "dent", "misalignment"]
KINDS: tuple[Truth, ...] = ("good", "scratch", "dent", "misalignment")


@dataclasses.dataclass(frozen=True)
class Part:
    image: np.ndarray
    truth: Truth
    box: tuple[int, int, int, int] | None
    """Where the defect is, in frame pixels (None for good parts)."""
    pose: tuple[float, float, float]
    """The plate's (dx_px, dy_px, rotation_deg) from nominal."""


@dataclasses.dataclass(frozen=True)
class PartGeometry:
    width: int = 1024
    height: int = 768
    plate_w: int = 640
    plate_h: int = 440


def truth_for(index: int, defect_rate: float, rng: np.random.Generator) -> Truth:
    if rng.random() >= defect_rate:
        return "good"
    return ("scratch", "dent", "misalignment")[index % 3]


def plate_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Brushed metal: horizontal streaks plus fine noise, float32 around 0."""
    streaks = rng.normal(0, 1, (h, 1)).astype(np.float32)
    streaks = cv2.GaussianBlur(np.repeat(streaks, 8, axis=1), (1, 0), sigmaX=1, sigmaY=1.2)[:, :1]
    fine = rng.normal(0, 1, (h, w)).astype(np.float32)
    fine = cv2.blur(fine, (15, 1))
    return 6.0 * streaks + 4.0 * fine


def render_part(
    seed: int,
    index: int,
    truth: Truth,
    geometry: PartGeometry = PartGeometry(),
    color: bool = True,
) -> Part:
    """Render part ``index`` of the stream with ``seed``, with the given ``truth``."""
    rng = np.random.default_rng([seed, index])
    g = geometry
    h, w = g.height, g.width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # Uneven light: brighter at the upper left, a soft vignette.
    light = 1.0 + 0.25 * (1 - xx / w) * (1 - yy / h) - 0.15 * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2)
    light *= 1.0 + rng.uniform(-0.05, 0.05)

    background = 35 + rng.normal(0, 3, (h, w)).astype(np.float32)
    plate = 150 + plate_texture(rng, h, w)

    # Good parts sit within a fraction of a pixel and a few hundredths of a degree of nominal:
    # a fixture's repeatability. A misaligned part is clearly off.
    if truth == "misalignment":
        dx, dy = rng.uniform(8, 30) * rng.choice([-1, 1]), rng.uniform(8, 30) * rng.choice([-1, 1])
        angle = rng.uniform(1.5, 6) * rng.choice([-1, 1])
    else:
        dx, dy = rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4)
        angle = rng.uniform(-0.05, 0.05)

    mask = np.zeros((h, w), np.uint8)
    x0, y0 = (w - g.plate_w) // 2, (h - g.plate_h) // 2
    cv2.rectangle(mask, (x0, y0), (x0 + g.plate_w, y0 + g.plate_h), 255, -1)
    for cx, cy in ((x0 + 50, y0 + 50), (x0 + g.plate_w - 50, y0 + 50), (x0 + 50, y0 + g.plate_h - 50), (x0 + g.plate_w - 50, y0 + g.plate_h - 50)):
        cv2.circle(mask, (cx, cy), 18, 0, -1)
    label = np.zeros((h, w), np.uint8)
    cv2.rectangle(label, (x0 + 230, y0 + 170), (x0 + 410, y0 + 270), 255, -1)
    # Pose: rotate about the frame centre, then shift.
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    m[:, 2] += (dx, dy)
    mask = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_LINEAR)
    label = cv2.warpAffine(label, m, (w, h), flags=cv2.INTER_LINEAR)
    alpha = mask.astype(np.float32) / 255.0
    img = background * (1 - alpha) + plate * alpha
    lab = label.astype(np.float32) / 255.0
    img = img * (1 - lab) + 225 * lab
    # A bevel shadow along the plate's lower and right edges.
    edge = cv2.GaussianBlur(alpha, (0, 0), 3) - alpha
    img += 40 * np.clip(edge, -1, 0)

    box: tuple[int, int, int, int] | None = None
    if truth == "scratch":
        img, box = draw_scratch(img, rng, plate_region(g))
    elif truth == "dent":
        img, box = draw_dent(img, rng, plate_region(g))
    elif truth == "misalignment":
        box = cv2.boundingRect(mask)

    img = img * light + rng.normal(0, 2.0, (h, w)).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if color:
        out = cv2.merge([out, np.clip(out.astype(np.int16) + 3, 0, 255).astype(np.uint8), out])
    return Part(out, truth, box, (float(dx), float(dy), float(angle)))


def plate_region(g: PartGeometry) -> tuple[int, int, int, int]:
    """A box on the plate, clear of the holes and the label's margins, where defects may be
    drawn (defective parts other than misaligned ones sit at the nominal pose)."""
    x0, y0 = (g.width - g.plate_w) // 2 + 90, (g.height - g.plate_h) // 2 + 90
    return (x0, y0, g.plate_w - 180, g.plate_h - 180)


def draw_scratch(img: np.ndarray, rng: np.random.Generator, region: tuple[int, int, int, int]):
    """A thin (1-3 px), straight or gently curved mark, brighter or darker than the plate by a
    peak contrast of 35-60 grey levels (before the uneven light), fading at its ends and, one
    time in three, broken by a short gap (a scratch the tool skipped over). It lies on bare
    metal: clear of the label, a 180x100 px rectangle at the region's centre."""
    rx, ry, rw, rh = region
    lx0, ly0 = rx + rw / 2 - 90 - 6, ry + rh / 2 - 50 - 6  # the label, with a margin
    lx1, ly1 = rx + rw / 2 + 90 + 6, ry + rh / 2 + 50 + 6
    for _ in range(100):
        length = rng.uniform(60, 220)
        theta = rng.uniform(0, math.pi)
        cx, cy = rx + rng.uniform(0.0, 1.0) * rw, ry + rng.uniform(0.0, 1.0) * rh
        bend = rng.uniform(-0.15, 0.15)
        t = np.linspace(-0.5, 0.5, 60)
        px = cx + t * length * math.cos(theta) - bend * length * (t * t - 0.25) * math.sin(theta)
        py = cy + t * length * math.sin(theta) + bend * length * (t * t - 0.25) * math.cos(theta)
        inside = px.min() >= rx and px.max() <= rx + rw and py.min() >= ry and py.max() <= ry + rh
        on_label = (px > lx0) & (px < lx1) & (py > ly0) & (py < ly1)
        if inside and not on_label.any():
            break
    pts = np.column_stack([px, py])
    layer = np.zeros(img.shape, np.float32)
    width = int(rng.integers(1, 3))
    # Draw piece by piece so that the ends can fade and a gap can break the line.
    fade = np.clip(np.minimum(t + 0.5, 0.5 - t) / 0.08, 0.25, 1.0)
    gap_at = rng.uniform(-0.25, 0.25) if rng.random() < 1 / 3 else None
    gap_half = rng.uniform(3, 7) / length
    for k in range(len(pts) - 1):
        tm = 0.5 * (t[k] + t[k + 1])
        if gap_at is not None and abs(tm - gap_at) < gap_half:
            continue
        seg = np.round(pts[k : k + 2] * 4).astype(np.int32)
        cv2.polylines(layer, [seg], False, float(fade[k]), thickness=width, lineType=cv2.LINE_AA, shift=2)
    layer = cv2.GaussianBlur(layer, (0, 0), 0.7)
    layer /= max(float(layer.max()), 1e-6)  # the drawn amplitude is the peak contrast
    sign = 1 if rng.random() < 0.5 else -1
    img = img + sign * rng.uniform(35, 60) * layer
    xs, ys = pts[:, 0], pts[:, 1]
    box = (int(xs.min()) - 2, int(ys.min()) - 2, int(xs.max() - xs.min()) + 5, int(ys.max() - ys.min()) + 5)
    return img, box


def draw_dent(img: np.ndarray, rng: np.random.Generator, region: tuple[int, int, int, int]):
    """A shallow round depression under light from the upper left: a dark rim toward the
    light and a bright one away from it (the shading of a Gaussian height map)."""
    rx, ry, rw, rh = region
    radius = rng.uniform(12, 30)
    cx, cy = rx + rng.uniform(0.2, 0.8) * rw, ry + rng.uniform(0.2, 0.8) * rh
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = rng.uniform(0.6, 1.2)
    height = -depth * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2)) * radius
    gy, gx = np.gradient(height)
    lx, ly = -0.7, -0.7  # light from the upper left
    shading = -(gx * lx + gy * ly)
    img = img + 60 * shading
    r = int(2.5 * radius)
    return img, (int(cx) - r, int(cy) - r, 2 * r, 2 * r)
