"""SPC alarms to the station's sinks (``inspector measurements --alarm``).

Each rule a **phase II** point trips (limits frozen from the baseline, so the point's rules
do not change when more parts arrive) becomes one :class:`~inspector_core.contract.Alarm`,
delivered to every configured sink's ``send_alarm``. What was sent is recorded as an
``events`` row of kind ``spc_alarm`` whose ``uid`` is the alarm's uid (the run is that of the
point's last part), so a rerun sends only new violations. No new table: the events table
already has a unique ``uid``. An alarm is recorded only after every sink took it; a sink that
raises leaves it unrecorded, and the next run sends it again (at least once, like verdicts).
Phase I points are not sent: their limits are the ones they made, not yet frozen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine, insert, select

from inspector_core.contract import Alarm, Sink
from inspector_core.qa.measurements import RULES, Chart
from inspector_core.store import schema

KIND = "spc_alarm"


def alarms(chart: Chart) -> list[Alarm]:
    """Every (phase II point, rule) of ``chart`` as an alarm, in chart order."""
    out = []
    lim = chart.limits
    for p in chart.points:
        if p.phase != "II":
            continue
        for rule in p.rules:
            key = f"{chart.station}|{chart.series}|n={lim.n}|{','.join(map(str, p.inspection_ids))}|{rule}"
            uid = hashlib.sha256(key.encode()).hexdigest()[:32]
            value = p.range if rule == "R" and p.range is not None else p.value
            centre, lcl, ucl = (lim.r_centre, lim.r_lcl, lim.r_ucl) if rule == "R" else (lim.centre, lim.lcl, lim.ucl)
            out.append(
                Alarm(
                    uid,
                    chart.station,
                    chart.series,
                    rule,
                    RULES.get(rule, rule),
                    p.index,
                    value,
                    centre,
                    lcl,
                    ucl,
                    p.at,
                    tuple(p.inspection_ids),
                )  # fmt: skip
            )
    return out


def unsent(engine: Engine, found: Sequence[Alarm]) -> list[Alarm]:
    """The alarms of ``found`` not yet recorded as sent."""
    if not found:
        return []
    E = schema.Event
    uids = [a.uid for a in found]
    seen: set[str] = set()
    with engine.connect() as conn:
        for j in range(0, len(uids), 500):
            seen.update(u for u in conn.execute(select(E.uid).where(E.uid.in_(uids[j : j + 500]))).scalars() if u)
    return [a for a in found if a.uid not in seen]


def _run_of(engine: Engine, inspection_id: int) -> int | None:
    with engine.connect() as conn:
        return conn.execute(select(schema.Inspection.run_id).where(schema.Inspection.id == inspection_id)).scalar()


def deliver(engine: Engine, found: Sequence[Alarm], sinks: Sequence[Sink]) -> tuple[int, list[str]]:
    """Send the unsent alarms of ``found`` to every sink and record each one sent to all.
    Returns (how many were sent, the problems: one line per alarm a sink refused)."""
    sent, problems = 0, []
    for a in unsent(engine, found):
        try:
            for s in sinks:
                s.send_alarm(a)
        except Exception as exc:  # noqa: BLE001 - a sink's failure is reported, the alarm resent next run
            problems.append(f"alarm {a.series} {a.rule} point {a.point}: sink {type(s).__name__} failed: {exc}")
            continue
        run_id = _run_of(engine, a.inspection_ids[-1]) if a.inspection_ids else None
        if run_id is None:
            problems.append(f"alarm {a.uid}: its part is not in the store; sent, not recorded")
            continue
        msg = f"{a.series} {a.rule} ({a.description}) point {a.point} value {a.value:.6g}"
        with engine.begin() as conn:
            conn.execute(
                insert(schema.Event).values(uid=a.uid, run_id=run_id, at=datetime.now(UTC).replace(tzinfo=None),
                                            kind=KIND, message=msg)
            )  # fmt: skip
        sent += 1
    return sent, problems
