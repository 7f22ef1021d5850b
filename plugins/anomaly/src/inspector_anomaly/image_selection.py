"""Which files under a training folder are images of parts (not masks, not labels).

A file is taken when its suffix is an image suffix, it matches one of the ``include`` glob
patterns (default: every file), and it matches none of the ``exclude`` patterns. Patterns are
matched case-insensitively against the path relative to the folder (``a/b/001.png``; ``*``
also crosses ``/``) and against the file name alone. The default excludes drop mask files
(``*mask*``) and everything under a folder named like ``mask``/``masks``/``ground_truth``/``gt``
(how MVTec-style and many other sets keep their masks).

Two taken files with the same stem in the same folder (``001.jpg`` and ``001.png``) are refused:
that is nearly always an image and its mask, and training on masks teaches the model that
masks are good parts. The error names both files and the pattern that would drop one.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEFAULT_EXCLUDE: tuple[str, ...] = (
    "*mask*",
    "ground_truth/*",
    "*/ground_truth/*",
    "groundtruth/*",
    "*/groundtruth/*",
    "gt/*",
    "*/gt/*",
)


class ImageSelectionError(ValueError):
    """The folder gives no usable training images, or images that look like masks."""


def _matches(rel: str, name: str, patterns: Sequence[str]) -> str | None:
    for pattern in patterns:
        pat = pattern.lower()
        if fnmatch.fnmatchcase(rel, pat) or fnmatch.fnmatchcase(name, pat):
            return pattern
    return None


def select_images(
    folder: Path,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    default_excludes: bool = True,
) -> list[Path]:
    """The image files under ``folder`` (recursive, sorted) that the patterns select."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageSelectionError(f"image folder {folder} not found")
    excludes = (*DEFAULT_EXCLUDE, *exclude) if default_excludes else tuple(exclude)
    taken: list[Path] = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        rel = path.relative_to(folder).as_posix().lower()
        name = path.name.lower()
        if include and _matches(rel, name, include) is None:
            continue
        if _matches(rel, name, excludes) is not None:
            continue
        taken.append(path)
    if not taken:
        raise ImageSelectionError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder} after include {list(include) or ['*']} "
            f"and exclude {list(excludes)}; check the folder and the --include/--exclude patterns"
        )
    by_stem: dict[tuple[Path, str], Path] = {}
    for path in taken:
        key = (path.parent, path.stem.lower())
        other = by_stem.setdefault(key, path)
        if other is not path:
            raise ImageSelectionError(
                f"{other} and {path} share a name with different extensions: likely an image and its mask; "
                f"drop the masks with --exclude '*{path.suffix.lower()}' (or --exclude '*{other.suffix.lower()}'), "
                "or rename one of them"
            )
    return taken
