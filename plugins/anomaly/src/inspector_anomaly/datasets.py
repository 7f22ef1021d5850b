"""The evaluation splits of the real datasets in ``../shared/data`` (never shipped, never copied).

A split is a plain list of files, chosen deterministically (by a hash of the file name), so
every run, test and benchmark sees the same parts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

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
