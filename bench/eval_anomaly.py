"""Every quality figure of the anomaly models on the real parts in ../shared/data.

For each dataset and model: train (through `inspector_anomaly.training.train`, the code behind
`inspector train anomaly`), then measure through the runtime detector on the test split:
image AUROC, pixel AUROC, F1 at the card's threshold, per defect class. Models are written to
a temporary folder and deleted: they are trained on non-commercial data and never shipped.

    python bench/eval_anomaly.py [--models patchcore,dfm] [--datasets magnetic_tile,transistor]

Datasets: ``magnetic_tile`` and MVTec categories (``transistor``) from the shared data, and two
products the defaults never saw, rendered by ``inspector_anomaly.datasets.thin_defect_parts``
into ``--thin-dir``: ``thin_long`` (bars 1200-1800 x 110-200 px with hairline cracks) and
``thin_large`` (plates about 1500 x 1150 px, the same cracks). ``--thin-seed`` picks an
independent set: seed 1 is the tuning set, seed 2 the report set.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
from shared_data import DATA  # noqa: E402


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--models", default="patchcore,padim,dfm")
    ap.add_argument("--datasets", default="magnetic_tile,transistor")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--resize", default="letterbox")
    ap.add_argument("--scale", type=float, default=1.0, help="tiles: model px per image px")
    ap.add_argument("--overlap", type=int, default=32, help="tiles: overlap, model px")
    ap.add_argument("--memory-bank", type=int, default=None, help="PatchCore bank (default: TrainSettings')")
    ap.add_argument("--feature-dim", type=int, default=None, help="PatchCore projection dims (default: TrainSettings')")
    ap.add_argument("--projection", default=None, choices=["pca", "random"])
    ap.add_argument("--map-sigma", type=float, default=None, help="anomaly map sigma (default: TrainSettings')")
    ap.add_argument("--top-fraction", type=float, default=None, help="top_mean share (default: TrainSettings')")
    ap.add_argument("--photometric", default="flatfield", choices=["none", "meanstd", "clahe", "flatfield"])
    ap.add_argument("--image-score", default="top_mean", choices=["max", "top_mean"])
    ap.add_argument("--layers", default=None, help="comma-separated backbone layers (default: per model)")
    ap.add_argument("--backbone", default="pretrained", choices=["pretrained", "random"])
    ap.add_argument("--input-shape", default="auto", choices=["auto", "fixed"])
    ap.add_argument("--train-limit", type=int, default=0, help="first N training images only (0: all)")
    ap.add_argument("--thin-seed", type=int, default=1, help="thin_*: 1 = tuning set, 2 = report set")
    ap.add_argument("--thin-dir", type=Path, default=Path(tempfile.gettempdir()) / "inspector-thin-parts")
    ap.add_argument(
        "--dump", type=Path, default=None, help="write each run's card validation and test scores (JSON) here"
    )
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"eval_anomaly: data folder {args.data} not found; pass --data", file=sys.stderr)
        return 2

    from inspector_anomaly import datasets
    from inspector_anomaly.detector import Anomaly, AnomalyConfig
    from inspector_anomaly.evaluation import evaluate
    from inspector_anomaly.metrics import auroc
    from inspector_anomaly.training import TrainSettings, train

    quiet = lambda msg: None  # noqa: E731
    for ds in args.datasets.split(","):
        if ds == "magnetic_tile":
            split = datasets.magnetic_tile(args.data)
        elif ds == "magnetic_tile_strips":  # real surfaces and defects cut into 6:1 strips
            split = datasets.magnetic_tile_strips(args.data, args.thin_dir)
        elif ds.startswith("thin_"):
            split = datasets.thin_defect_parts(args.thin_dir, ds.removeprefix("thin_"), seed=args.thin_seed)
        else:
            split = datasets.mvtec(args.data, ds, n_val=7)
        if args.train_limit:
            split = dataclasses.replace(split, train=split.train[: args.train_limit])
        print(
            f"\n## {ds}: train {len(split.train)} good, validation {len(split.val)} good, "
            f"test {sum(not s.is_anomalous for s in split.test)} good + "
            f"{sum(s.is_anomalous for s in split.test)} defective"
        )
        for model in args.models.split(","):
            given = {
                "memory_bank": args.memory_bank,
                "feature_dim": args.feature_dim,
                "projection": args.projection,
                "map_sigma": args.map_sigma,
                "top_fraction": args.top_fraction,
            }
            settings = TrainSettings(
                model=model,
                size=(args.size, args.size),
                resize=args.resize,
                **{k: v for k, v in given.items() if v is not None},
                backbone=args.backbone,
                scale=args.scale,
                tile_overlap=args.overlap,
                photometric=args.photometric,
                image_score=args.image_score,
                layers=args.layers.split(",") if args.layers else None,
                input_shape=args.input_shape,
            )
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                card = train(
                    [s.path for s in split.train],
                    Path(tmp) / f"{ds}_{model}.onnx",
                    settings,
                    val_good=[s.path for s in split.val],
                    progress=quiet,
                )
                train_s = time.perf_counter() - t0
                det = Anomaly(AnomalyConfig(model=f"{ds}_{model}.onnx", threads=2), station_dir=Path(tmp))
                det.warm_up()
                t1 = time.perf_counter()
                fig = evaluate(det, split.test)
                ms = 1000 * (time.perf_counter() - t1) / len(split.test)
            if args.dump is not None:
                args.dump.mkdir(parents=True, exist_ok=True)
                tag = f"{ds}_{model}_{card.input.width}x{card.input.height}_{args.resize}_{settings.memory_bank}"
                (args.dump / f"{tag}.json").write_text(
                    json.dumps(
                        {
                            "thresholds": card.thresholds.model_dump(),
                            "validation": card.validation,
                            "scores": fig.scores,
                            "labels": fig.labels,
                            "files": [str(x.path) for x in split.test],
                            "load": load(),
                        }
                    )
                )
            print(
                f"\n### {model} ({card.backbone.name}, {'pretrained' if card.backbone.pretrained else 'random'}, "
                f"layers {','.join(card.backbone.layers)}, input {card.input.width}x{card.input.height} {args.resize}"
                f"{f' scale {args.scale} overlap {args.overlap}' if args.resize == 'tiles' else ''}, "
                f"memory bank {settings.memory_bank if model == 'patchcore' else '-'}, "
                f"feature dim {settings.feature_dim or 'all'}"
                f"{f' ({settings.projection})' if settings.feature_dim else ''}, map sigma {settings.map_sigma:g}, "
                f"lighting {args.photometric}, image score {args.image_score} {settings.top_fraction:g}; load {load()})"
            )
            print(
                f"train {train_s:.0f} s, ONNX {card.onnx_bytes / 1e6:.1f} MB, "
                f"{ms:.0f} ms/image (ORT, 2 threads, incl. metrics)"
            )
            print(f"threshold: {card.thresholds.method}")
            print(
                f"image AUROC {fig.image_auroc:.3f} | pixel AUROC {fig.pixel_auroc:.3f} | "
                f"F1 {fig.f1:.3f} | false alarms {fig.false_alarm_rate:.1%} of {fig.n_good} good"
            )
            print("| class | n | image AUROC | pixel AUROC | F1 | recall |")
            print("|---|---|---|---|---|---|")
            for cls, f in fig.per_class.items():
                print(
                    f"| {cls} | {f['n']} | {f['image_auroc']:.3f} | {f['pixel_auroc']:.3f} | "
                    f"{f['f1']:.3f} | {f['recall']:.2f} |"
                )
            # the test split's halves (datasets.halves: choices are made on tune, quoted on report)
            tune, report = datasets.halves(split.test)
            where = {id(x): i for i, x in enumerate(split.test)}
            sc, thr = np.array(fig.scores), card.thresholds.image
            print("| half | good | defective | image AUROC | false fails at the card threshold | recall per class |")
            print("|---|---|---|---|---|---|")
            for name, half in (("tune", tune), ("report", report)):
                idx = np.array([where[id(x)] for x in half])
                lab = np.array([fig.labels[i] for i in idx])
                hs = sc[idx]
                recall = ", ".join(
                    f"{c} {(hs[lab == c] >= thr).mean():.2f} ({int((lab == c).sum())})"
                    for c in sorted(set(lab) - {"good"})
                )
                print(
                    f"| {name} | {int((lab == 'good').sum())} | {int((lab != 'good').sum())} | "
                    f"{auroc(lab != 'good', hs):.3f} | {int((hs[lab == 'good'] >= thr).sum())}/"
                    f"{int((lab == 'good').sum())} | {recall}; all {(hs[lab != 'good'] >= thr).mean():.2f} |"
                )
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
