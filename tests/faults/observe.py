"""What a fault station left behind, read as a QA engineer would: the store's tables (through
SQLAlchemy) and what each sink received."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, inspect, select, text

from inspector_core.store import schema
from tests.faults.schedule import SINKS


@dataclasses.dataclass
class Observed:
    inspections: list[dict[str, Any]]
    steps: dict[int, list[dict[str, Any]]]
    defects: dict[int, list[dict[str, Any]]]
    runs: list[dict[str, Any]]
    events: list[dict[str, Any]]
    rollup: dict[str, int]
    """``inspection_hours.parts`` summed per verdict."""
    integrity: list[str]
    """Problems the database's own check found (SQLite ``integrity_check``, ``foreign_key_check``)."""
    delivered: dict[str, list[dict[str, Any]]]
    """Per sink, every report it accepted: ``uid``, ``part_id``, ``verdict``, ``messages``, ``t``."""
    sink_state: dict[str, dict[str, Any]]

    def by_uid(self) -> dict[str, dict[str, Any]]:
        return {i["uid"]: i for i in self.inspections}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            # A line cut by kill -9 was never completely delivered.
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
    return out


def sink_paths(workdir: Path, sink: str) -> tuple[Path, Path]:
    """``(record, state)`` files of a sink."""
    return workdir / f"sink-{sink}.jsonl", workdir / f"sink-{sink}.state.json"


def delivered(workdir: Path) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for sink in SINKS:
        rows = read_jsonl(sink_paths(workdir, sink)[0])
        if sink == "file":  # the built-in sink writes the whole report
            rows = [
                {
                    "uid": r.get("inspection_uid"),
                    "part_id": r.get("part_id"),
                    "verdict": r.get("verdict"),
                    "messages": [str(d.get("message")) for d in r.get("defects") or []],
                    "t": None,
                }
                for r in rows
            ]
        out[sink] = rows
    return out


def _empty(workdir: Path, why: str) -> Observed:
    return Observed([], {}, {}, [], [], {}, [why], delivered(workdir), _sink_states(workdir))


def observe(db_url: str, workdir: Path, station: str = "faults") -> Observed:
    """Read the store (SQLite read-only: looking must not change what is looked at)."""
    if db_url.startswith("sqlite:///"):
        path = Path(db_url.removeprefix("sqlite:///"))
        if not path.exists():
            return _empty(workdir, f"the store {path} does not exist")
        db_url = f"sqlite:///file:{path}?mode=ro&uri=true"
    engine = create_engine(db_url)
    try:
        if not inspect(engine).has_table("inspections"):
            return _empty(workdir, "the store has no Inspector tables (it was never created)")
        with engine.connect() as c:
            sid = c.scalar(select(schema.Station.id).where(schema.Station.name == station))
            ins = [
                dict(r._mapping)
                for r in c.execute(
                    select(
                        schema.Inspection.id,
                        schema.Inspection.uid,
                        schema.Inspection.run_id,
                        schema.Inspection.seq,
                        schema.Inspection.part_id,
                        schema.Inspection.verdict,
                        schema.Inspection.error,
                        schema.Inspection.error_step,
                        schema.Inspection.n_defects,
                        schema.Inspection.first_of_part,
                    )
                    .where(schema.Inspection.station_id == sid)
                    .order_by(schema.Inspection.id)
                )
            ]
            ids = [i["id"] for i in ins]
            steps: dict[int, list[dict[str, Any]]] = defaultdict(list)
            defects: dict[int, list[dict[str, Any]]] = defaultdict(list)
            if ids:
                for r in c.execute(
                    select(
                        schema.StepResult.inspection_id,
                        schema.StepResult.step,
                        schema.StepResult.status,
                        schema.StepResult.score,
                        schema.StepResult.n_findings,
                        schema.StepResult.error,
                    ).where(schema.StepResult.inspection_id.in_(ids))
                ):
                    steps[r.inspection_id].append(dict(r._mapping))
                for r in c.execute(
                    select(
                        schema.Defect.inspection_id,
                        schema.Defect.step,
                        schema.Defect.kind,
                        schema.Defect.score,
                        schema.Defect.failed,
                        schema.Defect.message,
                        schema.Defect.measurements,
                    ).where(schema.Defect.inspection_id.in_(ids))
                ):
                    d = dict(r._mapping)
                    if not isinstance(d["message"], str):  # SQLite keeps what it was given (bytes)
                        d["message"] = repr(d["message"])
                    defects[r.inspection_id].append(d)
            runs = [
                dict(r._mapping)
                for r in c.execute(
                    select(schema.Run.id, schema.Run.started_at, schema.Run.ended_at, schema.Run.parts_seen)
                    .where(schema.Run.station_id == sid)
                    .order_by(schema.Run.id)
                )
            ]
            run_ids = [r["id"] for r in runs]
            events = (
                [
                    dict(r._mapping)
                    for r in c.execute(
                        select(schema.Event.run_id, schema.Event.at, schema.Event.kind, schema.Event.message)
                        .where(schema.Event.run_id.in_(run_ids))
                        .order_by(schema.Event.id)
                    )
                ]
                if run_ids
                else []
            )
            rollup = {
                v: int(n)
                for v, n in c.execute(
                    select(schema.InspectionHour.verdict, func.sum(schema.InspectionHour.parts))
                    .where(schema.InspectionHour.station_id == sid)
                    .group_by(schema.InspectionHour.verdict)
                )
            }
            integrity: list[str] = []
            if c.dialect.name == "sqlite":
                check = [r[0] for r in c.execute(text("PRAGMA integrity_check"))]
                if check != ["ok"]:
                    integrity += [f"PRAGMA integrity_check: {x}" for x in check]
                fk = c.execute(text("PRAGMA foreign_key_check"))
                integrity += [f"PRAGMA foreign_key_check: {tuple(r)}" for r in fk]
    finally:
        engine.dispose()
    return Observed(
        ins, dict(steps), dict(defects), runs, events, rollup, integrity, delivered(workdir), _sink_states(workdir)
    )


def _sink_states(workdir: Path) -> dict[str, dict[str, Any]]:
    states = {}
    for sink in SINKS:
        state = sink_paths(workdir, sink)[1]
        states[sink] = json.loads(state.read_text()) if state.exists() else {}
    return states
