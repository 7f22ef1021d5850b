"""Dent detector: shallow depressions seen as a shading pattern under directional light.

A depression lit from one side shows a dark wall toward the light and a bright wall away from
it: a light-dark pair (a *doublet*) along the light direction, whose two halves return to the
panel's own level around it. How the detector finds it (on a working copy downscaled by an
integer factor, see ``working_size_px``):

1. Scale space: for scales sigma = s0 * sqrt(2)^k (a Gaussian pyramid, one blur per scale) the
   scale-normalised gradient ``sigma * grad(G_sigma * I)``. At a dent's centre it peaks (it is
   the second derivative of the smoothed depth along the light), at the scale that matches the
   dent's size. With a known light direction the gradient is projected onto it and only the
   depression's sign counts; otherwise its magnitude is used and the light direction is read
   from it.
2. Noise: each scale's response is divided by a robust spread (1.4826 MAD) of that response over
   the view, so the threshold ``min_contrast_sigma`` reads as "this many sigmas of the surface's
   own texture and noise at that scale". Smooth uneven lighting does not enter a local gradient.
3. Shape tests on each local maximum, along the profile through it in the gradient direction
   and across it: *level* (the smoothed brightness is the same on both far sides: a step edge,
   a shadow or the part's border is not), *odd* (dark on one side, bright on the other, mirror
   images: a line, a hole or a spot is even), *compact* (the response falls off across the
   gradient as fast as along it: a long crease or an edge does not), *rims* (the response turns
   negative at both walls, about equally: beside one wall of a dent, or of anything, only one
   side does).
   *Edge* (issue 11): along the same line on the view itself, the steepest brightness change
   times the radius over the profile's peak-to-peak: a dent's shading is the slope of its walls
   and ramps over its own size; a hole, a part's edge or a label is a step.
   Pairs that run on along their line are *creases*: looked for below the dents' sizes down to
   ``min_crease_width_px`` and, above them, where a dent would be refused as too elongated; they
   are held to ``crease_sigma_ratio`` times the boundary.
   Narrower creases (a fold 4-8 px wide, below every compact test) are found at the finest
   scale by their pair's response summed along their line, over that sum's noise in their
   orientation (``line_crease_sigma``; ``_line_creases``), under the same level, odd and rim
   tests and one more: a fold ends, a part's edge or a surface streak runs on.
4. Maxima that pass are merged across scales (the strongest wins within its own radius), the
   scale is interpolated, and the diameter read from it (``diameter = 3.0 * sigma``, calibrated
   on rendered dents); the depth proxy is the shading contrast: the doublet's peak-to-peak
   brightness over the local mean, in per cent.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from inspector_core import Detector, Finding, PluginConfig, View, hookimpl
from inspector_core.numeric import fast_median as _median

__all__ = ["DentConfig", "DentDetector"]

# diameter = _DIAMETER_PER_SIGMA * best scale (sigma, working px), measured on rendered dents of
# the profile z = -d (1 - (r/R)^2)^2 (bench/eval_dent.py, "size calibration").
_DIAMETER_PER_SIGMA = 7.5
# Scales per octave: sigma grows by sqrt(2) from one to the next.
_STEP = math.sqrt(2.0)
# Local maxima given the full shape tests per scale, strongest first, after the cheap compact
# test (8x as many are given that one: edges of holes, labels and car body lines bring many).
_MAX_PEAKS = 150
# Of them, at most this many elongated ones (creases; edges run on along their line as well).
_MAX_CREASE_PEAKS = 50
# The finest scale looked at (sigma, working px): finer ones cost the most on a large frame and
# hold mostly the surface's grain.
_CREASE_FLOOR = 1.4


class DentConfig(PluginConfig):
    """Settings of the dent detector. Sizes are in pixels of the view (the ROI)."""

    light_direction_deg: float | None = Field(
        None,
        ge=-360,
        le=360,
        description="Direction toward the light in the image plane, degrees "
        "counter-clockwise on screen from the +x axis (0 = light at the right, 90 = at the top). "
        "When known, only depressions lit from there count (a bump reads as the opposite pair). "
        "None: estimated per finding from its own shading.",
    )
    light_tolerance_deg: float = Field(
        60.0,
        gt=0,
        le=180,
        description="With a known light direction: how far a finding's own shading direction may deviate from it.",
    )
    min_contrast_sigma: float = Field(
        9.0,
        gt=0,
        description="Decision boundary (score 0.5): the dent's filter response over the "
        "robust noise of that response across the view, at the dent's scale.",
    )
    min_diameter_px: float = Field(24.0, gt=0, description="Smallest dent to look for, diameter in view pixels.")
    max_diameter_px: float = Field(160.0, gt=0, description="Largest dent to look for, diameter in view pixels.")
    min_diameter_mm: float | None = Field(
        None, gt=0, description="When set and the station is calibrated, replaces min_diameter_px."
    )
    max_diameter_mm: float | None = Field(
        None, gt=0, description="When set and the station is calibrated, replaces max_diameter_px."
    )
    max_step_ratio: float = Field(
        0.6,
        gt=0,
        description="Level test: |brightness beyond one wall - beyond the other| over "
        "the doublet's peak-to-peak; above it the pattern is an edge or a shadow, not a dent.",
    )
    max_even_ratio: float = Field(
        0.8,
        gt=0,
        description="Odd test: the profile's mirror-symmetric part over its "
        "antisymmetric part; above it the pattern is a line, a hole or a spot, not a dent.",
    )
    max_elongation: float = Field(
        0.75,
        gt=0,
        description="Compact test at the dent scales: the response one dent radius to either side "
        "across the shading direction over the response at the centre. Above it the pair is taken "
        "for a crease (held to crease_sigma_ratio times the boundary; a brushed streak's pair is "
        "elongated too) or, with creases_at_dent_scales off, refused.",
    )
    min_crease_width_px: float | None = Field(
        12.0,
        gt=0,
        description="Creases (a fold: a long, narrow light-dark pair) are looked for down to this "
        "width, below min_diameter_px; at those finer scales only elongated pairs count (a compact "
        "one that small is a pit or grain of the surface). None: no creases narrower than min_diameter_px.",
    )
    min_crease_elongation: float = Field(
        0.7,
        gt=0,
        description="At the crease scales (below min_diameter_px): the response one width to either side "
        "along the pair's line over the centre's must reach this (a crease continues, a pit does not).",
    )
    creases_at_dent_scales: bool = Field(
        True,
        description="At the dent scales, pairs more elongated than max_elongation are taken as "
        "creases (at the crease boundary) rather than refused as edges (the level and odd tests "
        "refuse steps and lines).",
    )
    line_crease_sigma: float | None = Field(
        20.0,
        gt=0,
        description="Narrow creases at the finest scale, their light-dark pair summed along the "
        "line (line_crease_length_px): the boundary (score 0.5) of that sum over its noise, by "
        "orientation. None: not looked for.",
    )
    line_crease_length_px: float = Field(
        24.0,
        gt=0,
        description="Length (px of the working image: view px on a view of about working_size_px, "
        "twice as many on one the detector halves first) over which a narrow crease's pair, or a "
        "fold's dark line, is summed; creases shorter than about this are not found by the line sums.",
    )
    max_line_run_on: float = Field(
        0.5,
        gt=0,
        description="A narrow crease must end: the line sum's response four half-lengths along "
        "the line, on the side where it falls off more, over the centre's must stay below this "
        "(a part's edge or a streak of the surface runs on through the view).",
    )
    dark_fold_sigma: float | None = Field(
        10.0,
        gt=0,
        description="Folds seen as one dark line (both walls of a deep, narrow fold turned away "
        "from a high light): a dark line about min_crease_width_px wide, summed along "
        "line_crease_length_px, that ends within the view (no darkness goes on beyond an end, "
        "straight on or turning), has brighter surface on both sides, soft walls (the edge test) "
        "and is at least a quarter of min_crease_width_px wide at half its depth (a fine scratch "
        "is narrower); the boundary (score 0.5) of that sum over its noise, by orientation. "
        "None: not looked for.",
    )
    line_crease_candidates: int = Field(
        200,
        ge=1,
        description="Maxima of the finest scale's response given the line sum, strongest first.",
    )
    min_crease_rim_balance: float = Field(
        0.2,
        ge=0,
        le=1,
        description="The rim test for creases (see min_rim_balance).",
    )
    crease_sigma_ratio: float = Field(
        1.7,
        gt=0,
        description="A crease's decision boundary is min_contrast_sigma times this (the fine "
        "scales hold more of the surface's own streaks and grains).",
    )
    max_edge_sharpness: float = Field(
        4.0,
        gt=0,
        description="Edge test: the steepest brightness change along the pattern (less its noise) "
        "times the dent's radius over the pattern's peak-to-peak. A dent's shading ramps over its "
        "walls (1.5-3); a hole, a part's edge or a label is a step (about radius / 2.5).",
    )
    noise_direction_weight: float = Field(
        0.3,
        ge=0,
        le=1,
        description="At the dent scales, how much the surface's noise by direction counts: the "
        "response is divided by the noise in its own direction raised to this power over the "
        "pooled noise (1: fully, as at the crease scales; 0: the pooled noise only). Ground and "
        "brushed surfaces vary more across their streaks than along them.",
    )
    min_rim_balance: float = Field(
        0.35,
        ge=0,
        le=1,
        description="Rim test: the weaker over the stronger of the two opposite "
        "responses at the dent's two walls; below it the point is a wall of something, not a centre.",
    )
    max_shading_contrast_pct: float = Field(
        300.0,
        gt=0,
        description="Light-dark pairs stronger than this (peak-to-peak over the local brightness, "
        "%) are taken for holes or stains. Under raking light a dent's shading exceeds 75 % "
        "(the former default, which refused the deepest rendered dents); lower it where the "
        "light is steep and the dents shallow.",
    )
    working_size_px: int = Field(
        512,
        ge=64,
        description="The view is downscaled by the power of two that brings its longer "
        "side nearest to this (speed); dents under about 10 working pixels across are not seen.",
    )
    max_findings: int = Field(10, ge=1, description="At most this many findings per view, best first.")

    @model_validator(mode="after")
    def _diameters_in_order(self) -> DentConfig:
        for unit in ("px", "mm"):
            lo, hi = getattr(self, f"min_diameter_{unit}"), getattr(self, f"max_diameter_{unit}")
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(
                    f"min_diameter_{unit} ({lo:g}) is larger than max_diameter_{unit} ({hi:g}): "
                    "no dent could be found; swap them or widen the range"
                )
        return self


_Where = tuple[np.ndarray, np.ndarray, np.ndarray, int]


def _where(shape: tuple[int, ...], xs: np.ndarray, ys: np.ndarray) -> _Where:
    """Where bilinear samples at float coordinates (clamped to an image of ``shape``) read: the
    flat index of each top-left neighbour, the two fractions, and the row length. Computed once
    for every map of that shape sampled at the same points."""
    h, w = shape
    xs = np.clip(xs, 0, w - 1.001)
    ys = np.clip(ys, 0, h - 1.001)
    x0, y0 = xs.astype(np.int32), ys.astype(np.int32)
    return y0.astype(np.intp) * w + x0, xs - x0, ys - y0, w


def _line_sums(img: np.ndarray, xs: np.ndarray, ys: np.ndarray, nx: np.ndarray, ny: np.ndarray, t: np.ndarray):
    """Means of ``img`` along lines through the points ``(xs, ys)`` (n), at the offsets ``t``
    along each line, for normals ``(nx, ny)`` of shape (n or 1, k): (n, k)."""
    t3 = t[None, None, :]
    return _sample(img, xs[:, None, None] - t3 * ny[..., None], ys[:, None, None] + t3 * nx[..., None]).mean(axis=2)


def _view_points(cands: list[dict], factor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The candidates' centres in view px and their shading (or across-the-line) directions."""
    return (
        factor * np.array([d["x"] for d in cands]),
        factor * np.array([d["y"] for d in cands]),
        np.array([d["ux"] for d in cands]),
        np.array([d["uy"] for d in cands]),
    )


_DARK_FOLD_ACROSS = 0.7
"""A dark fold's line sum across the line is at most this share of the sum along it (a hole, a
spot or a blob is as dark across as along)."""

_DARK_FOLD_EVEN = 0.75
"""With a known light, a dark line whose dimmer side rises less than this share of its brighter
side's rise is uneven: the dark half of a light-dark pair, not a fold's two walls."""

_DARK_LINE_WIDTH_PER_CREASE = 0.25
"""A dark fold's line is at least this times min_crease_width_px wide at half its depth
(view px): 3 px at the default, where a fine scratch's is 1-2 px (a sharp 3 px line passes)."""


def _sample(img: np.ndarray, xs: np.ndarray | None = None, ys: np.ndarray | None = None, where: _Where | None = None):
    """Bilinear samples of ``img`` at float coordinates (clamped to the image), or at ``where``."""
    if where is None:
        assert xs is not None and ys is not None
        where = _where(img.shape, xs, ys)
    i, fx, fy, w = where
    flat = img.ravel()
    gx = 1 - fx
    a = flat[i] * gx + flat[i + 1] * fx
    b = flat[i + w] * gx + flat[i + (w + 1)] * fx
    return a * (1 - fy) + b * fy


def _robust_spread(samples: np.ndarray) -> np.ndarray:
    """1.4826 x the median absolute deviation of each row of ``samples`` (at least 1e-4)."""
    mid = samples.shape[1] // 2
    dev = np.abs(samples - np.partition(samples, mid, axis=1)[:, mid : mid + 1])
    return np.maximum(1.4826 * np.partition(dev, mid, axis=1)[:, mid], 1e-4)


def _line_peaks(resp: np.ndarray, threshold: float, margin: int, k: int) -> np.ndarray:
    """Flat indices of the local maxima (3 x 3) of ``resp`` at or above ``threshold`` and at
    least ``margin`` px inside the map: the ``k`` strongest, in no particular order."""
    h, w = resp.shape
    peaks = resp >= np.float32(threshold)
    peaks[:margin] = False
    peaks[h - margin :] = False
    peaks[:, :margin] = False
    peaks[:, w - margin :] = False
    peaks &= resp >= cv2.dilate(resp, np.ones((3, 3), np.uint8))
    flat = np.flatnonzero(peaks)
    if len(flat) > k:
        flat = flat[np.argpartition(-resp.ravel()[flat], k)[:k]]
    return flat


def _d_dy(img: np.ndarray, scale: float) -> npt.NDArray[np.float32]:
    """``cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=1, scale=scale)`` of a float32 image, to the bit,
    in about a third of its time (OpenCV's column pass of a 3-tap derivative is slow on float).
    The same arithmetic: the scale on the 1-tap smoothing pass (as a float32), then the central
    difference; the default reflect-101 border makes the first and last rows 0."""
    if img.shape[0] < 3:
        return np.asarray(cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=1, scale=scale), np.float32)
    scaled = img * np.float32(scale)
    out = np.empty_like(scaled)
    np.subtract(scaled[2:], scaled[:-2], out=out[1:-1])
    out[0] = 0.0
    out[-1] = 0.0
    return out


def _background(pyramid: list[np.ndarray], level: int, sigma: float) -> np.ndarray:
    """A Gaussian blur of ``pyramid[level]`` at ``sigma`` (its own px), computed on a coarser
    level of the same pyramid (extended when needed) and brought back to its size."""
    img = pyramid[level]
    k = 0
    while sigma / (1 << k) > 4.0 and min(pyramid[level + k].shape) >= 16:
        k += 1
        if len(pyramid) <= level + k:
            pyramid.append(cv2.pyrDown(pyramid[-1]))
    small = cv2.GaussianBlur(pyramid[level + k], (0, 0), sigma / (1 << k), borderType=cv2.BORDER_REFLECT)
    if k == 0:
        return small
    return cv2.resize(small, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)


class _Scale:
    """One scale of the scale space: its pyramid level, band-passed image and gradient."""

    __slots__ = ("sigma", "level", "band", "background", "gx", "gy", "resp", "noise", "light", "aniso", "min_noise")

    def __init__(
        self,
        sigma: float,
        level: int,
        pyramid: list[np.ndarray],
        light: tuple[float, float] | None,
        weight: float = 1.0,
    ):
        base = pyramid[level]
        self.sigma, self.level = sigma, level
        s_lev = sigma / (1 << level)
        # A pyramid level already carries some blur (about 0.5 level px); add the rest.
        blur = math.sqrt(max(s_lev * s_lev - 0.25, 0.3))
        smooth = cv2.GaussianBlur(base, (0, 0), blur)
        # Minus a background two dent diameters wide: uneven lighting (ramps, vignettes) leaves
        # no slope and no step in the band, a dent's own shading is untouched.
        self.background = _background(pyramid, level, 2.0 * _DIAMETER_PER_SIGMA * s_lev)
        self.band = smooth - self.background
        self.gx = cv2.Sobel(self.band, cv2.CV_32F, 1, 0, ksize=1, scale=0.5 * s_lev)
        self.gy = _d_dy(self.band, 0.5 * s_lev)
        h, w = base.shape
        stride = max(1, int(math.sqrt(h * w / 4000)))
        sub = np.concatenate([self.gx[::stride, ::stride].ravel(), self.gy[::stride, ::stride].ravel()])
        self.noise = max(1.4826 * _median(np.abs(sub - np.float32(_median(sub)))), 1e-3)
        if light is None:
            self.resp = cv2.magnitude(self.gx, self.gy)
        else:
            # Intensity rises away from the light across a depression: gradient along -light.
            self.resp = self.gx * -light[0] + self.gy * -light[1]
        # The surface's noise by direction: a ground or brushed texture varies far more across
        # its streaks than along them. A robust covariance of the gradient (spreads along x, y and
        # the diagonals) whose eigenvalues are raised to at least the pooled noise: a direction
        # in which the surface is noisier than on average counts less, none counts more (the
        # robust spread of a sparse texture underestimates its tails). At the dent scales it
        # counts with the power ``weight`` (1 fully, 0 not at all).
        sx, sy = sub[: sub.size // 2], sub[sub.size // 2 :]

        sx, sy = sx[::2], sy[::2]  # 2000 of each are enough for the spreads
        # A gradient's median is 0: each spread is the MAD about 0, the four in one partition.
        mad = np.median(np.abs(np.stack([sx, sy, sx + sy, sx - sy])), axis=1)
        vxx, vyy, vpp, vmm = (1.4826 * mad.astype(np.float64)) ** 2
        vxy = (vpp - vmm) / 4
        n2 = self.noise * self.noise
        tr, dt = vxx + vyy, vxx * vyy - vxy * vxy
        l1 = tr / 2 + math.sqrt(max(tr * tr / 4 - dt, 0.0))
        self.light = light
        self.aniso: tuple[float, float, float, float] | None = None
        self.min_noise = self.noise
        if l1 <= 1.05 * n2 or weight <= 0:
            return
        # Principal direction (e1) of the larger spread; the smaller one is at least n2.
        ang = 0.5 * math.atan2(2 * vxy, vxx - vyy)
        l2 = max(tr - l1, n2)
        l1, l2 = n2 * (l1 / n2) ** weight, n2 * (l2 / n2) ** weight
        self.aniso = (math.cos(ang), math.sin(ang), l1, l2)
        self.min_noise = math.sqrt(l2)

    def snr_of(self, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        """The response over the noise in its own direction, of gradient values (gx, gy) of this
        scale (evaluated at candidate points only: no full map is made)."""
        light = self.light
        resp = np.hypot(gx, gy) if light is None else gx * -light[0] + gy * -light[1]
        if self.aniso is None:
            return resp / self.noise
        e1x, e1y, l1, l2 = self.aniso
        if light is None:
            p1 = gx * e1x + gy * e1y
            p2 = gy * e1x - gx * e1y
            return np.sqrt(p1 * p1 / l1 + p2 * p2 / l2)
        lx, ly = -light[0], -light[1]
        a1, a2 = lx * e1x + ly * e1y, ly * e1x - lx * e1y
        return resp / math.sqrt(a1 * a1 * l1 + a2 * a2 * l2)


class DentDetector(Detector):
    """Shallow dents under directional light: a compact, level, odd light-dark pair."""

    name = "dent"
    kinds = ("dent",)
    Config = DentConfig

    def __init__(self, config: DentConfig, *, station_dir: Path) -> None:
        super().__init__(config, station_dir=station_dir)
        self.config: DentConfig = config
        # Where the narrow creases' line-sum noise is sampled, per view size (_line_creases).
        self._noise_points: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def warm_up(self, example: np.ndarray | None = None) -> None:
        img = example if example is not None else np.full((256, 256), 128, np.uint8)
        self.inspect(View(image=img, part_id="warm-up"))

    # -- the pipeline -------------------------------------------------------------------------
    def inspect(self, view: View) -> list[Finding]:
        c = self.config
        gray = view.pyramid(0)  # view.gray, shared with the part's other steps
        h, w = gray.shape[:2]
        # A power of two (INTER_AREA has a fast path for those), the nearest to the target size.
        factor = 1 << max(0, round(math.log2(max(h, w) / c.working_size_px)))
        small, k = gray, 0
        while factor > 1 and min(small.shape[:2]) >= 32:  # pyrDown: a 5-tap blur and decimation
            k += 1
            small = view.pyramid(k)  # cv2.pyrDown of level k - 1, computed once per part
            factor //= 2
        factor = max(1, round(w / small.shape[1]))
        work = small.astype(np.float32)
        wh, ww = work.shape
        if min(wh, ww) < 16:
            return []

        dmin, dmax = c.min_diameter_px, c.max_diameter_px
        if view.calibration.mm_per_px:
            if c.min_diameter_mm is not None:
                dmin = c.min_diameter_mm / view.calibration.mm_per_px
            if c.max_diameter_mm is not None:
                dmax = c.max_diameter_mm / view.calibration.mm_per_px
        s_lo = max(dmin / factor / _DIAMETER_PER_SIGMA, 1.4)
        s_hi = min(dmax / factor / _DIAMETER_PER_SIGMA, min(wh, ww) / 8.0)
        if s_hi < s_lo:
            return []
        s_first = s_lo
        if c.min_crease_width_px is not None:
            s_first = min(s_lo, max(c.min_crease_width_px / factor / _DIAMETER_PER_SIGMA, _CREASE_FLOOR))
        # One scale below and above the range, so the best scale can be interpolated.
        sigmas = [s_first / _STEP]
        while sigmas[-1] < s_hi * _STEP:
            sigmas.append(sigmas[-1] * _STEP)

        light = None
        if c.light_direction_deg is not None:
            a = math.radians(c.light_direction_deg)
            light = (math.cos(a), -math.sin(a))

        pyramid: list[np.ndarray] = [work]
        scales: list[_Scale] = []
        for s in sigmas:
            level = max(0, int(math.floor(math.log2(s / 1.2)))) if s > 1.2 else 0
            while len(pyramid) <= level and min(pyramid[-1].shape) >= 16:
                pyramid.append(cv2.pyrDown(pyramid[-1]))
            level = min(level, len(pyramid) - 1)
            crease_scale = s < s_lo / math.sqrt(_STEP)
            scales.append(_Scale(s, level, pyramid, light, 1.0 if crease_scale else c.noise_direction_weight))

        floor_snr = c.min_contrast_sigma * math.sqrt(self.report_floor / (1 - self.report_floor))
        kept: list[dict] = []
        for i in range(1, len(scales) - 1):
            crease = scales[i].sigma < s_lo / math.sqrt(_STEP)
            kept.extend(self._candidates(scales, i, floor_snr, light, crease))
        if c.line_crease_sigma is not None:
            kept.extend(self._line_creases(scales[0], floor_snr, light))
        if c.dark_fold_sigma is not None and c.min_crease_width_px is not None:
            target = c.min_crease_width_px / factor / 6.0  # the darkest line at the finer scales
            kept.extend(self._dark_folds(min(scales, key=lambda q: abs(math.log(q.sigma / target))), floor_snr, light))
        # The edge test, on the view itself (at full resolution a step stays a step), for the
        # strongest candidates only: the weaker ones could not become findings.
        kept.sort(key=lambda d: -d["snr"])
        kept = kept[: 4 * c.max_findings]
        if kept:
            sharp = self._edge_sharpness(
                gray, *_view_points(kept, factor), 0.5 * factor * np.array([d["diam"] for d in kept])
            )
            for d, sh in zip(kept, sharp.tolist(), strict=True):
                d["sharp"] = sh
            kept = [d for d in kept if d["sharp"] <= c.max_edge_sharpness]
        dark = [d for d in kept if d.get("dark")]
        if dark and c.min_crease_width_px is not None:
            # A fold's dark line is its two walls, turned from the light: several px wide. A fine
            # scratch or a scribed line is a dark line too, 1-2 px: refused by its width, on the
            # view itself (the working scale blurs a scratch as wide as its own sigma).
            widths = self._line_width(gray, *_view_points(dark, factor), 0.5 * factor * c.line_crease_length_px, factor)
            for d, lw in zip(dark, widths.tolist(), strict=True):
                d["line_width"] = lw
            floor = _DARK_LINE_WIDTH_PER_CREASE * c.min_crease_width_px
            kept = [d for d in kept if d.get("line_width", floor) >= floor]
        findings: list[dict] = []
        for d in kept:
            if any(
                math.hypot(d["x"] - e["x"], d["y"] - e["y"]) < 0.5 * (d["diam"] + e["diam"]) * 0.75 for e in findings
            ):
                continue
            findings.append(d)
            if len(findings) >= c.max_findings:
                break
        return [self._finding(d, factor, view) for d in findings]

    def _candidates(self, scales: list[_Scale], i: int, floor_snr: float, light, crease: bool = False) -> list[dict]:
        """Local maxima of scale ``i`` that pass the shape tests, all tested at once. At a crease
        scale (below the dents' size range) only elongated ones pass, at a dent scale any up to
        ``max_elongation``."""
        c = self.config
        sc = scales[i]
        resp = sc.resp
        # Centres are maxima of the raw response (the noise weighting by direction would move
        # them off a dent's centre); their strength is the noise-weighted one.
        # No point reaches floor_snr unless its raw response does over the quietest direction's noise.
        peaks = (resp >= np.float32(floor_snr * sc.min_noise)) & (resp >= cv2.dilate(resp, np.ones((3, 3), np.uint8)))
        flat = np.flatnonzero(peaks)  # raster order, as np.nonzero(peaks), and faster on a 2-D mask
        if len(flat) == 0:
            return []
        snr_at = sc.snr_of(sc.gx.ravel()[flat], sc.gy.ravel()[flat])
        strong = snr_at >= floor_snr
        flat, snr_at = flat[strong], snr_at[strong]
        if len(flat) == 0:
            return []
        order = np.argsort(-snr_at)[: 8 * _MAX_PEAKS]
        flat = flat[order]
        ys, xs = np.divmod(flat, resp.shape[1])
        gx, gy = sc.gx.ravel()[flat], sc.gy.ravel()[flat]
        gn = np.hypot(gx, gy)
        ok = gn > 0
        ux, uy = gx / np.maximum(gn, 1e-9), gy / np.maximum(gn, 1e-9)  # dark -> bright: away from the light
        if light is not None:
            ok &= -(ux * light[0] + uy * light[1]) >= math.cos(math.radians(c.light_tolerance_deg))
        radius = 0.5 * _DIAMETER_PER_SIGMA * sc.sigma / (1 << sc.level)
        # Compact, first (it is the cheapest and throws out the many maxima along edges): the
        # projected response one radius to either side, across u.
        off = np.array([-radius, radius], np.float32)[None, :]
        px = xs.astype(np.float32)[:, None] - off * uy[:, None]
        py = ys.astype(np.float32)[:, None] + off * ux[:, None]
        at = _where(resp.shape, px, py)
        elong = (_sample(sc.gx, where=at) * ux[:, None] + _sample(sc.gy, where=at) * uy[:, None]).max(axis=1)
        elong /= np.maximum(gn, 1e-9)
        # A crease continues along its line; at the dent scales a pair more elongated than
        # max_elongation is a crease too (held to the crease boundary), below them only creases count.
        is_crease = (elong >= c.min_crease_elongation) if crease else (elong > c.max_elongation)
        if crease or not c.creases_at_dent_scales:
            ok &= is_crease if crease else ~is_crease
            sel = np.nonzero(ok)[0][:_MAX_PEAKS]
        else:  # edges run on along their line too: the elongated ones get their own, smaller share
            sel = np.sort(
                np.concatenate(
                    [np.nonzero(ok & ~is_crease)[0][:_MAX_PEAKS], np.nonzero(ok & is_crease)[0][:_MAX_CREASE_PEAKS]]
                )
            )
        if len(sel) == 0:
            return []
        xs, ys, gn, ux, uy, elong = xs[sel], ys[sel], gn[sel], ux[sel], uy[sel], elong[sel]
        is_crease = is_crease[sel]
        ok = np.ones(len(sel), bool)
        xf, yf = xs.astype(np.float32)[:, None], ys.astype(np.float32)[:, None]
        uxc, uyc = ux[:, None], uy[:, None]
        # Level and odd: the band's profile along u, out to 1.5 radii or, near the view's border,
        # as far as the view goes on both sides (a clamped profile would look like a step).
        h, w = resp.shape
        reach = np.full(len(xs), 1.5 * radius, np.float32)
        for coord, comp, size in ((xs, ux, w), (ys, uy, h)):
            a = np.abs(comp) + 1e-6
            room = np.minimum(coord, size - 1 - coord) / a
            reach = np.minimum(reach, room.astype(np.float32))
        reach = np.maximum(reach, 0.5 * radius)[:, None]
        t = np.linspace(-1.0, 1.0, 17, dtype=np.float32)[None, :] * reach
        p = _sample(sc.band, xf + t * uxc, yf + t * uyc)
        amp = np.maximum(p.max(axis=1) - p.min(axis=1), 1e-6)
        step = np.abs(p[:, -1] - p[:, 0]) / amp
        e = p - p[:, 8:9]
        odd = np.abs(e[:, 9:] - e[:, 7::-1]).sum(axis=1)
        even = np.abs(e[:, 9:] + e[:, 7::-1]).sum(axis=1) / np.maximum(odd, 1e-6)
        # Rims: a bowl's shading turns back at both walls, so the projected response is negative
        # on both sides of the centre, about equally; beside a wall only one side is.
        tl = np.linspace(0.4, 1.4, 6, dtype=np.float32)[None, :] * radius
        at = _where(resp.shape, xf + tl * uxc, yf + tl * uyc)
        q_plus = -(_sample(sc.gx, where=at) * uxc + _sample(sc.gy, where=at) * uyc).min(axis=1)
        at = _where(resp.shape, xf - tl * uxc, yf - tl * uyc)
        q_minus = -(_sample(sc.gx, where=at) * uxc + _sample(sc.gy, where=at) * uyc).min(axis=1)
        rims = np.minimum(q_plus, q_minus) / np.maximum(np.maximum(q_plus, q_minus), 1e-6)
        # Halo: next to a large bright or dark object (a label, a hole, the part's border) the
        # subtracted background slopes and the band shows a smooth false pattern; a dent's
        # response comes from the image itself, not from the background's slope.
        d = np.float32(max(radius, 1.0))
        bg_slope = (
            _sample(sc.background, xf + d * uxc, yf + d * uyc) - _sample(sc.background, xf - d * uxc, yf - d * uyc)
        )[:, 0] / (2 * d)
        halo = np.abs(bg_slope) * (sc.sigma / (1 << sc.level)) / np.maximum(gn, 1e-9)
        ok &= halo <= 0.5
        ok &= (step <= c.max_step_ratio) & (even <= c.max_even_ratio)
        ok &= rims >= np.where(is_crease, c.min_crease_rim_balance, c.min_rim_balance)
        unit = 1 << sc.level
        wx = (xs.astype(np.float32) + 0.5) * unit - 0.5
        wy = (ys.astype(np.float32) + 0.5) * unit - 0.5
        # This scale must be the place's size scale: the raw (not noise-weighted) response peaks
        # here over scale. Its strength is the best noise-weighted response at this or a finer scale
        # (a large dent stands out best from the noise at a finer scale than its size).
        # Where these points fall on each pyramid level: shared by every map of that level.
        at_level: dict[int, _Where] = {}

        def on(q: _Scale) -> _Where:
            if q.level not in at_level:
                unit = 1 << q.level
                at_level[q.level] = _where(q.resp.shape, (wx + 0.5) / unit - 0.5, (wy + 0.5) / unit - 0.5)
            return at_level[q.level]

        r_prev, r_next = (_sample(scales[j].resp, where=on(scales[j])) for j in (i - 1, i + 1))
        r_here = sc.resp[ys, xs]
        ok &= (r_here >= r_prev) & (r_here >= r_next)
        if not ok.any():
            return []
        keep = np.nonzero(ok)[0]
        wx, wy, ux, uy = wx[keep], wy[keep], ux[keep], uy[keep]
        r_prev, r_here, r_next = r_prev[keep], r_here[keep], r_next[keep]
        at_level = {k: (a[keep], b[keep], c_[keep], w) for k, (a, b, c_, w) in at_level.items()}
        # (Finer scales only: a coarser one reaches out to whatever edge lies beyond the dent.)
        best_snr = np.max(
            [q.snr_of(_sample(q.gx, where=on(q)), _sample(q.gy, where=on(q))) for q in scales[: i + 1]], axis=0
        )
        den = r_prev - 2 * r_here + r_next
        shift = np.where(den < 0, 0.5 * (r_prev - r_next) / np.where(den < 0, den, -1.0), 0.0)
        diam = _DIAMETER_PER_SIGMA * sc.sigma * _STEP ** np.clip(shift, -0.5, 0.5)
        # Depth proxy: the doublet's peak-to-peak on a finer scale's band (less smoothing).
        fs = scales[max(0, i - 2)]
        fu = 1 << fs.level
        tw = np.linspace(-0.6, 0.6, 13, dtype=np.float32)[None, :] * (diam / fu)[:, None]
        fx, fy = ((wx + 0.5) / fu - 0.5)[:, None], ((wy + 0.5) / fu - 0.5)[:, None]
        fine = _sample(fs.band, fx + tw * ux[:, None], fy + tw * uy[:, None])
        ptp = fine.max(axis=1) - fine.min(axis=1)
        level = np.maximum(_sample(fs.background, where=on(fs)), 1.0)
        out = []
        for n, k in enumerate(keep.tolist()):
            if 100.0 * ptp[n] / level[n] > c.max_shading_contrast_pct:
                continue
            out.append(
                {
                    "x": float(wx[n]),
                    "y": float(wy[n]),
                    "diam": float(diam[n]),
                    "snr": float(best_snr[n]) / (c.crease_sigma_ratio if is_crease[k] else 1.0),
                    "contrast_gray": float(ptp[n]),
                    "contrast_pct": 100.0 * float(ptp[n] / level[n]),
                    "light_deg": math.degrees(math.atan2(float(uy[n]), -float(ux[n]))) % 360.0,
                    "step": float(step[k]),
                    "even": float(even[k]),
                    "elong": float(elong[k]),
                    "rims": float(rims[k]),
                    "ux": float(ux[n]),
                    "uy": float(uy[n]),
                    "crease": bool(is_crease[k]),
                }
            )
        return out

    def _line_creases(self, sc: _Scale, floor_snr: float, light) -> list[dict]:
        """Narrow creases, at the finest scale: a crease too narrow for the scale space's compact
        tests still shades as a light-dark pair along its whole length, so the pair's response
        is summed along its line (``line_crease_length_px``), which raises it over the surface's
        noise by the root of the number of independent samples. The sum's noise is measured per
        orientation on points spread over the view (streaks of a ground surface run one way and
        count there). What passes must be a pair on every test of the dents, on the profile
        averaged along the line: level, odd (a printed line, a scratch or a groove's dark line is
        even), rims on both walls, and it must continue along the line (a pit does not)."""
        c = self.config
        if c.line_crease_sigma is None:
            return []
        boundary = c.line_crease_sigma
        unit = 1 << sc.level
        gx, gy, band = sc.gx, sc.gy, sc.band
        h, w = gx.shape
        half = 0.5 * c.line_crease_length_px / unit
        margin = int(half) + 3
        if h <= 2 * margin + 8 or w <= 2 * margin + 8:
            return []
        n_along = 9
        tl = np.linspace(-1.0, 1.0, n_along, dtype=np.float32)[None, :] * np.float32(half)

        def along(xs, ys, nx, ny, t=tl):
            """The response projected on (nx, ny) at points along the line through (xs, ys)
            (the line runs across (nx, ny)): one row per point."""
            at = _where(gx.shape, xs[:, None] - t * ny[:, None], ys[:, None] + t * nx[:, None])
            return _sample(gx, where=at) * nx[:, None] + _sample(gy, where=at) * ny[:, None]

        # Noise of the line sum by orientation, from fixed points spread over the view (the
        # nearest pixel: a noise estimate needs no interpolation).
        n_bins, m = 8, 192
        idx, bx, by = self._line_points(h, w, half, margin, n_bins, m, tl[0])
        noise = _robust_spread((gx.ravel()[idx] * bx + gy.ravel()[idx] * by).mean(axis=1))

        # Candidates: maxima of the point response (the line sum is taken at those only).
        flat = _line_peaks(sc.resp, 2.5 * sc.noise, margin, c.line_crease_candidates)
        if len(flat) == 0:
            return []
        ys, xs = np.divmod(flat, w)
        xs, ys = xs.astype(np.float32), ys.astype(np.float32)
        phi0 = np.arctan2(gy.ravel()[flat], gx.ravel()[flat])
        line_floor = floor_snr * boundary / c.min_contrast_sigma
        # The line sum along the point's own direction first; the ones near the floor are
        # refined over two more orientations (a curved crease, a noisy point direction).
        b0 = np.round((phi0 % math.pi) / (math.pi / n_bins)).astype(int) % n_bins
        r0 = along(xs, ys, np.cos(phi0).astype(np.float32), np.sin(phi0).astype(np.float32)).mean(axis=1)
        near = r0 / noise[b0] >= 0.6 * line_floor
        xs, ys, phi0, r0 = xs[near], ys[near], phi0[near], r0[near]
        if len(xs) == 0:
            return []
        ph = np.concatenate([phi0 - 0.35, phi0 + 0.35])
        r = along(np.tile(xs, 2), np.tile(ys, 2), np.cos(ph).astype(np.float32), np.sin(ph).astype(np.float32))
        r = np.stack([r0, *r.mean(axis=1).reshape(2, -1)])
        pick = r.argmax(axis=0)
        best_r = r[pick, np.arange(len(xs))]
        best_phi = np.stack([phi0, ph[: len(xs)], ph[len(xs) :]])[pick, np.arange(len(xs))]
        ux, uy = np.cos(best_phi).astype(np.float32), np.sin(best_phi).astype(np.float32)
        b = np.round((best_phi % math.pi) / (math.pi / n_bins)).astype(int) % n_bins
        snr = best_r / noise[b]
        ok = snr >= line_floor
        if light is not None:
            ok &= -(ux * light[0] + uy * light[1]) >= math.cos(math.radians(c.light_tolerance_deg))
        sel = np.nonzero(ok)[0]
        if len(sel) == 0:
            return []
        xs, ys, ux, uy, snr, best_r = xs[sel], ys[sel], ux[sel], uy[sel], snr[sel], best_r[sel]
        # It continues along its line: most of the samples carry the pair.
        prof_along = along(xs, ys, ux, uy)
        fill = (prof_along > 0.3 * np.maximum(prof_along.max(axis=1, keepdims=True), 1e-9)).mean(axis=1)
        # Level, odd and rims on the profile across, averaged along the line.
        radius = max(0.5 * _DIAMETER_PER_SIGMA * sc.sigma / unit, 2.5)
        t5 = np.linspace(-1.0, 1.0, 5, dtype=np.float32) * np.float32(half)
        ta = np.linspace(-1.0, 1.0, 17, dtype=np.float32) * np.float32(1.5 * radius)
        px = xs[:, None, None] + ta[None, None, :] * ux[:, None, None] - t5[None, :, None] * uy[:, None, None]
        py = ys[:, None, None] + ta[None, None, :] * uy[:, None, None] + t5[None, :, None] * ux[:, None, None]
        p = _sample(band, px, py).mean(axis=1)
        amp = np.maximum(p.max(axis=1) - p.min(axis=1), 1e-6)
        step = np.abs(p[:, -1] - p[:, 0]) / amp
        e = p - p[:, 8:9]
        odd = np.abs(e[:, 9:] - e[:, 7::-1]).sum(axis=1)
        even = np.abs(e[:, 9:] + e[:, 7::-1]).sum(axis=1) / np.maximum(odd, 1e-6)
        tr = np.linspace(0.4, 1.4, 6, dtype=np.float32) * np.float32(radius)
        tr = np.concatenate([tr, -tr])  # both walls in one pass
        qx = xs[:, None, None] + tr[None, None, :] * ux[:, None, None] - t5[None, :, None] * uy[:, None, None]
        qy = ys[:, None, None] + tr[None, None, :] * uy[:, None, None] + t5[None, :, None] * ux[:, None, None]
        at = _where(gx.shape, qx, qy)
        proj = (_sample(gx, where=at) * ux[:, None, None] + _sample(gy, where=at) * uy[:, None, None]).mean(axis=1)
        q0, q1 = -proj[:, :6].min(axis=1), -proj[:, 6:].min(axis=1)
        rims = np.minimum(q0, q1) / np.maximum(np.maximum(q0, q1), 1e-6)
        ok = (fill >= c.min_crease_elongation) & (step <= c.max_step_ratio) & (even <= c.max_even_ratio)
        ok &= rims >= c.min_crease_rim_balance
        # It ends: a fold of a panel has two ends, a part's own edge or a ground surface's streak
        # runs on through the view. At least one side falls off four half-lengths away (within
        # 7 degrees of the direction found: the point's own direction is not exact that far out).
        te = np.float32(half) * np.array([3.5, 4.0, 4.5, -3.5, -4.0, -4.5], np.float32)[None, :, None]
        de = np.float32(half) * np.linspace(-0.5, 0.5, 7, dtype=np.float32)[None, None, :]
        ex = xs[:, None, None] - te * uy[:, None, None] + de * ux[:, None, None]
        ey = ys[:, None, None] + te * ux[:, None, None] + de * uy[:, None, None]
        at = _where(gx.shape, ex, ey)
        far = _sample(gx, where=at) * ux[:, None, None] + _sample(gy, where=at) * uy[:, None, None]
        # An end must be seen: a side whose samples leave the view does not count.
        inside = (ex >= 0) & (ex <= w - 1) & (ey >= 0) & (ey <= h - 1)
        sides = [
            np.where(inside[:, k].all(axis=(1, 2)), far[:, k].mean(axis=1).max(axis=1), np.inf)
            for k in (slice(0, 3), slice(3, 6))
        ]
        run_on = np.minimum(sides[0], sides[1]) / np.maximum(best_r, 1e-9)
        ok &= run_on <= c.max_line_run_on
        level_map = sc.background
        out: list[dict] = []
        order = np.argsort(-snr)
        for n in order.tolist():
            if not ok[n]:
                continue
            # One finding per crease: the strongest point of it.
            if any(math.hypot(xs[n] - d["_lx"], ys[n] - d["_ly"]) < half for d in out):
                continue
            lev = max(float(level_map[int(ys[n]), int(xs[n])]), 1.0)
            pct = 100.0 * float(amp[n]) / lev
            if pct > c.max_shading_contrast_pct:
                continue
            out.append(
                {
                    "_lx": float(xs[n]),
                    "_ly": float(ys[n]),
                    "x": float((xs[n] + 0.5) * unit - 0.5),
                    "y": float((ys[n] + 0.5) * unit - 0.5),
                    "diam": float(_DIAMETER_PER_SIGMA * sc.sigma),
                    "snr": float(snr[n]) * c.min_contrast_sigma / boundary,
                    "contrast_gray": float(amp[n]),
                    "contrast_pct": pct,
                    "light_deg": math.degrees(math.atan2(float(uy[n]), -float(ux[n]))) % 360.0,
                    "step": float(step[n]),
                    "even": float(even[n]),
                    "elong": float(fill[n]),
                    "rims": float(rims[n]),
                    "ux": float(ux[n]),
                    "uy": float(uy[n]),
                    "crease": True,
                }
            )
            if len(out) >= c.max_findings:
                break
        for d in out:
            del d["_lx"], d["_ly"]
        return out

    def _line_points(
        self, h: int, w: int, half: float, margin: int, n_bins: int, m: int, t: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where a line sum's noise is sampled on a map of ``h x w``: ``m`` fixed points spread
        over it, for ``n_bins`` orientations (the normal at ``k pi / n_bins``; the line runs
        across it), ``t`` the offsets along the line; flat indices ``(n_bins, len(t), m)`` of the
        nearest pixels (a noise estimate needs no interpolation) and the normals. The same
        points for every view of this size."""
        key = (h, w, round(half, 3))
        if key not in self._noise_points:
            rng = np.random.default_rng(11)
            rx = rng.uniform(margin, w - 1 - margin, m).astype(np.float32)[None, None, :]
            ry = rng.uniform(margin, h - 1 - margin, m).astype(np.float32)[None, None, :]
            bins = np.arange(n_bins, dtype=np.float32) * np.float32(math.pi / n_bins)
            cx, cy = np.cos(bins)[:, None, None], np.sin(bins)[:, None, None]
            t3 = t[None, :, None]
            pts = (ry + t3 * cx + 0.5).astype(np.intp) * w + (rx - t3 * cy + 0.5).astype(np.intp)
            if len(self._noise_points) >= 8:
                self._noise_points.clear()
            self._noise_points[key] = (pts, cx, cy)
        return self._noise_points[key]

    def _dark_folds(self, sc: _Scale, floor_snr: float, light: tuple[float, float] | None) -> list[dict]:
        """Folds seen as one dark line. Both walls of a deep, narrow fold can turn away from a
        high light and from the camera: the fold then shades as a dark line, not as a light-dark
        pair (most of the creases the pair tests miss on the independent renders). The line's
        darkness (the band of scale ``sc``, negated) is summed along its line, over the same
        sum's noise by orientation; what passes must be a line, not a spot (the sum across it at
        most ``_DARK_FOLD_ACROSS`` of the sum along: a hole), continue along the line, end within
        the view (a part's edge, a streak of a ground surface runs on), be darker than the surface
        on both sides at a level (not an edge or a shadow's border), with a known light not be a
        bump's dark flank, and, in ``inspect``, have soft walls (the edge test) and be wide enough
        at half depth on the view itself (``_line_width``: a fine scratch is narrower). One
        candidate per line (``_same_line``)."""
        c = self.config
        assert c.dark_fold_sigma is not None
        unit = 1 << sc.level
        v = -sc.band
        h, w = v.shape
        half = 0.5 * c.line_crease_length_px / unit
        margin = int(half) + 3
        if h <= 2 * margin + 8 or w <= 2 * margin + 8:
            return []
        n_bins, m = 8, 192
        tl = np.linspace(-1.0, 1.0, 9, dtype=np.float32) * np.float32(half)
        idx, _, _ = self._line_points(h, w, half, margin, n_bins, m, tl)
        noise = _robust_spread(v.ravel()[idx].mean(axis=1))  # (n_bins,)
        stride = max(2, int(math.sqrt(h * w / 20000)))  # some 20,000 samples
        sub = v[::stride, ::stride]
        point_noise = max(1.4826 * float(np.median(np.abs(sub - np.median(sub)))), 1e-4)
        flat = _line_peaks(v, 2.0 * point_noise, margin, c.line_crease_candidates)
        if len(flat) == 0:
            return []
        ys, xs = np.divmod(flat, w)
        xs, ys = xs.astype(np.float32), ys.astype(np.float32)
        # The line sum at every orientation (normal at k pi / 8), the best over its noise.
        ang = np.arange(n_bins, dtype=np.float32) * np.float32(math.pi / n_bins)
        nx, ny = np.cos(ang), np.sin(ang)
        sums = _line_sums(v, xs, ys, nx[None, :], ny[None, :], tl)  # (n, n_bins)
        ratio = sums / noise[None, :]
        b = ratio.argmax(axis=1)
        ar = np.arange(len(xs))
        snr, best_r = ratio[ar, b], sums[ar, b]
        # A line, not a spot: across it, the same sum takes in little of the darkness.
        across_r = sums[ar, (b + n_bins // 2) % n_bins]
        line_floor = floor_snr * c.dark_fold_sigma / c.min_contrast_sigma
        sel = np.nonzero((snr >= line_floor) & (across_r <= _DARK_FOLD_ACROSS * best_r))[0]
        if len(sel) == 0:
            return []
        xs, ys, snr, best_r = xs[sel], ys[sel], snr[sel], best_r[sel]
        # The line's own orientation, to a few degrees (the bins are 22.5 degrees apart; the
        # end test below looks 50 px along the line, where 10 degrees off is 9 px beside it).
        fine = ang[b[sel]][:, None] + np.linspace(-0.5, 0.5, 9, dtype=np.float32)[None, :] * np.float32(
            math.pi / n_bins
        )
        fx, fy = np.cos(fine), np.sin(fine)  # (n, 9) normals
        j = _line_sums(v, xs, ys, fx, fy, tl).argmax(axis=1)
        ux, uy = fx[np.arange(len(xs)), j], fy[np.arange(len(xs)), j]  # across the line
        # It continues along its line.
        prof_along = _sample(v, xs[:, None] - tl * uy[:, None], ys[:, None] + tl * ux[:, None])
        fill = (prof_along > 0.3 * np.maximum(prof_along.max(axis=1, keepdims=True), 1e-9)).mean(axis=1)
        # Across, averaged along: darkest at the centre, brighter on both sides, at a level.
        radius = max(0.5 * _DIAMETER_PER_SIGMA * sc.sigma / unit, 2.5)
        t5 = np.linspace(-1.0, 1.0, 5, dtype=np.float32) * np.float32(half)
        ta = np.linspace(-1.0, 1.0, 17, dtype=np.float32) * np.float32(1.5 * radius)
        qx = xs[:, None, None] + ta[None, None, :] * ux[:, None, None] - t5[None, :, None] * uy[:, None, None]
        qy = ys[:, None, None] + ta[None, None, :] * uy[:, None, None] + t5[None, :, None] * ux[:, None, None]
        p = _sample(sc.band, qx, qy).mean(axis=1)  # (n, 17)
        amp = np.maximum(p.max(axis=1) - p.min(axis=1), 1e-6)
        step = np.abs(p[:, -1] - p[:, 0]) / amp
        low = p[:, 8]
        sides = np.minimum(p[:, :8].max(axis=1) - low, p[:, 9:].max(axis=1) - low)
        walls = sides / amp
        centred = p[:, 6:11].min(axis=1) <= p.min(axis=1) + 1e-6
        ok = (fill >= c.min_crease_elongation) & (step <= c.max_step_ratio) & centred
        ok &= walls >= c.min_rim_balance
        if light is not None:
            # With a known light, a dark line much brighter on its side toward the light, within
            # four radii, is the dark half of a bump's shading (a dent's is brighter on the far side).
            tw = np.linspace(-1.0, 1.0, 33, dtype=np.float32) * np.float32(4.0 * radius)
            wx = xs[:, None, None] + tw[None, None, :] * ux[:, None, None] - t5[None, :, None] * uy[:, None, None]
            wy = ys[:, None, None] + tw[None, None, :] * uy[:, None, None] + t5[None, :, None] * ux[:, None, None]
            pw = _sample(sc.band, wx, wy).mean(axis=1)  # (n, 33)
            wl, wr = pw[:, :16].max(axis=1) - pw[:, 16], pw[:, 17:].max(axis=1) - pw[:, 16]
            toward = np.where(wr > wl, 1.0, -1.0) * (ux * light[0] + uy * light[1])
            uneven = np.minimum(wl, wr) < _DARK_FOLD_EVEN * np.maximum(wl, wr)
            ok &= ~(uneven & (toward > 0))
        # It ends: on at least one side the darkness does not go on beyond the line's end,
        # straight on or turning by up to 90 degrees (a part's edge or a pattern's line that bends
        # is not a fold's end). Along each continuation, the mean over 2.5-3.5 half-lengths from
        # the line's end. A side counts only where its continuations within 30 degrees of
        # straight on stay in the view (a line running out of the view may go on beyond it); the
        # more turned ones that leave it are left out (a fold beside the view's border).
        dx, dy = -uy, ux  # along the line
        turn_deg = np.arange(-90.0, 91.0, 10.0, dtype=np.float32)
        turn = np.radians(turn_deg)
        ahead = np.abs(turn_deg) <= 30.0
        dist = np.float32(half) * np.array([2.5, 3.0, 3.5], np.float32)
        ends = []
        for side in (1.0, -1.0):
            sx, sy = xs + side * half * dx, ys + side * half * dy  # the line's end
            cos_t, sin_t = np.cos(turn)[None, :, None], np.sin(turn)[None, :, None]
            ox = side * (dx[:, None, None] * cos_t - dy[:, None, None] * sin_t)
            oy = side * (dy[:, None, None] * cos_t + dx[:, None, None] * sin_t)
            ex = sx[:, None, None] + dist[None, None, :] * ox
            ey = sy[:, None, None] + dist[None, None, :] * oy
            inside = ((ex >= 0) & (ex <= w - 1) & (ey >= 0) & (ey <= h - 1)).all(axis=2)  # (n, turns)
            along = np.where(inside, _sample(v, ex, ey).mean(axis=2), -np.inf).max(axis=1)
            ends.append(np.where(inside[:, ahead].all(axis=1), along, np.inf))
        ok &= np.minimum(ends[0], ends[1]) / np.maximum(best_r, 1e-9) <= c.max_line_run_on
        out: list[dict] = []
        seg = np.linspace(0.0, 1.0, 17, dtype=np.float32)
        for n in np.argsort(-snr).tolist():
            if not ok[n] or any(self._same_line(v, d, xs[n], ys[n], best_r[n], half, radius, seg) for d in out):
                continue  # the same line as a stronger one
            lev = max(float(sc.background[int(ys[n]), int(xs[n])]), 1.0)
            pct = 100.0 * float(amp[n]) / lev
            if pct > c.max_shading_contrast_pct:
                continue
            out.append(
                {
                    "_lx": float(xs[n]),
                    "_ly": float(ys[n]),
                    "_dark": float(best_r[n]),
                    "x": float((xs[n] + 0.5) * unit - 0.5),
                    "y": float((ys[n] + 0.5) * unit - 0.5),
                    "diam": float(_DIAMETER_PER_SIGMA * sc.sigma),
                    "snr": float(snr[n]) * c.min_contrast_sigma / c.dark_fold_sigma,
                    "contrast_gray": float(amp[n]),
                    "contrast_pct": pct,
                    "light_deg": math.degrees(math.atan2(float(uy[n]), -float(ux[n]))) % 360.0,
                    "step": float(step[n]),
                    "even": 0.0,
                    "elong": float(fill[n]),
                    "rims": float(walls[n]),
                    "ux": float(ux[n]),
                    "uy": float(uy[n]),
                    "crease": True,
                    "dark": True,
                }
            )
            if len(out) >= c.max_findings:
                break
        for d in out:
            del d["_lx"], d["_ly"], d["_dark"]
        return out

    @staticmethod
    def _same_line(v, d: dict, x: float, y: float, dark: float, half: float, radius: float, seg) -> bool:
        """Whether the candidate at ``(x, y)`` (level px) lies on the line of the kept fold ``d``:
        within two radii across it and either within the end test's reach along it (4.5
        half-lengths) or joined to it by darkness all the way (the segment between them never
        lighter than 0.3 of the weaker one's line sum)."""
        rx, ry = x - d["_lx"], y - d["_ly"]
        if abs(rx * d["ux"] + ry * d["uy"]) >= 2.0 * radius:
            return False
        if abs(rx * d["uy"] - ry * d["ux"]) < 4.5 * half:
            return True
        path = _sample(v, d["_lx"] + seg * rx, d["_ly"] + seg * ry)
        return bool(path.min() >= 0.3 * min(dark, d["_dark"]))

    @staticmethod
    def _line_width(gray, cx, cy, ux, uy, half_len, factor: int) -> np.ndarray:
        """Full width at half depth (view px) of the dark line through each point: across it
        (``ux, uy``), on the profile averaged over ``half_len`` px either way along it, the run of
        samples around the darkest one (within 3 px of the centre line) that stay darker than
        halfway between it and the surface beside the line (the brighter side's median, from
        8 px out to twice that). A line whose run reaches the surface's samples is measured again
        with the surface from 1.5 run-widths out, until the width holds (three passes at most).
        px of a view at the working size, ``factor`` times as many on a view shrunk by ``factor``
        to work on; 0.5 px steps."""
        a = np.linspace(-1.0, 1.0, 9, dtype=np.float32) * np.float32(half_len)
        out = np.zeros(len(cx), np.float32)
        for k in range(len(cx)):
            near = 8.0 * factor
            for _ in range(3):
                n_across = int(8 * near) + 1  # 0.5 px steps out to twice ``near``
                t = (np.arange(n_across, dtype=np.float32) - n_across // 2) * np.float32(0.5)
                px = cx[k] + t[None, :] * ux[k] - a[:, None] * uy[k]
                py = cy[k] + t[None, :] * uy[k] + a[:, None] * ux[k]
                p = _sample(gray, px, py).mean(axis=0)
                side = np.abs(t) >= near
                level = max(float(np.median(p[side & (t < 0)])), float(np.median(p[side & (t > 0)])))
                mid = n_across // 2
                span = int(6 * factor)  # the darkest sample within 3 px of the centre line
                lo_i = mid - span + int(np.argmin(p[mid - span : mid + span + 1]))
                half_depth = 0.5 * (level + float(p[lo_i]))
                dark = p < half_depth
                left = lo_i
                while left > 0 and dark[left - 1]:
                    left -= 1
                right = lo_i
                while right < n_across - 1 and dark[right + 1]:
                    right += 1
                width = (right - left + 1) * 0.5
                wider = max(8.0 * factor, 1.5 * width, 1.5 * float(max(abs(t[left]), abs(t[right]))))
                if wider <= near:
                    break
                near = wider
            out[k] = width
        return out

    @staticmethod
    def _edge_sharpness(gray, cx, cy, ux, uy, radius) -> np.ndarray:
        """Step against ramp, along the shading direction through each candidate (view px):
        the steepest brightness change of the view within 1.4 radii, less three times its noise,
        times the radius, over the profile's peak-to-peak. A dent's shading is
        its walls' slope, which changes over the dent's own size: a smooth ramp, 1.5-3. A hole,
        a part's edge or a label has a step edge: its brightness changes over the optics' blur,
        about radius / 2.5 (and 22 at most, the profile's sampling)."""
        hh, ww = gray.shape
        stride = max(1, int(math.sqrt(hh * ww / 8000)))
        dif = (gray[::stride, 1::stride].astype(np.float32) - gray[::stride, : ww - 1 : stride]).ravel()
        noise = max(1.4826 * _median(np.abs(dif - np.float32(_median(dif)))), 0.5)
        n = 64
        t = np.linspace(-1.4, 1.4, n, dtype=np.float32)[None, :] * radius[:, None].astype(np.float32)
        p = _sample(gray, cx[:, None] + t * ux[:, None], cy[:, None] + t * uy[:, None])
        h = np.maximum(t[:, 1] - t[:, 0], 1e-3)
        g = np.abs(np.diff(p, axis=1)).max(axis=1) / h
        ptp = np.maximum(p.max(axis=1) - p.min(axis=1), 1e-6)
        return np.maximum(g - 3.0 * noise / np.maximum(h, 1.0), 0.0) * radius / ptp

    @staticmethod
    def _at_many(img: np.ndarray, sc: _Scale, wx: np.ndarray, wy: np.ndarray) -> np.ndarray:
        """Bilinear values of one of ``sc``'s maps at working-image points."""
        unit = 1 << sc.level
        return _sample(img, (wx + 0.5) / unit - 0.5, (wy + 0.5) / unit - 0.5)

    @staticmethod
    def _at(img: np.ndarray, sc: _Scale, wx: float, wy: float) -> float:
        """Bilinear value of one of ``sc``'s maps at working-image point (wx, wy)."""
        unit = 1 << sc.level
        h, w = img.shape
        lx = min(max((wx + 0.5) / unit - 0.5, 0.0), w - 1.001)
        ly = min(max((wy + 0.5) / unit - 0.5, 0.0), h - 1.001)
        x0, y0 = int(lx), int(ly)
        fx, fy = lx - x0, ly - y0
        a = float(img[y0, x0]) * (1 - fx) + float(img[y0, x0 + 1]) * fx
        b = float(img[y0 + 1, x0]) * (1 - fx) + float(img[y0 + 1, x0 + 1]) * fx
        return a * (1 - fy) + b * fy

    def _finding(self, d: dict, factor: int, view: View) -> Finding:
        c = self.config
        s = d["snr"] / c.min_contrast_sigma
        score = float(min(1.0, s * s / (1.0 + s * s)))
        diam = d["diam"] * factor
        cx, cy = d["x"] * factor, d["y"] * factor  # pyrDown keeps every second pixel
        h, w = view.image.shape[:2]
        r = diam / 2
        x0, y0 = max(0, int(math.floor(cx - r))), max(0, int(math.floor(cy - r)))
        x1, y1 = min(w, int(math.ceil(cx + r)) + 1), min(h, int(math.ceil(cy + r)) + 1)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        mask = (((xx - cx) ** 2 + (yy - cy) ** 2) <= r * r).astype(np.uint8) * 255
        # A dark line's width is measured on the view; the scale it was found at says little of it.
        extent = d["line_width"] if d.get("dark") and "line_width" in d else diam
        meas = {
            "diameter_px": round(extent, 2),
            "shading_contrast_pct": round(d["contrast_pct"], 2),
            "shading_contrast_gray": round(d["contrast_gray"], 2),
            "contrast_sigma": round(d["snr"], 2),
            "light_direction_deg": round(
                c.light_direction_deg % 360.0 if c.light_direction_deg is not None else d["light_deg"], 1
            ),
        }
        mm = view.mm(extent)
        size = f"{extent:.0f} px"
        if mm is not None:
            meas["diameter_mm"] = round(mm, 3)
            size = f"{mm:.1f} mm"
        meas["elongation"] = round(d["elong"], 2)
        meas["edge_sharpness"] = round(d["sharp"], 2)
        what = f"crease {size} wide" if d["crease"] else f"dent {size} across"
        if d.get("dark"):
            what += " (one dark line)"
            if "line_width" in d:
                meas["dark_line_width_px"] = round(d["line_width"], 1)
        msg = f"{what}, shading contrast {d['contrast_pct']:.1f} %"
        if d.get("dark") and c.light_direction_deg is None:
            del meas["light_direction_deg"]  # a dark line shades alike from either side: no light read
        else:
            msg += f", light from {meas['light_direction_deg']:.0f} deg"
        return Finding(
            kind="dent",
            score=score,
            box=(x0, y0, x1 - x0, y1 - y0),
            message=msg,
            size_px=round(extent, 2),
            measurements=meas,
            mask=mask,
        )


@hookimpl
def inspector_register_detectors(register):
    register(DentDetector)
