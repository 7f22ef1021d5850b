"""The promises checked after every schedule, each a function of what the station left behind.

Names (as the report prints them):

- ``exactly_one_inspection``: every part the source held has exactly one inspection (per run
  that captured it: a restart after kill -9/SIGTERM starts the folder over and re-inspects,
  which is stated, never twice in one run), no inspection of a part that does not exist, each
  run's ``seq`` gap-free, and a run that ended cleanly counts as many parts as it recorded.
- ``own_verdict``: no verdict attributed to another part: every finding in the store and in
  every sink's reports names the part it is attached to; a step's score is the one its own
  finding on that part has (a hung step's late finding scores 0.9 and names its own part).
- ``reported_in_store``: every uid a sink received is in the store, with the same part and verdict.
- ``committed_delivered``: every inspection in the store reached every sink (after recovery).
- ``never_pass_faulty``: a part with a bad image or a faulty step is never PASS.
- ``verdict_as_truth``: each verdict is the one the part id says (ERROR for a fault, FAIL for a
  defect, else PASS), and an ERROR says why, naming the faulty step or the image.
- ``integrity``: the database's own check is ok (SQLite), the rows agree: steps per inspection,
  ``n_defects``, the hourly roll-up per verdict, one ``first_of_part`` per part.
- ``station_keeps_running``: every run the schedule did not kill ends by itself, in time,
  without failing (``inspector run`` exits 0; SIGTERM drains and exits 0).
- ``slow_sink_delays_no_other``: while one sink hangs, another goes on receiving.
- ``fault_recorded``: a plant database that refused connections for 5 s, stalled for 7 s or was
  down for 3 s at start left an event about it, timed while it lasted.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter, defaultdict
from datetime import UTC
from typing import Any

from tests.faults.parts import FAIL_SCORE, HANGS, MARKER, PASS_SCORE, ROLES, PartPlan
from tests.faults.schedule import SINKS, Schedule, SinkFault

STORE_WORDS = ("store", "database", "spool", "unreachable")
NOTICE_WITHIN_S = {"refuse": 5.0, "stall": 7.0, "down_at_start": 3.0}
"""A database outage at least this long must leave an event while it lasts ("within seconds")."""

INVARIANTS = (
    "exactly_one_inspection",
    "own_verdict",
    "reported_in_store",
    "committed_delivered",
    "never_pass_faulty",
    "verdict_as_truth",
    "integrity",
    "station_keeps_running",
    "slow_sink_delays_no_other",
    "fault_recorded",
)


@dataclasses.dataclass
class RunInfo:
    """One start of the station as the harness drove it."""

    label: str
    """``main``, ``recovery``, ``kill 2 (KILL after 1.2 s)``, ``final``."""
    killed: str | None = None
    """``KILL`` or ``TERM`` when the harness signalled it."""
    error: str | None = None
    """Why it did not end as it should (an exception, a failure, a time-out, an exit code)."""
    run_id: int | None = None
    note: str | None = None
    """Something about the run worth stating that is no violation."""
    started: float = 0.0
    ended: float = 0.0


@dataclasses.dataclass
class Verdict:
    checked: Counter[str]
    violations: dict[str, list[str]]
    notes: list[str]

    def failed(self) -> list[str]:
        return [k for k in INVARIANTS if self.violations.get(k)]


def check(
    schedule: Schedule,
    obs: Any,
    runs: list[RunInfo],
    extra_parts: list[PartPlan],
    fault_windows: list[tuple[str, float, float]],
) -> Verdict:
    checked: Counter[str] = Counter()
    bad: dict[str, list[str]] = defaultdict(list)
    notes: list[str] = []
    plans = {p.part_id: p for p in list(schedule.parts) + extra_parts}
    by_uid = obs.by_uid()
    restarted = schedule.subprocess

    notes += [r.note for r in runs if r.note]

    # station_keeps_running
    for r in runs:
        checked["station_keeps_running"] += 1
        if r.error:
            bad["station_keeps_running"].append(f"{r.label}: {r.error}")

    # exactly_one_inspection
    per_run: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for i in obs.inspections:
        per_run[i["run_id"]].append(i)
    counts = Counter(i["part_id"] for i in obs.inspections)
    for pid in plans:
        checked["exactly_one_inspection"] += 1
        if counts[pid] == 0:
            bad["exactly_one_inspection"].append(f"part {pid} has no inspection")
        elif counts[pid] > 1 and not restarted:
            bad["exactly_one_inspection"].append(f"part {pid} has {counts[pid]} inspections")
    for pid in counts:
        if pid not in plans:
            bad["exactly_one_inspection"].append(f"inspection of a part the source never held: {pid!r}")
    run_rows = {r["id"]: r for r in obs.runs}
    for rid, rows in per_run.items():
        checked["exactly_one_inspection"] += 1
        twice = [p for p, n in Counter(i["part_id"] for i in rows).items() if n > 1]
        if twice:
            bad["exactly_one_inspection"].append(f"run {rid}: parts inspected more than once: {twice}")
        seqs = sorted(i["seq"] for i in rows)
        if seqs != list(range(len(seqs))):
            gaps = sorted(set(range(max(seqs) + 1)) - set(seqs))
            bad["exactly_one_inspection"].append(f"run {rid}: seq not gap-free (missing {gaps[:10]})")
        seen = run_rows.get(rid, {}).get("parts_seen")
        if seen is not None and seen != len(rows):
            bad["exactly_one_inspection"].append(f"run {rid}: parts_seen {seen} but {len(rows)} inspections recorded")
    for r in runs:
        if r.killed != "KILL" and r.run_id is not None:
            checked["exactly_one_inspection"] += 1
            row = run_rows.get(r.run_id)
            if row is not None and row["parts_seen"] is None:
                bad["exactly_one_inspection"].append(
                    f"{r.label} (run {r.run_id}) ended, but its end (parts_seen, the frames it captured) was never "
                    "recorded: the store cannot show that every frame was recorded"
                )
    if restarted:
        again = sorted(p for p, n in counts.items() if n > 1)
        notes.append(f"re-inspected after a restart (the folder source starts over): {len(again)} parts")
        final = next((r for r in reversed(runs) if r.label == "final"), None)
        if final is not None and final.run_id is not None:
            got = {i["part_id"] for i in per_run.get(final.run_id, [])}
            lost = [p.part_id for p in schedule.parts if p.part_id not in got]
            checked["exactly_one_inspection"] += 1
            if lost:
                bad["exactly_one_inspection"].append(
                    f"the final run to the end left {len(lost)} parts without an inspection: {lost[:8]}"
                )

    # own_verdict
    for i in obs.inspections:
        pid = i["part_id"]
        plan = plans.get(pid)
        for d in obs.defects.get(i["id"], []):
            checked["own_verdict"] += 1
            m = MARKER.match(d["message"] or "")
            if m and m.group(1) != pid:
                bad["own_verdict"].append(
                    f"part {pid} carries a finding of part {m.group(1)} (step {d['step']}, score {d['score']})"
                )
            part_no = (d["measurements"] or {}).get("part_no")
            if plan is not None and isinstance(part_no, int | float) and not m:
                own_no = plan.number + (1000 if plan.recovery else 0)
                if part_no != own_no:
                    bad["own_verdict"].append(f"part {pid} carries a finding measured on part number {part_no}")
        if plan is None:
            continue
        for s in obs.steps.get(i["id"], []):
            if s["status"] != "ok" or s["step"] not in ROLES:
                continue
            checked["own_verdict"] += 1
            what = plan.step(s["step"])
            own = {"ok": PASS_SCORE, "defect": FAIL_SCORE}.get(what)
            if own is not None and s["score"] is not None and abs(s["score"] - own) > 1e-6:
                bad["own_verdict"].append(
                    f"part {pid}: step {s['step']} scored {s['score']:g}, but its own "
                    f"finding on this part scores {own:g} (another part's result?)"
                )
    for sink, rows in obs.delivered.items():
        for r in rows:
            row = by_uid.get(r["uid"])
            checked["own_verdict"] += 1
            if row is not None and r["part_id"] != row["part_id"]:
                bad["own_verdict"].append(
                    f"sink {sink}: report {r['uid']} names part {r['part_id']}, the store {row['part_id']}"
                )
            for msg in r["messages"]:
                m = MARKER.match(msg)
                if m and m.group(1) != r["part_id"]:
                    bad["own_verdict"].append(
                        f"sink {sink}: the report on part {r['part_id']} carries a finding of part {m.group(1)}"
                    )

    # reported_in_store, committed_delivered
    for sink, rows in obs.delivered.items():
        got = set()
        for r in rows:
            checked["reported_in_store"] += 1
            got.add(r["uid"])
            row = by_uid.get(r["uid"])
            if row is None:
                bad["reported_in_store"].append(
                    f"sink {sink} received {r['uid']} (part {r['part_id']}, {r['verdict']}), which the store lacks"
                )
            elif r["verdict"] != row["verdict"]:
                bad["reported_in_store"].append(
                    f"sink {sink} was told {r['verdict']} for part {r['part_id']}, the store says {row['verdict']}"
                )
        missing = [i for i in obs.inspections if i["uid"] not in got]
        checked["committed_delivered"] += len(obs.inspections)
        if missing:
            bad["committed_delivered"].append(
                f"sink {sink}: {len(missing)} of {len(obs.inspections)} committed verdicts never delivered "
                f"(e.g. {', '.join(gone['part_id'] for gone in missing[:4])})"
            )
        dupes = sum(n - 1 for n in Counter(r["uid"] for r in rows).values() if n > 1)
        if dupes:
            notes.append(f"sink {sink}: {dupes} duplicate deliveries (at least once: allowed)")

    # never_pass_faulty, verdict_as_truth
    def at(i: dict[str, Any]) -> str:
        return f" (run {i['run_id']})" if restarted else ""

    def cites(step: str, i: dict[str, Any]) -> bool:
        """Whether the inspection's error names ``step`` (the part id, which holds the step
        names of its faults, does not count)."""
        error = (i["error"] or "").replace(i["part_id"], "")
        return i["error_step"] == step or re.search(rf"\b{step}\b", error) is not None

    dead_steps: dict[int, set[str]] = defaultdict(set)
    for i in sorted(obs.inspections, key=lambda i: (i["run_id"], i["seq"])):
        plan = plans.get(i["part_id"])
        if plan is None:
            continue
        v = i["verdict"]
        checked["never_pass_faulty"] += 1
        checked["verdict_as_truth"] += 1
        if plan.faulty and v == "PASS":
            why = ", ".join(
                ([f"image {plan.image}"] if plan.image_fault else [])
                + [f"{r} {plan.step(r)}" for r in plan.step_faults]
            )
            bad["never_pass_faulty"].append(f"part {plan.part_id}{at(i)} is PASS despite {why}")
        want = plan.expected()
        dead = dead_steps[i["run_id"]]
        error = i["error"] or ""
        excused = v == "ERROR" and any(cites(role, i) for role in dead)
        if v != want and not excused:
            bad["verdict_as_truth"].append(
                f"part {plan.part_id}{at(i)}: {v}, expected {want}" + (f" ({error[:160]})" if error else "")
            )
        elif v == "ERROR" and want == "ERROR":
            if not error:
                bad["verdict_as_truth"].append(f"part {plan.part_id}{at(i)}: ERROR without a reason")
            # (Only on plain images: a source that wrongly refuses an unusual good one is the
            # violation already reported for that image, not a second one about the step.)
            elif plan.step_faults and plan.image in ("png", "jpg") and not any(cites(r, i) for r in plan.step_faults):
                bad["verdict_as_truth"].append(
                    f"part {plan.part_id}{at(i)}: the ERROR does not name the faulty step "
                    f"{'/'.join(plan.step_faults)}: {error[:160]}"
                )
        # A replacement that failed to start may cost later parts (recorded as ERROR of that step).
        for role in ROLES:
            if plan.step(role) in HANGS[1:]:
                dead.add(role)
    if any(dead_steps.values()):
        notes.append("after a failed replacement, later parts may be ERROR naming that step")

    # integrity
    checked["integrity"] += 1
    bad["integrity"] += obs.integrity
    for i in obs.inspections:
        checked["integrity"] += 1
        names = [s["step"] for s in obs.steps.get(i["id"], [])]
        if len(names) != len(set(names)) or not set(names) <= set(ROLES):
            bad["integrity"].append(f"part {i['part_id']}: step rows {names}")
        elif i["verdict"] in ("PASS", "FAIL") and sorted(names) != sorted(ROLES):
            bad["integrity"].append(f"part {i['part_id']} is {i['verdict']} with step rows for {names} only")
        failed = sum(1 for d in obs.defects.get(i["id"], []) if d["failed"])
        if failed != i["n_defects"]:
            bad["integrity"].append(f"part {i['part_id']}: n_defects {i['n_defects']} but {failed} failing defects")
        if i["verdict"] == "FAIL" and not failed:
            bad["integrity"].append(f"part {i['part_id']} is FAIL without a failing defect")
    per_verdict = Counter(i["verdict"] for i in obs.inspections)
    if dict(per_verdict) != {k: v for k, v in obs.rollup.items() if v}:
        bad["integrity"].append(f"roll-up per verdict {obs.rollup} != inspections {dict(per_verdict)}")
    firsts = Counter(i["part_id"] for i in obs.inspections if i["first_of_part"])
    wrong = [p for p in counts if firsts[p] != 1]
    if wrong:
        bad["integrity"].append(f"first_of_part not exactly once for {wrong[:5]}")

    # slow_sink_delays_no_other
    for f in schedule.sink_faults:
        if f.hang_ms < 1500:
            continue
        hung = obs.sink_state.get(f.sink, {}).get("hung")
        other = next(s for s in ("faulty_a", "faulty_b") if s != f.sink)
        if schedule.sink_fault(other) != SinkFault(other):
            continue  # the other sink has its own fault: it may rightly receive nothing meanwhile
        if schedule.subprocess and hung and hung[1] is None:
            notes.append(f"sink {f.sink} was killed while it hung: no comparison")
            continue
        checked["slow_sink_delays_no_other"] += 1
        if not hung or hung[1] is None:
            bad["slow_sink_delays_no_other"].append(f"sink {f.sink} never got to its scheduled hang")
            continue
        during = [r for r in obs.delivered[other] if r["t"] is not None and hung[0] < r["t"] < hung[1]]
        if len(during) < 2:
            bad["slow_sink_delays_no_other"].append(
                f"sink {other} received {len(during)} reports while sink {f.sink} hung for "
                f"{hung[1] - hung[0]:.1f} s ({len(obs.inspections)} parts committed in all)"
            )

    # fault_recorded: an outage long enough that "within seconds" has passed must have been
    # noticed while it lasted (the event's time falls inside it), not only afterwards.
    about_store = [e for e in obs.events if any(w in f"{e['kind']} {e['message']}".lower() for w in STORE_WORDS)]
    for kind, t0, t1 in fault_windows:
        if t1 - t0 < NOTICE_WITHIN_S.get(kind, math.inf):
            continue
        checked["fault_recorded"] += 1
        during = [e for e in about_store if t0 - 0.5 <= e["at"].replace(tzinfo=UTC).timestamp() <= t1 + 0.5]
        if not about_store:
            kinds = sorted({e["kind"] for e in obs.events})
            bad["fault_recorded"].append(
                f"database {kind} for {t1 - t0:.1f} s left no event about it (events: {kinds})"
            )
        elif not during:
            bad["fault_recorded"].append(
                f"database {kind} for {t1 - t0:.1f} s: no event while it lasted (first after: "
                f"{about_store[0]['kind']} at {about_store[0]['at']:%H:%M:%S})"
            )

    assert set(checked) <= set(INVARIANTS) and set(bad) <= set(INVARIANTS)
    assert tuple(obs.delivered) == SINKS
    return Verdict(checked, {k: v for k, v in bad.items() if v}, notes)
