"""Sub-pixel registration of a view onto a golden reference.

The pose is a similarity (shift, rotation, scale) that maps reference pixels to view pixels.
It is found in three stages on a Gaussian pyramid (``cv2.pyrDown``, so that a pixel ``x`` of
level ``k`` is pixel ``2**k * x`` of the full image, exactly):

1. **Coarse search** on the coarsest level (longer side <= ``COARSE_SIDE_PX``): normalised
   cross-correlation (``cv2.matchTemplate``, ``TM_CCOEFF_NORMED`` with a mask) of the reference's
   part region, rotated to a few candidate angles, over the whole view. It gives the pose to
   about one coarse pixel and half an angle step, anywhere in the view.
2. **Refinement**, level by level down to the finest (longer side <= ``FINE_SIDE_PX``):
   inverse-compositional Lucas-Kanade on a fixed set of reference pixels (the strongest
   gradients inside the weight mask, spread over a grid). The reference's Jacobian and the
   sample points are computed once per reference, so one iteration costs one ``cv2.remap`` of
   a few thousand points and a 4x4 solve. At each iteration the sampled intensities are
   fitted to the reference by gain, offset and a linear light gradient before the residual is
   taken (lighting changes cancel), and residuals are Huber-weighted (a defect elsewhere on the
   part, which the reference does not have, pulls little).
3. **Match score**: zero-normalised correlation between the gradient magnitudes of the
   reference and of the view warped back by the found pose, over the weight mask, at a middle
   level (``MATCH_ON_EDGES``). A missing or unrecognisable part scores low.

``cv2.findTransformECC`` does the same job as stage 2 but recomputes the warped image and its
gradients over the whole region at every iteration. It is kept as an optional last stage on the
part's masked region (``ECC_SIDE_PX``, off): on moved real transistors it was less repeatable
than stage 2 and 2.8x dearer.

Accuracy on real parts needs the weight mask to keep to the part (``teach(part=...)`` in
:mod:`inspector_misalignment.reference`): a textured background that does not move with the
part otherwise pulls the pose (bench/eval_registration.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import cv2
import numpy as np

COARSE_SIDE_PX = 128
"""Longer side of the coarsest level, where the global search runs."""
FINE_SIDE_PX = 1300
"""Longer side of the finest level used; a 2448x2048 frame is refined at half resolution."""
MATCH_SIDE_PX = 256
"""Longer side of the level where the match score is computed."""
SEARCH_ANGLES_DEG = tuple(float(a) for a in range(-12, 13, 3))
"""Candidate rotations of the coarse search; a part turned further is reported as not matched."""
SEARCH_MARGIN = 0.15
"""The coarse template leaves at least this fraction of the view on each side to search in."""
ACCEPT_MATCH = 0.9
"""A pose found from the nominal one that matches at least this well is kept without a search."""
SEARCH_PREFERENCE = 0.0
"""How much better the global search's pose must match than the one found from the nominal
pose to be kept. 0: the better match wins, so the pose depends on the view's content and not
on where the part happens to sit relative to the nominal start. With 0.1 (before issue 11's
third pass) a real part whose cost has two optima (a transistor case that sits lower on its
board than the reference's: the board holes in the mask's band line up at one pose, the case
at another, match 0.38 against 0.44) kept the nominal-start optimum when it sat near the
nominal pose and took the other one when moved 20 px away: two held-out moves of
train/good/021 registered 22-25 px off (bench/eval_registration.py). Tuning half, reference
from its even quarter and moves of its odd quarter (n = 90): worst 0.13 px with 0.1, 0.20 with
0, 0.18 with 0.03; the preference only ever hid the other optimum."""
SEARCH_SCALE_STEP = 1.05
"""Ratio of neighbouring candidate scales of the coarse search when a scale range is given; the
refinement follows the few % between them."""
POINTS_PER_LEVEL = 3000
STOP_PX = 1e-2
"""A level's Lucas-Kanade stops when an update moves the points by less than this (level px).
Measured on moved transistors (n = 90, bench/eval_registration.py's tuning half): 2e-3, 1e-2,
2e-2 give worst errors 0.11, 0.12, 0.19 px; on a 5 MP frame 1e-2 costs about 1.4x the former
(30, 12, 8) iterations with 2e-3 (13.6 against 10.0 CPU ms, same run)."""
ECC_SIDE_PX = 0
"""When non-zero: a final ECC refinement (``cv2.findTransformECC`` on the part's region, the
weight mask as its mask) on the level whose longer side is at most this. Off: on moved real
transistors (bench/eval_registration.py --ecc, tuning half, n = 108) it made the pose less
repeatable, not more (mean 0.38 / worst 4.5 px against 0.023 / 0.10 px without) and cost 2.8x
the CPU time (51.6 against 18.7 ms at 348x399, load average about 9-13)."""
ECC_ITERATIONS = 30
ECC_EPS = 1e-5
ECC_MOTION = cv2.MOTION_AFFINE
MATCH_ON_EDGES = True
"""The match score (and the choice between the two candidate poses, from the nominal start and
from the global search) is the correlation of the gradient magnitudes (edges) over the weight
mask, not of the intensities. On the transistor the intensity correlation is dominated by the
case's shading, which differs from part to part: held-out good parts matched 0.43-0.80, and
with no preference (SEARCH_PREFERENCE) the search's far-off poses won on parts with a bent lead
or a damaged case (cut_lead/000 registered 91 px, 14 deg away). With the tuning half's
tolerances (bench/eval_registration.py --judge): intensity, 2 of 22 held-out good and 7 of 15
other test defects fail; edges, 1 of 22 and 1 of 15; misplaced 5 of 5 both. Synthetic plates
match 0.994-0.996 on edges (1.0 on intensities)."""
HUBER_K = 1.345
"""Residuals beyond this many (robust) standard deviations are down-weighted (Huber)."""
ITERATIONS = (40, 40, 40, 40, 40, 40)
"""Largest number of Lucas-Kanade iterations per level, coarsest first; most levels stop earlier
(``STOP_PX``). The cap matters on a real part that differs a little from
the reference (a case that leans, a lead bent): the optimum then lies in a flat valley, and with
the former (30, 12, 8) the pose found depended on where the search started (moved transistors,
reference from a quarter of the images, moved another quarter, n = 90: worst 2.85 px with
(30, 12, 8), 1.53 with 20 per level, 0.11 with 40, 0.12 with 80)."""


@dataclasses.dataclass(frozen=True)
class Pose:
    """A similarity mapping reference pixels to view pixels, and how well they match."""

    matrix: np.ndarray
    """2x3, full-resolution reference pixel -> view pixel."""
    centre: tuple[float, float]
    """The part's reference point (centre of its region in the reference), full-res px."""
    match: float
    """Zero-normalised correlation of the gradient magnitudes in the weight mask (``MATCH_ON_EDGES``),
    clipped to [0, 1]."""
    coarse_score: float
    """Best normalised cross-correlation of the coarse search."""

    @property
    def shift(self) -> tuple[float, float]:
        cx, cy = self.centre
        m = self.matrix
        return (m[0, 0] * cx + m[0, 1] * cy + m[0, 2] - cx, m[1, 0] * cx + m[1, 1] * cy + m[1, 2] - cy)

    @property
    def rotation_deg(self) -> float:
        """Counter-clockwise on screen is positive (OpenCV's ``getRotationMatrix2D`` convention)."""
        return math.degrees(math.atan2(self.matrix[0, 1], self.matrix[0, 0]))

    @property
    def scale(self) -> float:
        return math.hypot(self.matrix[0, 0], self.matrix[0, 1])


def pyramid(gray: np.ndarray, levels: int) -> list[np.ndarray]:
    """``levels + 1`` images: the input (as given) and ``levels`` successive ``pyrDown``s."""
    out = [gray]
    for _ in range(levels):
        out.append(cv2.pyrDown(out[-1]))
    return out


def level_count(shape: tuple[int, int], side_px: int) -> int:
    """How many halvings bring the longer side of ``shape`` to at most ``side_px``."""
    k, side = 0, max(shape)
    while side > side_px:
        side = (side + 1) // 2
        k += 1
    return k


def _scale(k: int) -> np.ndarray:
    return np.diag([2.0**k, 2.0**k, 1.0])


def _to3(m: np.ndarray) -> np.ndarray:
    return np.vstack([m, [0.0, 0.0, 1.0]])


@dataclasses.dataclass
class _Level:
    k: int
    points: np.ndarray  # (K, 2) float32, level px
    values: np.ndarray  # (K,) float32
    jacobian: np.ndarray  # (K, 4) float64
    rigid_jacobian: np.ndarray  # (K, 3): without the scale column, contiguous (a slice made the solve 3x dearer)
    photometric: np.ndarray  # (K, 4): ref value, 1, x', y' (the photometric fit's design)
    gram: np.ndarray  # (4, 4)
    centre: np.ndarray  # (2,) level px
    radius: float  # rms distance of the points from the centre, level px


class Reference:
    """A golden reference prepared for fast registration. Build once, register many views.

    ``image`` is the reference (uint8 gray, full resolution); ``weight`` (uint8, same shape,
    non-zero where the part is stable) restricts registration and the match score to the part.
    """

    def __init__(
        self, image: np.ndarray, weight: np.ndarray | None = None, scale_range: tuple[float, float] | None = None
    ) -> None:
        if image.ndim != 2 or image.dtype != np.uint8:
            raise ValueError("the reference must be a uint8 grayscale image")
        h, w = image.shape
        if min(h, w) < 24:
            raise ValueError(f"the reference is too small to register ({w}x{h} px)")
        self.shape = (h, w)
        self.search_scales = search_scales(scale_range)
        self.scale_bounds = (1.0, 1.0) if scale_range is None else (float(scale_range[0]), float(scale_range[1]))
        """The refinement keeps the pose's scale within these: scale 1 (a rigid motion) unless a
        scale range is configured."""
        weight = np.full((h, w), 255, np.uint8) if weight is None else weight
        if weight.shape != image.shape:
            raise ValueError(f"the weight mask is {weight.shape[1]}x{weight.shape[0]}, the reference {w}x{h}")
        self.weight = (weight > 0).astype(np.uint8) * 255
        if not self.weight.any():
            raise ValueError("the weight mask is empty")
        self.k_fine = level_count(self.shape, FINE_SIDE_PX)
        self.k_coarse = max(self.k_fine, level_count(self.shape, COARSE_SIDE_PX))
        self.k_match = min(max(self.k_fine, level_count(self.shape, MATCH_SIDE_PX)), self.k_coarse)
        base = self._smooth_base(image)
        self.levels_img = pyramid(base, self.k_coarse - self.k_fine)  # index i = level k_fine + i
        self.levels_w: list[np.ndarray] = [self.weight]
        for _ in range(self.k_coarse):
            self.levels_w.append(cv2.pyrDown(self.levels_w[-1]))
        # The part's region and reference point.
        x, y, bw, bh = cv2.boundingRect(self.weight)
        self.region = (x, y, bw, bh)
        self.centre = (x + (bw - 1) / 2.0, y + (bh - 1) / 2.0)
        self._lk = [self._prepare_level(k) for k in range(self.k_coarse, self.k_fine - 1, -1)]
        self._prepare_search()
        self._prepare_match()
        self._prepare_ecc()

    # -- preparation -------------------------------------------------------------------------
    def _smooth_base(self, gray: np.ndarray) -> np.ndarray:
        """The finest level used, smoothed like a pyrDown output so gradients are well defined."""
        img = gray
        for _ in range(self.k_fine):
            img = cv2.pyrDown(img)
        if self.k_fine == 0:
            img = cv2.GaussianBlur(img, (5, 5), 1.0)
        return img

    def level_image(self, k: int) -> np.ndarray:
        return self.levels_img[k - self.k_fine]

    def _prepare_level(self, k: int) -> _Level:
        img = self.level_image(k).astype(np.float32)
        wk = self.levels_w[k]
        h, w = img.shape
        gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8)
        gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8)
        mag = np.hypot(gx, gy)
        valid = wk >= 250
        valid[:2, :] = valid[-2:, :] = False
        valid[:, :2] = valid[:, -2:] = False
        # The strongest gradients, at most a few per grid cell so that the whole part is used.
        cell = max(2, int(math.sqrt(h * w / (POINTS_PER_LEVEL / 3.0))))
        scores = np.where(valid, mag, 0.0)
        ys, xs = np.nonzero(scores > 0)
        if len(xs) < 12:
            ys, xs = np.nonzero(valid)
        vals = scores[ys, xs]
        cells = (ys // cell) * ((w + cell - 1) // cell) + xs // cell
        order = np.lexsort((-vals, cells))
        cells_sorted = cells[order]
        rank = np.arange(len(order)) - np.searchsorted(cells_sorted, cells_sorted, side="left")
        keep = order[rank < 3]
        if len(keep) > POINTS_PER_LEVEL:
            keep = keep[np.argsort(-vals[keep], kind="stable")[:POINTS_PER_LEVEL]]
        keep = np.sort(keep)
        px, py = xs[keep].astype(np.float64), ys[keep].astype(np.float64)
        c = np.array(self.centre) / 2.0**k
        xr, yr = px - c[0], py - c[1]
        gxs, gys = (
            gx[py.astype(int), px.astype(int)].astype(np.float64),
            gy[py.astype(int), px.astype(int)].astype(np.float64),
        )
        jac = np.stack([gxs * xr + gys * yr, -gxs * yr + gys * xr, gxs, gys], axis=1)
        norm = max(h, w) / 2.0
        values = img[py.astype(int), px.astype(int)].astype(np.float64)
        phot = np.stack([values, np.ones_like(xr), xr / norm, yr / norm], axis=1)
        pts = np.stack([px, py], axis=1).astype(np.float32)
        radius = float(np.sqrt(np.mean(xr**2 + yr**2)))
        rigid = np.ascontiguousarray(jac[:, 1:])
        return _Level(k, pts, values.astype(np.float32), jac, rigid, phot, phot.T @ phot, c, radius)

    def _prepare_search(self) -> None:
        k = self.k_coarse
        img = self.level_image(k)
        wk = self.levels_w[k]
        h, w = img.shape
        x, y, bw, bh = (v / 2.0**k for v in self.region)
        mx, my = SEARCH_MARGIN * w, SEARCH_MARGIN * h
        x0, y0 = max(int(math.floor(x)), int(mx)), max(int(math.floor(y)), int(my))
        x1, y1 = min(int(math.ceil(x + bw)), w - int(mx)), min(int(math.ceil(y + bh)), h - int(my))
        if x1 - x0 < 8 or y1 - y0 < 8:
            x0, y0, x1, y1 = int(mx), int(my), w - int(mx), h - int(my)
        self.search_origin = (x0, y0)
        crop = img[y0:y1, x0:x1]
        mcrop = wk[y0:y1, x0:x1]
        th, tw = crop.shape
        centre = ((tw - 1) / 2.0, (th - 1) / 2.0)
        self.templates = []
        for scale in self.search_scales:
            # The template of a scaled part is the crop scaled about its centre into a canvas of the
            # scaled size (so nothing of the part is cut off and no view margin is lost).
            sw, sh = max(4, int(round(tw * scale))), max(4, int(round(th * scale)))
            for angle in SEARCH_ANGLES_DEG:
                m = cv2.getRotationMatrix2D(centre, angle, scale)
                m[:, 2] += ((sw - 1) / 2.0 - centre[0], (sh - 1) / 2.0 - centre[1])
                t = cv2.warpAffine(crop, m, (sw, sh), flags=cv2.INTER_LINEAR)
                tm = cv2.warpAffine(mcrop, m, (sw, sh), flags=cv2.INTER_NEAREST, borderValue=0)
                tm = (tm >= 128).astype(np.uint8)
                self.templates.append((angle, m, t, tm))

    def _prepare_match(self) -> None:
        k = self.k_match
        img = self.level_image(k).astype(np.float32)
        wk = self.levels_w[k] >= 128
        self.match_mask = wk
        vals = img[wk]
        self.match_values = (vals - vals.mean()) / max(float(vals.std()), 1e-6)
        self.match_edge_values = _gradient_magnitude(img)[wk]

    def _prepare_ecc(self) -> None:
        self.k_ecc: int | None = None
        if ECC_SIDE_PX <= 0:
            return
        k = min(max(self.k_fine, level_count(self.shape, ECC_SIDE_PX)), self.k_coarse)
        img = self.level_image(k)
        wk = self.levels_w[k] >= 128
        x, y, bw, bh = cv2.boundingRect(wk.astype(np.uint8))
        m = 2
        h, w = img.shape
        x0, y0, x1, y1 = max(0, x - m), max(0, y - m), min(w, x + bw + m), min(h, y + bh + m)
        self.k_ecc = k
        self.ecc_origin = (x0, y0)
        self.ecc_template = img[y0:y1, x0:x1].astype(np.float32)
        self.ecc_weight = (self.levels_w[k][y0:y1, x0:x1] >= 128).astype(np.uint8) * 255

    # -- registration ------------------------------------------------------------------------
    def view_pyramid(self, gray: np.ndarray, levels: Callable[[int], np.ndarray] | None = None) -> list[np.ndarray]:
        """The view's levels ``k_fine .. k_coarse`` (index 0 = ``k_fine``). ``levels(k)``, when
        given, is level ``k`` of ``gray``'s own pyrDown pyramid (``View.pyramid``, computed once per
        part and shared with its other steps): taken as it is where the finest level used is a
        pyrDown level (``k_fine >= 1``, the same arrays :func:`pyramid` would make)."""
        if levels is not None and self.k_fine >= 1:
            return [levels(k) for k in range(self.k_fine, self.k_coarse + 1)]
        return pyramid(self._smooth_base(gray), self.k_coarse - self.k_fine)

    def register(
        self, gray: np.ndarray, init: np.ndarray | None = None, levels: Callable[[int], np.ndarray] | None = None
    ) -> Pose:
        """Register ``gray`` (same shape as the reference). ``init`` (2x3, full-res) skips the
        coarse search. ``levels``: ``gray``'s pyrDown levels by number, to take instead of
        computing them (:meth:`view_pyramid`)."""
        if gray.shape != self.shape:
            raise ValueError(
                f"view {gray.shape[1]}x{gray.shape[0]} differs from the reference {self.shape[1]}x{self.shape[0]}"
            )
        view_levels = self.view_pyramid(gray, levels)
        coarse_score = float("nan")
        mid = [lk for lk in self._lk if lk.k >= self.k_match]
        fine = [lk for lk in self._lk if lk.k < self.k_match]
        # Good parts sit near the nominal pose: start there. When that does not match well,
        # start again from the global search's best guess and keep whichever matches better at
        # the middle level (the nominal one unless the other is clearly better, so that a
        # periodic background cannot pull a good part off by one period).
        w0 = np.eye(3) if init is None else _to3(np.asarray(init, np.float64))
        w0 = self._refine(mid, view_levels, w0)
        at_match = view_levels[self.k_match - self.k_fine]
        match, w_full = self._match(at_match, w0), w0
        if init is None and match < ACCEPT_MATCH:
            found, coarse_score = self._search(view_levels[-1])
            w1 = self._refine(mid, view_levels, found)
            m1 = self._match(at_match, w1)
            if m1 > match + SEARCH_PREFERENCE:
                match, w_full = m1, w1
        w_full = self._refine(fine, view_levels, w_full)
        if self.k_ecc is not None:
            w_full = self._ecc(view_levels[self.k_ecc - self.k_fine], w_full)
        if fine or self.k_ecc is not None:
            match = self._match(view_levels[self.k_match - self.k_fine], w_full)
        return Pose(w_full[:2].copy(), self.centre, match, coarse_score)

    def _refine(self, lks: list[_Level], levels: list[np.ndarray], w_full: np.ndarray) -> np.ndarray:
        for lk in lks:
            iters = ITERATIONS[min(self.k_coarse - lk.k, len(ITERATIONS) - 1)]
            s = _scale(lk.k)
            wk = np.linalg.inv(s) @ w_full @ s
            wk = self._lucas_kanade(lk, levels[lk.k - self.k_fine], wk, iters, self.scale_bounds)
            w_full = s @ wk @ np.linalg.inv(s)
        return w_full

    def _ecc(self, img: np.ndarray, w_full: np.ndarray) -> np.ndarray:
        """ECC (``cv2.findTransformECC``, affine, then the nearest similarity) of the part's region
        of the reference onto ``img`` (the view at level ``k_ecc``), from the pose ``w_full``. The
        view is cut to the part's predicted region, so the cost follows the part's size, at most
        ``ECC_ITERATIONS`` iterations. When ECC fails or wanders off, the pose is kept."""
        k = self.k_ecc
        assert k is not None
        s = _scale(k)
        wk = np.linalg.inv(s) @ w_full @ s
        ox, oy = self.ecc_origin
        th, tw = self.ecc_template.shape
        to_t = np.array([[1.0, 0, ox], [0, 1.0, oy], [0, 0, 1.0]])  # template px -> reference level px
        corners = np.array([[0, 0, 1], [tw, 0, 1], [0, th, 1], [tw, th, 1]], np.float64).T
        pc = (wk @ to_t @ corners)[:2]
        h, w = img.shape
        pad = 4 + 0.02 * max(tw, th)
        vx0, vy0 = max(0, int(pc[0].min() - pad)), max(0, int(pc[1].min() - pad))
        vx1, vy1 = min(w, int(math.ceil(pc[0].max() + pad))), min(h, int(math.ceil(pc[1].max() + pad)))
        if vx1 - vx0 < 16 or vy1 - vy0 < 16:
            return w_full
        from_v = np.array([[1.0, 0, -vx0], [0, 1.0, -vy0], [0, 0, 1.0]])  # view level px -> view crop px
        warp = (from_v @ wk @ to_t)[:2].astype(np.float32)
        view = img[vy0:vy1, vx0:vx1].astype(np.float32)
        # ECC's mask is in the input's pixels: the part's region carried there by the current pose.
        mask = cv2.warpAffine(self.ecc_weight, warp, (vx1 - vx0, vy1 - vy0), flags=cv2.INTER_NEAREST)
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, ECC_ITERATIONS, ECC_EPS)
        try:
            _, found = cv2.findTransformECC(self.ecc_template, view, warp, ECC_MOTION, criteria, mask, 1)
        except cv2.error:
            return w_full
        a = np.linalg.inv(from_v) @ _to3(found.astype(np.float64)) @ np.linalg.inv(to_t)
        # Nearest similarity, keeping where the part's centre goes.
        ca, sb = (a[0, 0] + a[1, 1]) / 2.0, (a[0, 1] - a[1, 0]) / 2.0
        lin = np.array([[ca, sb], [-sb, ca]])
        c = np.array(self.centre) / 2.0**k
        t = a[:2, :2] @ c + a[:2, 2] - lin @ c
        new = np.eye(3)
        new[:2, :2], new[:2, 2] = lin, t
        moved = np.hypot(*((new - wk)[:2, :2] @ c + (new - wk)[:2, 2]))
        if not np.all(np.isfinite(new)) or moved > 2.0 + 0.01 * max(tw, th):
            return w_full
        return s @ new @ np.linalg.inv(s)

    def _search(self, coarse: np.ndarray) -> tuple[np.ndarray, float]:
        best: tuple[float, np.ndarray | None] = (-2.0, None)
        ox, oy = self.search_origin
        for _angle, m, t, tm in self.templates:
            if t.shape[0] > coarse.shape[0] or t.shape[1] > coarse.shape[1]:
                continue
            res = cv2.matchTemplate(coarse, t, cv2.TM_CCOEFF_NORMED, mask=tm)
            res = np.nan_to_num(res, nan=-1.0, posinf=-1.0, neginf=-1.0)
            _, score, _, (u, v) = cv2.minMaxLoc(res)
            if score > best[0]:
                # reference level px -> crop -> rotated crop -> view level px
                lin = m[:, :2]
                t_vec = lin @ np.array([-ox, -oy]) + m[:, 2] + np.array([u, v])
                best = (score, np.hstack([lin, t_vec[:, None]]))
        if best[1] is None:
            return np.eye(3), 0.0
        s = _scale(self.k_coarse)
        return s @ _to3(best[1]) @ np.linalg.inv(s), float(best[0])

    @staticmethod
    def _lucas_kanade(
        lk: _Level, img: np.ndarray, w: np.ndarray, iters: int, scale_bounds: tuple[float, float] = (1.0, 1.0)
    ) -> np.ndarray:
        """Inverse-compositional Gauss-Newton from ``w`` (level px). The scale stays within
        ``scale_bounds``: with (1, 1) the update has no scale term (shift and rotation only)."""
        rigid = scale_bounds == (1.0, 1.0)
        jacobian = lk.rigid_jacobian if rigid else lk.jacobian
        if rigid:
            w = _with_scale(w, 1.0, lk.centre)
        pts = lk.points
        c = lk.centre
        h, wd = img.shape
        t = lk.values.astype(np.float64)
        phot = lk.photometric
        gram = lk.gram
        radius = lk.radius
        for _ in range(iters):
            p = pts @ w[:2, :2].T.astype(np.float32) + w[:2, 2].astype(np.float32)
            inside = (p[:, 0] >= 0) & (p[:, 0] <= wd - 1) & (p[:, 1] >= 0) & (p[:, 1] <= h - 1)
            n_in = int(inside.sum())
            if n_in < 12:
                break
            sampled = cv2.remap(img, p[:, 0:1], p[:, 1:2], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[
                :, 0
            ].astype(np.float64)
            # Photometric fit: sampled ~ gain * ref + offset + a linear light gradient.
            if n_in == len(t):
                coef = np.linalg.solve(gram, phot.T @ sampled)
            else:
                a = phot * inside[:, None]
                coef = np.linalg.solve(a.T @ phot + 1e-9 * np.eye(4), a.T @ sampled)
            gain = coef[0] if abs(coef[0]) > 1e-3 else 1e-3
            err = (sampled - phot[:, 1:] @ coef[1:]) / gain - t
            if n_in < len(t):
                err[~inside] = 0.0
            # Huber weights; the scale from the mean absolute residual (0.8 sigma for Gaussian noise).
            sigma = 1.2533 * float(np.abs(err).sum()) / n_in + 1e-6
            wts = np.minimum(1.0, HUBER_K * sigma / np.maximum(np.abs(err), 1e-12))
            if n_in < len(t):
                wts[~inside] = 0.0
            jw = jacobian * wts[:, None]
            try:
                dp = np.linalg.solve(jw.T @ jacobian, jw.T @ err)
            except np.linalg.LinAlgError:
                break
            if rigid:
                # A rotation by b (small) composed as cos/sin so that no scale creeps in.
                b_, tx, ty = dp
                a_ = math.cos(b_) - 1.0
                b_ = math.sin(b_)
            else:
                a_, b_, tx, ty = dp
            lin = np.array([[1 + a_, -b_], [b_, 1 + a_]])
            dw = np.eye(3)
            dw[:2, :2] = lin
            dw[:2, 2] = c + np.array([tx, ty]) - lin @ c
            w = w @ np.linalg.inv(dw)
            if not rigid:
                scale = math.hypot(w[0, 0], w[0, 1])
                bounded = min(max(scale, scale_bounds[0]), scale_bounds[1])
                if bounded != scale:
                    w = _with_scale(w, bounded, c)
            if abs(tx) + abs(ty) + (abs(a_) + abs(b_)) * radius < STOP_PX:
                break
        return w

    def _match(self, img: np.ndarray, w_full: np.ndarray, edges: bool = MATCH_ON_EDGES) -> float:
        """Zero-normalised correlation over the weight mask of the reference and ``img`` (the
        view at level ``k_match``) warped back by ``w_full``; of their gradient magnitudes when
        ``edges``."""
        s = _scale(self.k_match)
        wk = np.linalg.inv(s) @ w_full @ s
        h, w = img.shape
        warped = cv2.warpAffine(
            img,
            wk[:2],
            (w, h),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            # Edges: the view's border replicated, so that it adds no step of its own.
            borderMode=cv2.BORDER_REPLICATE if edges else cv2.BORDER_CONSTANT,
            borderValue=-1,
        )
        inside = cv2.warpAffine(
            np.ones((h, w), np.uint8), wk[:2], (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderValue=0
        )
        if edges:
            warped = _gradient_magnitude(warped)
        vals = warped[self.match_mask].astype(np.float32)
        ok = inside[self.match_mask] > 0
        if ok.sum() < 0.5 * ok.size:
            return 0.0
        ref = (self.match_edge_values if edges else self.match_values)[ok]
        ref = (ref - ref.mean()) / max(float(ref.std()), 1e-6)
        v = vals[ok]
        v = (v - v.mean()) / max(float(v.std()), 1e-6)
        return float(np.clip((ref * v).mean(), 0.0, 1.0))


def _with_scale(w: np.ndarray, scale: float, centre: np.ndarray) -> np.ndarray:
    """``w`` (3x3 similarity) with its scale set to ``scale``, mapping ``centre`` where it did."""
    lin = w[:2, :2]
    now = math.hypot(lin[0, 0], lin[0, 1])
    out = w.copy()
    out[:2, :2] = lin * (scale / max(now, 1e-12))
    out[:2, 2] = lin @ centre + w[:2, 2] - out[:2, :2] @ centre
    return out


def _gradient_magnitude(img: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude (float32)."""
    f = img.astype(np.float32)
    return cv2.magnitude(cv2.Sobel(f, cv2.CV_32F, 1, 0), cv2.Sobel(f, cv2.CV_32F, 0, 1))


def search_scales(scale_range: tuple[float, float] | None) -> tuple[float, ...]:
    """The coarse search's candidate scales: 1 alone, or 1 and geometric steps of
    ``SEARCH_SCALE_STEP`` out to both ends of ``scale_range`` (the ends included)."""
    if scale_range is None:
        return (1.0,)
    low, high = scale_range
    if not 0 < low <= 1.0 <= high:
        raise ValueError(f"scale range must contain 1 (got [{low}, {high}])")
    scales = {1.0, float(low), float(high)}
    for direction, end in ((SEARCH_SCALE_STEP, high), (1 / SEARCH_SCALE_STEP, low)):
        s = direction
        while (s < end) if direction > 1 else (s > end):
            scales.add(s)
            s *= direction
    return tuple(sorted(scales))


def warp_to_reference(gray: np.ndarray, matrix: np.ndarray, border: int | None = None) -> np.ndarray:
    """The view resampled into the reference's frame (for teaching and pictures); outside the
    view, its edge replicated, or ``border`` when given."""
    h, w = gray.shape[:2]
    return cv2.warpAffine(
        gray,
        np.asarray(matrix, np.float64),
        (w, h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE if border is None else cv2.BORDER_CONSTANT,
        borderValue=0 if border is None else border,
    )
