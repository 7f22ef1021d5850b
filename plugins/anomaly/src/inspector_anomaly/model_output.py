"""Where ``inspector train anomaly`` writes its model: one absolute path, checked before training,
written whole or not at all.

A relative ``--out`` is resolved once, against the current directory, and only the absolute path
is used afterwards (training used to join it with its own folder a second time). The folder is
created and proven writable before minutes of training are spent. The ONNX file and its card are
written into a hidden staging folder beside the target and moved into place only when the card has
its real thresholds: a failed run leaves neither a provisional card nor a half-written model, and
an earlier model at the same path stays as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ModelOutputError(ValueError):
    """The model file cannot be written where ``--out`` points."""


def resolve_model_path(out: Path | str, cwd: Path | None = None) -> Path:
    """``out`` as an absolute ``NAME.onnx`` path; a relative path is taken from ``cwd`` (default: the
    current directory), once."""
    path = Path(out).expanduser()
    if path.suffix.lower() != ".onnx":
        raise ModelOutputError(f"model file {out}: the name must end in .onnx (its card NAME.json goes beside it)")
    if not path.is_absolute():
        path = (cwd if cwd is not None else Path.cwd()) / path
    return path.resolve()


def check_writable(model: Path) -> None:
    """Create the model's folder and prove a file can be written there; refuse a folder in the way."""
    folder = model.parent
    for target in (model, model.with_suffix(".json")):
        if target.is_dir():
            raise ModelOutputError(f"model file {target} is a folder; choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".inspector-write-check-"):
            pass
    except OSError as exc:
        raise ModelOutputError(
            f"cannot write the model into {folder}: {exc.strerror or exc}; choose a writable --out folder"
        ) from None


@contextmanager
def staged_model(model: Path) -> Iterator[Path]:
    """Yield a staging path for ``model`` (same name, hidden folder beside it, same file system).

    On a normal exit the staged ``NAME.onnx`` and ``NAME.json`` replace ``model`` and its card
    (each move atomic; the card goes last, so a crash in between leaves a model whose hash its old
    card refuses, never a model that silently runs with the wrong thresholds). On an exception
    nothing is moved. The staging folder is removed in both cases.
    """
    stage = Path(tempfile.mkdtemp(dir=model.parent, prefix=f".{model.stem}.training-"))
    try:
        staged = stage / model.name
        yield staged
        os.replace(staged, model)
        os.replace(staged.with_suffix(".json"), model.with_suffix(".json"))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
