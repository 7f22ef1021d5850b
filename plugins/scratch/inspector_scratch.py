"""Scratch detector: thin, elongated, bright or dark marks on textured surfaces.

How it works (all on a working copy downscaled by a power of two, see ``work_max_side_px``):

1. Ridge strength at three scales (a Gaussian pyramid, one small Hessian per level). For a
   bright line the strength is ``min(2q, -trace)`` of the scale-normalised Hessian (``q`` the
   half-difference of its eigenvalues): large across a line, zero at the centre of a blob, and
   weak along the surface's isotropic texture. The scaled gradient is subtracted, which cancels
   the side lobe a step edge (a part's edge, a label, a hole, a shadow) leaves in the second
   derivative: at a line's centre the gradient is zero, beside an edge it is as large as the
   second derivative. Dark lines are the same with the sign flipped. Second derivatives do not
   see smooth, uneven lighting, so no background flattening is needed.
2. Hysteresis: pixels above ``min_contrast_gray`` seed a region that grows through pixels above
   half of it.
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
        14.0, gt=0, description="Peak contrast (grey levels, 0-255) of a scratch on the decision "
        "boundary; pixels above half of it extend a scratch (hysteresis).",
    )
    min_dark_contrast_gray: float | None = Field(
        None, gt=0, description="The same boundary for dark marks, when it should differ: on "
        "rolled or brushed metal under bright-field light, dark elongated marks are more often "
        "inclusions, stains and pit chains than scratches. None: min_contrast_gray.",
    )
    min_length_px: float = Field(
        40.0, gt=0, description="Length of a scratch on the decision boundary, in view pixels."
    )
    min_length_mm: float | None = Field(
        None, gt=0, description="When set and the station is calibrated, replaces min_length_px."
    )
    min_elongation: float = Field(
        5.0, gt=1, description="Length / width of a scratch on the decision boundary: rounder "
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
    edge_factor: float = Field(
        0.0, ge=0, description="How strongly a step edge (the part's edge, a label, a hole) is "
        "suppressed: the scaled gradient times this is subtracted from the ridge strength. "
        "1.0 cancels an ideal step; 0 turns the suppression off.",
    )
    texture_factor: float = Field(
        1.5, ge=0, description="How much of the surface's own texture level (a robust spread of "
        "the filter response over the view, per scale) a scratch must rise above, on top of "
        "min_contrast_gray: busy surfaces need a clearer mark.",
    )
    border_px: int = Field(
        4, ge=0, description="Band along the view's border that is ignored, in view pixels."
    )
    ignore_mask: Path | None = Field(
        None, description="Optional 8-bit image (relative to the station folder) of the ROI's "
        "size (it is resized if not): non-zero pixels are ignored, e.g. known edges and holes.",
    )
    work_max_side_px: int = Field(
        1280, ge=64, description="The view is downscaled by a power of two until its longer side "
        "is at most this; smaller is faster but loses the faintest hairlines.",
    )
    max_findings: int = Field(
        20, ge=1, description="At most this many findings per view, the highest scores first."
    )


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

    def files(self) -> dict[str, Path]:
        if self.config.ignore_mask is None:
            return {}
        p = self.config.ignore_mask
        return {"ignore_mask": p if p.is_absolute() else self.station_dir / p}

    def warm_up(self, example: np.ndarray | None = None) -> None:
        image = example if example is not None else np.full((256, 256), 128, np.uint8)
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
        bright, dark = _ridge_strength(work, cfg.max_width_px / f, cfg.edge_factor, cfg.texture_factor,
                                      cfg.polarity)
        ignore = self._ignore_mask(work.shape, f)

        scratches = []
        for sign, (strength, level) in ((1, bright), (-1, dark)):
            if strength is None:
                continue
            if ignore is not None:
                strength[ignore] = 0
            scratches += _scratches(strength, level, sign, f, min_len, cfg)

        findings = [_finding(s, gray, view, cfg, min_len, f) for s in scratches]
        findings = [x for x in findings if x.score >= self.report_floor]
        findings.sort(key=lambda x: -x.score)
        return findings[: cfg.max_findings]

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
# The two-sided contrast of a line matched to the scale (sigma_line = sigma / sqrt 2), measured
# on the smoothed image 2 sigma to either side, is 0.42 of its peak: scale it to grey levels of
# peak contrast like the Hessian measure, so that the smaller of the two is a fair reading.
_TWO_SIDED_GAIN = 1.0 / 0.42


def _two_sided(g: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Bright and dark line contrast by the two-sided test: how much the centre rises above
    (or sinks below) *both* sides ``d`` pixels away, best of four directions (0, 45, 90, 135
    degrees; a line between two of them still has both its flanks on either side). A step edge
    has one side above and one below, so it scores nothing, however close the pixel is to it."""
    hh, ww = g.shape
    bright = np.zeros((hh, ww), np.float32)
    dark = np.zeros((hh, ww), np.float32)
    dd = max(1, int(round(d / math.sqrt(2.0))))
    c = g[d : hh - d, d : ww - d]
    ob, od = bright[d : hh - d, d : ww - d], dark[d : hh - d, d : ww - d]
    for dx, dy, k in ((1, 0, d), (0, 1, d), (1, 1, dd), (1, -1, dd)):
        plus = g[d + dy * k : hh - d + dy * k, d + dx * k : ww - d + dx * k]
        minus = g[d - dy * k : hh - d - dy * k, d - dx * k : ww - d - dx * k]
        a1 = cv2.subtract(c, plus)
        a2 = cv2.subtract(c, minus)
        cv2.max(ob, cv2.min(a1, a2), dst=ob)
        cv2.max(od, -cv2.max(a1, a2), dst=od)
    return bright, dark


def _ridge_strength(work: np.ndarray, max_width: float, edge_factor: float, texture_factor: float,
                    polarity: str):
    """Ridge strength in grey levels of line contrast, bright and dark, at the working size,
    with the pyramid level that gave it.

    Scales 1.5, 3, 6, ... working pixels (one Gaussian of sigma 1.5 per pyramid level), enough
    levels to cover ``max_width`` (a line of width w responds best near sigma = w / 2.5). At each
    level the strength is the smaller of the Hessian's line measure (zero on blobs) and the
    two-sided contrast (zero beside step edges), less the surface's texture level."""
    hh, ww = work.shape
    levels = 1
    while _LEVEL_SIGMA * 2 ** (levels - 1) * 2.5 < max_width and min(hh, ww) >> levels >= 16:
        levels += 1
    bright = np.zeros((hh, ww), np.float32) if polarity != "dark" else None
    dark = np.zeros((hh, ww), np.float32) if polarity != "bright" else None
    # Which pyramid level gave each pixel its strength: the scratch's scale, hence its width.
    bright_level = np.zeros((hh, ww), np.uint8) if bright is not None else None
    dark_level = np.zeros((hh, ww), np.uint8) if dark is not None else None
    img = work
    s = _LEVEL_SIGMA  # in each level's own pixels: the normalisation is the same at every level
    d = int(round(2 * s))
    b = int(math.ceil(2.0 * s)) + d  # mirrored borders make ridges: drop them
    for level in range(levels):
        if level:
            img = cv2.pyrDown(img)
        g = cv2.GaussianBlur(img, (0, 0), s)
        dxx = cv2.Sobel(g, cv2.CV_32F, 2, 0, ksize=3)
        dyy = cv2.Sobel(g, cv2.CV_32F, 0, 2, ksize=3)
        dxy = cv2.Sobel(g, cv2.CV_32F, 1, 1, ksize=3)
        # Sobel 3x3 scales second derivatives by 4.
        k2 = s * s / 4.0 / _RIDGE_GAIN
        tr = cv2.add(dxx, dyy)
        tr *= k2
        q2 = cv2.magnitude(cv2.subtract(dxx, dyy), 2.0 * dxy)  # 2q
        q2 *= k2
        if edge_factor > 0:
            gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
            gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
            grad = cv2.magnitude(gx, gy)
            grad *= edge_factor * s / 8.0 / _RIDGE_GAIN  # Sobel scales first derivatives by 8
        # The surface's own texture at this scale: a robust spread of the (zero-mean)
        # Laplacian. Subtracting a multiple of it raises the bar on busy surfaces and at
        # scales where the texture (or banding) is strong, and leaves clean surfaces alone.
        noise = 1.4826 * float(np.median(np.abs(tr[::2, ::2])))
        two_b, two_d = _two_sided(g, d)
        two_b *= _TWO_SIDED_GAIN
        two_d *= _TWO_SIDED_GAIN
        for out, out_level, t, two in ((bright, bright_level, -tr, two_b), (dark, dark_level, tr, two_d)):
            if out is None:
                continue
            r = cv2.min(cv2.min(q2, t), two)
            if edge_factor > 0:
                r -= grad
            r -= texture_factor * noise
            r[:b] = 0
            r[-b:] = 0
            r[:, :b] = 0
            r[:, -b:] = 0
            if level:
                r = cv2.resize(r, (ww, hh), interpolation=cv2.INTER_LINEAR)
                out_level[r > out] = level
            cv2.max(out, r, dst=out)
    return (bright, bright_level), (dark, dark_level)


def _min_contrast(cfg: ScratchConfig, sign: int) -> float:
    if sign < 0 and cfg.min_dark_contrast_gray is not None:
        return cfg.min_dark_contrast_gray
    return cfg.min_contrast_gray


def _scratches(strength: np.ndarray, level: np.ndarray, sign: int, f: int, min_len: float, cfg: ScratchConfig) -> list[dict]:
    """Hysteresis regions of one polarity, measured and joined, in working pixels."""
    hi_t = 0.5 * _min_contrast(cfg, sign)  # candidates reach down to half the boundary contrast
    lo_t = 0.5 * hi_t
    low = (strength > lo_t).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(low, connectivity=8)
    if n <= 1:
        return []
    seeded = np.zeros(n, bool)
    seeded[np.unique(labels[strength > hi_t])] = True
    min_piece = max(3.0, 0.15 * min_len / f)
    pieces = []
    for i in range(1, n):
        if not seeded[i]:
            continue
        x, y, bw, bh, area = stats[i]
        if max(bw, bh) < min_piece:
            continue
        ys, xs = np.nonzero(labels[y : y + bh, x : x + bw] == i)
        pts = np.column_stack([xs + x, ys + y]).astype(np.float32)
        piece = _measure(pts)
        if piece["length"] < min_piece or piece["length"] < 2.0 * piece["width"]:
            continue
        pieces.append(piece)
    groups = _join(pieces, cfg.max_gap_px / f, math.radians(cfg.max_join_angle_deg))
    out = []
    for group in groups:
        pts = np.concatenate([pieces[j]["pts"] for j in group])
        s = _measure(pts)
        s["sign"] = sign
        s["pieces"] = len(group)
        _fit_curve(s)
        samples, where = _line_samples(s, strength)
        s["sigma"] = _LEVEL_SIGMA * 2.0 ** float(np.median(level[where[1], where[0]]))
        # The contrast a straight-ish scratch holds along most of its length: a chain of texture
        # that meanders, or pieces joined across long gaps, score low here.
        s["contrast"] = float(np.percentile(samples, 40))
        s["support"] = float(np.mean(samples > 0.5 * hi_t))
        p20, p80 = np.percentile(samples, [20, 80])
        s["uniformity"] = float(max(p20, 0.0) / max(p80, 1e-3))
        out.append(s)
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


def _join(pieces: list[dict], max_gap: float, max_angle: float) -> list[list[int]]:
    """Union of pieces that lie on one line: small angle, small offset across, small gap along."""
    n = len(pieces)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    cos_max = math.cos(max_angle)
    for i in range(n):
        a = pieces[i]
        for j in range(i + 1, n):
            b = pieces[j]
            if abs(float(a["axis"] @ b["axis"])) < cos_max:
                continue
            # Put both on the longer one's axis.
            p, q = (a, b) if a["length"] >= b["length"] else (b, a)
            rel = q["center"] - p["center"]
            along = float(rel @ p["axis"])
            across = abs(float(rel[0] * p["axis"][1] - rel[1] * p["axis"][0]))
            q_half = 0.5 * q["length"]
            gap = max(along - q_half - p["t1"], p["t0"] - (along + q_half), 0.0)
            if gap > max_gap:
                continue
            # Allow a curve's sagitta over the gap plus the widths.
            if across > 2.0 + 0.5 * (p["width"] + q["width"]) + 0.15 * (gap + q_half):
                continue
            parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def _fit_curve(s: dict) -> None:
    """Fit the scratch's centre line as a gentle curve: offset across the main axis as a
    quadratic of the position along it. Adds ``curve`` (polynomial) and ``residual_px``."""
    d = s["pts"] - s["center"]
    ax = s["axis"]
    t = d @ ax
    v = d[:, 0] * ax[1] - d[:, 1] * ax[0]
    deg = 2 if s["length"] > 12 else 1
    span = max(s["t1"] - s["t0"], 1.0)
    coef = np.polyfit(t / span, v, deg)
    s["curve"] = (coef, span)
    s["residual_px"] = float(np.sqrt(np.mean((np.polyval(coef, t / span) - v) ** 2)))


def _line_samples(s: dict, strength: np.ndarray) -> np.ndarray:
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
    prof = cv2.remap(gray, px.astype(np.float32), py.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
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
    return contrast, float(hi - lo + 1)


def _finding(s: dict, gray: np.ndarray, view: View, cfg: ScratchConfig, min_len: float, f: int) -> Finding:
    ridge = s["contrast"]
    contrast, width = _profile(gray, s, f)
    length = s["length"] * f
    elong = length / width
    margins = (
        math.log(max(ridge, 1e-3) / _min_contrast(cfg, s["sign"])),
        math.log(length / min_len),
        math.log(elong / cfg.min_elongation),
    )
    z = min(margins) + 0.1 * (sum(max(m, 0.0) for m in margins) - max(min(margins), 0.0))
    score = 1.0 / (1.0 + math.exp(-4.0 * z))
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
        "support": round(s["support"], 3),
        "uniformity": round(s["uniformity"], 3),
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
