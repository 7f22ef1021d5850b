"""Speed and memory of the anomaly model per memory-bank size, without real data (quick).

PatchCore is fitted once on synthetic good plates with the largest bank; every smaller bank is
a prefix of the greedy coreset (the same selection ``--memory-bank N`` makes). Each variant is
exported as ``inspector train anomaly`` exports it; then, interleaved run by run so that load
from other jobs hits all alike: bare ``session.run`` (wall and process-CPU ms), the detector on
a whole 5 MP part (process-CPU ms, the view resized inside the step), with the machine as found
and with one extra busy process, load average beside; and the peak-RSS growth of a fresh process
that loads the variant and runs it (onnxruntime default, and ``lean_memory``).
Quality per bank size on real parts: ``bench/anomaly_variants.py``.

    python bench/anomaly_bank_speed.py [--banks 2048,4096,8192,16384] [--runs 20]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from anomaly_variants import busy, load, rss

ROI = (172, 144, 680, 480)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--banks", default="2048,4096,8192,16384")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--train", type=int, default=20)
    args = ap.parse_args()

    import cv2
    import onnxruntime as ort
    import torch
    from inspector_anomaly.detector import Anomaly, AnomalyConfig
    from inspector_anomaly.preprocess import prepare
    from inspector_anomaly.training import TrainSettings, _export_and_calibrate, build_model, fit
    from inspector_sources.synthetic import render_part

    from inspector_core import View

    torch.set_num_threads(2)
    banks = sorted(int(b) for b in args.banks.split(","))
    x, y, w, h = ROI
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        paths = []
        for i in range(args.train):
            p = tmp / f"g{i:02d}.png"
            cv2.imwrite(str(p), render_part(seed=5, index=i, truth="good").image)
            paths.append(p)
        images = [cv2.imread(str(p))[y : y + h, x : x + w] for p in paths]
        settings = TrainSettings(memory_bank=banks[-1], roi=ROI)
        t0 = time.perf_counter()
        module, backbone = build_model(settings, progress=lambda m: None)
        fit(module, images, settings, progress=lambda m: None)
        full = module.model.memory_bank.clone()
        variants = {}
        for n in banks:
            module.model.memory_bank = full[:n].contiguous()
            path = tmp / f"bank{n}.onnx"
            _export_and_calibrate(
                module, path, backbone, TrainSettings(memory_bank=n, roi=ROI), paths[:-4], paths[-4:], [], t0, print
            )
            variants[n] = path
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        sessions = {
            n: ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])
            for n, p in variants.items()
        }
        tests = [render_part(seed=9, index=i, truth="good").image[y : y + h, x : x + w] for i in range(args.runs)]
        tensors = [prepare(t, settings.size, "letterbox", settings.photometric).tensor for t in tests]
        part = cv2.resize(cv2.cvtColor(tests[0], cv2.COLOR_BGR2GRAY), (2448, 2048), interpolation=cv2.INTER_LINEAR)
        dets = {}
        for n, p in variants.items():
            d = Anomaly(AnomalyConfig(model=p.name, threads=2), station_dir=p.parent)
            d.warm_up()
            dets[n] = d

        def one_pass() -> dict[int, tuple[list[float], list[float], list[float]]]:
            res: dict[int, tuple[list[float], list[float], list[float]]] = {n: ([], [], []) for n in variants}
            for t in tensors:
                for n in variants:
                    c0, w0 = time.process_time(), time.perf_counter()
                    sessions[n].run(["anomaly_map"], {"input": t})
                    res[n][0].append(1000 * (time.perf_counter() - w0))
                    res[n][1].append(1000 * (time.process_time() - c0))
                    c0 = time.process_time()
                    dets[n].inspect(View(part, "p"))
                    res[n][2].append(1000 * (time.process_time() - c0))
            return res

        one_pass()
        found = one_pass()
        l_found = load()
        burner = multiprocessing.Process(target=busy, args=(time.time() + 900,), daemon=True)
        burner.start()
        try:
            loaded = one_pass()
            l_loaded = load()
        finally:
            burner.terminate()
            burner.join()
        print(
            f"\n# memory bank x speed: synthetic plates ({args.train} good), 256 px letterbox, flat-field, 2 threads; "
            f"n = {args.runs} interleaved runs per variant per condition; load average as found {l_found}, "
            f"loaded (+1 busy process) {l_loaded}"
        )
        print(
            "| bank | ONNX MB | session.run ms (CPU ms), as found | loaded | 5 MP part, detector CPU ms, as found | "
            "loaded | RSS growth MB (lean_memory) |"
        )
        print("|---|---|---|---|---|---|---|")
        med = statistics.median
        for n, p in variants.items():
            a, b = found[n], loaded[n]
            print(
                f"| {n} | {p.stat().st_size / 1e6:.1f} | {med(a[0]):.1f} ({med(a[1]):.1f}) | {med(b[0]):.1f} "
                f"({med(b[1]):.1f}) | {med(a[2]):.1f} | {med(b[2]):.1f} | {rss(p, True):.0f} ({rss(p, False):.0f}) |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
