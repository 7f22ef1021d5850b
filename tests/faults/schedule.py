"""Fault schedules: which parts a station gets, what goes wrong on each, what happens to its
database and sinks, and when its process is killed. Deterministic: a schedule is a function of
``(seed, index)``, and ``describe()`` prints all of it (paste it into ``catalogue()`` to rerun one).
"""

from __future__ import annotations

import dataclasses
import random
import struct
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tests.faults.parts import (
    BAD_IMAGES,
    GARBAGE,
    GOOD_IMAGES,
    HANGS,
    RAISES,
    ROLES,
    PartPlan,
)

SINKS = ("file", "faulty_a", "faulty_b")
"""Every fault station reports to the built-in file sink and the two recording fault sinks."""


@dataclasses.dataclass(frozen=True)
class DbFault:
    """What happens to the PostgreSQL connection (through the proxy) during a run.

    ``kind``: ``refuse`` (connections broken and refused for ``seconds``), ``restart`` (broken,
    accepted again at once), ``stall`` (held for ``seconds``: the server stops answering),
    ``down_at_start`` (refused from before the station starts until ``seconds`` later).
    Fires when step ``alpha`` first sees part ``at_part`` (not for ``down_at_start``)."""

    kind: str
    at_part: int = 0
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class SinkFault:
    """``fail_first`` sends refused, every send refused for ``down_ms`` after the first, or the
    first send blocked for ``hang_ms``; on sink ``sink`` (``faulty_a`` or ``faulty_b``)."""

    sink: str
    fail_first: int = 0
    down_ms: float = 0
    hang_ms: float = 0


@dataclasses.dataclass(frozen=True)
class Kill:
    """Send ``signal`` (``KILL`` or ``TERM``) to an ``inspector run`` process ``after_s``
    seconds after: its start (``on="start"``), its store file appearing (``on="store"``: the
    database being created and migrated), or the file sink having ``reports`` more lines than
    when it started (``on="reports"``)."""

    signal: str
    after_s: float
    on: str = "start"
    reports: int = 0

    def describe(self) -> str:
        what = {"start": "its start", "store": "its store file appeared", "reports": f"{self.reports} reports"}
        return f"{self.signal} {self.after_s:g} s after {what[self.on]}"


@dataclasses.dataclass(frozen=True)
class Schedule:
    name: str
    parts: tuple[PartPlan, ...]
    store: str = "sqlite"
    """``sqlite`` or ``postgres``."""
    db_faults: tuple[DbFault, ...] = ()
    sink_faults: tuple[SinkFault, ...] = ()
    kills: tuple[Kill, ...] = ()
    """Non-empty: the schedule runs as ``inspector run`` subprocesses, killed in turn, then one
    last run to the end."""
    interval_ms: float = 0
    """Pause between parts at the source (a line's takt), so faults land mid-run."""
    budget_ms: float = 1000
    hang_ms: float = 1500
    """A hung step's late finding arrives half a budget after the overrun, in the middle of the
    next part's wait on that step: a host that reads it there misattributes it, every time."""

    @property
    def subprocess(self) -> bool:
        return bool(self.kills)

    def sink_fault(self, sink: str) -> SinkFault:
        return next((f for f in self.sink_faults if f.sink == sink), SinkFault(sink))

    def describe(self) -> str:
        lines = [
            f"schedule {self.name}: store {self.store}, {len(self.parts)} parts, "
            f"interval {self.interval_ms:g} ms, budget {self.budget_ms:g} ms, hang {self.hang_ms:g} ms"
        ]
        faulty = [p.part_id for p in self.parts if p.part_id != f"p{p.number:03d}"]
        lines.append(f"  parts with a fault or defect: {', '.join(faulty) or 'none'}")
        lines += [f"  database: {f}" for f in self.db_faults]
        lines += [f"  sink: {f}" for f in self.sink_faults]
        lines += [f"  process: {k.describe()}" for k in self.kills]
        return "\n".join(lines)


# ---------------------------------------------------------------------------- images


def _noise(number: int) -> np.ndarray:
    # Textured, so that a JPEG cut in its scan data still decodes (partly).
    return np.random.default_rng(number).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def image_bytes(part: PartPlan) -> bytes:
    """The file the folder source reads for ``part``."""
    img = _noise(part.number)
    png = cv2.imencode(".png", img)[1].tobytes()
    jpg = cv2.imencode(".jpg", img)[1].tobytes()
    return {
        "png": lambda: png,
        "jpg": lambda: jpg,
        "jpgtail": lambda: jpg + b"\x00trailing bytes after the end marker",
        "pngasjpg": lambda: png,
        "corrupt": lambda: random.Random(part.number).randbytes(3000),
        "truncpng": lambda: png[: len(png) * 2 // 3],
        "truncjpg": lambda: jpg[: len(jpg) * 2 // 3],
        "cutjpg": lambda: jpg[: len(jpg) * 2 // 3] + b"\xff\xd9",
        "empty": lambda: b"",
        "bomb": lambda: (
            b"\x89PNG\r\n\x1a\n"
            + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + _png_chunk(b"IEND", b"")
        ),
    }[part.image]()


def write_images(folder: Path, parts: tuple[PartPlan, ...] | list[PartPlan]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for p in parts:
        (folder / f"{p.part_id}{p.extension}").write_bytes(image_bytes(p))


# ---------------------------------------------------------------------------- schedules


def _good(n: int, defect: bool = False) -> PartPlan:
    return PartPlan(n, steps=(("beta", "defect"),) if defect else ())


def _around(faulty: list[PartPlan]) -> tuple[PartPlan, ...]:
    """Each faulty part between good ones (one PASS, one FAIL), so that a fault that spills
    onto its neighbours shows."""
    out: list[PartPlan] = [_good(0), _good(1, defect=True)]
    for p in faulty:
        out.append(dataclasses.replace(p, number=len(out)))
        out += [_good(len(out)), _good(len(out) + 1, defect=True)]
    return tuple(out)


def _plain(n: int, every_defect: int = 3) -> tuple[PartPlan, ...]:
    return tuple(_good(i, defect=i % every_defect == 1) for i in range(n))


def catalogue() -> list[Schedule]:
    """One schedule per kind of fault, alone between good parts: the minimal reproduction
    when an invariant breaks."""
    out = []
    for i, what in enumerate(RAISES + GARBAGE + HANGS):
        role = "alpha" if what in HANGS else ROLES[i % 2]
        out.append(Schedule(f"step-{what}", _around([PartPlan(0, steps=((role, what),))])))
    for image in GOOD_IMAGES[1:] + BAD_IMAGES:
        out.append(Schedule(f"image-{image}", _around([PartPlan(0, image=image)])))
    pg: dict[str, Any] = {"store": "postgres", "interval_ms": 60}
    out += [
        Schedule("db-refuse-6s", _plain(130), db_faults=(DbFault("refuse", 4, 6.0),), **pg),
        Schedule("db-restart", _plain(16), db_faults=(DbFault("restart", 4),), **pg),
        Schedule("db-stall-8s", _plain(170), db_faults=(DbFault("stall", 4, 8.0),), **pg),
        Schedule("db-down-at-start", _plain(60), db_faults=(DbFault("down_at_start", 0, 4.0),), **pg),
        Schedule("sink-refuses-8", _plain(10), sink_faults=(SinkFault("faulty_a", fail_first=8),)),
        Schedule("sink-down-4s", _plain(10), sink_faults=(SinkFault("faulty_a", down_ms=4000),), interval_ms=50),
        Schedule("sink-hangs-3s", _plain(24), sink_faults=(SinkFault("faulty_a", hang_ms=3000),), interval_ms=40),
    ]
    return out


def _random_part(
    rng: random.Random,
    n: int,
    hangs_left: list[int],
    step_faults: tuple[str, ...] = RAISES + GARBAGE,
    bad_images: tuple[str, ...] = BAD_IMAGES,
    good_images: tuple[str, ...] = GOOD_IMAGES,
) -> PartPlan:
    image = "png"
    r = rng.random()
    if r < 0.12:
        image = rng.choice(bad_images)
    elif r < 0.25:
        image = rng.choice(good_images)
    steps = []
    for role in ROLES:
        r = rng.random()
        if r < 0.04 and hangs_left[0] > 0:
            hangs_left[0] -= 1
            steps.append((role, rng.choice(HANGS)))
        elif r < 0.16:
            steps.append((role, rng.choice(step_faults)))
        elif r < 0.36:
            steps.append((role, "defect"))
    return PartPlan(n, image, tuple(steps))


def generate(seed: int, index: int) -> Schedule:
    """A mixed schedule: random parts (bad images, step faults, defects), and on PostgreSQL a
    database fault, and maybe a sink fault."""
    rng = random.Random(f"inspector-faults-{seed}-{index}")
    n = rng.randint(10, 22)
    hangs_left = [1]
    parts = tuple(_random_part(rng, i, hangs_left) for i in range(n))
    store = rng.choice(("sqlite", "postgres"))
    db: tuple[DbFault, ...] = ()
    interval = rng.choice((0, 20, 50))
    if store == "postgres":
        kind = rng.choice(("refuse", "restart", "stall", "down_at_start", "none"))
        if kind != "none":
            interval = 60
            db = (DbFault(kind, rng.randint(1, n - 2), round(rng.uniform(0.8, 2.5), 1)),)
    sink: tuple[SinkFault, ...] = ()
    r = rng.random()
    which = rng.choice(("faulty_a", "faulty_b"))
    if r < 0.2:
        sink = (SinkFault(which, fail_first=rng.randint(1, 10)),)
    elif r < 0.35:
        sink = (SinkFault(which, down_ms=rng.choice((500, 2500))),)
    elif r < 0.45:
        sink = (SinkFault(which, hang_ms=rng.choice((800, 2000))),)
    return Schedule(f"seed{seed}-{index}", parts, store, db, sink, interval_ms=interval)


def kill_schedule(seed: int, signal: str = "mixed") -> Schedule:
    """``inspector run`` killed (kill -9, SIGTERM) at seeded moments, the first one during its
    very first start-up (the store being created), then a last run to the end.

    Its parts fail only in ways that cost just the part on today's code too (a step that
    raises, an undecodable file), so that what breaks here is what the kills broke; the
    other faults have their own schedules."""
    rng = random.Random(f"inspector-kills-{seed}-{signal}")
    n = 60
    palette = {"step_faults": RAISES, "bad_images": ("corrupt", "truncpng", "empty"), "good_images": ("png", "jpg")}
    parts = tuple(_random_part(rng, i, [0], **palette) for i in range(n))
    sigs = {"mixed": ("KILL", "TERM", "KILL", "KILL"), "TERM": ("TERM",) * 3}[signal]
    # The first one in the very first start: for kill -9 while the new store is being created.
    first = (
        Kill(sigs[0], round(rng.uniform(0.0, 0.3), 2), "store")
        if sigs[0] == "KILL"
        else Kill(sigs[0], round(rng.uniform(1.0, 3.0), 2))
    )
    kills = [first] + [Kill(s, round(rng.uniform(0.0, 0.6), 2), "reports", rng.randint(2, 10)) for s in sigs[1:]]
    # One sink refuses its first sends (and may then hang 4 s on the first it accepts: a
    # shutdown must not wait for it forever), the other is down for a while: verdicts
    # committed but not yet delivered when a signal comes, which a later run must deliver.
    sink = (
        SinkFault(
            "faulty_a", fail_first=rng.randint(3, 12), hang_ms=4000 if signal == "TERM" else rng.choice((0, 4000))
        ),
        SinkFault("faulty_b", down_ms=rng.choice((2500, 3500))),
    )
    return Schedule(f"kills-{signal}-seed{seed}", parts, "sqlite", (), sink, tuple(kills), interval_ms=40)
