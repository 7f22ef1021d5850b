"""The one record type of a verdict with its evidence: what the runtime hands the recorder, what the
spool keeps (JSON, never pickle, validated by pydantic when read back) and what sinks are told.

Besides the verdicts, the recorder writes two more kinds of thing, also through the spool while
the database is away: the run itself (:class:`RunRecord`, given a uid by the station at start, so
records never need a database id before the database answers) and events (:class:`EventRecord`).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import ConfigDict, TypeAdapter


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def naive_utc(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


# ---------------------------------------------------------------------------- records

# How the spool encodes and validates the records (each dataclass takes it as
# ``__pydantic_config__``): crops as base64, NaN and infinities kept, unknown fields refused.
_SPOOL_JSON = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64", ser_json_inf_nan="constants", extra="forbid")


@dataclasses.dataclass(slots=True)
class CropRecord:
    __pydantic_config__ = _SPOOL_JSON

    format: str
    width: int
    height: int
    x: int
    y: int
    scale: float
    data: bytes


@dataclasses.dataclass(slots=True)
class DefectRecord:
    __pydantic_config__ = _SPOOL_JSON

    step: str
    detector: str
    kind: str
    score: float
    failed: bool
    box: tuple[int, int, int, int]
    size_px: float | None
    size_mm: float | None
    measurements: dict[str, float]
    message: str
    crop: CropRecord | None = None
    raw_score: float | None = None
    """The detector's own unclipped score (``Finding.raw_score``), beside ``score`` in [0, 1]."""
    view: str | None = None
    """The view of the part the finding is on (``defects.view``, migration 0013); ``None``: the only one."""


@dataclasses.dataclass(slots=True)
class StepRecord:
    __pydantic_config__ = _SPOOL_JSON

    step_index: int
    step: str
    detector: str
    status: str
    score: float | None
    latency_ms: float | None
    n_findings: int = 0
    error: str | None = None
    raw_score: float | None = None
    """The highest ``Finding.raw_score`` among all the findings the detector returned for the part,
    those below its report floor included (``score`` is 0 then); ``None`` when it gives none."""
    view: str | None = None
    """The view of the part the step looked at (``step_results.view``, migration 0013)."""


@dataclasses.dataclass(slots=True)
class ViewRecord:
    """One view of a multi-view part (``inspection_views``, migration 0013; docs/views.md)."""

    __pydantic_config__ = _SPOOL_JSON

    view: str
    status: str
    """``ok``: inspected; ``missing``: no frame by the join's deadline; ``error``: a frame that
    cannot be inspected (``error`` says why)."""
    captured_at: datetime | None = None
    source_meta: dict[str, Any] | None = None
    error: str | None = None
    note: str | None = None
    """What else happened to this view of the part (a duplicate frame that was not inspected)."""
    evidence_x: int | None = None
    """Where this view's frame starts (px, from the left) in the part's whole-frame evidence image."""
    width: int | None = None
    height: int | None = None


@dataclasses.dataclass(slots=True)
class EvidenceRecord:
    """The part's whole frame as the writer kept it (``evidence`` table, migration 0011): a file
    named by ``sha256`` (written and fsynced before the row is committed), or why not (``status``
    ``dropped``, ``reason``)."""

    __pydantic_config__ = _SPOOL_JSON

    kept_as: str
    status: str
    reason: str | None = None
    sha256: str | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    scale: float | None = None
    bytes: int | None = None


@dataclasses.dataclass(slots=True)
class InspectionRecord:
    """One part's verdict with its evidence, as the runtime hands it to the recorder.

    A station names its run by ``station`` and ``run_uid``; the writer resolves them to the
    database's ``station_id`` and ``run_id`` (and sets those here) when it commits. Records built
    with the ids directly (tests, tools writing into a known database) need no names."""

    __pydantic_config__ = _SPOOL_JSON

    uid: str
    station_id: int | None
    run_id: int | None
    seq: int
    part_id: str
    captured_at: datetime
    decided_at: datetime
    verdict: str
    latency_ms: float | None
    error: str | None = None
    error_step: str | None = None
    source_meta: dict[str, Any] | None = None
    steps: list[StepRecord] = dataclasses.field(default_factory=list)
    defects: list[DefectRecord] = dataclasses.field(default_factory=list)
    station: str | None = None
    run_uid: str | None = None
    committed_at: datetime | None = None
    """Set by the writer once the record is committed: its clock just before the transaction's
    COMMIT (``inspections.committed_at``); ``None`` before, and in the spool."""
    evidence: EvidenceRecord | None = None
    """The frame kept as evidence (set by the writer before it commits), or ``None``."""
    views: list[ViewRecord] = dataclasses.field(default_factory=list)
    """A multi-view part's views (empty for a station with one view)."""
    recipe: str | None = None
    """The station recipe the part was inspected under (docs/recipes.md); ``None``: none."""
    recipe_hash: str | None = None
    """sha256 of that recipe's resolved config."""

    # The spool keeps records as JSON (never pickle); crops as base64.
    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["captured_at"] = self.captured_at.isoformat()
        d["decided_at"] = self.decided_at.isoformat()
        d["committed_at"] = None if self.committed_at is None else self.committed_at.isoformat()
        for v in d["views"]:
            v["captured_at"] = None if v["captured_at"] is None else v["captured_at"].isoformat()
        for defect in d["defects"]:
            if defect["crop"]:
                defect["crop"]["data"] = base64.b64encode(defect["crop"]["data"]).decode()
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> InspectionRecord:
        d = json.loads(text)
        d["captured_at"] = datetime.fromisoformat(d["captured_at"])
        d["decided_at"] = datetime.fromisoformat(d["decided_at"])
        if d.get("committed_at"):
            d["committed_at"] = datetime.fromisoformat(d["committed_at"])
        d["steps"] = [StepRecord(**s) for s in d["steps"]]
        defects = []
        for x in d["defects"]:
            crop = x.pop("crop")
            if crop:
                crop["data"] = base64.b64decode(crop["data"])
                crop = CropRecord(**crop)
            x["box"] = tuple(x["box"])
            defects.append(DefectRecord(**x, crop=crop))
        d["defects"] = defects
        if d.get("evidence"):
            d["evidence"] = EvidenceRecord(**d["evidence"])
        views = []
        for v in d.get("views") or []:
            if v.get("captured_at"):
                v["captured_at"] = datetime.fromisoformat(v["captured_at"])
            views.append(ViewRecord(**v))
        d["views"] = views
        return cls(**d)


@dataclasses.dataclass(slots=True)
class RunRecord:
    """One start of a station, as the station knows it before the database has answered."""

    __pydantic_config__ = _SPOOL_JSON

    station: str
    hostname: str
    software_version: str
    plugins: dict[str, Any]
    config_yaml: str
    config_hash: str
    models: dict[str, Any]
    uid: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    started_at: datetime = dataclasses.field(default_factory=lambda: utcnow())
    sink_keys: tuple[str, ...] = ()
    """The run's sinks (their delivery keys). Recording the run gives each one without a cursor a
    cursor before every inspection the run will commit, in the same transaction: a run's verdicts
    are owed to its sinks even when the sinks' workers never saw the database during the run."""


@dataclasses.dataclass(slots=True)
class EventRecord:
    """Something that happened to a run besides verdicts (``store_unreachable``, ``record_refused``)."""

    __pydantic_config__ = _SPOOL_JSON

    run_uid: str
    kind: str
    message: str
    at: datetime = dataclasses.field(default_factory=lambda: utcnow())
    uid: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)


# ---------------------------------------------------------------------------- the spool's codec

SPOOLED_INSPECTION = TypeAdapter(InspectionRecord)
SPOOLED_RUN = TypeAdapter(RunRecord)
SPOOLED_EVENT = TypeAdapter(EventRecord)
"""Validating codecs of what the spool keeps: ``dump_json`` to write, ``validate_json`` to read
(a wrong type, a missing or unknown field raises ``pydantic.ValidationError``)."""
