"""The line's results for QA: parts whose result on the PLC differed from their real verdict.

A PLC acts on the code it was sent. When the deadline passed first, that was the default
(``line.default``: NOK or RECHECK), and the real verdict, recorded late, may say otherwise: a
good part rejected, or a bad one sent to recheck. Also listed: defaults whose verdict never came
(the station stopped or the store was down), which are NULL in ``verdict``.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from sqlalchemy import or_, select

from inspector_core.qa.reader import open_reader
from inspector_core.store import schema
from inspector_core.store.line_records import LineResultRow


@dataclasses.dataclass(frozen=True, slots=True)
class LineMismatch:
    triggered_at: datetime
    counter: int
    part_id: str | None
    code: int
    is_default: bool
    late: bool
    verdict: str | None
    verdict_code: int | None
    inspection_uid: str | None


def plc_mismatches(url: str, station: str, *, limit: int = 50) -> list[LineMismatch]:
    """The station's latest triggers whose PLC code is not the code of their real verdict."""
    t = LineResultRow.__table__
    store = open_reader(url)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(
                select(
                    t.c.triggered_at,
                    t.c.counter,
                    t.c.part_id,
                    t.c.code,
                    t.c.is_default,
                    t.c.late,
                    t.c.verdict,
                    t.c.verdict_code,
                    t.c.inspection_uid,
                )
                .join(schema.Station, schema.Station.id == t.c.station_id)
                .where(schema.Station.name == station)
                .where(or_(t.c.verdict_code.is_(None), t.c.verdict_code != t.c.code))
                .order_by(t.c.triggered_at.desc(), t.c.id.desc())
                .limit(limit)
            ).all()
    finally:
        store.close()
    return [LineMismatch(*r) for r in rows]
