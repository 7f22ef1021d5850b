"""What the runtime's anomaly step costs beyond onnxruntime itself: ``Anomaly.inspect`` against
bare ``session.run`` of the same ONNX file on the same images, interleaved image by image in one
run (so load from other work on the machine falls on both alike), wall and CPU time.

No training and no torch: it takes a trained model (default: ``bench/line_rate.py``'s cached
one, trained with ``inspector train anomaly`` defaults on synthetic 5 MP parts; run
``python bench/line_rate.py --prepare-only`` first) and frames the line-rate bench renders.

What "bare onnxruntime" means, stated: ``session.run`` alone does not do the job. A camera gives
a 5 MP mono frame, the model takes a 256 x 256 RGB float tensor of the part downscaled as it was
at training (the card's ``downscale``, letterboxed), lit as at training (the card's ``photometric``), and
gives a map that still has to become a part score. So two references are timed:

- ``session.run alone`` (``bare``): a tensor prepared beforehand, nothing else; what the model
  costs, and the floor no step can reach on a whole frame;
- ``hand-written``: the least a user of bare onnxruntime must write for the same job, written
  here plainly from OpenCV and numpy calls (not the plugin's code): the card's downscale
  (``halving``: ``cv2.resize(INTER_AREA)`` by halves while twice the target, on frames of 2 MP or
  more), ``cv2.resize(INTER_AREA)`` to the letterbox size, the card's lighting (flatfield:
  divided by a blurred 1/8 copy, then mean 128 / std 32), grey to RGB, the border replicated,
  float / 255, ``session.run``, the top-1 % mean of the valid part of the map. Its tensor is
  checked against the plugin's (``prepare``): the largest difference is printed (OpenCV's area
  path and the plugin's integral image round differently by at most a grey level).

For each input size (a 680 x 480 ROI and the whole 2448 x 2048 mono frame) and each thread
count it times, per image, in this order rotated every image:

- ``bare``: ``session.run`` on a tensor prepared beforehand, onnxruntime's default session
  options (threads spinning) but the same thread count;
- ``bare, detector options``: the same with the detector's own session options (no spinning);
- ``hand-written``: the minimal preprocessing + ``session.run`` + score above, detector options;
- ``inspect``: the detector's whole step on the view (resize, lighting, the model, score,
  regions, findings);
- and the detector's phases on their own: ``prepare`` (resize + lighting + tensor) and the
  post-processing after ``session.run``;
- ``--openvino``: the detector with ``runtime: openvino`` (after its parity check).

OpenCV runs with the block's thread count (``cv2.setNumThreads``), as onnxruntime does: at one
thread, the whole step on one core. Wall times are medians; CPU is process CPU time (every
thread of this process: onnxruntime's pool included), median. The 1-minute load average is printed beside each block.

    python bench/anomaly_overhead.py [--model PATH] [--images 12] [--rounds 3] [--threads 1,2]
        [--sizes roi,frame] [--openvino]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import line_rate  # the frames and the cached model of the line-rate bench

ROI = (884, 784, 680, 480)  # x, y, w, h inside the 2448 x 2048 frame


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def hand_written(
    session: Any,
    image: np.ndarray,
    size: tuple[int, int],
    names: tuple[str, str],
    top: float = 0.01,
    halving: bool = False,
) -> float:
    """The least a user of bare onnxruntime writes to score a mono frame with this model (letterbox,
    flatfield lighting, the card's downscale, as the line-rate bench's card says): OpenCV and numpy
    only, no plugin code."""
    return hand_written_tensor_and_score(session, image, size, names, top, halving)[1]


def hand_written_tensor(
    image: np.ndarray, size: tuple[int, int], halving: bool = False
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    out_h, out_w = size
    h, w = image.shape[:2]
    s = min(out_w / w, out_h / h)
    nw, nh = round(w * s), round(h * s)
    if halving and h * w >= 2_000_000:  # the card's downscale: halved by 2 x 2 means while twice the target
        while image.shape[1] >= 2 * nw and image.shape[0] >= 2 * nh:
            image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
    small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA).astype(np.float32)
    background = cv2.resize(
        cv2.GaussianBlur(cv2.resize(small, (nw // 8, nh // 8), interpolation=cv2.INTER_AREA), (0, 0), max(nw, nh) / 64),
        (nw, nh),
        interpolation=cv2.INTER_LINEAR,
    )
    flat = small / np.maximum(background, 1.0)
    flat = (flat - flat.mean()) * (32.0 / max(float(flat.std()), 1e-3)) + 128.0
    grey = np.clip(flat, 0, 255).astype(np.uint8)
    x0, y0 = (out_w - nw) // 2, (out_h - nh) // 2
    rgb = cv2.copyMakeBorder(
        cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB), y0, out_h - nh - y0, x0, out_w - nw - x0, cv2.BORDER_REPLICATE
    )
    return (rgb.transpose(2, 0, 1)[None].astype(np.float32) / 255.0, (x0, y0, nw, nh))


def hand_written_tensor_and_score(
    session: Any, image: np.ndarray, size: tuple[int, int], names: tuple[str, str], top: float, halving: bool = False
) -> tuple[np.ndarray, float]:
    tensor, (x0, y0, nw, nh) = hand_written_tensor(image, size, halving)
    output, input_ = names
    amap = session.run([output], {input_: tensor})[0].reshape(size)[y0 : y0 + nh, x0 : x0 + nw].ravel()
    k = max(1, round(amap.size * top))
    return tensor, float(np.partition(amap, amap.size - k)[amap.size - k :].mean())


def time_size(
    det: Any, bare: Any, label: str, images: list[np.ndarray], threads: int, rounds: int, ov: Any = None
) -> None:
    """One block of the table: every contender on every image, interleaved, order rotated."""
    from inspector_anomaly.preprocess import prepare

    from inspector_core import View

    c = det.card.input
    if (c.resize, c.photometric, det.card.thresholds.image_score) != ("letterbox", "flatfield", "top_mean"):
        raise SystemExit(f"hand-written reference is for letterbox + flatfield + top_mean models, not {det.card.input}")
    size = (c.height, c.width)
    halving = c.downscale == "halving"
    tensors = [prepare(im, size, c.resize, c.photometric, c.downscale).tensor for im in images]
    views = [View(im, "p") for im in images]
    coarse = [det._coarse(im) for im in images]
    own = det.session
    io_names = (det._map_out, det._input)
    worst = max(
        float(np.abs(hand_written_tensor(im, size, halving)[0] - t).max()) * 255
        for im, t in zip(images, tensors, strict=True)
    )
    calls: dict[str, Callable[[int], object]] = {
        "bare": lambda i: bare.run([det._map_out], {det._input: tensors[i]}),
        "bare, detector options": lambda i: own.run([det._map_out], {det._input: tensors[i]}),
        "hand-written": lambda i: hand_written(
            own, images[i], size, io_names, det.card.thresholds.top_fraction, halving
        ),
        "inspect": lambda i: det.inspect(views[i]),
        "prepare": lambda i: prepare(images[i], (c.height, c.width), c.resize, c.photometric, c.downscale),
        # inspect() after the model: the part score and the regions, from a map the model made
        "post": lambda i: det._findings(views[i], coarse[i]),
    }
    if ov is not None:
        calls["inspect, runtime openvino"] = lambda i: ov.inspect(views[i])
    names = list(calls)
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for i in range(len(images)):
            k0 = (i + r) % len(names)
            for k in names[k0:] + names[:k0]:
                c0, t0 = time.process_time(), time.perf_counter()
                calls[k](i)
                wall[k].append(1000 * (time.perf_counter() - t0))
                cpu[k].append(1000 * (time.process_time() - c0))
    med = statistics.median
    print(
        f"\n## {label}, {threads} thread(s) (onnxruntime and OpenCV, cv2.getNumThreads() = {cv2.getNumThreads()}): "
        f"load {load()}, n = {len(wall['bare'])} each"
    )
    for k in names:
        print(f"  {k:<24} wall {med(wall[k]):7.2f} ms   CPU {med(cpu[k]):7.2f} ms")
    print(f"  hand-written tensor vs the plugin's: largest difference {worst:.1f} grey levels of 255")
    for ref, what in (
        ("bare", "session.run alone"),
        ("bare, detector options", "session.run alone"),
        ("hand-written", "the same job"),
    ):
        print(
            f"  inspect / {ref:<22} wall {med(wall['inspect']) / med(wall[ref]):.3f}   "
            f"CPU {med(cpu['inspect']) / med(cpu[ref]):.3f}   ({what}; goal <= 1.10)"
        )
    if ov is not None:
        o = "inspect, runtime openvino"
        print(
            f"  openvino / onnxruntime detector: wall {med(wall[o]) / med(wall['inspect']):.3f}"
            f"   CPU {med(cpu[o]) / med(cpu['inspect']):.3f}  (parity: {ov.parity})"
        )
    parts = med(cpu["bare, detector options"]) + med(cpu["prepare"]) + med(cpu["post"])
    print(f"  inspect vs run + prepare + post (CPU): {med(cpu['inspect']):.2f} vs {parts:.2f} ms", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="default: the line-rate bench's model (default bank)")
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--openvino", action="store_true", help="also the detector with runtime: openvino")
    ap.add_argument("--sizes", default="roi,frame", help="roi, frame or both")
    args = ap.parse_args()
    args.model = args.model or line_rate.model_path()
    if not args.model.is_file():
        print(f"no model at {args.model}: run `python bench/line_rate.py --prepare-only`, or --model", file=sys.stderr)
        return 2

    import onnxruntime as ort
    from inspector_anomaly.detector import Anomaly, AnomalyConfig

    model = args.model.resolve()
    truths = ["good", "good", "scratch", "dent", "good", "misalignment"]
    frames = [line_rate.frame(303, i, truths[i % len(truths)]) for i in range(args.images)]
    x, y, w, h = ROI
    sizes = {"ROI 680x480": [f[y : y + h, x : x + w] for f in frames], "frame 2448x2048": frames}
    wanted = args.sizes.split(",")
    sizes = {k: v for k, v in sizes.items() if k.split()[0].lower() in wanted}
    print(f"# anomaly step vs bare onnxruntime: {model.name} ({model.stat().st_size / 1e6:.1f} MB); load {load()}")
    print(f"# n = {args.images} images x {args.rounds} rounds per contender, interleaved; medians")
    for threads in (int(t) for t in args.threads.split(",")):
        # The step's OpenCV calls get the thread count onnxruntime gets: a one-thread block is the
        # whole step on one core (OpenCV's default pool of one thread per core adds CPU of its own).
        cv2.setNumThreads(threads)
        det = Anomaly(AnomalyConfig(model=str(model), threads=threads), station_dir=model.parent)
        det.warm_up()
        default = ort.SessionOptions()
        default.intra_op_num_threads = threads
        bare = ort.InferenceSession(str(model), sess_options=default, providers=["CPUExecutionProvider"])
        ov = None
        if args.openvino:
            ov = Anomaly(AnomalyConfig(model=str(model), threads=threads, runtime="openvino"), station_dir=model.parent)
            ov.warm_up()
        for label, images in sizes.items():
            time_size(det, bare, label, images, threads, args.rounds, ov)
    print(f"\ntorch imported: {'torch' in sys.modules}; load {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
