"""Issue 12: the cheapest anomaly model that keeps the quality. Variants side by side, one run.

For each dataset (magnetic_tile, mvtec transistor; the splits of ``inspector_anomaly.datasets``:
thresholds chosen on the validation half, everything reported on the test half) PatchCore is
fitted once with the largest memory bank; the k-center greedy coreset is built in order, so the
first N rows of the bank *are* the coreset of size N, and every smaller bank is a prefix of it
(the same selection a separate training with ``--memory-bank N`` makes). Each variant is
exported exactly as ``inspector train anomaly`` does and measured through the runtime detector:

- quality: image AUROC, pixel AUROC, false fails on the test half's good images at the card's
  threshold (n given);
- speed: ``session.run`` of each variant interleaved image by image (so load from the other
  jobs on the machine hits all alike), wall ms and process CPU ms, idle (whatever the machine
  does) and loaded (plus one busy-looping process of this script), load average printed beside;
  and the detector's CPU ms for a whole 5 MP part (2448 x 2048 mono, the view resized inside);
- memory: peak RSS growth of a fresh process that loads the variant and runs it 5 times, with
  onnxruntime's default arena and with ``enable_mem_pattern`` off.

    python bench/anomaly_variants.py [--banks 2048,4096,8192,16384] [--datasets magnetic_tile,transistor]
                                     [--int8] [--parts 40]

``--map-variants`` (issue 11) measures instead what costs no CPU at run time: one PatchCore at the
default bank (8192) is fitted once, exported with each anomaly-map smoothing sigma (``--sigmas``),
and each export's maps of the test images are scored with each part score (``max``, mean of the
top ``--top-fractions``). Image AUROC (overall and per class) is printed on the two halves of
the test split (``datasets.halves``: choose on *tune*, quote *report*), n beside each.

``--input-cost 256x256,672x96`` times the exported graph at each model input (W x H) instead:
a bank of 8192 random rows (the search costs the same whatever the rows hold), ``session.run``
interleaved, one thread, process CPU, median of ``--parts`` x ``--rounds`` runs.

``--sweep`` (issues 11 and 12: a better *and* no dearer default) fits PatchCore once per data set
at the largest of ``--banks`` and measures on the halves of the test split every bank (a prefix
of the greedy coreset) x feature projection (none; PCA to each of ``--dims``; a seeded Gaussian to
each of ``--random-dims``) x map sigma (``--sigmas``) x part score (``max``, top ``--top-fractions``
mean). Each bank x projection is exported as training exports it, but with the map's blur taken
out of the graph; the blur of each sigma is then applied to the exported map in numpy (anomalib's
kernel and reflect border; checked against the in-graph blur on the first variant, difference
printed), so one export serves every sigma. ``thin_long``: the tune half is the seed-1 set, the
report half the seed-2 set (each fitted on its own training half). Per variant: image AUROC per
half and per class, and, at a threshold chosen without the report half (the largest of the
validation + tune-half good scores), the report half's false fails and recall per class.
``--dump FILE`` writes every score (JSON) for replays.

``--cost`` times ``session.run`` (one thread, no spinning, process CPU, interleaved, load printed)
of each bank in ``--banks`` x feature dimension (``--dims``, 0 = none) on random bank rows at
``--size`` (the search costs the same whatever the rows hold).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_rss import session_peak_mb
from shared_data import DATA


def busy(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x += 1


def rss(path: Path, mem_pattern: bool) -> float:
    return session_peak_mb(path, threads=2, mem_pattern=mem_pattern, outputs=["anomaly_map"])


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def time_sessions(sessions: dict[str, object], tensors: list, rounds: int) -> dict[str, tuple[list, list]]:
    out: dict[str, tuple[list, list]] = {k: ([], []) for k in sessions}
    for _ in range(rounds):
        for x in tensors:
            for k, s in sessions.items():
                c0, t0 = time.process_time(), time.perf_counter()
                s.run(["anomaly_map"], {"input": x})  # type: ignore[attr-defined]
                out[k][0].append(1000 * (time.perf_counter() - t0))
                out[k][1].append(1000 * (time.process_time() - c0))
    return out


def quantise_backbone(src: Path, dst: Path, calib: list) -> None:
    """Static int8 (QDQ) of the backbone's convolutions only; the distance search stays float."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": x} for x in calib])

        def get_next(self):  # type: ignore[no-untyped-def]
            return next(self.it, None)

    model = onnx.load(str(src))
    convs = [n.name for n in model.graph.node if n.op_type == "Conv" and n.input[1] and "blur" not in n.name.lower()]
    # the map's separable blur is two 1-channel Convs of width 33 (kernel 1 x 33 / 33 x 1): keep it float
    inits = {t.name: t for t in model.graph.initializer}
    convs = [
        n.name
        for n in model.graph.node
        if n.name in convs and not (n.input[1] in inits and 33 in list(inits[n.input[1]].dims))
    ]
    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        nodes_to_quantize=convs,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )


def split_of(args: argparse.Namespace, ds: str):  # type: ignore[no-untyped-def]
    from inspector_anomaly import datasets

    if ds == "magnetic_tile":
        return datasets.magnetic_tile(args.data)
    if ds.startswith("thin_"):
        return datasets.thin_defect_parts(args.thin_dir, ds.removeprefix("thin_"), seed=args.thin_seed)
    return datasets.mvtec(args.data, ds, n_val=7)


def input_cost(args: argparse.Namespace) -> int:
    import numpy as np
    import onnxruntime as ort
    import torch
    from inspector_anomaly.training import TrainSettings, build_model, export_onnx

    torch.set_num_threads(args.torch_threads)
    tmp = Path(tempfile.mkdtemp(prefix="inputcost-"))
    sessions, feeds = {}, {}
    for spec in args.input_cost.split(","):
        w, h = (int(v) for v in spec.lower().split("x"))
        settings = TrainSettings(size=(h, w), input_shape="fixed")
        module, _ = build_model(settings, progress=lambda m: None)
        module.model.train()
        with torch.no_grad():
            module.training_step(types.SimpleNamespace(image=torch.rand(1, 3, h, w)))
        dim = module.model.embedding_store[0].shape[1]
        module.model.embedding_store.clear()
        module.model.memory_bank = torch.randn(8192, dim)
        module.eval()
        path = export_onnx(module, tmp / f"{w}x{h}.onnx", (h, w))
        o = ort.SessionOptions()
        o.intra_op_num_threads = 1
        o.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions[spec] = ort.InferenceSession(str(path), sess_options=o, providers=["CPUExecutionProvider"])
        feeds[spec] = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    cpu: dict[str, list[float]] = {k: [] for k in sessions}
    for k, sess in sessions.items():
        sess.run(["anomaly_map"], {"input": feeds[k]})
    l0 = load()
    for _ in range(args.parts * args.rounds):
        for k, sess in sessions.items():
            c0 = time.process_time()
            sess.run(["anomaly_map"], {"input": feeds[k]})
            cpu[k].append(1000 * (time.process_time() - c0))
    print("| model input (W x H) | session.run CPU ms, median | n | load |\n|---|---|---|---|")
    for k, v in cpu.items():
        print(f"| {k} | {statistics.median(v):.1f} | {len(v)} | {l0} -> {load()} |")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def map_variants(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from anomalib.models.image.patchcore.anomaly_map import AnomalyMapGenerator
    from inspector_anomaly import datasets
    from inspector_anomaly.detector import Anomaly, AnomalyConfig
    from inspector_anomaly.metrics import auroc
    from inspector_anomaly.reference import part_score
    from inspector_anomaly.training import (
        TrainSettings,
        _export_and_calibrate,
        build_model,
        fit,
        read_image,
        settle_input,
    )

    torch.set_num_threads(args.torch_threads)
    sigmas = [float(v) for v in args.sigmas.split(",")]
    scorers = [("max", 1.0)] + [("top_mean", float(v)) for v in args.top_fractions.split(",")]
    for ds in args.datasets.split(","):
        split = split_of(args, ds)
        tune, report = datasets.halves(split.test)
        images = [read_image(s.path) for s in split.train]
        settings = settle_input(TrainSettings(), images)
        t0 = time.perf_counter()
        module, backbone = build_model(settings, progress=lambda m: None)
        fit(module, images, settings, progress=lambda m: None)
        print(
            f"\n## {ds}: fit on {len(split.train)} good at bank {settings.memory_bank}, input "
            f"{settings.size[1]}x{settings.size[0]}: {time.perf_counter() - t0:.0f} s; test halves: tune "
            f"{sum(not s.is_anomalous for s in tune)} good + {sum(s.is_anomalous for s in tune)} defective, report "
            f"{sum(not s.is_anomalous for s in report)} good + {sum(s.is_anomalous for s in report)} defective; "
            f"load {load()}",
            flush=True,
        )
        classes = sorted({s.label for s in split.test} - {"good"})
        print(
            "| sigma | part score | half | image AUROC | "
            + " | ".join(classes)
            + " |\n|---|---|---|---|"
            + "---|" * len(classes),
            flush=True,
        )
        tmp = Path(tempfile.mkdtemp(prefix=f"mapvar-{ds}-"))
        try:
            for sigma in sigmas:
                module.model.anomaly_map_generator = AnomalyMapGenerator(sigma=sigma)  # type: ignore[arg-type]
                path = tmp / f"s{sigma:g}.onnx"
                s_sig = dataclasses.replace(settings, map_sigma=sigma, threshold="quantile")
                _export_and_calibrate(
                    module,
                    path,
                    backbone,
                    s_sig,
                    [s.path for s in split.train],
                    [s.path for s in split.val[:4]],
                    [],
                    t0,
                    lambda m: None,
                )
                det = Anomaly(AnomalyConfig(model=path.name, threads=2), station_dir=tmp)
                det.warm_up()
                maps = {id(s): det._coarse(s.image()) for s in split.test}
                for kind, frac in scorers:
                    cells = []
                    for name, half in (("tune", tune), ("report", report)):
                        sc = np.array([part_score(maps[id(s)], kind, frac) for s in half])
                        lab = np.array([s.is_anomalous for s in half])
                        cl = np.array([s.label for s in half])
                        per = []
                        for c in classes:
                            sel = (cl == "good") | (cl == c)
                            per.append(f"{auroc(lab[sel], sc[sel]):.3f}")
                        cells.append(
                            f"| {sigma:g} | {kind}{'' if kind == 'max' else f' {frac:g}'} | {name} | "
                            f"{auroc(lab, sc):.3f} | " + " | ".join(per) + " |"
                        )
                    print("\n".join(cells), flush=True)
                print(f"(sigma {sigma:g} done; load {load()})", flush=True)
        finally:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)  # models of non-commercial data: never kept
    return 0


def _blur(amap, sigma: float):  # type: ignore[no-untyped-def]
    """anomalib's GaussianBlur2d of the map (kernel 2 * int(4 sigma + 0.5) + 1, reflect border)."""
    import cv2

    if sigma <= 0:
        return amap
    k = 2 * int(4.0 * sigma + 0.5) + 1
    return cv2.GaussianBlur(amap, (k, k), sigma, borderType=cv2.BORDER_REFLECT_101)


def _variant_name(bank: int, kind: str, dim: int) -> str:
    return f"bank {bank}" + ("" if not dim else f", {kind} {dim}")


def sweep(args: argparse.Namespace) -> int:
    import numpy as np
    import onnxruntime as ort
    import torch
    from anomalib.models.image.patchcore.anomaly_map import AnomalyMapGenerator
    from inspector_anomaly import datasets
    from inspector_anomaly.preprocess import prepare
    from inspector_anomaly.projection import install_projection, projection_matrix, remove_projection
    from inspector_anomaly.reference import part_score
    from inspector_anomaly.training import TrainSettings, build_model, export_onnx, fit, read_image, settle_input

    torch.set_num_threads(args.torch_threads)
    banks = sorted(int(b) for b in args.banks.split(","))
    dims = [int(d) for d in args.dims.split(",") if int(d)]
    rdims = [int(d) for d in args.random_dims.split(",") if d and int(d)]
    sigmas = [float(v) for v in args.sigmas.split(",")]
    scorers = [("max", 1.0)] + [("top_mean", float(v)) for v in args.top_fractions.split(",")]
    variants = [(b, "none", 0) for b in banks]
    variants += [(b, "pca", d) for b in banks for d in dims] + [(b, "random", d) for b in banks for d in rdims]
    dump: dict = {"datasets": {}, "variants": [list(v) for v in variants], "sigmas": sigmas, "scorers": scorers}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.ort_threads
    for ds in args.datasets.split(","):
        if ds.startswith("thin_"):
            shape = ds.removeprefix("thin_")
            parts = [
                ("tune", datasets.thin_defect_parts(args.thin_dir, shape, seed=1)),
                ("report", datasets.thin_defect_parts(args.thin_dir, shape, seed=2)),
            ]
        else:
            parts = [("", split_of(args, ds))]
        samples: list[dict] = []
        scores: dict[str, list[float]] = {}
        for which, split in parts:
            images = [read_image(s.path) for s in split.train]
            settings = settle_input(TrainSettings(memory_bank=banks[-1], feature_dim=0), images)
            t0, c0 = time.perf_counter(), time.process_time()
            module, _ = build_model(settings, progress=lambda m: None)
            fit(module, images, settings, progress=lambda m: None)
            full = module.model.memory_bank.clone()
            basis = module.feature_basis
            if which:
                test = [(s, which) for s in split.test]
            else:
                tune, report = datasets.halves(split.test)
                test = [(s, "tune") for s in tune] + [(s, "report") for s in report]
            # validation good images: part of the threshold's basis (never the report half)
            test += [(s, f"val-{which}" if which else "val") for s in split.val]
            prepared = [prepare(s.image(), settings.size, settings.resize, settings.photometric) for s, _ in test]
            base = len(samples)
            samples += [{"name": s.path.name, "label": s.label, "half": h} for s, h in test]
            print(
                f"\n## {ds}{f' ({which} set)' if which else ''}: fit on {len(split.train)} good at bank "
                f"{banks[-1]}, input {settings.size[1]}x{settings.size[0]}: {time.perf_counter() - t0:.0f} s wall, "
                f"{time.process_time() - c0:.0f} s CPU; scored: "
                + ", ".join(
                    f"{h} {sum(1 for s, hh in test if hh == h and not s.is_anomalous)} good + "
                    f"{sum(1 for s, hh in test if hh == h and s.is_anomalous)} defective"
                    for h in ("tune", "report", "val", f"val-{which}")
                    if any(hh == h for _, hh in test)
                )
                + f"; load {load()}",
                flush=True,
            )
            tmp = Path(tempfile.mkdtemp(prefix=f"sweep-{ds}-"))
            try:
                for vi, (bank, kind, dim) in enumerate(variants):
                    if bank > full.shape[0]:
                        continue
                    remove_projection(module.model)
                    rows = full[:bank]
                    if dim:
                        proj = projection_matrix(basis, dim, kind, seed=0)
                        install_projection(module.model, proj)
                        rows = rows @ proj
                    module.model.memory_bank = rows.contiguous()
                    if vi == 0:  # the numpy blur against the graph's own, once
                        module.model.anomaly_map_generator = AnomalyMapGenerator(sigma=4)
                        ref = ort.InferenceSession(
                            str(export_onnx(module, tmp / "ref.onnx", settings.size)), sess_options=opts
                        )
                    module.model.anomaly_map_generator.blur = torch.nn.Identity()
                    path = export_onnx(module, tmp / "v.onnx", settings.size)
                    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
                    c1 = time.process_time()
                    maps = [sess.run(["anomaly_map"], {"input": p.tensor})[0][0, 0] for p in prepared]
                    run_cpu = 1000 * (time.process_time() - c1) / len(maps)
                    if vi == 0:
                        worst, span = 0.0, 0.0
                        for p, m in list(zip(prepared, maps, strict=True))[:8]:
                            r = ref.run(["anomaly_map"], {"input": p.tensor})[0][0, 0]
                            worst = max(worst, float(np.abs(_blur(m, 4.0) - r).max()))
                            span = max(span, float(np.ptp(r)))
                        print(
                            f"numpy blur vs the graph's (sigma 4, 8 images): max difference {worst:.2e} "
                            f"of a map range {span:.2f}"
                        )
                    for sigma in sigmas:
                        for kind_s, frac in scorers:
                            score_name = kind_s if kind_s == "max" else f"{kind_s} {frac:g}"
                            key = f"{_variant_name(bank, kind, dim)} | sigma {sigma:g} | {score_name}"
                            vals = scores.setdefault(key, [float("nan")] * base)
                            for p, m in zip(prepared, maps, strict=True):
                                x, y, w, h = p.valid
                                vals.append(part_score(_blur(m, sigma)[y : y + h, x : x + w], kind_s, frac))
                    print(
                        f"{_variant_name(bank, kind, dim)}: exported and scored, {run_cpu:.1f} ms CPU per run "
                        f"({args.ort_threads} threads, not a speed figure); load {load()}",
                        flush=True,
                    )
            finally:
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)  # models of non-commercial data: never kept
        dump["datasets"][ds] = {"samples": samples, "scores": scores}
        _print_sweep(ds, samples, scores)
    if args.dump:
        args.dump.write_text(json.dumps(dump))
        print(f"scores written to {args.dump}")
    return 0


def _print_sweep(ds: str, samples: list[dict], scores: dict[str, list[float]]) -> None:
    import numpy as np
    from inspector_anomaly.metrics import auroc

    label = np.array([s["label"] for s in samples])
    half = np.array([s["half"] for s in samples])
    bad = label != "good"
    classes = sorted(set(label[bad]))
    per_class = len(classes) > 1
    print(
        f"\n### {ds}: image AUROC tune | report"
        + (" | report per class (" + ", ".join(classes) + ")" if per_class else "")
        + " | report at the threshold from validation + tune good: false fails, recall per class, all"
    )
    head = "| variant | sigma | part score | tune | report |" + (" per class |" if per_class else "")
    print(head + " false fails | recall |")
    print("|---|---|---|---|---|" + ("---|" if per_class else "") + "---|---|")
    for key, v in scores.items():
        sc = np.array(v)
        t, r = half == "tune", half == "report"
        a_t, a_r = auroc(bad[t], sc[t]), auroc(bad[r], sc[r])
        cells = [*key.split(" | "), f"{a_t:.3f}", f"{a_r:.3f}"]
        if per_class:
            cells.append(
                " ".join(f"{auroc(bad[r & ((label == c) | ~bad)], sc[r & ((label == c) | ~bad)]):.3f}" for c in classes)
            )
        basis = ~bad & ((half == "val") | (half == "tune"))
        if ds.startswith("thin_"):  # the tune set's model is another fit: the report set's own validation
            basis = ~bad & (half == "val-report")
        thr = float(sc[basis].max())
        ff = int((sc[r & ~bad] >= thr).sum())
        rec = " ".join(f"{(sc[r & (label == c)] >= thr).mean():.2f}" for c in classes)
        cells += [f"{ff}/{int((r & ~bad).sum())}", f"{rec} / {(sc[r & bad] >= thr).mean():.2f}" if per_class else rec]
        print("| " + " | ".join(cells) + " |")


def cost(args: argparse.Namespace) -> int:
    import numpy as np
    import onnxruntime as ort
    import torch
    from anomalib.models.image.patchcore.anomaly_map import AnomalyMapGenerator
    from inspector_anomaly.projection import install_projection, projection_matrix, remove_projection
    from inspector_anomaly.training import TrainSettings, build_model, export_onnx

    torch.set_num_threads(args.torch_threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    settings = TrainSettings(size=(h, w), input_shape="fixed")
    module, _ = build_model(settings, progress=lambda m: None)
    module.model.train()
    with torch.no_grad():
        module.training_step(types.SimpleNamespace(image=torch.rand(1, 3, h, w)))
    full_dim = module.model.embedding_store[0].shape[1]
    module.model.embedding_store.clear()
    module.eval()
    sigma = float(args.sigmas.split(",")[0])
    module.model.anomaly_map_generator = AnomalyMapGenerator(sigma=sigma)
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(full_dim, full_dim, generator=g))[0]
    tmp = Path(tempfile.mkdtemp(prefix="cost-"))
    sessions = {}
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for bank in sorted(int(b) for b in args.banks.split(",")):
        for dim in [int(d) for d in args.dims.split(",")]:
            remove_projection(module.model)
            rows = torch.randn(bank, full_dim, generator=g)
            if dim:
                proj = projection_matrix(basis, dim, "pca")
                install_projection(module.model, proj)
                rows = rows @ proj
            module.model.memory_bank = rows.contiguous()
            path = export_onnx(module, tmp / f"b{bank}d{dim}.onnx", settings.size)
            sessions[(bank, dim)] = ort.InferenceSession(str(path), sess_options=o, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    for sess in sessions.values():
        sess.run(["anomaly_map"], {"input": x})
    cpu: dict[tuple[int, int], list[float]] = {k: [] for k in sessions}
    l0 = load()
    keys = list(sessions)
    for i in range(args.parts * args.rounds):
        for k in keys[i % len(keys) :] + keys[: i % len(keys)]:  # the order rotated every round
            c0 = time.process_time()
            sessions[k].run(["anomaly_map"], {"input": x})
            cpu[k].append(1000 * (time.process_time() - c0))
    l1 = load()
    print(
        f"\n# session.run CPU per run, {w}x{h}, sigma {sigma:g}, 1 thread, no spinning, interleaved (order rotated), "
        f"n = {args.parts * args.rounds} each; load before {l0}, after {l1}"
    )
    print("| bank | feature dim | CPU ms median | p10 | p90 | vs bank 8192 full |\\n|---|---|---|---|---|---|")
    ref = statistics.median(cpu[(8192, 0)]) if (8192, 0) in cpu else float("nan")
    for (bank, dim), v in cpu.items():
        q = np.percentile(v, [10, 90])
        med = statistics.median(v)
        print(f"| {bank} | {dim or full_dim} | {med:.1f} | {q[0]:.1f} | {q[1]:.1f} | {med / ref:.2f} |")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--datasets", default="magnetic_tile,transistor")
    ap.add_argument("--banks", default="2048,4096,8192,16384")
    ap.add_argument("--int8", action="store_true", help="add a static-int8 backbone variant of each bank")
    ap.add_argument("--parts", type=int, default=30, help="images per timing round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch threads for the fit and coreset (1: on a loaded machine 2 threads only wait for each other)",
    )
    ap.add_argument("--input-cost", default="", help="W x H inputs to time, e.g. 256x256,672x96")
    ap.add_argument("--map-variants", action="store_true", help="sigma x part score at bank 8192 instead")
    ap.add_argument("--sigmas", default="2,4,6")
    ap.add_argument("--top-fractions", default="0.002,0.005,0.01,0.02,0.05")
    ap.add_argument("--thin-seed", type=int, default=1, help="thin_*: 1 = tuning set, 2 = report set")
    ap.add_argument("--thin-dir", type=Path, default=Path(tempfile.gettempdir()) / "inspector-thin-parts")
    ap.add_argument("--sweep", action="store_true", help="bank x projection x sigma x part score, on halves")
    ap.add_argument("--cost", action="store_true", help="session.run CPU of bank x feature dim")
    ap.add_argument("--dims", default="0,32,48,64,96,128", help="--sweep: PCA dims; --cost: dims (0 = all)")
    ap.add_argument("--random-dims", default="64,96,128", help="--sweep: Gaussian random projection dims")
    ap.add_argument("--size", default="256x256", help="--cost: model input W x H")
    ap.add_argument("--ort-threads", type=int, default=2, help="--sweep: onnxruntime threads for scoring")
    ap.add_argument("--dump", type=Path, default=None, help="--sweep: write every score here (JSON)")
    args = ap.parse_args()
    if args.sweep:
        return sweep(args)
    if args.cost:
        return cost(args)
    if args.map_variants:
        return map_variants(args)
    if args.input_cost:
        return input_cost(args)

    import cv2
    import onnxruntime as ort
    import torch
    from inspector_anomaly import datasets
    from inspector_anomaly.detector import Anomaly, AnomalyConfig
    from inspector_anomaly.evaluation import evaluate
    from inspector_anomaly.preprocess import prepare
    from inspector_anomaly.training import (
        TrainSettings,
        _export_and_calibrate,
        build_model,
        choose_thresholds,
        fit,
        read_image,
    )

    from inspector_core import View

    torch.set_num_threads(args.torch_threads)
    banks = sorted(int(b) for b in args.banks.split(","))
    rows: list[dict] = []
    for ds in args.datasets.split(","):
        split = datasets.magnetic_tile(args.data) if ds == "magnetic_tile" else datasets.mvtec(args.data, ds, n_val=7)
        n_good = sum(not s.is_anomalous for s in split.test)
        print(
            f"\n## {ds}: fit on {len(split.train)} good, thresholds on {len(split.val)} good (validation half), "
            f"reported on test {n_good} good + {len(split.test) - n_good} defective; load {load()}",
            flush=True,
        )
        settings = TrainSettings(memory_bank=banks[-1])
        images = [read_image(s.path) for s in split.train]
        t0 = time.perf_counter()
        module, backbone = build_model(settings, progress=lambda m: None)
        fit(module, images, settings, progress=lambda m: None)
        fit_s = time.perf_counter() - t0
        full = module.model.memory_bank.clone()
        print(f"fit + coreset of {banks[-1]}: {fit_s:.0f} s (bank rows available {full.shape[0]})", flush=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"variants-{ds}-"))
        variants: dict[str, Path] = {}
        calib = [prepare(img, settings.size, "letterbox", settings.photometric).tensor for img in images[:32]]
        for n in banks:
            if n > full.shape[0]:
                continue
            module.model.memory_bank = full[:n].contiguous()
            s_n = TrainSettings(memory_bank=n)
            path = tmp / f"bank{n}.onnx"
            _export_and_calibrate(
                module,
                path,
                backbone,
                s_n,
                [s.path for s in split.train],
                [s.path for s in split.val],
                [],
                t0,
                lambda m: None,
            )
            variants[f"bank {n}"] = path
            if args.int8:
                qpath = tmp / f"bank{n}_int8.onnx"
                quantise_backbone(path, qpath, calib)
                from inspector_anomaly.card import sha256_file

                card = json.loads(path.with_suffix(".json").read_text())
                card.update(onnx_file=qpath.name, onnx_sha256=sha256_file(qpath), onnx_bytes=qpath.stat().st_size)
                qpath.with_suffix(".json").write_text(json.dumps(card))
                # its own thresholds, chosen the same way on the same validation images
                qdet = Anomaly(AnomalyConfig(model=qpath.name, threads=2), station_dir=tmp)
                qdet.load()
                th, metrics = choose_thresholds(qdet, [read_image(s.path) for s in split.val], [], s_n)
                card.update(thresholds=th.model_dump(), validation=metrics)
                qpath.with_suffix(".json").write_text(json.dumps(card))
                variants[f"bank {n} int8"] = qpath
        # quality through the runtime detector
        quality: dict[str, dict] = {}
        for name, path in variants.items():
            det = Anomaly(AnomalyConfig(model=path.name, threads=2), station_dir=path.parent)
            det.warm_up()
            fig = evaluate(det, split.test, pixel_step=4)
            quality[name] = {
                "image_auroc": fig.image_auroc,
                "pixel_auroc": fig.pixel_auroc,
                "false_fails": int(round(fig.false_alarm_rate * fig.n_good)),
                "n_good": fig.n_good,
                "f1": fig.f1,
                "mb": path.stat().st_size / 1e6,
            }
            print(
                f"{name:<16} image AUROC {fig.image_auroc:.3f} pixel AUROC {fig.pixel_auroc:.3f} "
                f"F1 {fig.f1:.3f} false fails {quality[name]['false_fails']}/{fig.n_good}; load {load()}",
                flush=True,
            )
        # speed, interleaved
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        sessions = {
            k: ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])
            for k, p in variants.items()
        }
        tensors = [
            prepare(s.image(), settings.size, "letterbox", settings.photometric).tensor
            for s in split.test[: args.parts]
        ]
        time_sessions(sessions, tensors[:2], 1)
        l_idle = load()
        idle = time_sessions(sessions, tensors, args.rounds)
        stop = time.time() + 600
        burner = multiprocessing.Process(target=busy, args=(stop,), daemon=True)
        burner.start()
        time.sleep(1)
        try:
            loaded = time_sessions(sessions, tensors, args.rounds)
            l_loaded = load()
        finally:
            burner.terminate()
            burner.join()
        # the detector on a whole 5 MP part (view resized inside the step), CPU per part
        big = cv2.resize(read_image(split.test[0].path), (2448, 2048), interpolation=cv2.INTER_LINEAR)
        dets = {}
        for k, p in variants.items():
            d = Anomaly(AnomalyConfig(model=p.name, threads=2), station_dir=p.parent)
            d.warm_up()
            dets[k] = d
        part_cpu: dict[str, list[float]] = {k: [] for k in dets}
        for _ in range(10):
            for k, d in dets.items():
                c0 = time.process_time()
                d.inspect(View(big, "p"))
                part_cpu[k].append(1000 * (time.process_time() - c0))
        for k, p in variants.items():
            q = quality[k]
            rows.append(
                {
                    "dataset": ds,
                    "variant": k,
                    **q,
                    "idle_ms": statistics.median(idle[k][0]),
                    "idle_cpu": statistics.median(idle[k][1]),
                    "loaded_ms": statistics.median(loaded[k][0]),
                    "loaded_cpu": statistics.median(loaded[k][1]),
                    "part_cpu": statistics.median(part_cpu[k]),
                    "rss": rss(p, True),
                    "rss_nomp": rss(p, False),
                    "n_time": len(idle[k][0]),
                    "load_idle": l_idle,
                    "load_loaded": l_loaded,
                }
            )
        print(
            f"\n| {ds} variant | MB | image AUROC | pixel AUROC | F1 | false fails | run ms idle (CPU) | "
            f"run ms loaded (CPU) | 5 MP part CPU ms | RSS MB (mem_pattern off) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            if r["dataset"] != ds:
                continue
            print(
                f"| {r['variant']} | {r['mb']:.1f} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | {r['f1']:.3f} | "
                f"{r['false_fails']}/{r['n_good']} | {r['idle_ms']:.1f} ({r['idle_cpu']:.1f}) | "
                f"{r['loaded_ms']:.1f} ({r['loaded_cpu']:.1f}) | {r['part_cpu']:.1f} | "
                f"{r['rss']:.0f} ({r['rss_nomp']:.0f}) |"
            )
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)  # models of non-commercial data: never kept
        r0 = rows[-1]
        print(
            f"timing: n = {r0['n_time']} runs per variant per condition, interleaved, 2 threads; "
            f"load average idle {r0['load_idle']}, loaded (+1 busy process) {r0['load_loaded']}; "
            f"5 MP part: median of 10, detector.inspect, process CPU",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
