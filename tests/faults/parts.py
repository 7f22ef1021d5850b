"""The fault grammar: a part's id says what goes wrong on it, and so what its verdict must be.

A part id reads ``p007-img_cutjpg-alpha_nan-beta_defect``: part number 7, its image file is a
JPEG cut short (with an end marker), step ``alpha`` returns a NaN score, step ``beta`` finds a
defect. Omitted tokens mean a good PNG image and a step that finds nothing wrong. The id is
the image's file name (without extension), so the folder source hands it to the station, the
fault detectors read it from ``View.part_id``, and every store row and sink report shows the
fault that produced it.
"""

from __future__ import annotations

import dataclasses
import re

ROLES = ("alpha", "beta")
"""The steps of every fault station, in order; each runs the ``faulty`` detector."""

# Image files: good ones (decodable, the part is judged by its steps) and faulty ones (the
# part cannot be judged: ERROR at the source).
GOOD_IMAGES = ("png", "jpg", "jpgtail", "pngasjpg")
"""``jpgtail``: a good JPEG with bytes after its end marker (issue 10 item 10);
``pngasjpg``: a good PNG named ``.jpg`` (item 21)."""
BAD_IMAGES = ("corrupt", "truncpng", "truncjpg", "cutjpg", "empty", "bomb")
"""``cutjpg``: a JPEG cut short that still ends in an end marker (item 15); ``bomb``: a PNG
whose header declares 100000 x 100000 pixels (item 15)."""

# What a step's detector does on a part.
GOOD_STEPS = ("ok", "defect")
HANGS = ("hang", "norepl", "norepl2")
"""Sleep past the step's budget, then return a failing finding (which must never reach
another part). ``norepl``/``norepl2``: besides, the next one / two detector instances the
host starts for that step fail in ``__init__`` (a replacement that fails to start)."""
RAISES = ("raise", "sysexit")
GARBAGE = (
    "nan",
    "inf",
    "big",
    "neg",
    "boxout",
    "negbox",
    "hugebox",
    "nanbox",
    "badmask",
    "notlist",
    "badkind",
    "dictmsg",
    "bytesmsg",
    "nansize",
    "badmeasure",
)
"""Outputs that break the detector contract (issue 10 item 18). Except for the score faults,
the broken finding scores 0.3 (below the verdict rule), so a host that lets it through
passes the part: the fault shows as a PASS."""
STEP_FAULTS = RAISES + HANGS + GARBAGE

PASS_SCORE, FAIL_SCORE = 0.3, 0.9
"""A step's marker finding on every part it judges: 0.3 = seen, not failing; 0.9 = a defect."""

_TOKEN = re.compile(r"^(img|alpha|beta)_([a-z0-9]+)$")
_ID = re.compile(r"^[pr](\d{3})((?:-[a-z]+_[a-z0-9]+)*)$")


@dataclasses.dataclass(frozen=True)
class PartPlan:
    """What the schedule does to one part."""

    number: int
    image: str = "png"
    steps: tuple[tuple[str, str], ...] = ()
    """``(role, behaviour)`` for roles whose behaviour is not ``ok``."""
    recovery: bool = False
    """A part of a recovery run (id ``r...``), added after the schedule to let the station
    finish what it left (outbox, spool)."""

    @property
    def part_id(self) -> str:
        tokens = ([f"img_{self.image}"] if self.image != "png" else []) + [
            f"{role}_{what}" for role, what in self.steps if what != "ok"
        ]
        return "-".join([f"{'r' if self.recovery else 'p'}{self.number:03d}", *tokens])

    def step(self, role: str) -> str:
        return dict(self.steps).get(role, "ok")

    @property
    def image_fault(self) -> bool:
        return self.image in BAD_IMAGES

    @property
    def step_faults(self) -> list[str]:
        """Roles whose detector misbehaves on this part."""
        return [role for role in ROLES if self.step(role) in STEP_FAULTS]

    @property
    def faulty(self) -> bool:
        return self.image_fault or bool(self.step_faults)

    @property
    def extension(self) -> str:
        return ".jpg" if self.image in ("jpg", "jpgtail", "pngasjpg", "truncjpg", "cutjpg") else ".png"

    def expected(self) -> str:
        """The verdict this part must get: ERROR when it cannot be judged (a bad image, a step
        that raised, hung or broke the contract), else FAIL when a step found a defect, else PASS."""
        if self.faulty:
            return "ERROR"
        return "FAIL" if any(self.step(r) == "defect" for r in ROLES) else "PASS"

    def describe(self) -> str:
        return self.part_id


def parse(part_id: str) -> PartPlan:
    """The plan a part id encodes; ``ValueError`` for an id this grammar did not make."""
    m = _ID.match(part_id)
    if not m:
        raise ValueError(f"part id {part_id!r} is not a fault-suite id")
    image, steps = "png", []
    for token in filter(None, m.group(2).split("-")):
        t = _TOKEN.match(token)
        if not t:
            raise ValueError(f"part id {part_id!r}: unknown token {token!r}")
        role, what = t.groups()
        if role == "img":
            if what not in GOOD_IMAGES + BAD_IMAGES:
                raise ValueError(f"part id {part_id!r}: unknown image kind {what!r}")
            image = what
        else:
            if what not in GOOD_STEPS + STEP_FAULTS:
                raise ValueError(f"part id {part_id!r}: unknown step behaviour {what!r}")
            steps.append((role, what))
    return PartPlan(int(m.group(1)), image, tuple(steps), recovery=part_id.startswith("r"))


def marker(part_id: str) -> str:
    """The message every fault-detector finding carries: the part it judged."""
    return f"judged {part_id}"


MARKER = re.compile(r"^judged (\S+)$")
