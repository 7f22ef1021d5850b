"""Issue 11: our anomaly default beside plain anomalib PatchCore, same backbone, same halves.

For each dataset (the splits of ``inspector_anomaly.datasets``, the ones bench/anomaly_variants.py
and docs/anomaly.md use: magnetic tile MT_Free train 250 / validation 76 / test 150 good + 198
defective; MVTec transistor train 28 / validation 7 / test 5 good + 20 defective):

- **ours**: ``inspector train anomaly``'s default (``TrainSettings()``: PatchCore, Lite0 blocks 2+4,
  letterbox at 256 x 256 px of area (a long product gets its own aspect ratio, `settle_input`), flat-field,
  bank 8192, top-1 % part score), fitted on the training half and
  exported exactly as bench/anomaly_variants.py does (thresholds from the validation half), then
  scored through the runtime detector (onnxruntime), as a station runs it;
- **plain anomalib**: anomalib's own ``Patchcore`` as a user makes it, with
  ``backbone="tf_efficientnet_lite0"`` (weights offline through ``inspector_anomaly.backbone``,
  registered for timm) and everything else anomalib's default: its pre-processor (``Resize(256,
  256)`` stretch + ImageNet ``Normalize``), ``coreset_sampling_ratio=0.1`` with anomalib's own
  k-center greedy sampler, ``num_neighbors=9``, its ``pred_score`` (re-weighted max patch
  distance). Images are read with anomalib's own ``read_image`` (PIL, RGB). The layers must be
  chosen (anomalib's default ``layer2``/``layer3`` are ResNet names): ``blocks.2`` and ``blocks.4``,
  the ends of Lite0's stride-8 and stride-16 stages, where ResNet's layer2 / layer3 end. Fitted on
  the same training images (Engine.fit does the same: one epoch of ``training_step`` then ``fit()``;
  the Lightning loop is left out, not the model) and scored in torch on the same test half.

Image AUROC of both on the same test images; pixel AUROC: ours at the image's own resolution,
anomalib's on its 256 x 256 map against the mask resized the same way (anomalib's own convention),
every 4th pixel both. ``--train-limit N`` uses the first N images of the training half (hash
order) for *both*; the validation and test halves are never cut. Wall and process-CPU seconds and
the 1-minute load average are printed beside each step.

    python bench/anomaly_vs_anomalib.py [--datasets magnetic_tile,transistor] [--train-limit N]
                                        [--render DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import DATA

LAYERS = ["blocks.2", "blocks.4"]


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


class Clock:
    def __init__(self) -> None:
        self.w, self.c = time.perf_counter(), time.process_time()

    def __str__(self) -> str:
        return f"{time.perf_counter() - self.w:.0f} s wall, {time.process_time() - self.c:.0f} s CPU, load {load()}"


def ours(split, train, pixel_step: int, log) -> dict:
    from inspector_anomaly.detector import Anomaly, AnomalyConfig
    from inspector_anomaly.training import (
        TrainSettings,
        _export_and_calibrate,
        build_model,
        fit,
        read_image,
        settle_input,
    )

    clock = Clock()
    images = [read_image(s.path) for s in train]
    settings = settle_input(TrainSettings(), images)  # as `inspector train anomaly` does
    module, backbone = build_model(settings, progress=lambda m: None)
    fit(module, images, settings, progress=lambda m: None)
    tmp = Path(tempfile.mkdtemp(prefix="vs-anomalib-"))
    try:
        path = tmp / "ours.onnx"
        _export_and_calibrate(
            module,
            path,
            backbone,
            settings,
            [s.path for s in train],
            [s.path for s in split.val],
            [],
            time.perf_counter(),
            lambda m: None,
        )
        fit_time = str(clock)
        log(f"ours: fit + export + thresholds: {fit_time}")
        det = Anomaly(AnomalyConfig(model=path.name, threads=2), station_dir=tmp)
        det.warm_up()
        clock = Clock()
        scores, maps, pix_s, pix_l = [], [], [], []
        for s in split.test:
            m = det.anomaly_map(s.image())
            scores.append(m.score_raw)
            raw = np.nan_to_num(m.raw, nan=float(np.nanmin(m.raw)))
            maps.append(raw)
            pix_s.append(raw[::pixel_step, ::pixel_step].ravel())
            pix_l.append(s.mask()[::pixel_step, ::pixel_step].ravel())
        log(f"ours: scored {len(split.test)} test images: {clock}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # models of non-commercial data: never kept
    return {"scores": np.array(scores), "maps": maps, "pix_s": pix_s, "pix_l": pix_l, "fit": fit_time}


def plain_anomalib(split, train, pixel_step: int, batch: int, log) -> dict:
    import torch
    from anomalib.data.utils import read_image as al_read
    from anomalib.models import Patchcore
    from inspector_anomaly.backbone import DEFAULT_BACKBONE, register_pretrained
    from torchvision.transforms.v2.functional import resize

    register_pretrained()
    torch.manual_seed(0)
    model = Patchcore(backbone=DEFAULT_BACKBONE, layers=LAYERS, pre_trained=True, evaluator=False, visualizer=False)
    transform = model.pre_processor.transform  # anomalib's default: Resize(256, 256) + Normalize
    clock = Clock()
    model.model.train()
    with torch.no_grad():
        for i in range(0, len(train), batch):
            # images of different sizes (magnetic tile): resized one by one, then batched, as
            # anomalib's datamodule does with the model's resize transform
            x = torch.cat([transform(al_read(str(s.path), as_tensor=True)[None]) for s in train[i : i + batch]])
            model.model(x)
    n_patches = sum(e.shape[0] for e in model.model.embedding_store)
    model.fit()  # anomalib's coreset: k-center greedy, ratio 0.1
    fit_time = str(clock)
    log(f"anomalib: fit ({n_patches} patches -> bank {model.model.memory_bank.shape[0]}): {fit_time}")
    model.model.eval()
    clock = Clock()
    scores, maps, pix_s, pix_l = [], [], [], []
    with torch.no_grad():
        for s in split.test:
            x = transform(al_read(str(s.path), as_tensor=True)[None])
            out = model.model(x)
            scores.append(float(out.pred_score.reshape(-1)[0]))
            amap = out.anomaly_map[0, 0].numpy()
            maps.append(amap)
            mask = torch.from_numpy(s.mask()[None].astype(np.uint8))
            mask = resize(mask, list(amap.shape), interpolation=0).numpy()[0] > 0  # nearest, as the masks
            pix_s.append(amap[::pixel_step, ::pixel_step].ravel())
            pix_l.append(mask[::pixel_step, ::pixel_step].ravel())
    log(f"anomalib: scored {len(split.test)} test images: {clock}")
    return {
        "scores": np.array(scores),
        "maps": maps,
        "pix_s": pix_s,
        "pix_l": pix_l,
        "fit": fit_time,
        "bank": int(model.model.memory_bank.shape[0]),
    }


def render(split, a: dict, b: dict, labels: np.ndarray, out_dir: Path, ds: str, k: int) -> list[str]:
    """PNG per case: image | our map | anomalib's map. The defects where our rank among the good
    test images falls furthest below anomalib's, and our highest-scoring good image."""
    import cv2

    def pct(scores: np.ndarray) -> np.ndarray:
        good = np.sort(scores[~labels])
        return np.searchsorted(good, scores, side="left") / max(len(good), 1)  # share of good parts below

    pa, pb = pct(a["scores"]), pct(b["scores"])
    bad = np.flatnonzero(labels)
    worst = bad[np.argsort(pa[bad] - pb[bad])][:k]
    good_top = np.flatnonzero(~labels)[np.argsort(-a["scores"][~labels])][:1]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def panel(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        m = cv2.resize(m.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
        lo, hi = np.percentile(m, 1), np.percentile(m, 99.9)
        m = np.clip((m - lo) / max(hi - lo, 1e-9), 0, 1)
        return cv2.applyColorMap((255 * m).astype(np.uint8), cv2.COLORMAP_JET)

    for i in [*worst, *good_top]:
        s = split.test[int(i)]
        img = s.image()
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img
        h, w = img.shape[:2]
        gt = img.copy()
        cnts, _ = cv2.findContours(s.mask().astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(gt, cnts, -1, (0, 255, 0), 1)
        row = np.hstack([gt, panel(a["maps"][i], (w, h)), panel(b["maps"][i], (w, h))])
        name = f"{ds}_{s.label}_{s.path.stem}_ours{pa[i]:.2f}_anomalib{pb[i]:.2f}.png"
        cv2.imwrite(str(out_dir / name), row)
        written.append(name)
    return written


def cached(folder: Path | None, name: str, log, run, *a):  # type: ignore[no-untyped-def]
    """``run(*a)``, or its result kept in ``folder`` by an earlier run (``--only``)."""
    path = folder / name if folder else None
    if path is not None and path.is_file():
        log(f"from {path}")
        return pickle.loads(path.read_bytes())
    r = run(*a)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(r))
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--datasets", default="magnetic_tile,transistor")
    ap.add_argument("--train-limit", type=int, default=0, help="first N training images (hash order) for both; 0 = all")
    ap.add_argument("--pixel-step", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--torch-threads", type=int, default=1, help="1: on a loaded machine 2 threads wait for each other")
    ap.add_argument("--render", type=Path, help="write the worst misses as PNGs here (outside the project)")
    ap.add_argument("--json", type=Path, help="write per-image scores here")
    ap.add_argument("--only", choices=("", "ours", "anomalib"), default="", help="run one side (with --cache)")
    ap.add_argument(
        "--cache", type=Path, help="keep each side's scores and maps here (outside the project); reused when present"
    )
    ap.add_argument("--thin-seed", type=int, default=2, help="thin_*: 1 = tuning set, 2 = report set")
    ap.add_argument("--thin-dir", type=Path, default=Path(tempfile.gettempdir()) / "inspector-thin-parts")
    args = ap.parse_args()

    from inspector_core.runtime.memory import limit_arenas

    # anomalib's coreset with 2 torch threads grew this process to 23 GB (thin_long, 20 images:
    # 20,480 patches) with glibc's default arenas; with 2 arenas it stays near 1 GB.
    limit_arenas()
    import torch
    from inspector_anomaly import datasets
    from inspector_anomaly.metrics import auroc

    torch.set_num_threads(args.torch_threads)
    rows = []
    dump: dict = {}
    for ds in args.datasets.split(","):
        if ds == "magnetic_tile":
            split = datasets.magnetic_tile(args.data)
        elif ds == "magnetic_tile_strips":  # real surfaces and defects cut into 6:1 strips
            split = datasets.magnetic_tile_strips(args.data, args.thin_dir)
        elif ds.startswith("thin_"):  # rendered products the defaults never saw (bench/eval_anomaly.py)
            split = datasets.thin_defect_parts(args.thin_dir, ds.removeprefix("thin_"), seed=args.thin_seed)
        else:
            split = datasets.mvtec(args.data, ds, n_val=7)
        train = split.train[: args.train_limit] if args.train_limit else split.train
        labels = np.array([s.is_anomalous for s in split.test])
        n_good, n_bad = int((~labels).sum()), int(labels.sum())
        print(
            f"\n## {ds}: train {len(train)} of the {len(split.train)} training-half good images, "
            f"validation {len(split.val)} good (ours' thresholds), test {n_good} good + {n_bad} defective; "
            f"load {load()}",
            flush=True,
        )

        def log(m: str) -> None:
            print(m, flush=True)

        stem = f"{ds}_{{}}_{len(train)}.pkl"
        a = b = None
        if args.only in ("", "ours"):
            a = cached(args.cache, stem.format("ours"), log, ours, split, train, args.pixel_step, log)
        if args.only in ("", "anomalib"):
            b = cached(
                args.cache, stem.format("anomalib"), log, plain_anomalib, split, train, args.pixel_step, args.batch, log
            )
        if a is None or b is None:
            continue
        res = {}
        for name, r in (("ours", a), ("anomalib", b)):
            res[name] = (
                auroc(labels, r["scores"]),
                auroc(np.concatenate(r["pix_l"]), np.concatenate(r["pix_s"])),
            )
        per_class = {}
        classes = np.array([s.label for s in split.test])
        for cls in sorted(set(classes) - {"good"}):
            sel = (classes == "good") | (classes == cls)
            per_class[cls] = (
                int((classes == cls).sum()),
                auroc(labels[sel], a["scores"][sel]),
                auroc(labels[sel], b["scores"][sel]),
            )
        rows.append((ds, len(train), n_good, n_bad, res, b["bank"], a["fit"], b["fit"], per_class))
        print("| class | n | ours image AUROC | anomalib image AUROC |\n|---|---|---|---|")
        for cls, (n, x, y) in per_class.items():
            print(f"| {cls} | {n} | {x:.3f} | {y:.3f} |")
        if args.render:
            for f in render(split, a, b, labels, args.render, ds, 4):
                print(f"rendered {args.render / f}")
        dump[ds] = {
            "files": [str(s.path) for s in split.test],
            "labels": labels.tolist(),
            "ours": a["scores"].tolist(),
            "anomalib": b["scores"].tolist(),
        }
    print(
        "\n| set | train images | test good + defective | ours image AUROC | plain anomalib image AUROC | "
        "ours pixel AUROC | anomalib pixel AUROC | anomalib bank | never below? |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for ds, nt, ng, nb, res, bank, _, _, _ in rows:
        (oi, op), (ai, apx) = res["ours"], res["anomalib"]
        print(
            f"| {ds} | {nt} | {ng} + {nb} | {oi:.3f} | {ai:.3f} | {op:.3f} | {apx:.3f} | {bank} | "
            f"{'yes' if oi >= ai else 'NO'} |"
        )
    for ds, *_, fo, fa, _ in rows:
        print(f"{ds}: fit ours {fo}; fit anomalib {fa}")
    if args.json:
        args.json.write_text(json.dumps(dump))
    return 0


if __name__ == "__main__":
    sys.exit(main())
