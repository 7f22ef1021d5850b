"""Scratch detector: thin, elongated, bright or dark marks on textured surfaces.

How it works (all on a working copy downscaled by a power of two, see ``work_max_side_px``):

1. Ridge strength at scales 1.5, 3, 6, ... working px (a Gaussian pyramid, one small Hessian
   per level). For a bright line the strength is ``min(2q, -trace)`` of the scale-normalised
   Hessian (``q`` the half-difference of its eigenvalues): large across a line, zero at the
   centre of a blob. It is capped by a two-sided test (the centre must rise above both sides,
   2 sigma away, in one of four directions), which a step edge (the part's edge, a label, a
   hole, a shadow) never passes, and lowered by the surface's own texture level at that scale.
   Dark lines are the same with the sign flipped. Second derivatives do not see smooth,
   uneven lighting, so no background flattening is needed.
2. Hysteresis: pixels above half of ``min_contrast_gray`` seed a region that grows through
   pixels above a quarter of it.
3. Connected regions are measured by PCA (length along the main axis, width = area / length).
   Elongated pieces lying on one line with a short gap between them are joined into one
   scratch (``max_gap_px``, ``max_join_angle_deg``).
4. Each scratch's contrast and width are read from profiles across it on the working image;
   its score is a logistic of how far its contrast, length and elongation lie above the
   configured minima (0.5 when the weakest of them sits exactly on its minimum).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from inspector_core import Detector, Finding, PluginConfig, View, hookimpl
from inspector_core.numeric import fast_median as _median

from .good_lines import GoodLines
from .reference import median_image, reference_images, structure_mask

__all__ = ["ScratchConfig", "ScratchDetector"]

# A Gaussian line of amplitude h, seen at its best scale, gives a scale-normalised ridge strength
# of 2h / (3 sqrt 3) = 0.385 h (Lindeberg's gamma = 1 normalisation); we divide by it so that the
# thresholds read in grey levels of the line's peak contrast.
_RIDGE_GAIN = 2.0 / (3.0 * math.sqrt(3.0))


class ScratchConfig(PluginConfig):
    """Settings of the scratch detector. Lengths and widths are in pixels of the view (the ROI),
    whatever the detector's internal working resolution."""

    polarity: Literal["both", "bright", "dark"] = Field(
        "both", description="Which scratches to look for: brighter than the surface, darker, or both."
    )
    min_contrast_gray: float = Field(
        12.0,
        gt=0,
        description="Peak contrast (grey levels, 0-255) of a scratch on the decision "
        "boundary; pixels above half of it extend a scratch (hysteresis).",
    )
    min_dark_contrast_gray: float | None = Field(
        28.0,
        gt=0,
        description="The same boundary for dark marks, when it should differ: on "
        "rolled or brushed metal under bright-field light, dark elongated marks are more often "
        "inclusions, stains and pit chains than scratches. None: the same as min_contrast_gray.",
    )
    min_length_px: float = Field(
        40.0, gt=0, description="Length of a scratch on the decision boundary, in view pixels."
    )
    min_length_mm: float | None = Field(
        None, gt=0, description="When set and the station is calibrated, replaces min_length_px."
    )
    min_elongation: float = Field(
        4.0,
        gt=1,
        description="Length / width of a scratch on the decision boundary: rounder "
        "marks (pits, spots, blobs) are not scratches.",
    )
    max_width_px: float = Field(
        24.0, gt=0, description="Widest scratch to look for, in view pixels: sets the coarsest scale."
    )
    max_gap_px: float = Field(
        30.0, ge=0, description="Largest gap along a broken scratch whose pieces are joined into one."
    )
    max_join_angle_deg: float = Field(
        12.0, ge=0, le=90, description="Largest angle between two pieces that may be joined."
    )
    texture_factor: float = Field(
        1.5,
        ge=0,
        description="How much of the surface's own texture level (a robust spread of "
        "the filter response over the view, per scale) a scratch must rise above, on top of "
        "min_contrast_gray: busy surfaces need a clearer mark.",
    )
    border_px: int = Field(4, ge=0, description="Band along the view's border that is ignored, in view pixels.")
    ignore_mask: Path | None = Field(
        None,
        description="Optional 8-bit image (relative to the station folder) of the ROI's "
        "size (it is resized if not): non-zero pixels are ignored, e.g. known edges and holes.",
    )
    suppress_edges_from: Path | None = Field(
        None,
        description="A folder of good parts' images (or one reference image; relative to the station "
        "folder) showing what the view shows: the part's own strong edges and lines in their median "
        "are taught at start-up and scratch evidence along them is ignored (a taught station needs "
        "no hand-drawn ignore_mask). Only for parts that sit in the same place every time.",
    )
    suppress_edges_px: float = Field(
        6.0,
        ge=0,
        description="How far around the taught edges evidence is ignored, in view pixels: the part's placement jitter.",
    )
    suppress_lines_from: Path | None = Field(
        None,
        description="A folder of good parts' images (relative to the station folder) for parts that "
        "do not sit in one place (tiles, strip, castings): the lines good parts show (grinding "
        "marks, their own edges) are taught by direction and contrast at start-up, and a finding "
        "must rise above them in its direction.",
    )
    work_max_side_px: int = Field(
        640,
        ge=64,
        description="The view is downscaled by a power of two until its longer side "
        "is at most this; smaller is faster but loses the faintest hairlines.",
    )
    max_findings: int = Field(20, ge=1, description="At most this many findings per view, the highest scores first.")


# Good images read for the taught edges: a median of more adds little and costs start-up time.
_MAX_REFERENCES = 15
# Good images read for the lines good parts show, spread over the folder.
_MAX_LINE_EXAMPLES = 120


def cfg_min_contrast(cfg: ScratchConfig) -> float:
    """The smaller of the two boundary contrasts: the part's structure is taught at the lower."""
    return min(cfg.min_contrast_gray, cfg.min_dark_contrast_gray or cfg.min_contrast_gray)


class ScratchDetector(Detector):
    """Finds scratches; see the module docstring for the method."""

    name = "scratch"
    kinds = ("scratch",)
    Config = ScratchConfig

    def __init__(self, config: ScratchConfig, *, station_dir: Path) -> None:
        super().__init__(config, station_dir=station_dir)
        self.config: ScratchConfig = config
        self._ignore: np.ndarray | None = None
        if config.ignore_mask is not None:
            path = config.ignore_mask if config.ignore_mask.is_absolute() else station_dir / config.ignore_mask
            mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if mask is None:
                raise ValueError(f"scratch: ignore_mask {path} cannot be read as an image")
            self._ignore = mask
        self._references: list[Path] = []
        self._structure: np.ndarray | None = None
        if config.suppress_edges_from is not None:
            src = config.suppress_edges_from
            self._references = reference_images(src if src.is_absolute() else station_dir / src, _MAX_REFERENCES)
            self._structure = structure_mask(
                median_image(self._references), self._line_strength, cfg_min_contrast(config), config.suppress_edges_px
            ).astype(np.uint8)
        self._ignore_cache: tuple[tuple[int, int, int, int], np.ndarray | None] | None = None
        self._good_lines: GoodLines | None = None
        self._line_examples: list[Path] = []
        if config.suppress_lines_from is not None:
            src = config.suppress_lines_from
            self._line_examples = reference_images(
                src if src.is_absolute() else station_dir / src, _MAX_LINE_EXAMPLES, "suppress_lines_from"
            )
            self._good_lines = GoodLines(self._lines_on(self._line_examples))

    def _lines_on(self, paths: list[Path]) -> list[tuple[float, float]]:
        """(angle, ridge contrast) of every candidate this detector reports on the good images."""
        lines = []
        for p in paths:
            img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise ValueError(f"scratch: suppress_lines_from: {p} cannot be read as an image")
            for x in self.inspect(View(image=img, part_id=f"teach:{p.name}")):
                lines.append((x.measurements["angle_deg"], x.measurements["ridge_gray"]))
        return lines

    def files(self) -> dict[str, Path]:
        out = {f"edge_reference_{i}": p for i, p in enumerate(self._references)}
        out.update({f"good_lines_{i}": p for i, p in enumerate(self._line_examples)})
        if self.config.ignore_mask is not None:
            p = self.config.ignore_mask
            out["ignore_mask"] = p if p.is_absolute() else self.station_dir / p
        return out

    def _line_strength(self, gray: np.ndarray) -> np.ndarray:
        """The detector's own ridge strength (the larger polarity), at ``gray``'s size."""
        cfg = self.config
        work, f = _downscale(gray, cfg.work_max_side_px)
        floors = (_low_threshold(cfg, 1), _low_threshold(cfg, -1))
        (bright, dark), _ = _ridge_strength(work, cfg.max_width_px / f, cfg.texture_factor, floors)
        assert bright is not None and dark is not None
        both = np.maximum(bright[0], dark[0])
        return cv2.resize(both, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_LINEAR)

    def warm_up(self, example: np.ndarray | None = None) -> None:
        shape = self._structure.shape if self._structure is not None else (256, 256)
        image = example if example is not None else np.full(shape, 128, np.uint8)
        self.inspect(View(image=image, part_id="warm-up"))

    def inspect(self, view: View) -> list[Finding]:
        cfg = self.config
        gray = view.gray
        h, w = gray.shape
        if min(h, w) < 16:
            return []
        min_len = cfg.min_length_px
        if cfg.min_length_mm is not None and view.calibration.mm_per_px:
            min_len = cfg.min_length_mm / view.calibration.mm_per_px

        work, f = _downscale(gray, cfg.work_max_side_px)
        floors = (
            _low_threshold(cfg, 1) if cfg.polarity != "dark" else None,
            _low_threshold(cfg, -1) if cfg.polarity != "bright" else None,
        )
        (bright, dark), textures = _ridge_strength(work, cfg.max_width_px / f, cfg.texture_factor, floors)
        ignore = self._ignore_mask(work.shape, f)
        structure = self._structure_at(work.shape, f, (h, w))
        if structure is not None:
            # The part's own edges and lines: no scratch evidence along them (one crossing them
            # is still found on either side).
            ignore = structure if ignore is None else ignore | structure

        scratches = []
        for sign, maps in ((1, bright), (-1, dark)):
            if maps is None:
                continue
            strength, level = maps
            if ignore is not None:
                strength[ignore] = 0
            scratches += _scratches(strength, level, textures, sign, f, min_len, cfg)

        findings = [_finding(s, gray, view, cfg, min_len, f) for s in scratches]
        findings = [x for x in findings if x.score >= self.report_floor]
        if self._good_lines is not None:
            bar = self._good_lines
            findings = [x for x in findings if bar.clears(x.measurements["angle_deg"], x.measurements["ridge_gray"])]
        findings.sort(key=lambda x: -x.score)
        return findings[: cfg.max_findings]

    def _structure_at(self, shape: tuple[int, int], f: int, view_shape: tuple[int, int]) -> np.ndarray | None:
        """The taught structure mask at the working size (cached: a station's views keep one size)."""
        if self._structure is None:
            return None
        key = (shape[0], shape[1], f, view_shape[0] * 100003 + view_shape[1])
        if self._ignore_cache is not None and self._ignore_cache[0] == key:
            return self._ignore_cache[1]
        hh, ww = shape
        rh, rw = self._structure.shape
        vh, vw = view_shape
        if abs(rw / rh - vw / vh) > 0.02 * (vw / vh):
            raise ValueError(
                f"scratch: suppress_edges_from {self.config.suppress_edges_from}: its images are "
                f"{rw}x{rh} px, the view is {vw}x{vh} px (another shape): give good images of "
                "what this step's ROI shows"
            )
        mask = cv2.resize(self._structure, (ww, hh), interpolation=cv2.INTER_AREA) > 0
        self._ignore_cache = (key, mask)
        return mask

    def _ignore_mask(self, shape: tuple[int, int], f: int) -> np.ndarray | None:
        hh, ww = shape
        b = int(math.ceil(self.config.border_px / f))
        if self._ignore is None and b == 0:
            return None
        ignore = np.zeros(shape, bool)
        if self._ignore is not None:
            ignore |= cv2.resize(self._ignore, (ww, hh), interpolation=cv2.INTER_NEAREST) > 0
        if b:
            ignore[:b] = ignore[-b:] = True
            ignore[:, :b] = ignore[:, -b:] = True
        return ignore


def _downscale(gray: np.ndarray, max_side: int) -> tuple[np.ndarray, int]:
    """Halve (INTER_AREA, exact factor 2: OpenCV's fast path) until the longer side fits."""
    f = 1
    img = gray
    while max(img.shape) > max_side:
        hh, ww = img.shape[0] // 2, img.shape[1] // 2
        img = cv2.resize(img[: 2 * hh, : 2 * ww], (ww, hh), interpolation=cv2.INTER_AREA)
        f *= 2
    return img.astype(np.float32), f


_LEVEL_SIGMA = 1.5
# Refit long scratches' centre lines robustly (see _fit_curve); a switch for the bench.
_ROBUST_FIT = True
# Scratches longer than this (working px) bend more than a parabola follows: a cubic centre line
# (AGDD tuning half: a 660 px arc read 4 grey levels along a quadratic, 11 along a cubic).
_CUBIC_FROM_PX = 300.0
# The two-sided contrast of a line matched to the scale (sigma_line = sigma / sqrt 2), measured
# on the smoothed image 2 sigma to either side, is 0.42 of its peak: scale it to grey levels of
# peak contrast like the Hessian measure, so that the smaller of the two is a fair reading.
_TWO_SIDED_GAIN = 1.0 / 0.42
# Half weight for the extra texture across streaky directions: enough to keep brushing streaks
# out, while scratches along a rolling direction (the usual case) keep most of their margin.
_DIRECTIONAL_WEIGHT = 0.5


def _two_sided(g: np.ndarray, idx: np.ndarray, d: int, sign: int) -> np.ndarray:
    """Line contrast at the flat indices ``idx`` of ``g`` by the two-sided test: how much the
    centre rises above (``sign`` 1) or sinks below (-1) *both* sides ``d`` pixels away, best of
    four directions (0, 45, 90, 135 degrees; a line between two of them still has a flank on
    either side). A step edge has one side above and one below, so it scores nothing however
    close the pixel is to it. ``idx`` must lie at least ``d`` pixels inside the border."""
    gf = g.ravel()
    ww = g.shape[1]
    c = gf[idx] if sign > 0 else -gf[idx]
    dd = max(1, int(round(d / math.sqrt(2.0))))
    best = np.full(idx.shape, -np.inf, np.float32)
    for off in (d, d * ww, dd * (ww + 1), dd * (ww - 1)):
        p, m = gf[idx + off], gf[idx - off]
        if sign < 0:
            p, m = -p, -m
        np.maximum(best, np.minimum(c - p, c - m), out=best)
    return best


def _ridge_strength(
    work: np.ndarray, max_width: float, texture_factor: float, floors: tuple[float | None, float | None]
):
    """Ridge strength in grey levels of line contrast, bright and dark, at the working size,
    each with the pyramid level that gave it. ``floors`` (bright, dark; None to skip a polarity)
    is the lowest strength worth keeping: the two-sided test runs only above it.

    Scales 1.5, 3, 6, ... working pixels (one Gaussian of sigma 1.5 per pyramid level), enough
    levels to cover ``max_width`` (a line of width w responds best near sigma = w / 2.5). At each
    level the strength is the smaller of the Hessian's line measure (zero on blobs) and the
    two-sided contrast (zero beside step edges), less the surface's texture level."""
    hh, ww = work.shape
    levels = 1
    while _LEVEL_SIGMA * 2 ** (levels - 1) * 2.5 < max_width and min(hh, ww) >> levels >= 16:
        levels += 1
    outs: list[tuple[np.ndarray, np.ndarray, float] | None] = []
    for floor in floors:
        if floor is None:
            outs.append(None)
        else:
            outs.append((np.zeros((hh, ww), np.float32), np.zeros((hh, ww), np.uint8), floor))
    textures: list[tuple[float, float, float, float]] = []
    img = work
    s = _LEVEL_SIGMA  # in each level's own pixels: the normalisation is the same at every level
    d = int(round(2 * s))
    b = int(math.ceil(2.0 * s)) + d  # mirrored borders make ridges: drop them
    for level in range(levels):
        if level:
            img = cv2.pyrDown(img)
        lh, lw = img.shape
        if min(lh, lw) <= 2 * b + 2:
            break
        g = cv2.GaussianBlur(img, (0, 0), s)
        dxx = cv2.Sobel(g, cv2.CV_32F, 2, 0, ksize=3)
        dyy = cv2.Sobel(g, cv2.CV_32F, 0, 2, ksize=3)
        dxy = cv2.Sobel(g, cv2.CV_32F, 1, 1, ksize=3)
        k2 = s * s / 4.0 / _RIDGE_GAIN  # Sobel 3x3 scales second derivatives by 4
        tr: np.ndarray = cv2.add(dxx, dyy)
        tr *= k2
        q2: np.ndarray = cv2.magnitude(cv2.subtract(dxx, dyy), 2.0 * dxy)  # 2q
        q2 *= k2
        # The surface's own texture at this scale: a robust spread of the (zero-mean)
        # Laplacian. Subtracting a multiple of it raises the bar on busy surfaces and at
        # scales where the texture (or banding) is strong, and leaves clean surfaces alone.
        noise = 1.4826 * _median(np.abs(tr[b:-b:3, b:-b:3]))
        # The same across three directions (a line's normal along x, y, and the diagonal):
        # brushed or rolled surfaces are streaky in one direction, and a scratch along the
        # streaks must beat them (see _directional_texture).
        sub = (slice(b, -b, 3), slice(b, -b, 3))
        n0 = _median(np.abs(dxx[sub]))
        n90 = _median(np.abs(dyy[sub]))
        n45 = _median(np.abs(0.5 * (dxx[sub] + dyy[sub]) + dxy[sub]))
        textures.append((noise, n0, n90, n45))
        for sign, out in ((1, outs[0]), (-1, outs[1])):
            if out is None:
                continue
            strength, which, floor = out
            r: np.ndarray = cv2.min(q2, tr if sign < 0 else -tr)
            r -= texture_factor * noise
            r[:b] = 0
            r[-b:] = 0
            r[:, :b] = 0
            r[:, -b:] = 0
            idx = np.flatnonzero(r > floor)
            rf = r.ravel()
            rf[idx] = np.minimum(rf[idx], _TWO_SIDED_GAIN * _two_sided(g, idx, d, sign))
            if level:
                r = cv2.resize(r, (ww, hh), interpolation=cv2.INTER_LINEAR)
                which[r > strength] = level
            cv2.max(strength, r, dst=strength)
    return [None if o is None else o[:2] for o in outs], textures


def _directional_texture(textures: list[tuple[float, float, float, float]], level: int, axis: np.ndarray) -> float:
    """How much more texture there is across a line of this direction than on average, in
    the isotropic texture's units (0 on an isotropic surface; about 1 for a line along the
    streaks of a brushed surface)."""
    iso, n0, n90, n45 = textures[min(level, len(textures) - 1)]
    mean = 0.5 * (n0 + n90)
    if mean <= 0:
        return 0.0
    a2 = 2.0 * math.atan2(float(axis[1]), float(axis[0])) + math.pi  # twice the normal's angle
    across = mean + 0.5 * (n0 - n90) * math.cos(a2) + (n45 - mean) * math.sin(a2)
    return max(0.0, across / mean - 1.0) * iso


def _min_contrast(cfg: ScratchConfig, sign: int) -> float:
    if sign < 0 and cfg.min_dark_contrast_gray is not None:
        return cfg.min_dark_contrast_gray
    return cfg.min_contrast_gray


def _low_threshold(cfg: ScratchConfig, sign: int) -> float:
    """Where hysteresis stops growing a scratch: a quarter of the boundary contrast."""
    return 0.25 * _min_contrast(cfg, sign)


def _scratches(
    strength: np.ndarray, level: np.ndarray, textures: list, sign: int, f: int, min_len: float, cfg: ScratchConfig
) -> list[dict]:
    """Hysteresis regions of one polarity, measured and joined, in working pixels."""
    hi_t = 0.5 * _min_contrast(cfg, sign)  # candidates reach down to half the boundary contrast
    lo_t = _low_threshold(cfg, sign)
    low = (strength > lo_t).astype(np.uint8)
    # Labels only: the regions' sizes and extents come from their pixels below (the statistics
    # pass of connectedComponentsWithStats costs more than the labelling itself).
    n, labels = cv2.connectedComponents(low, connectivity=8)
    if n <= 1:
        return []
    # Moments of every region at once (no Python loop over regions): centre, main axis, and a
    # length from the spread along it (a uniform segment of length L has variance L^2 / 12).
    flat = np.flatnonzero(low)  # raster order, as np.nonzero(low), and faster on a 2-D mask
    ys, xs = np.divmod(flat, low.shape[1])
    lab = labels.ravel()[flat]
    val = strength.ravel()[flat]
    area = np.bincount(lab, minlength=n).astype(np.float64)
    area[0] = 1.0
    seeded = np.bincount(lab, weights=(val > hi_t), minlength=n) > 0
    mx = np.bincount(lab, weights=xs, minlength=n) / area
    my = np.bincount(lab, weights=ys, minlength=n) / area
    cxx = np.bincount(lab, weights=xs.astype(np.float64) ** 2, minlength=n) / area - mx**2 + 1 / 12
    cyy = np.bincount(lab, weights=ys.astype(np.float64) ** 2, minlength=n) / area - my**2 + 1 / 12
    cxy = np.bincount(lab, weights=xs.astype(np.float64) * ys, minlength=n) / area - mx * my
    half_diff = np.sqrt(((cxx - cyy) / 2) ** 2 + cxy**2)
    major = (cxx + cyy) / 2 + half_diff
    length = np.sqrt(12.0 * np.maximum(major, 0.0))
    width = area / np.maximum(length, 1.0)
    angle = 0.5 * np.arctan2(2 * cxy, cxx - cyy)
    min_piece = max(3.0, 0.2 * min_len / f)
    keep = np.flatnonzero(seeded & (length >= min_piece) & (length >= 3.0 * width))
    keep = keep[keep > 0]
    if len(keep) == 0:
        return []
    pieces = {
        "center": np.column_stack([mx[keep], my[keep]]),
        "axis": np.column_stack([np.cos(angle[keep]), np.sin(angle[keep])]),
        "length": length[keep],
        "width": width[keep],
    }
    groups = _join(pieces, cfg.max_gap_px / f, math.radians(cfg.max_join_angle_deg))
    out = []
    for group in groups:
        ids = keep[group]
        # A group's extent along its longest piece's axis, before gathering its pixels.
        ax = pieces["axis"][group[np.argmax(pieces["length"][group])]]
        t = pieces["center"][group] @ ax
        half = 0.5 * pieces["length"][group]
        if (np.max(t + half) - np.min(t - half)) * f < 0.55 * min_len:  # under the report floor
            continue
        # Its pixels, in raster order (a selection from the raster-ordered list of all).
        member = np.zeros(n, bool)
        member[ids] = True
        mine = member[lab]
        py, px = ys[mine], xs[mine]
        # Its own pixels' contrast bounds the contrast along its fitted line from above: skip
        # the fitting for what could not reach the report floor anyway.
        own = np.sort(val[mine])[int(0.75 * (len(px) - 1))]
        glen = float(np.max(t + half) - np.min(t - half)) * f
        if _logistic(min(math.log(max(own, 1e-3) / (2 * hi_t)), math.log(glen / min_len))) < 0.1:
            continue
        sc = _measure(np.column_stack([px, py]).astype(np.float32))
        sc["sign"] = sign
        sc["pieces"] = len(group)
        _fit_curve(sc, strength)
        samples, where = _line_samples(sc, strength)
        lvl = int(round(float(np.median(level[where[1], where[0]]))))
        sc["sigma"] = _LEVEL_SIGMA * 2.0**lvl
        # The contrast a straight-ish scratch holds along most of its length: a chain of texture
        # that meanders, or pieces joined across long gaps, score low here.
        ranked = np.sort(samples)
        sc["contrast"] = float(ranked[int(0.4 * (len(ranked) - 1))])
        sc["contrast"] -= _DIRECTIONAL_WEIGHT * cfg.texture_factor * _directional_texture(textures, lvl, sc["axis"])
        out.append(sc)
    return out


def _measure(pts: np.ndarray) -> dict:
    mean = pts.mean(axis=0)
    d = pts - mean
    cov = d.T @ d / max(len(pts), 1)
    evals, evecs = np.linalg.eigh(cov)
    axis = evecs[:, 1]
    t = d @ axis
    length = float(t.max() - t.min()) + 1.0
    return {
        "pts": pts,
        "center": mean,
        "axis": axis,
        "t0": float(t.min()),
        "t1": float(t.max()),
        "length": length,
        "width": len(pts) / length,
    }


def _join(pieces: dict[str, np.ndarray], max_gap: float, max_angle: float) -> list[np.ndarray]:
    """Groups of pieces that lie on one line: small angle between them, small offset across,
    small gap along (all pairs at once; then connected groups of joined pairs)."""
    n = len(pieces["length"])
    if n == 1:
        return [np.array([0])]
    c, ax, ln, wd = pieces["center"], pieces["axis"], pieces["length"], pieces["width"]
    cos = np.abs(ax @ ax.T)
    # Measure each pair on the longer piece's axis (row i when ln[i] >= ln[j]).
    rel = c[None, :, :] - c[:, None, :]  # rel[i, j] = c[j] - c[i]
    along = np.einsum("ijk,ik->ij", rel, ax)
    across = np.abs(rel[..., 0] * ax[:, None, 1] - rel[..., 1] * ax[:, None, 0])
    gap = np.maximum(np.abs(along) - 0.5 * ln[:, None] - 0.5 * ln[None, :], 0.0)
    ok = (cos >= math.cos(max_angle)) & (gap <= max_gap)
    # Allow a curve's sagitta over the gap, plus the widths.
    ok &= across <= 2.0 + 0.5 * (wd[:, None] + wd[None, :]) + 0.15 * (gap + 0.5 * ln[None, :])
    ok &= ln[:, None] >= ln[None, :]
    ok |= ok.T
    graph = ok.astype(np.uint8)
    np.fill_diagonal(graph, 1)
    # Connected groups by repeated boolean matrix products is wasteful; a small union-find is
    # clearer and n is modest (pieces that survived the elongation test).
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(ok, 1)), strict=True):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[rj] = ri
    roots = np.array([find(i) for i in range(n)])
    return [np.flatnonzero(roots == r) for r in np.unique(roots)]


def _fit_curve(s: dict, strength: np.ndarray) -> None:
    """Fit the scratch's centre line as a gentle curve: offset across the main axis as a
    quadratic of the position along it, weighted by ridge strength so that the core, not the
    hysteresis fringe or texture hanging on to it, sets the line. Adds ``curve`` and
    ``residual_px`` (the weighted spread of its pixels about the curve)."""
    pts = s["pts"]
    wt = np.maximum(strength[pts[:, 1].astype(np.int32), pts[:, 0].astype(np.int32)], 1e-3)
    d = pts - s["center"]
    ax = s["axis"]
    t = d @ ax
    v = d[:, 0] * ax[1] - d[:, 1] * ax[0]
    deg = (3 if s["length"] > _CUBIC_FROM_PX else 2) if s["length"] > 12 else 1
    span = max(s["t1"] - s["t0"], 1.0)
    coef = np.polyfit(t / span, v, deg, w=np.sqrt(wt))
    if _ROBUST_FIT and len(t) > 50:
        # Branches and texture hanging on to a long scratch pull a plain fit off its core:
        # refit with the pixels far from the first curve down-weighted (Cauchy weights).
        for _ in range(2):
            res = np.polyval(coef, t / span) - v
            coef = np.polyfit(t / span, v, deg, w=np.sqrt(wt / (1.0 + (res / 1.5) ** 2)))
    s["curve"] = (coef, span)
    r2 = (np.polyval(coef, t / span) - v) ** 2
    s["residual_px"] = float(np.sqrt(np.sum(wt * r2) / np.sum(wt)))


def _line_samples(s: dict, strength: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Ridge strength along the fitted centre line, one sample per working pixel (the best of
    the line and its two neighbours across, to forgive a pixel of misfit)."""
    coef, span = s["curve"]
    ax = s["axis"]
    nrm = np.array([ax[1], -ax[0]], np.float32)
    t = np.arange(s["t0"], s["t1"] + 1.0, 1.0, dtype=np.float32)
    v = np.polyval(coef, t / span).astype(np.float32)
    hh, ww = strength.shape
    best = np.full(t.shape, -np.inf, np.float32)
    for dv in (0.0, -1.0, 1.0):
        p = s["center"][None, :] + t[:, None] * ax[None, :] + (v + dv)[:, None] * nrm[None, :]
        xi = np.clip(np.rint(p[:, 0]).astype(np.int32), 0, ww - 1)
        yi = np.clip(np.rint(p[:, 1]).astype(np.int32), 0, hh - 1)
        if dv == 0.0:
            centre = (xi, yi)
        best = np.maximum(best, strength[yi, xi])
    return best, centre


def _profile(gray: np.ndarray, s: dict, f: int) -> tuple[float, float]:
    """Grey-level contrast and full width at half maximum (view pixels) of the mean profile
    across the scratch, read on the view itself (not the downscaled copy)."""
    coef, span = s["curve"]
    ax = s["axis"]
    nrm = np.array([ax[1], -ax[0]], np.float32)
    sigma = s["sigma"] * f  # the responding scale, in view pixels
    half = int(math.ceil(3.0 * sigma)) + 3
    offsets = np.arange(-half, half + 1, dtype=np.float32)
    t = np.linspace(s["t0"], s["t1"], 24, dtype=np.float32)[2:-2]
    v = np.polyval(coef, t / span).astype(np.float32)
    centre = (s["center"][None, :] + t[:, None] * ax[None, :] + v[:, None] * nrm[None, :]) * f + (f - 1) / 2.0
    px = centre[:, 0:1] + offsets[None, :] * nrm[0]
    py = centre[:, 1:2] + offsets[None, :] * nrm[1]
    prof = cv2.remap(
        gray, px.astype(np.float32), py.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    ).astype(np.float32)
    prof = s["sign"] * np.median(prof, axis=0)
    inner = np.abs(offsets) <= max(1.0, 0.5 * sigma)
    outer = np.abs(offsets) >= 2.0 * sigma + 1
    left, right = prof[outer & (offsets < 0)], prof[outer & (offsets > 0)]
    background = max(float(left.mean()), float(right.mean())) if len(left) and len(right) else float(prof.min())
    peak = float(prof[inner].max())
    contrast = peak - background
    if contrast <= 0:
        return 0.0, 1.0
    above = prof - background > 0.5 * contrast
    c = int(np.argmax(np.where(inner, prof, -np.inf)))
    lo = c
    while lo > 0 and above[lo - 1]:
        lo -= 1
    hi = c
    while hi < len(prof) - 1 and above[hi + 1]:
        hi += 1
    # Sub-pixel half-maximum crossings, interpolated between the samples either side.
    level = background + 0.5 * contrast
    left = lo - (prof[lo] - level) / max(prof[lo] - prof[lo - 1], 1e-6) if lo > 0 else float(lo)
    right = hi + (prof[hi] - level) / max(prof[hi] - prof[hi + 1], 1e-6) if hi < len(prof) - 1 else float(hi)
    return contrast, float(max(right - left, 1.0))


def _logistic(z: float) -> float:
    """Score from the log-margin over the boundary: 0.5 on it, 0.88 at half again, 0.12 at 2/3."""
    return 1.0 / (1.0 + math.exp(-4.0 * z))


def _finding(s: dict, gray: np.ndarray, view: View, cfg: ScratchConfig, min_len: float, f: int) -> Finding:
    ridge = s["contrast"]
    contrast, width = _profile(gray, s, f)
    length = s["length"] * f
    # A network of texture can pass for a thin line by its profile; the spread of its pixels
    # about the fitted centre line cannot (a band of width w spreads w / sqrt 12).
    elong = length / max(width, math.sqrt(12.0) * s["residual_px"] * f)
    margins = (
        math.log(max(ridge, 1e-3) / _min_contrast(cfg, s["sign"])),
        math.log(length / min_len),
        math.log(elong / cfg.min_elongation),
    )
    z = min(margins) + 0.1 * (sum(max(m, 0.0) for m in margins) - max(min(margins), 0.0))
    score = _logistic(z)
    pts = s["pts"]
    x0, y0 = np.floor(pts.min(axis=0)).astype(int) * f
    x1, y1 = (np.floor(pts.max(axis=0)).astype(int) + 1) * f
    hh, ww = view.image.shape[:2]
    x1, y1 = min(x1, ww), min(y1, hh)
    ax, ay = float(s["axis"][0]), float(s["axis"][1])
    angle = math.degrees(math.atan2(-ay, ax)) % 180.0  # counter-clockwise from the image x axis
    polarity = "bright" if s["sign"] > 0 else "dark"
    m = {
        "length_px": round(length, 1),
        "width_px": round(width, 2),
        "angle_deg": round(angle, 1),
        "contrast_gray": round(contrast, 1),
        "ridge_gray": round(ridge, 1),
        "pieces": float(s["pieces"]),
        "residual_px": round(s["residual_px"] * f, 2),
    }
    length_mm, width_mm = view.mm(length), view.mm(width)
    if length_mm is not None and width_mm is not None:
        m["length_mm"] = round(length_mm, 2)
        m["width_mm"] = round(width_mm, 3)
        msg = f"{polarity} scratch {length_mm:.1f} mm long at {angle:.0f} deg"
    else:
        msg = f"{polarity} scratch {length:.0f} px long at {angle:.0f} deg"
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    ip = (pts * f).astype(np.int32) - (x0, y0)
    ip = ip[(ip[:, 0] < mask.shape[1]) & (ip[:, 1] < mask.shape[0])]
    mask[ip[:, 1], ip[:, 0]] = 255
    if f > 1:
        mask = cv2.dilate(mask, np.ones((f, f), np.uint8))
    return Finding(
        kind="scratch",
        score=float(score),
        box=(int(x0), int(y0), int(x1 - x0), int(y1 - y0)),
        message=msg,
        size_px=round(length, 1),
        measurements=m,
        mask=mask,
    )


@hookimpl
def inspector_register_detectors(register):
    register(ScratchDetector)
