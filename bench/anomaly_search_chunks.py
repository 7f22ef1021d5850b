"""The exported nearest-neighbour search in blocks of the memory bank: same maps, what it costs.

The exported PatchCore graph (``inspector_anomaly.fast_export``) multiplies the part's 1024 patch
features with the memory bank one block of ``SEARCH_CHUNK`` rows at a time, reduces each block
by ReduceMin and takes the Min across blocks. This script fits PatchCore once per data set with
``inspector train anomaly``'s defaults (``TrainSettings()``), exports the same fitted model with
each block size of ``--chunks``, and on the data set's whole test split (both halves of
``datasets.halves``: nothing is chosen here, every image is compared) prints:

- the largest absolute difference of the anomaly maps (raw units, model resolution, the valid
  window the detector reads) and of the part scores (the default score: mean of the map's top
  2 %) of every export against the first one, with the map's range beside it;
- image AUROC of each export on the tune and the report half (n beside);
- ``session.run`` of each export (one thread, no spinning, no memory pattern: the detector's
  options), interleaved image by image so that load from other work falls on all alike:
  median process CPU ms per run and the ratio to the first export, the load average beside;
- peak RSS growth of a fresh process loading each export and running it 5 times.

Models fitted on the shared data are deleted at the end (non-commercial data: never kept).

    python bench/anomaly_search_chunks.py [--datasets transistor,magnetic_tile] [--chunks 4096,1024]
        [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_rss import session_peak_mb
from shared_data import DATA


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def session(path: Path) -> Any:
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    o.enable_mem_pattern = False
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=o, providers=["CPUExecutionProvider"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--datasets", default="transistor,magnetic_tile")
    ap.add_argument("--chunks", default="4096,1024", help="bank rows per block; the first is the reference")
    ap.add_argument("--rounds", type=int, default=3, help="timing passes over the test images")
    ap.add_argument("--torch-threads", type=int, default=2)
    args = ap.parse_args()

    import numpy as np
    import torch
    from inspector_anomaly import datasets
    from inspector_anomaly import fast_export as fast_export_module
    from inspector_anomaly.metrics import auroc
    from inspector_anomaly.preprocess import prepare
    from inspector_anomaly.reference import part_score
    from inspector_anomaly.training import TrainSettings, build_model, export_onnx, fit, read_image, settle_input

    torch.set_num_threads(args.torch_threads)
    chunks = [int(c) for c in args.chunks.split(",")]
    for ds in args.datasets.split(","):
        split = datasets.magnetic_tile(args.data) if ds == "magnetic_tile" else datasets.mvtec(args.data, ds, n_val=7)
        tune, report = datasets.halves(split.test)
        images = [read_image(s.path) for s in split.train]
        settings = settle_input(TrainSettings(), images)
        t0 = time.perf_counter()
        module, _ = build_model(settings, progress=lambda m: None)
        fit(module, images, settings, progress=lambda m: None)
        h, w = settings.size
        print(
            f"\n## {ds}: fit on {len(images)} good, bank {settings.memory_bank}, input {w}x{h}, "
            f"{time.perf_counter() - t0:.0f} s; test {len(split.test)} images (tune {len(tune)}, report "
            f"{len(report)}); load {load()}",
            flush=True,
        )
        tmp = Path(tempfile.mkdtemp(prefix=f"chunks-{ds}-"))
        try:
            paths = {}
            for c in chunks:
                fast_export_module.SEARCH_CHUNK = c
                paths[c] = export_onnx(module, tmp / f"chunk{c}.onnx", settings.size)
            sessions = {c: session(p) for c, p in paths.items()}
            inp = sessions[chunks[0]].get_inputs()[0].name
            prepared = [prepare(s.image(), settings.size, settings.resize, settings.photometric) for s in split.test]
            maps: dict[int, list[np.ndarray]] = {c: [] for c in chunks}
            cpu: dict[int, list[float]] = {c: [] for c in chunks}
            for r in range(args.rounds):
                for i, p in enumerate(prepared):
                    order = chunks[(i + r) % len(chunks) :] + chunks[: (i + r) % len(chunks)]
                    for c in order:
                        t = time.process_time()
                        amap = sessions[c].run(None, {inp: p.tensor})[0]
                        cpu[c].append((time.process_time() - t) * 1000)
                        if r == 0:
                            amap = amap.reshape(amap.shape[-2:])
                            x, y, vw, vh = p.valid
                            maps[c].append(amap[y : y + vh, x : x + vw])
            labels = {id(s): s.is_anomalous for s in split.test}
            ref = maps[chunks[0]]
            lo = min(float(m.min()) for m in ref)
            hi = max(float(m.max()) for m in ref)
            ref_scores = np.array([part_score(m, "top_mean", settings.top_fraction) for m in ref])
            base_cpu = statistics.median(cpu[chunks[0]])
            print(f"map range {lo:.2f}..{hi:.2f}; part score range {ref_scores.min():.3f}..{ref_scores.max():.3f}")
            print(
                "| bank rows per block | max abs map diff | max abs part-score diff | AUROC tune | AUROC report "
                "| CPU ms per run, median | vs first | peak RSS growth MB |"
            )
            print("|---|---|---|---|---|---|---|---|")
            for c in chunks:
                scores = np.array([part_score(m, "top_mean", settings.top_fraction) for m in maps[c]])
                map_diff = max(float(np.abs(a - b).max()) for a, b in zip(maps[c], ref, strict=True))
                score_diff = float(np.abs(scores - ref_scores).max())
                by_half = []
                for half in (tune, report):
                    idx = [k for k, s in enumerate(split.test) if any(s is t for t in half)]
                    by_half.append(
                        f"{auroc(np.array([labels[id(split.test[k])] for k in idx]), scores[idx]):.4f} (n={len(idx)})"
                    )
                rss = session_peak_mb(paths[c], height=h, width=w)
                med = statistics.median(cpu[c])
                print(
                    f"| {c} | {map_diff:.3g} | {score_diff:.3g} | {by_half[0]} | {by_half[1]} | {med:.2f} "
                    f"(n={len(cpu[c])}) | {med / base_cpu:.3f} | {float(rss):.0f} |",
                    flush=True,
                )
            print(f"(load {load()})")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # models of non-commercial data: never kept
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
