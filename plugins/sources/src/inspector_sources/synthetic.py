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
    streaks: np.ndarray = rng.normal(0, 1, (h, 1)).astype(np.float32)
    streaks = cv2.GaussianBlur(np.repeat(streaks, 8, axis=1), (1, 0), sigmaX=1, sigmaY=1.2)[:, :1]
    fine: np.ndarray = rng.normal(0, 1, (h, w)).astype(np.float32)
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

    mask: np.ndarray = np.zeros((h, w), np.uint8)
    x0, y0 = (w - g.plate_w) // 2, (h - g.plate_h) // 2
    cv2.rectangle(mask, (x0, y0), (x0 + g.plate_w, y0 + g.plate_h), 255, -1)
    for cx, cy in (
        (x0 + 50, y0 + 50),
        (x0 + g.plate_w - 50, y0 + 50),
        (x0 + 50, y0 + g.plate_h - 50),
        (x0 + g.plate_w - 50, y0 + g.plate_h - 50),
    ):
        cv2.circle(mask, (cx, cy), 18, 0, -1)
    label: np.ndarray = np.zeros((h, w), np.uint8)
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
        bx, by, bw, bh = cv2.boundingRect(mask)
        box = (bx, by, bw, bh)

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
    layer: np.ndarray = np.zeros(img.shape, np.float32)
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
    layer = layer / max(float(layer.max()), 1e-6)  # the drawn amplitude is the peak contrast
    sign = 1 if rng.random() < 0.5 else -1
    img = img + sign * rng.uniform(35, 60) * layer
    xs, ys = pts[:, 0], pts[:, 1]
    box = (int(xs.min()) - 2, int(ys.min()) - 2, int(xs.max() - xs.min()) + 5, int(ys.max() - ys.min()) + 5)
    return img, box


def draw_dent(img: np.ndarray, rng: np.random.Generator, region: tuple[int, int, int, int]):
    """A round depression 30-70 px across, 0.04-0.06 of its diameter deep, rendered by
    :func:`render_dent_shading` with a painted-panel reflectance under a light from the upper
    left (azimuth 135 deg) raking at 20-30 deg: a dark wall toward the light and a bright one
    away from it (shading contrast about 15-35 %). It lies on bare metal, clear of the label."""
    rx, ry, rw, rh = region
    diameter = rng.uniform(30, 70)
    r = diameter / 2
    lx0, ly0 = rx + rw / 2 - 90 - r - 4, ry + rh / 2 - 50 - r - 4  # the label, with a margin
    lx1, ly1 = rx + rw / 2 + 90 + r + 4, ry + rh / 2 + 50 + r + 4
    for _ in range(100):
        cx, cy = rx + r + rng.uniform(0, 1) * (rw - 2 * r), ry + r + rng.uniform(0, 1) * (rh - 2 * r)
        if not (lx0 < cx < lx1 and ly0 < cy < ly1):
            break
    depth = diameter * rng.uniform(0.04, 0.06)
    elevation = rng.uniform(20, 30)
    m = math.ceil(r) + 2
    x0, y0 = max(int(cx) - m, 0), max(int(cy) - m, 0)
    x1, y1 = min(int(cx) + m + 1, img.shape[1]), min(int(cy) + m + 1, img.shape[0])
    height = dent_height((y1 - y0, x1 - x0), (cx - x0, cy - y0), diameter, depth)
    img = img.copy()
    img[y0:y1, x0:x1] *= render_dent_shading(height, 135.0, elevation, PAINT)
    ri = round(r)
    return img, (int(cx) - ri, int(cy) - ri, 2 * ri, 2 * ri)


# --- Dent renderer ---------------------------------------------------------------------------
# One physical model serves the synthetic parts above, the dent detector's evaluation
# (bench/eval_dent.py) and its tests; docs/detectors/dent.md documents it.
#
# Geometry: a depression of depth d and radius R = D/2 with the profile
#     z(r) = -d * (1 - (r/R)^2)^2   for r < R,   0 outside
# (smooth, zero slope at the centre and at the rim, so D is the diameter of the disturbed area;
# steepest wall at r = R/sqrt(3), slope 1.54 d/R). ``aspect`` stretches it into an ellipse.
# Light: a distant light at azimuth ``az`` (image plane, counter-clockwise on screen from +x,
# i.e. 90 = light at the top of the image) and elevation ``el`` above the panel; camera
# orthographic, looking straight down (V = +z).
# Reflectance: Lambert plus a Blinn-Phong lobe,
#     I = ka + kd * max(n.L, 0) + ks * max(n.H, 0)^p,   H = (L + V) / |L + V|
# and the rendered pattern is the factor I(n) / I(flat): the panel's brightness (texture,
# uneven lighting) multiplies it, so a dent's shading contrast scales with the light on it.


@dataclasses.dataclass(frozen=True)
class DentMaterial:
    """Reflectance of a panel: ambient, Lambert and Blinn-Phong coefficients."""

    ambient: float
    diffuse: float
    specular: float
    shininess: float


PAINT = DentMaterial(ambient=0.25, diffuse=0.75, specular=0.15, shininess=20.0)
"""Painted panel: mostly diffuse, a weak broad gloss."""
METAL = DentMaterial(ambient=0.15, diffuse=0.35, specular=0.6, shininess=8.0)
"""Bare or brushed metal: a strong, broad specular lobe."""


def dent_height(
    shape: tuple[int, int],
    center: tuple[float, float],
    diameter_px: float,
    depth_px: float,
    aspect: float = 1.0,
    angle_deg: float = 0.0,
) -> np.ndarray:
    """Height map (float32, px units, <= 0) of one dent of ``shape`` (h, w) at ``center`` (x, y).

    ``diameter_px`` is the major axis when ``aspect`` (minor / major, <= 1) is below one;
    ``angle_deg`` turns the major axis (counter-clockwise on screen)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx - np.float32(center[0]), yy - np.float32(center[1])
    a = math.radians(angle_deg)
    u = dx * math.cos(a) - dy * math.sin(a)
    v = dx * math.sin(a) + dy * math.cos(a)
    radius = diameter_px / 2.0
    rho2 = (u / radius) ** 2 + (v / (radius * aspect)) ** 2
    return (-depth_px * np.clip(1.0 - rho2, 0.0, None) ** 2).astype(np.float32)


def light_vector(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Unit vector toward the light in image axes (x right, y down, z toward the camera)."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array([math.cos(el) * math.cos(az), -math.cos(el) * math.sin(az), math.sin(el)], np.float32)


def render_dent_shading(
    height: np.ndarray,
    light_azimuth_deg: float,
    light_elevation_deg: float,
    material: DentMaterial = PAINT,
) -> np.ndarray:
    """Relative radiance I(n) / I(flat) of a height map (px units) under a directional light:
    1.0 on flat panel, below one where a wall turns away from the light, above where it faces
    it or tilts the specular lobe toward the camera. Multiply a panel's image by it."""
    gy, gx = np.gradient(height.astype(np.float32))
    norm = np.sqrt(1.0 + gx * gx + gy * gy)
    nx, ny, nz = -gx / norm, -gy / norm, 1.0 / norm
    lv = light_vector(light_azimuth_deg, light_elevation_deg)
    hv = lv + np.array([0, 0, 1], np.float32)
    hv /= np.linalg.norm(hv)
    m = material

    def radiance(nx, ny, nz):
        lam = np.maximum(nx * lv[0] + ny * lv[1] + nz * lv[2], 0.0)
        spec = np.maximum(nx * hv[0] + ny * hv[1] + nz * hv[2], 0.0) ** m.shininess
        return m.ambient + m.diffuse * lam + m.specular * spec

    flat = radiance(np.float32(0), np.float32(0), np.float32(1))
    return (radiance(nx, ny, nz) / flat).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class DentScene:
    """One rendered panel with (or without) a dent, and what the renderer knows about it."""

    image: np.ndarray
    """uint8 grey panel."""
    center: tuple[float, float] | None
    diameter_px: float
    depth_px: float
    light_azimuth_deg: float
    light_elevation_deg: float
    material: str
    peak_contrast: float
    """max |panel with dent - panel without|, grey levels, before noise."""
    noise_sigma: float
    """Std of the flat panel's pixel-scale variation (texture + sensor noise), grey levels."""

    @property
    def visibility(self) -> float:
        """Peak shading contrast over the pixel noise sigma (the documented visibility)."""
        return self.peak_contrast / self.noise_sigma if self.noise_sigma > 0 else float("inf")


def render_dent_panel(
    rng: np.random.Generator,
    shape: tuple[int, int] = (480, 640),
    *,
    diameter_px: float | None,
    depth_px: float = 0.0,
    light_azimuth_deg: float = 135.0,
    light_elevation_deg: float = 30.0,
    material: str = "paint",
    noise_sigma: float = 2.0,
    aspect: float = 1.0,
    angle_deg: float = 0.0,
    base_level: float = 140.0,
) -> DentScene:
    """A panel lit by a directional light, with one dent (``diameter_px=None``: none).

    The panel: ``paint`` (orange peel: fine isotropic bumps, 1 % of the level) or ``metal``
    (brushed: horizontal streaks), its brightness ``base_level`` times an uneven-lighting
    field (a linear ramp of up to +-20 % and a vignette), then Gaussian sensor noise."""
    h, w = shape
    mat = PAINT if material == "paint" else METAL
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gx_, gy_ = rng.uniform(-0.2, 0.2, 2)
    light = 1.0 + gx_ * (xx / w - 0.5) * 2 + gy_ * (yy / h - 0.5) * 2
    light -= 0.12 * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2) * 4
    if material == "paint":
        peel = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 2.5)
        texture = 1.0 + 0.01 * peel / max(float(peel.std()), 1e-6)
    else:
        texture = 1.0 + plate_texture(rng, h, w) / 150.0
    panel = base_level * light * texture
    center = None
    factor = np.ones((h, w), np.float32)
    if diameter_px is not None:
        r = diameter_px / 2
        cx = rng.uniform(r + 8, w - r - 8)
        cy = rng.uniform(r + 8, h - r - 8)
        center = (float(cx), float(cy))
        factor = render_dent_shading(
            dent_height((h, w), center, diameter_px, depth_px, aspect, angle_deg),
            light_azimuth_deg,
            light_elevation_deg,
            mat,
        )
    noise = rng.normal(0, noise_sigma, (h, w)).astype(np.float32)
    clean = panel * factor
    peak = float(np.abs(clean - panel).max())
    flat = panel + noise
    # Pixel-scale variation: what remains of the flat panel after removing its slow lighting.
    sigma = float(np.std(flat - cv2.GaussianBlur(flat, (0, 0), 8)))
    img = np.clip(clean + noise, 0, 255).astype(np.uint8)
    return DentScene(
        img,
        center,
        float(diameter_px or 0.0),
        float(depth_px),
        float(light_azimuth_deg),
        float(light_elevation_deg),
        material,
        peak,
        sigma,
    )
