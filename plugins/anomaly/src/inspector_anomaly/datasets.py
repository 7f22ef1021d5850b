"""The evaluation splits of the real datasets in ``../shared/data`` (never shipped, never copied).

A split is a plain list of files, chosen deterministically (by a hash of the file name), so
every run, test and benchmark sees the same parts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

MT_DEFECTS = ("MT_Blowhole", "MT_Break", "MT_Crack", "MT_Fray", "MT_Uneven")


@dataclasses.dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    """``good`` or the defect class."""
    mask_path: Path | None = None

    @property
    def is_anomalous(self) -> bool:
        return self.label != "good"

    def image(self) -> np.ndarray:
        img = cv2.imread(str(self.path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise OSError(f"cannot read image {self.path}")
        return img

    def mask(self) -> np.ndarray:
        """Boolean ground-truth mask of the image's size (all False for a good part)."""
        h, w = self.image().shape[:2]
        if self.mask_path is None or not self.mask_path.is_file():
            return np.zeros((h, w), dtype=bool)
        m = cv2.imread(str(self.mask_path), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise OSError(f"cannot read mask {self.mask_path}")
        if m.shape != (h, w):
            m = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST)
        return np.greater(m, 0)


@dataclasses.dataclass(frozen=True)
class Split:
    name: str
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]


def _by_hash(paths: list[Path]) -> list[Path]:
    return sorted(paths, key=lambda p: hashlib.sha1(p.name.encode()).hexdigest())


def halves(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """``(tune, report)``: the samples split in two by a hash of their file name (about half
    each, every class on both sides): choose on the first, quote the second."""
    tune = [s for s in samples if int(hashlib.sha1(s.path.name.encode()).hexdigest()[-1], 16) % 2 == 0]
    report = [s for s in samples if int(hashlib.sha1(s.path.name.encode()).hexdigest()[-1], 16) % 2 == 1]
    return tune, report


def default_data_root() -> Path:
    """``$INSPECTOR_DATA``, else ``../shared/data`` beside the checkout."""
    env = os.environ.get("INSPECTOR_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[4].parent / "shared" / "data"


def magnetic_tile(root: Path, n_train: int = 250, n_val: int = 76) -> Split:
    """MT_Free: ``n_train`` for training, ``n_val`` for thresholds, the rest plus every
    defect class for testing."""
    base = root / "magnetic_tile"
    if not base.is_dir():
        raise FileNotFoundError(f"magnetic_tile not found under {root}; pass the data folder (../shared/data)")
    free = _by_hash(list((base / "MT_Free" / "Imgs").glob("*.jpg")))
    good = [Sample(p, "good", p.with_suffix(".png")) for p in free]
    test = list(good[n_train + n_val :])
    for cls in MT_DEFECTS:
        for p in sorted((base / cls / "Imgs").glob("*.jpg")):
            test.append(Sample(p, cls.removeprefix("MT_").lower(), p.with_suffix(".png")))
    return Split("magnetic_tile", good[:n_train], good[n_train : n_train + n_val], test)


def mvtec(root: Path, category: str = "transistor", n_val: int = 0) -> Split:
    """MVTec AD category: train/good for training (the last ``n_val`` by hash held out for
    thresholds), test/* for testing."""
    base = root / "mvtec_ad" / category
    if not base.is_dir():
        raise FileNotFoundError(f"mvtec_ad/{category} not found under {root}; pass the data folder (../shared/data)")
    train = [Sample(p, "good") for p in _by_hash(list((base / "train" / "good").glob("*.png")))]
    val = train[len(train) - n_val :] if n_val else []
    train = train[: len(train) - n_val]
    test = []
    for cls_dir in sorted((base / "test").iterdir()):
        for p in sorted(cls_dir.glob("*.png")):
            mask = base / "ground_truth" / cls_dir.name / f"{p.stem}_mask.png"
            test.append(Sample(p, cls_dir.name, mask if cls_dir.name != "good" else None))
    return Split(category, train, val, test)


# -- shapes the shared sets do not have ------------------------------------------------------
ThinShape = Literal["long", "large"]
THIN_PARTS_VERSION = "v1"
"""Bump when the renderer below changes: the rendered folder is named after it."""


def _crack_path(rng: np.random.Generator, start: tuple[float, float], angle: float, length: float) -> np.ndarray:
    """A jagged hairline: a random walk of 2 px steps whose heading wanders (0.25 rad per step)
    around ``angle``, pulled back toward it so the crack keeps its overall direction."""
    n = max(4, int(length / 2))
    pts = np.empty((n, 2), np.float64)
    pts[0] = start
    heading = angle
    for i in range(1, n):
        heading += rng.normal(0, 0.25) + 0.3 * (angle - heading)
        pts[i] = pts[i - 1] + 2.0 * np.array([np.cos(heading), np.sin(heading)])
    return pts


def render_thin_part(rng: np.random.Generator, shape: ThinShape, defective: bool) -> tuple[np.ndarray, np.ndarray]:
    """One grey part (``uint8`` image, bool defect mask) as a station's ROI would crop it.

    ``long``: a ground bar 1200-1800 px long and 110-200 px wide (aspect 6-15), lying along the
    frame on a dark fixture with a 12-20 px margin; a round bar's cross shading, a specular band
    along it, grinding streaks along the length, a few natural dark pits (good parts too) and
    light that varies along the length. ``large``: a ground plate 1300-1700 x 1000-1300 px with
    the same surface (no cross shading). A defective part carries one to two hairline cracks:
    1-2 px wide, 25-110 px long, jagged, 15-40 % darker than the surface (mostly across a long
    bar, any direction on a plate). Neither the shapes nor the cracks were used to choose a
    default; they check that the defaults carry over to parts unlike magnetic tile and transistor."""

    if shape == "long":
        length, width = int(rng.uniform(1200, 1800)), int(rng.uniform(110, 200))
        margin = int(rng.uniform(12, 20))
        h, w = width + 2 * margin, length + 2 * margin
        bx0, by0, bw, bh = margin, margin, length, width
    elif shape == "large":
        w, h = int(rng.uniform(1300, 1700)), int(rng.uniform(1000, 1300))
        margin = int(rng.uniform(12, 20))
        bx0, by0, bw, bh = margin, margin, w - 2 * margin, h - 2 * margin
        h, w = h, w
    else:
        raise ValueError(f"thin-defect parts: unknown shape {shape!r} (use 'long' or 'large')")
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(120, 165)
    v = np.clip((yy - by0) / max(bh - 1, 1) * 2 - 1, -1, 1)  # across the part, -1..1
    u = (xx - bx0) / max(bw - 1, 1)  # along the part, 0..1
    if shape == "long":
        cross = 1.0 - 0.35 * v * v
        band_at, band_w = rng.uniform(-0.35, 0.35), rng.uniform(0.08, 0.16)
        cross += rng.uniform(0.10, 0.22) * np.exp(-0.5 * ((v - band_at) / band_w) ** 2)
    else:
        cross = np.ones_like(v)
    phase, period = rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 1.5)
    along = 1.0 + rng.uniform(0.04, 0.10) * np.sin(2 * np.pi * u / period + phase)
    streaks: np.ndarray = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), sigmaX=18, sigmaY=0.8)
    streaks *= rng.uniform(3, 6) / max(float(streaks.std()), 1e-6)
    fine = rng.normal(0, rng.uniform(2.0, 3.5), (h, w)).astype(np.float32)
    surface = base * cross * along + streaks + fine
    for _ in range(int(rng.integers(3, 12))):  # natural pits: good parts have them too
        cx, cy = rng.uniform(bx0 + 5, bx0 + bw - 5), rng.uniform(by0 + 5, by0 + bh - 5)
        cv2.circle(surface, (int(cx), int(cy)), int(rng.integers(1, 3)), float(base * 0.75), -1, cv2.LINE_AA)
    outline = np.zeros((h, w), np.uint8)
    cv2.rectangle(outline, (bx0, by0), (bx0 + bw - 1, by0 + bh - 1), 255, -1)
    part = cv2.GaussianBlur(outline, (0, 0), 1.2).astype(np.float32) / 255.0
    background = 30 + rng.normal(0, 3, (h, w)).astype(np.float32)
    img = background * (1 - part) + surface * part
    mask = np.zeros((h, w), bool)
    if defective:
        dark = np.zeros((h, w), np.float32)
        for _ in range(1 if rng.random() < 0.7 else 2):
            length_px = rng.uniform(25, 110)
            if shape == "long" and rng.random() < 0.75:
                angle = np.pi / 2 + rng.normal(0, 0.45)  # across the bar
            else:
                angle = rng.uniform(0, np.pi)
            for _ in range(100):
                start = (rng.uniform(bx0 + 20, bx0 + bw - 20), rng.uniform(by0 + 10, by0 + bh - 10))
                pts = _crack_path(rng, start, angle if rng.random() < 0.5 else angle + np.pi, length_px)
                inside = (
                    (pts[:, 0] > bx0 + 6).all()
                    and (pts[:, 0] < bx0 + bw - 6).all()
                    and (pts[:, 1] > by0 + 6).all()
                    and (pts[:, 1] < by0 + bh - 6).all()
                )
                if inside:
                    break
            layer: np.ndarray = np.zeros((h, w), np.float32)
            thick = 1 if rng.random() < 0.7 else 2
            cv2.polylines(layer, [np.round(pts * 4).astype(np.int32)], False, 1.0, thick, cv2.LINE_AA, shift=2)
            layer = cv2.GaussianBlur(layer, (0, 0), 0.6)
            layer = layer / max(float(layer.max()), 1e-6)
            dark = np.maximum(dark, rng.uniform(0.15, 0.40) * layer)
            m = np.zeros((h, w), np.uint8)
            cv2.polylines(m, [np.round(pts).astype(np.int32)], False, 1, thick + 2)
            mask |= m > 0
        img = img * (1 - dark * part)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def thin_defect_parts(
    folder: Path,
    shape: ThinShape = "long",
    seed: int = 0,
    n_train: int = 60,
    n_val: int = 20,
    n_test_good: int = 60,
    n_test_bad: int = 60,
) -> Split:
    """A split of :func:`render_thin_part` parts, rendered once into
    ``folder/thin-<shape>-<version>-<seed>-<counts>/`` (PNG, masks as ``<id>_mask.png``) and reused.
    Every image has its own seed (``[seed, kind, index]``): two seeds give two independent sets
    (one to tune on, one to report on)."""

    counts = (n_train, n_val, n_test_good, n_test_bad)
    base = Path(folder) / f"thin-{shape}-{THIN_PARTS_VERSION}-{seed}-{'-'.join(map(str, counts))}"
    done = base / "complete"
    groups = {"train": (0, n_train, False), "val": (1, n_val, False), "good": (2, n_test_good, False)}
    groups["crack"] = (3, n_test_bad, True)
    if not done.is_file():
        base.mkdir(parents=True, exist_ok=True)
        for name, (kind, n, bad) in groups.items():
            for i in range(n):
                img, mask = render_thin_part(np.random.default_rng([seed, kind, i]), shape, bad)
                cv2.imwrite(str(base / f"{name}_{i:03d}.png"), img)
                if bad:
                    cv2.imwrite(str(base / f"{name}_{i:03d}_mask.png"), mask.astype(np.uint8) * 255)
        done.write_text("ok\n")

    def samples(name: str) -> list[Sample]:
        kind, n, bad = groups[name]
        return [
            Sample(
                base / f"{name}_{i:03d}.png",
                "crack" if bad else "good",
                base / f"{name}_{i:03d}_mask.png" if bad else None,
            )
            for i in range(n)
        ]

    return Split(f"thin_{shape}", samples("train"), samples("val"), samples("good") + samples("crack"))


def magnetic_tile_strips(root: Path, folder: Path, aspect: float = 6.0, n_train: int = 250) -> Split:
    """Magnetic tile's split (:func:`magnetic_tile`) cropped into long strips: real surfaces and
    real defects in a shape the set does not have. Each image gives one strip along its longer
    side, ``aspect`` : 1, turned to lie horizontally; a good tile's strip is its middle, a
    defective tile's is centred on its mask (so it holds the defect). Written once into
    ``folder/mt-strips-<aspect>/`` (PNG, masks as ``<id>_mask.png``) and reused."""
    split = magnetic_tile(root, n_train=n_train)
    base = Path(folder) / f"mt-strips-{aspect:g}"
    done = base / "complete"

    def strip(s: Sample) -> Sample:
        out = base / f"{s.label}_{s.path.stem}.png"
        mout = base / f"{s.label}_{s.path.stem}_mask.png"
        if not done.is_file():
            img, mask = s.image(), s.mask()
            if img.ndim == 3:
                img = img[:, :, 0]
            if img.shape[0] > img.shape[1]:
                img, mask = np.ascontiguousarray(img.T), np.ascontiguousarray(mask.T)
            h, w = img.shape
            sh = max(8, min(h, int(round(w / aspect))))
            centre = h // 2
            if mask.any():
                centre = int(np.nonzero(mask)[0].mean())
            y0 = int(np.clip(centre - sh // 2, 0, h - sh))
            cv2.imwrite(str(out), img[y0 : y0 + sh])
            if s.is_anomalous:
                cv2.imwrite(str(mout), mask[y0 : y0 + sh].astype(np.uint8) * 255)
        return Sample(out, s.label, mout if s.is_anomalous else None)

    base.mkdir(parents=True, exist_ok=True)
    train, val, test = [strip(s) for s in split.train], [strip(s) for s in split.val], [strip(s) for s in split.test]
    done.write_text("ok\n")
    return Split("magnetic_tile_strips", train, val, test)
