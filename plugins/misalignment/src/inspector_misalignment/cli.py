"""``inspector teach STATION_FILE --from DIR [--step NAME]``: build a misalignment reference."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


@click.command("teach")
@click.argument("station_file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="folder of good parts' images (as the station's camera sees them)",
)
@click.option("--step", "step_name", default=None, help="the misalignment step to teach (default: every one)")
@click.option(
    "--recipe",
    "recipe",
    default=None,
    help="a station with recipes: teach this recipe's steps (its ROI) into <station>.reference/<recipe>/ "
    "(default: the recipe active at start)",
)
@click.option(
    "--part",
    type=click.Choice(["dark", "bright"]),
    default=None,
    help="register on the part's own structure only: the part is darker (brighter) than its background; "
    "a board or fixture texture around it is left out (see docs/detectors/misalignment.md)",
)
@click.option(
    "--part-mask",
    "part_mask_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="a mask (PNG, non-zero = the part, as it sits in the first good image, by name order), of the "
    "frame's size or the step's ROI size: register on these pixels only",
)
def teach(
    station_file: str,
    source: str,
    step_name: str | None,
    recipe: str | None,
    part: str | None,
    part_mask_file: str | None,
) -> None:
    """Teach the golden reference of a station's misalignment step(s) from good images.

    Writes <station>.reference/<step>.png (+ .weight.png, .json) beside the station file and
    prints the config lines to add to the step."""
    import cv2
    import numpy as np

    from inspector_core.plugins import load
    from inspector_core.runtime.config import ConfigError, load_station
    from inspector_core.runtime.recipes import recipe_station
    from inspector_misalignment import MisalignmentDetector, suggest_tolerances
    from inspector_misalignment.reference import images_hash, save, sha256_file
    from inspector_misalignment.reference import teach as build

    try:
        # The reference this command writes need not exist yet (nor match its old hash).
        station = load_station(station_file, load(), check_files=False)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        station = recipe_station(station, recipe)
    except KeyError as exc:
        raise click.ClickException(exc.args[0]) from exc
    steps = [s for s in station.steps if s.detector is MisalignmentDetector or s.detector.name == "misalignment"]
    if step_name is not None:
        steps = [s for s in steps if s.name == step_name]
    if not steps:
        which = f" named {step_name!r}" if step_name else ""
        raise click.ClickException(f"{station_file}: no misalignment step{which} to teach")
    paths = sorted(p for p in Path(source).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise click.ClickException(f"{source}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    frames = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise click.ClickException(f"{p}: cannot read this image")
        frames.append(img)
    sizes = {(f.shape[1], f.shape[0]) for f in frames}
    if len(sizes) != 1:
        listed = ", ".join(f"{w}x{h}" for w, h in sorted(sizes))
        raise click.ClickException(
            f"{source}: the images are of {len(sizes)} sizes ({listed} px); teach from frames of one camera "
            "setup, at the resolution the station will inspect"
        )
    frame_w, frame_h = frames[0].shape[1], frames[0].shape[0]
    if part is not None and part_mask_file is not None:
        raise click.ClickException("give --part or --part-mask, not both")
    given_mask = None
    if part_mask_file is not None:
        given_mask = cv2.imread(part_mask_file, cv2.IMREAD_GRAYSCALE)
        if given_mask is None:
            raise click.ClickException(f"{part_mask_file}: cannot read this image (--part-mask)")
    station_path = Path(station_file).resolve()
    folder = station_path.parent / f"{station_path.stem}.reference"
    if station.recipe is not None:
        folder = folder / station.recipe  # each product its own reference (docs/recipes.md)
        click.echo(f"recipe {station.recipe}: teaching its steps into {folder.name}/")
    for step in steps:
        crops = []
        for p, img in zip(paths, frames, strict=True):
            if step.roi is None:
                crops.append(img)
                continue
            r = step.roi
            if r.x + r.width > img.shape[1] or r.y + r.height > img.shape[0]:
                raise click.ClickException(
                    f"{p}: {img.shape[1]}x{img.shape[0]} px does not contain step {step.name}'s ROI "
                    f"(x={r.x}, y={r.y}, width={r.width}, height={r.height})"
                )
            crops.append(img[r.y : r.y + r.height, r.x : r.x + r.width])
        if len({c.shape for c in crops}) != 1:
            raise click.ClickException(f"{source}: the images differ in size; teach from one camera's images")
        step_part: str | np.ndarray | None = part
        if given_mask is not None:
            if given_mask.shape == crops[0].shape:
                step_part = given_mask
            elif given_mask.shape == frames[0].shape and step.roi is not None:
                q = step.roi
                step_part = given_mask[q.y : q.y + q.height, q.x : q.x + q.width]
            else:
                raise click.ClickException(
                    f"{part_mask_file}: {given_mask.shape[1]}x{given_mask.shape[0]} px is neither the frame's size "
                    f"({frame_w}x{frame_h}) nor step {step.name}'s ROI size ({crops[0].shape[1]}x{crops[0].shape[0]})"
                )
        click.echo(
            f"step {step.name}: teaching from {len(crops)} images of {crops[0].shape[1]}x{crops[0].shape[0]} px ..."
        )
        try:
            taught = build(crops, [p.name for p in paths], part=step_part)
        except ValueError as exc:
            raise click.ClickException(f"step {step.name}: {exc}") from exc
        spread = taught.spread()
        suggested = suggest_tolerances(spread)
        image_path = save(
            taught,
            folder,
            step.name,
            {
                "station": station.name,
                "recipe": station.recipe,
                "step": step.name,
                "roi": step.roi.model_dump() if step.roi else None,
                # The whole frame's size: a frame of another size is refused at inspection, not
                # read as a missing part.
                "frame": {"width": int(frame_w), "height": int(frame_h)},
                # Relative to the station file, so a committed reference is the same in every clone.
                "taught_from": Path(os.path.relpath(Path(source).resolve(), station_path.parent)).as_posix(),
                "taught_images_sha256": images_hash(paths),
                "suggested": suggested,
                "part": part if part is not None else ("mask " + Path(part_mask_file).name if part_mask_file else None),
            },
        )
        rel = image_path.relative_to(station_path.parent)
        click.echo(f"  wrote {rel} (+ .weight.png, .json)")
        click.echo("  good parts against the reference: " + json.dumps(spread))
        where = f"recipes.{station.recipe}.steps.{step.name}" if station.recipe is not None else f"step {step.name}"
        click.echo(f"  add to {where}'s config (tolerances suggested from the taught spread):")
        click.echo(f"    reference: {rel.as_posix()}")
        click.echo(f"    reference_sha256: {sha256_file(image_path)}")
        for k, v in suggested.items():
            click.echo(f"    {k}: {v}")
