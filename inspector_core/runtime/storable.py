"""Text the store can always keep, whatever a source or a plugin hands the runtime.

PostgreSQL refuses NUL in text and JSON, every database refuses text that is not valid
UTF-8 (a file name that is not, decoded by Python with surrogate escapes, say), and
``inspections.part_id`` holds at most 300 characters. One such value in a batch must never
stop the recorder: the runtime makes every part id and every message storable before it
reaches the store, and records what it changed.

The rule, for a part id:
- bytes that are not UTF-8 (surrogate escapes) become ``\\xNN``, other lone surrogates
  ``\\udNNN``; NUL becomes the four characters ``\\x00``;
- a value that is not a ``str`` becomes its ``str()``;
- longer than 300 characters: the first 280, ``...`` and 16 hex digits of the SHA-256 of the
  whole, so that two long ids stay distinct;
- what was changed is kept in the inspection's ``source_meta["part_id_problem"]`` (and logged
  once per run as a ``part_id_escaped`` event); the part is inspected as usual.
"""

from __future__ import annotations

import hashlib

MAX_PART_ID = 300
MAX_MESSAGE = 4000


def storable_text(text: str) -> tuple[str, list[str]]:
    """``text`` with NUL and anything not encodable as UTF-8 escaped; and what was wrong."""
    problems = []
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        problems.append("is not valid UTF-8")
        try:
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if "\x00" in text:
        problems.append("contains NUL")
        text = text.replace("\x00", "\\x00")
    return text, problems


def storable_message(text: object, limit: int = MAX_MESSAGE) -> str:
    """An error or finding message the store can keep: storable, at most ``limit`` characters."""
    clean, _ = storable_text(text if isinstance(text, str) else str(text))
    if len(clean) > limit:
        clean = f"{clean[:limit]}... ({len(clean) - limit} more characters)"
    return clean


def storable_part_id(part_id: object) -> tuple[str, str | None]:
    """The part id the store keeps, and a sentence saying what was changed (``None``: nothing)."""
    problems = []
    if not isinstance(part_id, str):
        problems.append(f"is of type {type(part_id).__name__}, not str")
        part_id = str(part_id)
    clean, text_problems = storable_text(part_id)
    problems += text_problems
    if len(clean) > MAX_PART_ID:
        problems.append(f"is {len(clean)} characters long (at most {MAX_PART_ID} are stored)")
        digest = hashlib.sha256(clean.encode("utf-8")).hexdigest()[:16]
        clean = f"{clean[: MAX_PART_ID - 20]}...{digest}"
    if not problems:
        return clean, None
    return clean, f"the source's part id {' and '.join(problems)}; stored as {clean[:80]!r}"
