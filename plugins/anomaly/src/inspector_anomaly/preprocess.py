"""Image preprocessing shared by training and the runtime detector.

One function, :func:`prepare`, turns an image (a station's ROI view) into the model's input;
training calls the very same function on every training image, so the runtime sees what the
model learned from. numpy and OpenCV only: the runtime never imports torch.

``letterbox`` (the default) keeps the part's aspect ratio: the image is scaled to fit the
model's input and the rest is filled by replicating the border. The anomaly map is then read
only inside the image's own rectangle (``Prepared.valid``), so padding never raises a score.
``stretch`` is anomalib's plain resize, kept for comparison.

``tiles`` keeps the *scale* fixed instead: the image is resized by one factor for every part
(``scale``, from the card), cut into overlapping tiles of the model's input size, and each tile
is run on its own; partial tiles are padded like letterbox. Small defects keep their pixels and
every part's texture has the same size, whatever the part's size.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import cv2
import numpy as np

ResizeMode = Literal["letterbox", "stretch", "tiles"]
Photometric = Literal["none", "meanstd", "clahe", "flatfield"]
Downscale = Literal["area", "halving"]

TARGET_MEAN, TARGET_STD = 128.0, 32.0
FLATFIELD_DIVISOR = 8.0


def photometric(image: np.ndarray, mode: Photometric) -> np.ndarray:
    """Cancel lighting differences between parts before the model sees them.

    ``meanstd``: every channel scaled to mean 128, std 32 over the whole view (exposure and
    gain drift); ``clahe``: local contrast equalisation (OpenCV CLAHE on the luminance); ``flatfield``: divided by
    its own blurred copy (sigma = 1/8 of the larger side: uneven illumination), then as meanstd."""
    if mode == "none":
        return image
    if mode == "meanstd":
        f = image.astype(np.float32)
        means, stds = cv2.meanStdDev(f if f.ndim == 2 else f.reshape(-1, f.shape[2]).reshape(f.shape))
        mean, std = float(np.mean(means)), float(np.mean(stds))
        f = (f - mean) * (TARGET_STD / max(std, 1.0)) + TARGET_MEAN
        return np.clip(f, 0, 255).astype(np.uint8)
    if mode == "flatfield":
        f = image.astype(np.float32)
        h, w = image.shape[:2]
        sigma = max(h, w) / FLATFIELD_DIVISOR
        # The background is smooth: blur a 1/8 copy (sigma/8) and scale it back, ~50x cheaper.
        small = cv2.resize(f, (max(1, w // 8), max(1, h // 8)), interpolation=cv2.INTER_AREA)
        background = cv2.resize(cv2.GaussianBlur(small, (0, 0), sigma / 8), (w, h), interpolation=cv2.INTER_LINEAR)
        if background.ndim < f.ndim:
            background = background[:, :, None]
        flat = f / np.maximum(background, 1.0)
        mean, std = float(flat.mean()), float(flat.std())
        flat = (flat - mean) * (TARGET_STD / max(std, 1e-3)) + TARGET_MEAN
        return np.clip(flat, 0, 255).astype(np.uint8)
    if mode == "clahe":
        clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
        if image.ndim == 2:
            return clahe.apply(image)
        lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
        lab[:, :, 0] = clahe.apply(lab[:, :, 0])
        return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)
    raise ValueError(f"anomaly preprocessing: unknown photometric mode {mode!r} (use none, meanstd or clahe)")


AREA_BY_INTEGRAL_MIN_PX = 2_000_000
"""Mono sources of at least this many pixels are area-averaged through their integral image
(:func:`area_resize`) when the reduction is not a whole factor; smaller ones by separable
weighted sums of rows (:func:`_area_banded`)."""


@functools.lru_cache(maxsize=32)
def _area_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Area averaging of ``n_in`` samples to ``n_out`` along one axis: source index and weight of
    each of the K taps of every target sample, ``(K, n_out)`` each. Target ``j`` covers
    ``[j s, (j + 1) s)`` with ``s = n_in / n_out``; a source pixel ``[i, i + 1)`` weighs the share
    of that footprint it covers (OpenCV's INTER_AREA weights)."""
    s = n_in / n_out
    starts = np.arange(n_out) * s
    ends = np.minimum(starts + s, n_in)
    first = np.floor(starts).astype(np.intp)
    k = int((np.ceil(ends) - first).max())
    index = np.empty((k, n_out), dtype=np.intp)
    weight = np.empty((k, n_out), dtype=np.float32)
    for t in range(k):
        i = first + t
        weight[t] = np.clip(np.minimum(i + 1, ends) - np.maximum(i, starts), 0.0, None) / s
        index[t] = np.minimum(i, n_in - 1)  # a tap past the end weighs 0
    index.flags.writeable = weight.flags.writeable = False
    return index, weight


@functools.lru_cache(maxsize=4)
def _row_weights(n_in: int, n_out: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_area_taps` with every weight repeated along a row of ``width`` values, so that
    each tap is one vectorised ``cv2.accumulateProduct`` (no broadcasting loop). About
    4.5 bytes per source pixel for a reduction by 8 (9 MB for a 2 MP source), so few are kept."""
    index, weight = _area_taps(n_in, n_out)
    rows = np.ascontiguousarray(np.broadcast_to(weight[:, :, None], (*weight.shape, width)))
    rows.flags.writeable = False
    return index, rows


def _area_pass(rows: np.ndarray, n_out: int) -> np.ndarray:
    """Area-average the rows of a 2-D float32 array ``(n_in, width)`` to ``(n_out, width)``."""
    index, weights = _row_weights(rows.shape[0], n_out, rows.shape[1])
    acc = cv2.multiply(rows[index[0]], weights[0])
    for t in range(1, len(index)):
        cv2.accumulateProduct(rows[index[t]], weights[t], acc)
    return acc


def _area_banded(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area averaging of a mono image as two separable passes of weighted row sums: the target
    rows from the source rows, then (transposed) the target columns. OpenCV's INTER_AREA by a
    factor that is not whole walks its pixel table one value at a time (1.2 ms for a 680 x 480
    mono ROI on a slow core); this is about 2x cheaper, the same values up to float rounding (a
    grey level at rounding ties). Not for colour: a channel gathered out of BGR costs more than
    OpenCV's colour path saves."""
    nw, nh = size
    tall = _area_pass(image.astype(np.float32), nh)  # (nh, w)
    out = cv2.transpose(_area_pass(cv2.transpose(tall), nw))  # (nh, nw)
    return cv2.convertScaleAbs(out)  # rounded half to even and saturated, as OpenCV's resize


def area_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(image, size, interpolation=cv2.INTER_AREA)`` for a reduction, the same values
    (up to one grey level where rounding ties: 0.002 % of pixels in tests), cheaper.

    OpenCV's area averaging by a factor that is not a whole number (2448 x 2048 -> 256 x 214, a
    680 x 480 ROI -> 256 x 181) takes its general path, one table entry at a time: 9-14 ms of one
    core per 5 MP frame, 0.4-1.2 ms per ROI. Each output pixel is the mean of the input over its
    footprint, pixels on the footprint's border weighted by the share they cover; the weights are
    separable. Large mono frames (``AREA_BY_INTEGRAL_MIN_PX``) sample their integral image
    (one pass, ~3 ms) bilinearly at each footprint's four corners, 1.3-2x cheaper than OpenCV;
    smaller mono images take two separable passes of weighted row sums (:func:`_area_banded`),
    about 2x cheaper. Whole factors, colour and other dtypes keep OpenCV's own path."""
    h, w = image.shape[:2]
    nw, nh = size
    whole = w % nw == 0 and h % nh == 0
    if image.dtype != np.uint8 or image.ndim != 2 or nw > w or nh > h or whole:
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if h * w < AREA_BY_INTEGRAL_MIN_PX:
        return _area_banded(image, size)
    if 255 * h * w < 2**31:  # (beyond, the int32 integral would overflow)
        return _area_by_integral(image, size)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _area_by_integral(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = image.shape[:2]
    nw, nh = size
    integral = cv2.integral(image, sdepth=cv2.CV_32S)  # (h + 1, w + 1): sums of image[:y, :x]
    xs = np.arange(nw + 1) * (w / nw)
    ys = np.arange(nh + 1) * (h / nh)
    x0 = np.minimum(xs.astype(np.intp), w - 1)
    y0 = np.minimum(ys.astype(np.intp), h - 1)
    fx, fy = xs - x0, (ys - y0)[:, None]
    # Whole rows first (contiguous copies), then the columns of those: half the cost of one np.ix_ gather.
    rows = integral.take(np.concatenate([y0, y0 + 1]), axis=0)
    corners = rows.take(np.concatenate([x0, x0 + 1]), axis=1).astype(np.float64)
    k, m = nw + 1, nh + 1
    across = corners[:, :k] * (1 - fx) + corners[:, k:] * fx
    at = across[:m] * (1 - fy) + across[m:] * fy
    box = at[1:, 1:] - at[1:, :-1] - at[:-1, 1:] + at[:-1, :-1]
    return np.clip(np.rint(box * (nw * nh / (w * h))), 0, 255).astype(np.uint8)


HALVING_MIN_PX = 2_000_000
"""``halving`` shrinks sources of at least this many pixels (a line camera's whole frame) by
halves first. No image of the shared real data sets is this large (the largest of the 2,751
under ../shared/data is 640 x 640, 2026-12-02), so every quality figure measured on them holds
for both methods."""


def downscale(image: np.ndarray, size: tuple[int, int], method: Downscale = "area") -> np.ndarray:
    """Shrink ``image`` to ``size = (w, h)`` (not larger than the image on either side).

    ``area``: exact area averaging (:func:`area_resize`). ``halving``: a source of
    ``HALVING_MIN_PX`` or more is halved by 2 x 2 means while it is still at least twice the
    target on both sides, then area-averaged to the target. OpenCV's 2 x 2 mean is vectorised
    (0.2 ms for a 5 MP mono frame, one core) where a reduction by a factor that is not whole is
    not: 2448 x 2048 -> 256 x 214 costs about 0.8 ms instead of 2-3 ms. It is not exact area
    averaging: on the line-rate bench's frames 0.66 grey levels from it on average, at most 16 at
    sharp edges, more on pixel-scale noise (each halving rounds to a grey level; an
    odd last row or column is dropped before a halving, at most one source pixel per halving
    on a side). Training writes the method into the model card, so the runtime shrinks a view
    exactly as the model's training images were."""
    if method not in ("area", "halving"):
        raise ValueError(f"anomaly preprocessing: unknown downscale {method!r} (use 'area' or 'halving')")
    nw, nh = size
    if method == "halving" and image.shape[0] * image.shape[1] >= HALVING_MIN_PX:
        while image.shape[1] >= 2 * nw and image.shape[0] >= 2 * nh:
            h, w = image.shape[:2]
            even = image[: h - h % 2, : w - w % 2]
            image = cv2.resize(even, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        if image.shape[1] == nw and image.shape[0] == nh:
            return image
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return area_resize(image, size)


@dataclasses.dataclass(frozen=True, slots=True)
class Prepared:
    """The model input for one image and how it maps back to the image."""

    tensor: np.ndarray
    """float32 ``[1, 3, H, W]``, RGB in [0, 1] (ImageNet normalisation is inside the model)."""
    valid: tuple[int, int, int, int]
    """``(x, y, w, h)`` of the image's pixels inside the model input."""
    scale: tuple[float, float]
    """Model pixels per image pixel, ``(sx, sy)``."""


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 gray or BGR (OpenCV order) to RGB uint8."""
    if image.dtype != np.uint8:
        raise ValueError(f"anomaly preprocessing: image must be uint8 (got {image.dtype})")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    raise ValueError(f"anomaly preprocessing: expected (H, W) or (H, W, 3) image, got shape {image.shape}")


def prepare(
    image: np.ndarray,
    size: tuple[int, int],
    mode: ResizeMode = "letterbox",
    light: Photometric = "none",
    shrink: Downscale = "area",
) -> Prepared:
    """Prepare one uint8 image (gray or BGR) for a model whose input is ``size = (H, W)``.

    Order: resize (a reduction by ``shrink``, see :func:`downscale`), lighting normalisation
    (on the resized part only, so it is cheap and the padding does not bias it), then padding."""
    out_h, out_w = size
    h, w = image.shape[:2]
    if h < 2 or w < 2:
        raise ValueError(f"anomaly preprocessing: image too small ({w}x{h} px)")
    if mode == "stretch":
        new_w, new_h = out_w, out_h
    elif mode == "letterbox":
        s = min(out_w / w, out_h / h)
        new_w, new_h = max(1, round(w * s)), max(1, round(h * s))
    else:
        raise ValueError(f"anomaly preprocessing: unknown resize mode {mode!r} (use 'letterbox' or 'stretch')")
    if new_w < w and new_h <= h:
        resized = downscale(image, (new_w, new_h), shrink)
    else:
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if new_w < w else cv2.INTER_LINEAR)
    lit = photometric(resized, light)
    x0, y0 = (out_w - new_w) // 2, (out_h - new_h) // 2
    if (new_w, new_h) != (out_w, out_h):
        lit = cv2.copyMakeBorder(lit, y0, out_h - new_h - y0, x0, out_w - new_w - x0, cv2.BORDER_REPLICATE)
    return Prepared(tensor=to_tensor(lit), valid=(x0, y0, new_w, new_h), scale=(new_w / w, new_h / h))


def to_tensor(image: np.ndarray) -> np.ndarray:
    """uint8 gray or BGR ``(H, W[, 3])`` to the model's float32 ``[1, 3, H, W]`` RGB in [0, 1].

    A gray image is scaled once and copied into the three channels (the values ``to_rgb`` then a
    float conversion would give, without the RGB image and its transpose)."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2 and image.dtype == np.uint8:
        h, w = image.shape
        tensor = np.empty((1, 3, h, w), dtype=np.float32)
        np.multiply(image, np.float32(1.0 / 255.0), out=tensor[0, 0], casting="unsafe")
        tensor[0, 1] = tensor[0, 0]
        tensor[0, 2] = tensor[0, 0]
        return tensor
    rgb = to_rgb(image)
    tensor = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32)
    tensor *= 1.0 / 255.0
    return tensor


def valid_mask(size: tuple[int, int], valid: tuple[int, int, int, int]) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the image's pixels inside the model input."""
    m = np.zeros(size, dtype=bool)
    x, y, w, h = valid
    m[y : y + h, x : x + w] = True
    return m


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` px covering ``length`` px with at least ``overlap`` px overlap."""
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def prepare_tiles(
    image: np.ndarray,
    size: tuple[int, int],
    scale: float,
    overlap: int,
    light: Photometric = "none",
    shrink: Downscale = "area",
) -> tuple[list[Prepared], list[tuple[int, int]], tuple[int, int]]:
    """Resize ``image`` by ``scale`` (a reduction by ``shrink``, see :func:`downscale`) and cut it
    into model-size tiles.

    Returns the prepared tiles, each tile's ``(x, y)`` in the scaled image, and the scaled
    image's ``(h, w)``."""
    h, w = image.shape[:2]
    sh, sw = max(2, round(h * scale)), max(2, round(w * scale))
    if (sh, sw) == (h, w):
        scaled = image
    elif sh <= h and sw <= w and shrink == "halving":
        scaled = downscale(image, (sw, sh), shrink)
    else:  # tiles with ``area`` keep OpenCV's own resize, as every tiles card was trained with
        scaled = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    scaled = photometric(scaled, light)
    th, tw = size
    out, origins = [], []
    for y0 in tile_origins(sh, th, overlap):
        for x0 in tile_origins(sw, tw, overlap):
            tile = scaled[y0 : y0 + th, x0 : x0 + tw]
            ph, pw = tile.shape[:2]
            tile = np.ascontiguousarray(tile)
            if (ph, pw) != (th, tw):
                tile = cv2.copyMakeBorder(tile, 0, th - ph, 0, tw - pw, cv2.BORDER_REPLICATE)
            out.append(Prepared(tensor=to_tensor(tile), valid=(0, 0, pw, ph), scale=(scale, scale)))
            origins.append((x0, y0))
    return out, origins, (sh, sw)
