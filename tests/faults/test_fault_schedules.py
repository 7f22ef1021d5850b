"""The fault-injection suite (issue 10): deterministic schedules of faults over real stations,
the station's promises checked after each one (see ``invariants.py`` for the list).

- ``test_each_fault_alone``: every kind of fault by itself between good parts (detector raise,
  hang, garbage output, replacement that fails to start; corrupt, truncated and hostile
  images; the plant database refusing, restarting, stalling, down at start; a sink refusing,
  down, hanging). When an invariant breaks, this is its minimal reproduction.
- ``test_random_schedule``: seeded mixed schedules (faults of every kind on SQLite and
  PostgreSQL).
- ``test_kills_and_restarts``: ``inspector run`` killed with kill -9 and SIGTERM at seeded
  moments (the first one during its first start-up), then run to the end.

Deterministic: the schedules are a function of ``INSPECTOR_FAULTS_SEED`` (default below).
Bounded for CI: ``INSPECTOR_FAULTS_SCHEDULES`` random schedules (default 6) and one kill
schedule of each kind; ``INSPECTOR_FAULTS_SCHEDULES=200`` asks for a longer run (with one
kill schedule per 20 random ones). The summary at the end of the session (and each test's
``fault_schedule`` property) says how many schedules and parts ran and each invariant checked.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.faults.harness import Outcome, run_in_process, run_subprocess
from tests.faults.invariants import INVARIANTS
from tests.faults.schedule import Schedule, catalogue, generate, kill_schedule

pytestmark = pytest.mark.faults

SEED = int(os.environ.get("INSPECTOR_FAULTS_SEED", "20261201"))
SCHEDULES = int(os.environ.get("INSPECTOR_FAULTS_SCHEDULES", "6"))
KILL_SCHEDULES = max(1, SCHEDULES // 20)


def _run(schedule: Schedule, tmp_path, request) -> Outcome:
    if schedule.subprocess:
        out = run_subprocess(schedule, tmp_path / "work")
    else:
        pg = request.getfixturevalue("pg_url") if schedule.store == "postgres" else None
        out = run_in_process(schedule, tmp_path / "work", pg)
    request.node.user_properties.append(
        (
            "fault_schedule",
            json.dumps(
                {
                    "name": schedule.name,
                    "parts": out.parts,
                    "runs": len(out.runs),
                    "seconds": round(out.seconds, 1),
                    "checked": {k: out.verdict.checked[k] for k in INVARIANTS},
                    "violated": out.verdict.failed(),
                }
            ),
        )
    )
    print(out.report())
    return out


def _assert_kept(out: Outcome) -> None:
    assert not out.verdict.violations, f"invariants broken: {', '.join(out.verdict.failed())}\n{out.report()}"


@pytest.mark.parametrize("schedule", catalogue(), ids=lambda s: s.name)
def test_each_fault_alone(schedule, tmp_path, request):
    _assert_kept(_run(schedule, tmp_path, request))


@pytest.mark.parametrize("index", range(SCHEDULES))
def test_random_schedule(index, tmp_path, request):
    _assert_kept(_run(generate(SEED, index), tmp_path, request))


@pytest.mark.parametrize("signal", ["mixed", "TERM"])
@pytest.mark.parametrize("k", range(KILL_SCHEDULES))
def test_kills_and_restarts(signal, k, tmp_path, request):
    _assert_kept(_run(kill_schedule(SEED + k, signal), tmp_path, request))


def test_the_schedules_are_deterministic():
    """The same seed gives the same schedules, so a failure can be rerun exactly."""
    assert [generate(SEED, i).describe() for i in range(5)] == [generate(SEED, i).describe() for i in range(5)]
    assert kill_schedule(SEED, "mixed") == kill_schedule(SEED, "mixed")
    assert generate(SEED, 0).describe() != generate(SEED + 1, 0).describe()
