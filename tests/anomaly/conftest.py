"""Fixtures of the anomaly plugin's tests.

``brightness_model`` is a hand-written ONNX graph with the outputs of an exported anomalib
model (``anomaly_map`` = mean of the RGB input, so bright pixels are "anomalous"): the runtime
detector is tested on it without training anything. Training tests are marked ``train``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from inspector_anomaly.card import CARD_FORMAT, sha256_file

SIZE = 64


def write_brightness_model(
    folder: Path,
    name: str = "bright",
    size: int = SIZE,
    resize: str = "letterbox",
    image_t: float = 0.5,
    pixel_t: float = 0.5,
    scale: float = 1.0,
    tile_overlap: int = 0,
    downscale: str | None = None,
) -> Path:
    import onnx
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])
    amap = helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [1, 1, size, size])
    score = helper.make_tensor_value_info("pred_score", TensorProto.FLOAT, [1])
    axes1 = helper.make_tensor("axes1", TensorProto.INT64, [1], [1])
    axes23 = helper.make_tensor("axes23", TensorProto.INT64, [3], [1, 2, 3])
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input", "axes1"], ["anomaly_map"], keepdims=1),
            helper.make_node("ReduceMax", ["anomaly_map", "axes23"], ["pred_score"], keepdims=0),
        ],
        "brightness",
        [inp],
        [amap, score],
        initializer=[axes1, axes23],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path = folder / f"{name}.onnx"
    onnx.save(model, path)
    card = {
        "format": CARD_FORMAT,
        "name": name,
        "model": "patchcore",
        "input": {
            "height": size,
            "width": size,
            "resize": resize,
            "scale": scale,
            "tile_overlap": tile_overlap,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
        "outputs": {"anomaly_map": "anomaly_map", "pred_score": "pred_score"},
        "thresholds": {"image": image_t, "pixel": pixel_t, "spread": 0.5, "method": "test"},
        "backbone": {"name": "none", "layers": [], "pretrained": False, "weights": "none"},
        "training": {"images": 0, "images_sha256": "0" * 64, "validation_images": 0, "seconds": 0},
        "versions": {},
        "onnx_file": path.name,
        "onnx_sha256": sha256_file(path),
        "onnx_bytes": path.stat().st_size,
    }
    if downscale is not None:
        card["input"]["downscale"] = downscale  # type: ignore[index]
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


@pytest.fixture
def brightness_model(tmp_path: Path) -> Path:
    return write_brightness_model(tmp_path)


def dark_part(h: int = 120, w: int = 200, spots: tuple[tuple[int, int, int], ...] = ()) -> np.ndarray:
    """A dark grey gray-level part with bright square spots (x, y, side)."""
    img = np.full((h, w), 40, np.uint8)
    for x, y, s in spots:
        img[y : y + s, x : x + s] = 250
    return img
