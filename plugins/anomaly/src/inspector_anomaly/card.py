"""The model card: what a trained anomaly model needs beside its ONNX file, and what it is.

``NAME.json`` sits beside ``NAME.onnx``. The runtime trusts nothing else: the input size, the
preprocessing, the thresholds and their normalisation all come from here, and the ONNX file's
SHA-256 must match ``onnx_sha256``. Plain JSON, validated by pydantic: no pickles.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

CARD_FORMAT: Final = "inspector-anomaly-card/1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(_Strict):
    height: int = Field(gt=0, description="model input height, px")
    width: int = Field(gt=0, description="model input width, px")
    resize: Literal["letterbox", "stretch", "tiles"] = Field(
        description="letterbox: aspect-preserving fit, border replicated; stretch: plain resize; "
        "tiles: resize by `scale`, then overlapping tiles of the input size"
    )
    photometric: Literal["none", "meanstd", "clahe", "flatfield"] = Field(
        "none", description="lighting normalisation of the view before resizing (see preprocess.photometric)"
    )
    downscale: Literal["area", "halving"] = Field(
        "area",
        description="how a view is shrunk to the model: area: exact area averaging (what every card without "
        "this field was trained with); halving: views of 2 MP or more are first halved by exact 2 x 2 means "
        "while still twice the target, then area-averaged (3x cheaper on a 5 MP frame; 0.7 grey levels "
        "from area on average), smaller views as area (see preprocess.downscale)",
    )
    scale: float = Field(1.0, gt=0, description="tiles: model px per view px, the same for every part")
    tile_overlap: int = Field(0, ge=0, description="tiles: overlap of neighbouring tiles, model px")
    color: Literal["RGB"] = Field("RGB", description="channel order of the input tensor (gray is repeated)")
    value_range: tuple[float, float] = Field((0.0, 1.0), description="pixel values are uint8 / 255")
    layout: Literal["NCHW"] = Field("NCHW", description="tensor layout, batch 1")
    mean: tuple[float, float, float] = Field(description="normalisation mean, applied inside the ONNX graph")
    std: tuple[float, float, float] = Field(description="normalisation std, applied inside the ONNX graph")
    input_name: str = Field("input", description="name of the ONNX input")


class Thresholds(_Strict):
    image_score: Literal["max", "top_mean"] = Field(
        "max",
        description="the raw image score: the anomaly map's maximum, or the mean of its top "
        "`top_fraction` pixels (robust to single-pixel peaks); ignored pixels excluded",
    )
    top_fraction: float = Field(0.01, gt=0, le=1, description="top_mean: share of the map's pixels averaged")
    image: float = Field(description="raw image score (see image_score) at which a part is anomalous")
    pixel: float = Field(description="raw anomaly-map value above which a pixel belongs to an anomalous region")
    spread: float = Field(
        gt=0,
        description="raw score range mapped to 0.5 of normalised score: "
        "score = clip(0.5 + (raw - threshold) / spread, 0, 1)",
    )
    method: str = Field(description="how the thresholds were chosen, in words")


class BackboneSpec(_Strict):
    name: str = Field(description="timm name of the feature extractor")
    layers: list[str] = Field(description="feature layers used")
    pretrained: bool = Field(description="ImageNet weights (true) or random initialisation (false)")
    weights: str = Field(description="where the weights came from")
    weights_sha256: str | None = Field(None, description="SHA-256 of the source weights file")


class TrainingSpec(_Strict):
    images: int = Field(description="number of good training images")
    images_sha256: str = Field(description="SHA-256 over the sorted (file name, file SHA-256) list of training images")
    validation_images: int = Field(description="number of validation images used to choose thresholds")
    seconds: float = Field(description="wall-clock training time, s")
    settings: dict[str, Any] = Field(default_factory=dict, description="model-specific settings (coreset ratio, ...)")


class Reference(_Strict):
    """Raw part scores of the model on deterministic reference inputs (:mod:`inspector_anomaly.reference`),
    computed by onnxruntime's CPU provider at export: the parity check of any other runtime."""

    inputs: str = Field(description="how the reference inputs are made (generator and seeds)")
    scores: list[float] = Field(description="raw part scores of the reference inputs, onnxruntime CPU")
    tolerance: float = Field(gt=0, description="largest accepted score difference, as a share of thresholds.spread")


class ModelCard(_Strict):
    format: Literal["inspector-anomaly-card/1"] = Field(CARD_FORMAT, description="card format version")
    name: str = Field(description="model name (the file stem)")
    model: Literal["patchcore", "padim", "dfm"] = Field(description="anomalib model")
    input: InputSpec = Field(description="what the ONNX graph expects")
    outputs: dict[str, str] = Field(description="ONNX output names used: anomaly_map, pred_score")
    thresholds: Thresholds = Field(description="decision thresholds, raw units")
    backbone: BackboneSpec = Field(description="feature extractor")
    training: TrainingSpec = Field(description="what the model was trained on")
    validation: dict[str, Any] = Field(default_factory=dict, description="metrics measured at training time")
    versions: dict[str, str] = Field(description="anomalib, torch, inspector-anomaly, onnx versions")
    reference: Reference | None = Field(
        None, description="reference scores for the parity check of a runtime (cards before 2026-12 have none)"
    )
    onnx_file: str = Field(description="file name of the ONNX model, beside the card")
    onnx_sha256: str = Field(description="SHA-256 of the ONNX file")
    onnx_bytes: int = Field(description="size of the ONNX file")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (``hashlib.file_digest``)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_card(path: Path) -> ModelCard:
    import json

    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"anomaly model card {path} is missing: every NAME.onnx needs its NAME.json "
            "(written by `inspector train anomaly`)"
        ) from None
    except ValueError as exc:
        raise ValueError(f"anomaly model card {path}: not valid JSON ({exc})") from None
    return ModelCard.model_validate(data)
