"""Training: good images in, ``NAME.onnx`` + ``NAME.json`` out. Needs the ``[train]`` extra.

anomalib's models (PatchCore, PaDiM, DFM) are used as they are; what this module adds is the
product's side of it: the same preprocessing as the runtime (:func:`inspector_anomaly.preprocess.prepare`),
an offline pretrained backbone, a faster coreset selection for PatchCore, an ONNX export that
onnxruntime accepts at batch 1, thresholds chosen on held-out images *through the runtime
detector itself*, and the model card.

Only the training command imports this module: it imports torch and anomalib.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
import time
import types
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from inspector_anomaly.card import (
    BackboneSpec,
    InputSpec,
    ModelCard,
    Reference,
    Thresholds,
    TrainingSpec,
    sha256_file,
)
from inspector_anomaly.image_selection import select_images
from inspector_anomaly.metrics import auroc, f1, f1_optimal_threshold, tail_threshold, tolerance_factor
from inspector_anomaly.model_output import check_writable, resolve_model_path, staged_model
from inspector_anomaly.preprocess import Downscale, prepare, prepare_tiles
from inspector_anomaly.projection import install_projection, principal_axes, projection_matrix
from inspector_anomaly.reference import PARITY_TOLERANCE, REFERENCE_INPUTS, reference_inputs

ModelName = Literal["patchcore", "padim", "dfm"]
Resize = Literal["letterbox", "stretch", "tiles"]
Photometric = Literal["none", "meanstd", "clahe", "flatfield"]
BackboneWeights = Literal["pretrained", "random"]
ImageScore = Literal["max", "top_mean"]
Projection = Literal["pca", "random"]
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
DEFAULT_LAYERS: dict[str, list[str]] = {
    "patchcore": ["blocks.2", "blocks.4"],
    "padim": ["blocks.1", "blocks.2", "blocks.4"],
    "dfm": ["blocks.4"],
}


@dataclasses.dataclass
class TrainSettings:
    model: ModelName = "patchcore"
    size: tuple[int, int] = (256, 256)
    """Model input (H, W); with ``input_shape="auto"`` its area is the pixel budget."""
    resize: Resize = "letterbox"
    input_shape: Literal["auto", "fixed"] = "auto"
    """letterbox: ``auto`` gives the model input the training parts' own aspect ratio when their
    median is 2:1 or longer (a bar, a strip), at the pixel area of ``size`` (sides multiples of
    32): the CPU per part stays that of ``size``, and a 1600 x 160 px bar is read at 0.42 model
    px per image px instead of 0.16, so hairline defects keep their contrast. Parts nearer to
    square keep ``size``. ``fixed``: ``size`` as given. Resolved once by :func:`settle_input`."""
    photometric: Photometric = "flatfield"
    """Lighting normalisation of every image before resizing."""
    downscale: Downscale = "halving"
    """How images are shrunk to the model (:func:`inspector_anomaly.preprocess.downscale`):
    ``halving`` (the default since issue 12's fourth pass) halves frames of 2 MP or more by exact
    2 x 2 means first, about 1.3 ms less CPU per 5 MP part than exact ``area`` (the step's
    ``prepare`` in ``bench/anomaly_overhead.py``, one thread); smaller images are
    shrunk the same either way. Written into the card."""
    scale: float = 1.0
    """tiles: model px per image px, the same for every part."""
    tile_overlap: int = 32
    """tiles: overlap of neighbouring tiles, model px."""
    max_patches: int = 400_000
    """PatchCore: patch features drawn at random before the coreset, to bound training time."""
    backbone: BackboneWeights = "pretrained"
    layers: list[str] | None = None
    memory_bank: int = 8192
    """PatchCore: patch features kept (k-center greedy coreset); with ``feature_dim`` it sets model
    size and speed. 8192: the full station's 15 parts/s on 2 cores needs at most its cost (issue
    12's third pass); 16384 unprojected is about 1.7x the CPU per part (docs/anomaly.md)."""
    roi: tuple[int, int, int, int] | None = None
    """(x, y, w, h) of the station's ROI, applied to every image before preprocessing."""
    val_fraction: float = 0.2
    """Share of the good images held out for thresholds when no validation folder is given."""
    image_score: ImageScore = "top_mean"
    """The part's raw score: the map's maximum or the mean of its top ``top_fraction``."""
    top_fraction: float = 0.02
    """``top_mean``: share of the map's pixels averaged into the part's score. 2 % (1 % until the
    issues 11/12 sweep): with ``map_sigma`` 6, magnetic tile's tune half 0.937 instead of 0.933 at
    no cost; 5 % scored higher there but lost 0.006 on the thin long bars (docs/anomaly.md)."""
    map_sigma: float = 6.0
    """PatchCore: sigma (model px) of the Gaussian that smooths the anomaly map inside the graph
    (anomalib's default 4; 6 since the issues 11/12 sweep, with ``top_fraction`` 0.02)."""
    feature_dim: int = 0
    """PatchCore: patch features are projected to this many dimensions before the nearest-neighbour
    search (0, the default: all of them, 152 for Lite0 blocks 2 + 4). 96 (PCA) at bank 8192: 0.77x
    the CPU per run for -0.003 to +0.001 image AUROC on the tune halves of magnetic tile and the
    long bars; 64 at bank 16384: today's CPU, +0.005 on magnetic tile, -0.008 on the long bars
    (``bench/anomaly_variants.py --sweep``, docs/anomaly.md). The projection (``projection``) is
    fitted on the training features, applied to the memory bank at training time and baked into
    the ONNX graph in front of the search, whose matrix product shrinks in proportion."""
    projection: Projection = "pca"
    """``feature_dim``: ``pca`` (the training features' leading principal axes, fitted on the
    patches drawn for the coreset) or ``random`` (a seeded Gaussian matrix, scaled by 1/sqrt(dim))."""
    margin: float = 0.1
    """``threshold="quantile"``: 99th percentile of held-out good scores plus this share of their spread."""
    threshold: Literal["loo", "quantile"] = "loo"
    """Good-only image threshold. ``loo`` (PatchCore): every training image is also scored
    leave-one-out, against the memory bank without the rows it contributed, and pooled with the
    held-out good images; the threshold is the upper normal tolerance bound of the pooled scores
    (``coverage`` of good parts below it, with ``confidence``; never below their maximum).
    ``quantile``: the earlier p99 + margin of the held-out good images alone (unstable with a
    handful of them)."""
    loo_images: int = 200
    """``loo``: at most this many training images are scored leave-one-out (chosen at random)."""
    coverage: float = 0.99999
    """``loo``: share of good parts the threshold is meant to pass (a normal fit's quantile). Far
    in the tail on purpose: new good parts score with heavier tails than a normal fit of a few
    dozen scores shows (tuned on two synthetic-plate sets of 16 + 4 good, bench/anomaly_threshold.py:
    99.9 % let 1 and 4 of 144 new good plates fail, 99.999 % none)."""
    observed_tail: int = 250
    """``loo``: from this many pooled scores on, ``tail_coverage`` replaces ``coverage``. The
    threshold is never below the pooled maximum, and the maximum of 250 good scores lies above
    the 99th percentile of good parts with 92 % confidence (1 - 0.99^250, order statistics, no
    distribution assumed): the goal of <= 1 % false fails then rests on the observed tail, not on
    the normal fit's far extrapolation, which costs recall (magnetic tile, 200 + 76 scores:
    99.999 % put the threshold 2.6 above the largest good score, and caught 0.14 of cracks)."""
    tail_coverage: float = 0.999
    """``loo`` with at least ``observed_tail`` pooled scores (tuned on the tune half of magnetic
    tile's test split, docs/anomaly.md)."""
    confidence: float = 0.95
    """``loo``: confidence of that bound, given how few scores it rests on."""
    batch_size: int = 8
    seed: int = 0


Progress = Callable[[str], None]

LONG_ASPECT = 2.0
"""``input_shape="auto"``: parts whose median aspect ratio (long side / short side) is at least
this get an input of their own shape; nearer to square they keep ``size``."""
MAX_ASPECT = 16.0


def input_size_for(images: Sequence[np.ndarray], size: tuple[int, int]) -> tuple[int, int]:
    """The model input (H, W) of ``input_shape="auto"``: ``size`` unless the images' median aspect
    ratio is :data:`LONG_ASPECT` or more; then the multiple-of-32 sides whose ratio is nearest to
    it (capped at :data:`MAX_ASPECT`) with an area between 85 % and 100 % of ``size``'s."""
    if not images:
        return size
    aspect = float(np.median([img.shape[1] / img.shape[0] for img in images]))  # w / h
    wide = aspect >= 1.0
    a = min(max(aspect, 1.0 / aspect), MAX_ASPECT)
    if a < LONG_ASPECT:
        return size
    budget = size[0] * size[1]
    pairs = [
        (abs(np.log(long / short) - np.log(a)), -long * short, short, long)
        for short in range(32, int(budget**0.5) + 1, 32)
        for long in range(short, budget // short + 1, 32)
        if long * short >= 0.85 * budget
    ]
    if not pairs:
        return size
    _, _, short, long = min(pairs)
    return (short, long) if wide else (long, short)


def settle_input(settings: TrainSettings, images: Sequence[np.ndarray]) -> TrainSettings:
    """``settings`` with its model input resolved from the training images (``input_shape``)."""
    if settings.input_shape == "fixed" or settings.resize != "letterbox":
        return dataclasses.replace(settings, input_shape="fixed")
    return dataclasses.replace(settings, size=input_size_for(images, settings.size), input_shape="fixed")


def list_images(
    folder: Path, include: Sequence[str] = (), exclude: Sequence[str] = (), default_excludes: bool = True
) -> list[Path]:
    """The training images under ``folder``: :func:`inspector_anomaly.image_selection.select_images`."""
    return select_images(folder, include, exclude, default_excludes)


def read_image(path: Path, roi: tuple[int, int, int, int] | None = None) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise OSError(f"cannot read image {path}")
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)  # type: ignore[call-overload]
    if roi is not None:
        x, y, w, h = roi
        img = img[y : y + h, x : x + w]
        if img.size == 0:
            raise ValueError(f"ROI {roi} lies outside image {path}")
    return img


def images_digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda q: q.name):
        h.update(p.name.encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def kcenter_greedy(features, n: int, seed: int = 0, proj_dim: int = 32):
    """Indices of ``n`` rows chosen by greedy k-center on a random projection (PatchCore's coreset).

    anomalib's own sampler takes minutes for a few hundred images on two cores; this one does
    the same greedy selection with a smaller projection and in-place updates.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    n_rows, dim = features.shape
    if n >= n_rows:
        return torch.arange(n_rows)
    proj = torch.randn(dim, proj_dim, generator=g) / proj_dim**0.5
    z = features @ proj
    sq = (z * z).sum(1)
    idx = torch.empty(n, dtype=torch.long)
    idx[0] = int(torch.randint(n_rows, (1,), generator=g))
    c = z[idx[0]]
    min_d = sq - 2 * (z @ c) + (c * c).sum()
    for i in range(1, n):
        j = int(torch.argmax(min_d))
        idx[i] = j
        c = z[j]
        torch.minimum(min_d, sq - 2 * (z @ c) + (c * c).sum(), out=min_d)
    return idx


def build_model(settings: TrainSettings, progress: Progress = print):
    """An anomalib module with only normalisation as pre-processing and no post-processing
    (the runtime does its own, from the card)."""
    from inspector_anomaly.backbone import DEFAULT_BACKBONE, register_pretrained

    weights_sha256: str | None
    if settings.backbone == "pretrained":
        info = register_pretrained()
        name, weights, weights_sha256 = info["name"], info["weights"], info["weights_sha256"]
    else:
        name, weights, weights_sha256 = (
            DEFAULT_BACKBONE,
            "random initialisation (fallback; weak on subtle defects)",
            None,
        )
    from anomalib.models import AnomalibModule, Dfm, Padim, Patchcore
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import Normalize

    layers = settings.layers or DEFAULT_LAYERS[settings.model]
    common: dict[str, Any] = {
        "pre_processor": PreProcessor(transform=Normalize(mean=list(MEAN), std=list(STD))),
        "post_processor": False,
        "evaluator": False,
        "visualizer": False,
    }
    pre = settings.backbone == "pretrained"
    module: AnomalibModule
    if settings.model == "patchcore":
        module = Patchcore(backbone=DEFAULT_BACKBONE, layers=layers, pre_trained=pre, **common)
        if settings.map_sigma != 4.0:
            from anomalib.models.image.patchcore.anomaly_map import AnomalyMapGenerator

            module.model.anomaly_map_generator = AnomalyMapGenerator(sigma=settings.map_sigma)  # type: ignore[arg-type]
    elif settings.model == "padim":
        module = Padim(backbone=DEFAULT_BACKBONE, layers=layers, pre_trained=pre, n_features=100, **common)
    elif settings.model == "dfm":
        module = Dfm(backbone=DEFAULT_BACKBONE, layer=layers[-1], pre_trained=pre, **common)
    else:
        raise ValueError(f"unknown model {settings.model!r}: use patchcore, padim or dfm")
    backbone = BackboneSpec(
        name=name, layers=list(layers), pretrained=pre, weights=weights, weights_sha256=weights_sha256
    )
    return module, backbone


def fit(module, images: Sequence[np.ndarray], settings: TrainSettings, progress: Progress = print) -> None:
    import torch

    if settings.input_shape == "auto" and settle_input(settings, images).size != settings.size:
        raise ValueError(
            "training: the model input is chosen from the training images (input_shape='auto'): "
            "call settle_input(settings, images) before fit, or set input_shape='fixed'"
        )
    torch.manual_seed(settings.seed)
    module.model.train()
    n = len(images)
    tile_image: list[int] = []  # the image each model input came from
    if settings.resize == "tiles":
        tensors = []
        for i, img in enumerate(images):
            tiles = prepare_tiles(
                img, settings.size, settings.scale, settings.tile_overlap, settings.photometric, settings.downscale
            )[0]
            tensors += [t.tensor for t in tiles]
            tile_image += [i] * len(tiles)
        progress(f"{len(tensors)} tiles from {n} images")
    else:
        tensors = [
            prepare(img, settings.size, settings.resize, settings.photometric, settings.downscale).tensor
            for img in images
        ]
        tile_image = list(range(n))
    n = len(tensors)
    with torch.no_grad():
        for i in range(0, n, settings.batch_size):
            x = module.pre_processor(torch.from_numpy(np.concatenate(tensors[i : i + settings.batch_size])))
            module.training_step(types.SimpleNamespace(image=x))
            progress(f"features {min(i + settings.batch_size, n)}/{n}")
    if settings.model == "patchcore":
        store = module.model.embedding_store
        feats = torch.vstack(store)
        store.clear()
        # reshape_embedding is batch-major: every tensor gives the same number of patch rows
        per_tensor = feats.shape[0] // n
        origin = torch.as_tensor(tile_image, dtype=torch.long).repeat_interleave(per_tensor)
        if feats.shape[0] > settings.max_patches:
            g = torch.Generator().manual_seed(settings.seed)
            keep = torch.randperm(feats.shape[0], generator=g)[: settings.max_patches]
            feats, origin = feats[keep], origin[keep]
        progress(f"coreset: {settings.memory_bank} of {feats.shape[0]} patch features")
        idx = kcenter_greedy(feats, settings.memory_bank, seed=settings.seed)
        # The coreset is chosen on the full features; a projection (feature_dim) is then fitted
        # on the same drawn patches and applied to the bank rows and, in the graph, to every
        # patch of a part (inspector_anomaly.projection).
        module.feature_basis = principal_axes(feats)
        bank = feats[idx]
        if settings.feature_dim:
            proj = projection_matrix(module.feature_basis, settings.feature_dim, settings.projection, settings.seed)
            install_projection(module.model, proj)
            bank = bank @ proj
            progress(f"projection: {settings.projection}, {feats.shape[1]} -> {settings.feature_dim} features")
        module.model.memory_bank = bank.contiguous()
        # Which training image each bank row came from (greedy order: a prefix of the bank is
        # the coreset of that smaller size): the out-of-fold threshold scores each training
        # image against the bank without its own rows.
        module.bank_origin = origin[idx].numpy()
    else:
        module.fit()
    module.eval()


def export_onnx(module, path: Path, size: tuple[int, int]) -> Path:
    """Batch-1 ONNX, opset 18, weights inside the file; the search and the blur rewritten for
    speed (:mod:`inspector_anomaly.fast_export`); only the ``anomaly_map`` output is kept (the
    runtime reads nothing else)."""
    import torch

    from inspector_anomaly.export_graph import keep_outputs
    from inspector_anomaly.fast_export import fast_export

    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), fast_export(module.model):
        out = module.to_onnx(
            tmp, model_file_name="model", input_size=size, opset_version=18, external_data=False, dynamic_axes={}
        )
        if any(Path(tmp).rglob("*.data")):
            raise RuntimeError("ONNX export wrote external data; expected one self-contained file")
        keep_outputs(Path(out), ("anomaly_map",))
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(out), path)
    return path


@dataclasses.dataclass
class Scored:
    score: float
    label: bool


class _TorchSession:
    """Stands in for the detector's onnxruntime session: runs the fitted anomalib module in torch,
    so leave-one-out scores go through the runtime's own map reading and part score."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def run(self, names: Sequence[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        (x,) = feeds.values()
        with torch.no_grad():
            return [self.module(torch.from_numpy(x)).anomaly_map.numpy()]


def leave_one_out_scores(
    module: Any, detector: Any, images: Sequence[np.ndarray], settings: TrainSettings
) -> np.ndarray:
    """Raw part scores of training images, each against the memory bank without the rows it
    contributed (PatchCore; ``module.bank_origin`` from :func:`fit`), scored by ``detector``'s own
    code (letterbox window, top-1 % mean). The coreset is not re-selected: the bank of each image
    is the trained one minus its rows, slightly sparser than a re-built one, so the scores lean
    high (a conservative threshold)."""
    from inspector_anomaly.fast_export import fast_export

    origin = getattr(module, "bank_origin", None)
    if origin is None:
        raise ValueError("leave-one-out scores need a PatchCore fitted by inspector_anomaly.training.fit")
    rng = np.random.default_rng(settings.seed)
    chosen = sorted(rng.permutation(len(images))[: settings.loo_images].tolist())
    full = module.model.memory_bank
    session = detector.session
    scores = []
    try:
        detector.session = _TorchSession(module)
        with fast_export(module.model):
            for i in chosen:
                keep = np.flatnonzero(origin != i)
                if keep.size == 0:  # a tiny bank drawn from this image alone: nothing to compare with
                    continue
                module.model.memory_bank = full[keep]
                scores.append(detector.anomaly_map(images[i]).score_raw)
    finally:
        module.model.memory_bank = full
        detector.session = session
    return np.array(scores, dtype=np.float64)


def loo_coverage(settings: TrainSettings, n_pooled: int) -> float:
    """The coverage of the ``loo`` bound for ``n_pooled`` scores (``coverage`` / ``tail_coverage``)."""
    return settings.coverage if n_pooled < settings.observed_tail else settings.tail_coverage


def choose_thresholds(
    detector,
    val_good: Sequence[np.ndarray],
    val_bad: Sequence[tuple[np.ndarray, np.ndarray | None]],
    settings: TrainSettings,
    loo_good: np.ndarray | None = None,
) -> tuple[Thresholds, dict]:
    """Thresholds from validation images scored by the runtime detector itself (and, for the
    good-only ``loo`` method, the training images' leave-one-out scores ``loo_good``)."""
    good = np.array([detector.anomaly_map(img).score_raw for img in val_good])
    if len(good) == 0:
        raise ValueError("no validation images: give a validation folder or keep val_fraction > 0")
    q50, q99 = float(np.quantile(good, 0.5)), float(np.quantile(good, 0.99))
    spread = max(float(good.max() - good.min()), 1e-6)
    metrics: dict = {"good_images": len(good), "good_score_median": q50, "good_score_p99": q99}
    if val_bad:
        maps = [detector.anomaly_map(img) for img, _ in val_bad]
        bad = np.array([m.score_raw for m in maps])
        labels = np.r_[np.zeros(len(good), bool), np.ones(len(bad), bool)]
        scores = np.r_[good, bad]
        image_t = f1_optimal_threshold(labels, scores)
        spread = max(float(scores.max() - scores.min()), 1e-6)
        method = f"image: F1-optimal on {len(good)} good + {len(bad)} defective validation images; "
        metrics.update(
            defective_images=len(bad), image_auroc=auroc(labels, scores), image_f1=f1(labels, scores >= image_t)
        )
        pix_scores, pix_labels = [], []
        for m, (_, mask) in zip(maps, val_bad, strict=True):
            if mask is not None:
                pix_scores.append(m.raw[::2, ::2].ravel())
                pix_labels.append(mask[::2, ::2].ravel() > 0)
        if pix_scores:
            ps, pl = np.concatenate(pix_scores), np.concatenate(pix_labels)
            sub = np.linspace(0, len(ps) - 1, min(len(ps), 200_000)).astype(int)
            pixel_t = f1_optimal_threshold(pl[sub], ps[sub])
            metrics.update(pixel_auroc=auroc(pl, ps), pixel_f1=f1(pl, ps >= pixel_t))
            method += "pixel: F1-optimal on the defect masks"
        else:
            pixel_t = image_t
            method += "pixel: equal to the image threshold (no masks given)"
    elif loo_good is not None and len(loo_good) + len(good) >= 3:
        pooled = np.r_[loo_good, good]
        coverage = loo_coverage(settings, len(pooled))
        image_t = tail_threshold(pooled, coverage, settings.confidence)
        pixel_t = image_t
        spread = max(float(pooled.max() - pooled.min()), 1e-6)
        k = tolerance_factor(len(pooled), coverage, settings.confidence)
        method = (
            f"good-only, leave-one-out: {len(loo_good)} training images each scored against the memory bank "
            f"without its own rows, pooled with {len(good)} held-out good images; threshold = mean + {k:.2f} x sd "
            f"of the {len(pooled)} pooled scores (one-sided normal tolerance bound: {coverage:.3%} of "
            f"good parts below it with {settings.confidence:.0%} confidence; {settings.coverage:.3%} below "
            f"{settings.observed_tail} scores, {settings.tail_coverage:.1%} from there, where the maximum bounds "
            "the top 1 %), never below their maximum; pixel threshold equal to it"
        )
        metrics.update(
            loo_images=len(loo_good),
            loo_score_median=float(np.median(loo_good)),
            pooled_mean=float(pooled.mean()),
            pooled_sd=float(pooled.std(ddof=1)),
            # the raw scores themselves: QA can replay another rule (`inspector whatif`) from the card
            loo_scores=[round(float(v), 6) for v in loo_good],
            good_scores=[round(float(v), 6) for v in good],
            false_alarm_rate=float((good >= image_t).mean()),
        )
    else:
        image_t = q99 + settings.margin * (q99 - q50 if q99 > q50 else spread)
        pixel_t = image_t
        method = (
            f"good-only: 99th percentile of {len(good)} held-out good images' scores plus "
            f"{settings.margin} x (p99 - median); pixel threshold equal to it"
        )
        metrics.update(false_alarm_rate=float((good >= image_t).mean()))
    # Normalised score reaches 1.0 at threshold + spread/2: use the good scores' range as unit.
    return Thresholds(
        image_score=settings.image_score,
        top_fraction=settings.top_fraction,
        image=float(image_t),
        pixel=float(pixel_t),
        spread=float(spread),
        method=method,
    ), metrics


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("anomalib", "torch", "torchvision", "timm", "onnx", "onnxruntime", "inspector-anomaly", "inspector"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def split_validation(
    good: list[Path], val_good: Sequence[Path] | None, val_fraction: float, seed: int
) -> tuple[list[Path], list[Path]]:
    """``(train, held-out good)``: without ``val_good``, a seeded ``val_fraction`` of ``good`` is
    held out for the thresholds, also when defective validation images are given (they alone
    cannot place a good-only threshold)."""
    if val_good:
        return good, list(val_good)
    order = np.random.default_rng(seed).permutation(len(good))
    n_val = max(1, int(round(len(good) * val_fraction)))
    if len(good) - n_val < 2:
        raise ValueError(f"too few good images ({len(good)}) to hold some out for thresholds; give at least 5")
    return [good[i] for i in sorted(order[n_val:])], [good[i] for i in sorted(order[:n_val])]


def train(
    good: Sequence[Path],
    out: Path,
    settings: TrainSettings | None = None,
    val_good: Sequence[Path] = (),
    val_bad: Sequence[tuple[Path, Path | None]] = (),
    progress: Progress = print,
) -> ModelCard:
    """Train, export ``out`` (``NAME.onnx``) and write its card ``NAME.json``. Returns the card.

    A relative ``out`` is taken from the current directory; its folder must be writable before
    anything is trained. Both files appear only when the card has its thresholds (see
    :mod:`inspector_anomaly.model_output`): a failure leaves no provisional card and keeps an
    earlier model at ``out`` as it was.
    """
    import torch

    settings = settings or TrainSettings()
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 4)))
    out = resolve_model_path(Path(out).with_suffix(".onnx"))
    check_writable(out)
    good, val_good = split_validation(list(good), val_good, settings.val_fraction, settings.seed)
    t0 = time.perf_counter()
    progress(f"reading {len(good)} training images")
    images = [read_image(p, settings.roi) for p in good]
    asked = settings.size
    settings = settle_input(settings, images)
    if settings.size != asked:
        progress(
            f"model input {settings.size[1]} x {settings.size[0]} px (the parts' aspect ratio, "
            f"the pixel area of {asked[1]} x {asked[0]})"
        )
    module, backbone = build_model(settings, progress)
    fit(module, images, settings, progress)
    with staged_model(out) as staged:
        card = _export_and_calibrate(
            module, staged, backbone, settings, good, val_good, val_bad, t0, progress, train_images=images
        )
    progress(
        f"done in {time.perf_counter() - t0:.0f} s: {out} ({out.stat().st_size / 1e6:.1f} MB), "
        f"card {out.with_suffix('.json')}"
    )
    return card


def _export_and_calibrate(
    module: Any,
    out: Path,
    backbone: BackboneSpec,
    settings: TrainSettings,
    good: Sequence[Path],
    val_good: Sequence[Path],
    val_bad: Sequence[tuple[Path, Path | None]],
    t0: float,
    progress: Progress,
    train_images: Sequence[np.ndarray] = (),
) -> ModelCard:
    """Export ``out`` (an absolute staging path), write its provisional card, choose the thresholds
    through the runtime detector and rewrite the card with them."""
    from inspector_anomaly.detector import Anomaly, AnomalyConfig

    progress("exporting ONNX")
    export_onnx(module, out, settings.size)
    seconds = time.perf_counter() - t0
    digest = sha256_file(out)
    provisional = ModelCard(
        name=out.stem,
        model=settings.model,
        input=InputSpec(
            height=settings.size[0],
            width=settings.size[1],
            resize=settings.resize,
            mean=MEAN,
            std=STD,
            photometric=settings.photometric,
            downscale=settings.downscale,
            scale=settings.scale,
            tile_overlap=settings.tile_overlap if settings.resize == "tiles" else 0,
        ),
        outputs={"anomaly_map": "anomaly_map"},
        thresholds=Thresholds(
            image_score=settings.image_score,
            top_fraction=settings.top_fraction,
            image=0.0,
            pixel=0.0,
            spread=1.0,
            method="provisional",
        ),
        backbone=backbone,
        training=TrainingSpec(
            images=len(good),
            images_sha256=images_digest(good),
            validation_images=len(val_good) + len(val_bad),
            seconds=round(seconds, 1),
            settings={
                "memory_bank": settings.memory_bank,
                "roi": settings.roi,
                "seed": settings.seed,
                "threshold": settings.threshold,
                "input": f"{settings.size[1]}x{settings.size[0]}",
                "map_sigma": settings.map_sigma,
                "feature_dim": settings.feature_dim or None,
                "projection": settings.projection if settings.feature_dim else None,
            }
            if settings.model == "patchcore"
            else {"roi": settings.roi, "seed": settings.seed},
        ),
        versions=_versions(),
        onnx_file=out.name,
        onnx_sha256=digest,
        onnx_bytes=out.stat().st_size,
    )
    card_path = out.with_suffix(".json")
    card_path.write_text(provisional.model_dump_json(indent=2))
    progress(f"choosing thresholds on {len(val_good)} good + {len(val_bad)} defective validation images")
    det = Anomaly(AnomalyConfig(model=str(out), threads=2), station_dir=out.parent)
    det.load()
    vg = [read_image(p, settings.roi) for p in val_good]
    vb = []
    for p, m in val_bad:
        img = read_image(p, settings.roi)
        mask = read_image(m, settings.roi) if m is not None and Path(m).is_file() else None
        if mask is not None and mask.ndim == 3:
            mask = mask[:, :, 0]
        vb.append((img, mask))
    loo = None
    if settings.threshold == "loo" and not vb and train_images and getattr(module, "bank_origin", None) is not None:
        progress(f"leave-one-out scores of {min(len(train_images), settings.loo_images)} training images")
        loo = leave_one_out_scores(module, det, train_images, settings)
    thresholds, metrics = choose_thresholds(det, vg, vb, settings, loo_good=loo)
    reference = Reference(
        inputs=REFERENCE_INPUTS,
        scores=[det._reference_score(det.session, x) for x in reference_inputs(*settings.size)],
        tolerance=PARITY_TOLERANCE,
    )
    card = provisional.model_copy(update={"thresholds": thresholds, "validation": metrics, "reference": reference})
    card_path.write_text(card.model_dump_json(indent=2))
    return card
