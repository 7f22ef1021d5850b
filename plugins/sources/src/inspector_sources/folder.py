"""The folder source: every entry of a folder of images leaves as a part, or as a recorded skip.

- Every entry named like an image and matching ``pattern`` is yielded as a Frame, whatever it
  turns out to be: a good image, or (``error`` set, so the station records an ERROR with the
  reason) a corrupt file, a decoding bomb, a FIFO, a device, a folder named ``x.png``, a broken
  symlink. One such entry never stops the source.
- Every other entry (``notes.txt``, a sub-folder when ``recursive`` is off, a symlink loop) is
  listed in one ``source_skipped`` event per pass, so nothing is left out without a record.
- The order is deterministic: by path components, compared as text, whatever the file
  system's own order. ``recursive: true`` follows symlinked folders, each real folder once.
- A file name that is not valid UTF-8 gives a part id with ``\\xNN`` escapes (storable and
  printable); the raw bytes of its path stay in ``meta["path_hex"]``.
- ``resume: true`` skips the parts this station has already recorded (any run), so a restarted
  station goes on where it stopped.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import os
import re
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import Field, field_validator

from inspector_core import Frame, FrameSource, PluginConfig
from inspector_sources.images import (
    DEFAULT_MAX_FILE_MB,
    DEFAULT_MAX_PIXELS,
    ImageLimits,
    display_path,
    read_image,
)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
"""Names that make an entry a part; its content, not this suffix, decides how it is decoded."""
MAX_PART_ID_CHARS = 300
"""The store's ``inspections.part_id`` is at most 300 characters; longer ids are shortened
to a prefix and a digest of the whole, so they stay unique and storable."""
MAX_SKIPS_LISTED = 1000
"""Entries named in one ``source_skipped`` event; the count is always exact."""


class FolderConfig(PluginConfig):
    path: str = Field(description="folder of images; relative to the station file; ${VAR} from the environment")
    pattern: str = Field("*", description="glob of file names, e.g. '*.png' (matched against the name, case-sensitive)")
    recursive: bool = Field(
        False, description="also look in sub-folders, symlinked ones too (part id keeps the relative path)"
    )
    repeat: int = Field(1, ge=1, description="go through the folder this many times (soak tests)")
    interval_ms: float = Field(0, ge=0, description="pause between parts, to simulate a line's takt")
    resume: bool = Field(
        False,
        description="skip the files whose part id this station has already recorded (in any "
        "run): a restarted station goes on where it stopped",
    )
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        ge=1,
        description="an image whose header declares more pixels is an ERROR, refused before decoding (bounds memory)",
    )
    max_file_mb: float = Field(
        DEFAULT_MAX_FILE_MB, gt=0, description="a larger file is an ERROR, refused unread (bounds memory; sparse files)"
    )

    @field_validator("path")
    @classmethod
    def _expand_variables(cls, v: str) -> str:
        # ${VAR} from the environment: a station names shared data without a machine's own path in it.
        unset = sorted({m for m in re.findall(r"\$\{(\w+)\}", v) if m not in os.environ})
        if unset:
            raise ValueError(
                f"{', '.join('${' + m + '}' for m in unset)} not set in the environment; export it before "
                "validating or running the station"
            )
        return re.sub(r"\$\{(\w+)\}", lambda m: os.environ[m.group(1)], v)

    @field_validator("pattern")
    @classmethod
    def _name_pattern(cls, v: str) -> str:
        if not v or "/" in v or "\0" in v:
            raise ValueError(
                f"must be a glob of file names without '/' (got {v!r}); "
                "use path for the folder and recursive: true for its sub-folders"
            )
        return v


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One entry of the folder that will be yielded as a part."""

    parts: tuple[str, ...]
    """Path components below the root, as ``os.fsdecode`` gives them (surrogate escapes)."""
    path: str
    """The path to open (``os.fsdecode`` form, so the raw bytes round-trip)."""


@dataclasses.dataclass(slots=True)
class Listing:
    entries: list[Entry]
    skipped: list[tuple[str, str]]
    """``(printable relative path, why)`` of every entry that is not a part."""


def list_folder(root: Path, pattern: str, recursive: bool) -> Listing:
    """The folder's parts in a deterministic order, and every other entry with the reason."""
    entries: list[Entry] = []
    skipped: list[tuple[str, str]] = []
    root_st = os.stat(root)
    seen: dict[tuple[int, int], tuple[str, ...]] = {(root_st.st_dev, root_st.st_ino): ()}
    stack: list[tuple[str, tuple[str, ...]]] = [(os.fspath(root), ())]
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as it:
                names = sorted(e.name for e in it)
        except OSError as exc:
            if not prefix:
                raise
            skipped.append((_show(prefix), f"a folder that cannot be listed: {exc.strerror}"))
            continue
        below: list[tuple[str, tuple[str, ...]]] = []
        for name in names:
            parts = (*prefix, name)
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
                is_dir = stat.S_ISDIR(st.st_mode)
            except OSError:
                st, is_dir = None, False  # a broken symlink: read_image says so, if it is named as a part
            if is_dir and recursive:
                assert st is not None
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    first = _show(seen[key]) or "."
                    skipped.append(
                        (_show(parts), f"a symlink to a folder already visited ({first}): not followed again")
                    )
                    continue
                seen[key] = parts
                below.append((path, parts))
                continue
            named_like_image = os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES
            if not fnmatch.fnmatchcase(name, pattern):
                skipped.append((_show(parts), f"does not match the pattern {pattern!r}"))
            elif not named_like_image:
                what = "a sub-folder (recursive is off)" if is_dir else "not named like an image"
                skipped.append((_show(parts), f"{what} ({', '.join(sorted(IMAGE_SUFFIXES))})"))
            else:
                entries.append(Entry(parts, path))  # a folder named x.png included: it becomes an ERROR part
        stack.extend(
            reversed(below)
        )  # depth first in name order: of two links to one folder, the first by name is walked
    entries.sort(key=lambda e: e.parts)
    skipped.sort()
    return Listing(entries, skipped)


def _show(parts: tuple[str, ...]) -> str:
    return "/".join(display_path(p) for p in parts)


def part_id_of(entry: Entry, recursive: bool) -> str:
    """The file name without its extension (with ``recursive``, the relative path without it),
    printable and at most :data:`MAX_PART_ID_CHARS` long."""
    *dirs, name = entry.parts
    stem = os.path.splitext(name)[0] or name
    pid = _show((*dirs, stem)) if recursive else display_path(stem)
    return _fit(pid)


def _fit(pid: str) -> str:
    if len(pid) <= MAX_PART_ID_CHARS:
        return pid
    digest = hashlib.sha256(pid.encode("utf-8", "backslashreplace")).hexdigest()[:16]
    return f"{pid[: MAX_PART_ID_CHARS - 17]}~{digest}"


class FolderSource(FrameSource):
    """Image files, in path order; the part id is the file name without its extension."""

    name = "folder"
    Config = FolderConfig

    def __init__(self, config: FolderConfig, context) -> None:
        super().__init__(config, context)
        self.config: FolderConfig = config
        self._stop = threading.Event()
        root = Path(config.path)
        self.root = root if root.is_absolute() else context.station_dir / root
        if not self.root.is_dir():
            raise FileNotFoundError(f"source.config.path: folder {self.root} does not exist")
        self.limits = ImageLimits(config.max_pixels, int(config.max_file_mb * 1024 * 1024))

    def files(self) -> list[Entry]:
        return list_folder(self.root, self.config.pattern, self.config.recursive).entries

    def frames(self) -> Iterator[Frame]:
        c = self.config
        listing = list_folder(self.root, c.pattern, c.recursive)
        if listing.skipped:
            self._record_skips(listing.skipped)
        if not listing.entries:
            self.context.event(
                "source_empty",
                f"folder {display_path(self.root)}: no entry named like an image "
                f"matches {c.pattern!r}{' (recursive)' if c.recursive else ''}",
            )
        ids = [part_id_of(e, c.recursive) for e in listing.entries]
        for rep in range(c.repeat):
            planned = [
                (e, f"{pid}#{rep}" if c.repeat > 1 else pid) for e, pid in zip(listing.entries, ids, strict=True)
            ]
            planned = [(e, _fit(pid)) for e, pid in planned]
            if c.resume:
                planned = self._not_yet_recorded(planned)
            for entry, pid in planned:
                if self._stop.is_set():
                    return
                image, error = read_image(entry.path, self.limits)
                meta = {"path": display_path(entry.path)}
                if meta["path"] != entry.path:
                    meta["path_hex"] = os.fsencode(entry.path).hex()  # the name is not valid UTF-8
                yield Frame(pid, image, datetime.now(UTC), meta, error)
                if c.interval_ms and self._stop.wait(c.interval_ms / 1000):
                    return  # close() ends the pause at once

    def _not_yet_recorded(self, planned: list[tuple[Entry, str]]) -> list[tuple[Entry, str]]:
        try:
            done = self.context.recorded([pid for _, pid in planned])
        except Exception as exc:  # noqa: BLE001 - the line must run: inspecting twice loses nothing
            self.context.event(
                "source_resume_failed",
                f"folder {display_path(self.root)}: resume: cannot tell which parts this station has "
                f"recorded ({type(exc).__name__}: {exc}); inspecting all {len(planned)} parts, some perhaps again",
            )
            return planned
        todo = [(e, pid) for e, pid in planned if pid not in done]
        if done:
            nxt = f"going on with {todo[0][1]!r}" if todo else "nothing left to inspect"
            self.context.event(
                "source_resumed",
                f"folder {display_path(self.root)}: {len(planned) - len(todo)} of "
                f"{len(planned)} parts already recorded at this station, not "
                f"inspected again; {nxt}",
            )
        return todo

    def _record_skips(self, skipped: list[tuple[str, str]]) -> None:
        listed = "; ".join(f"{name}: {why}" for name, why in skipped[:MAX_SKIPS_LISTED])
        more = f"; and {len(skipped) - MAX_SKIPS_LISTED} more" if len(skipped) > MAX_SKIPS_LISTED else ""
        self.context.event(
            "source_skipped",
            f"folder {display_path(self.root)}: {len(skipped)} entries are not "
            f"parts and were not inspected: {listed}{more}",
        )

    def close(self) -> None:
        self._stop.set()
