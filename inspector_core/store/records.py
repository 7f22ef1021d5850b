"""The one record type of a verdict with its evidence: what the runtime hands the recorder, what the
spool keeps (JSON, never pickle) and what sinks are told."""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def naive_utc(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


# ---------------------------------------------------------------------------- records


@dataclasses.dataclass(slots=True)
class CropRecord:
    format: str
    width: int
    height: int
    x: int
    y: int
    scale: float
    data: bytes


@dataclasses.dataclass(slots=True)
class DefectRecord:
    step: str
    plugin: str
    kind: str
    score: float
    failed: bool
    box: tuple[int, int, int, int]
    size_px: float | None
    size_mm: float | None
    measurements: dict[str, float]
    message: str
    crop: CropRecord | None = None


@dataclasses.dataclass(slots=True)
class StepRecord:
    step_index: int
    step: str
    plugin: str
    status: str
    score: float | None
    latency_ms: float | None
    n_findings: int = 0
    error: str | None = None


@dataclasses.dataclass(slots=True)
class InspectionRecord:
    """One part's verdict with its evidence, as the runtime hands it to the recorder."""

    uid: str
    station_id: int
    run_id: int
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

    # The spool keeps records as JSON (never pickle); crops as base64.
    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["captured_at"] = self.captured_at.isoformat()
        d["decided_at"] = self.decided_at.isoformat()
        for defect in d["defects"]:
            if defect["crop"]:
                defect["crop"]["data"] = base64.b64encode(defect["crop"]["data"]).decode()
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> InspectionRecord:
        d = json.loads(text)
        d["captured_at"] = datetime.fromisoformat(d["captured_at"])
        d["decided_at"] = datetime.fromisoformat(d["decided_at"])
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
        return cls(**d)
