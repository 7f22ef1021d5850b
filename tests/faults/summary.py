"""The fault suite's session summary: how many schedules and parts ran, each invariant
checked how often, and which broke (from each test's ``fault_schedule`` property).

Hooks imported by ``tests/conftest.py``, so that under pytest-xdist the controller, which
receives every worker's reports, prints it."""

from __future__ import annotations

import json
from collections import Counter

import pytest

_ran: list[dict] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    for key, value in report.user_properties:
        if key == "fault_schedule":
            _ran.append(json.loads(str(value)))


def pytest_terminal_summary(terminalreporter) -> None:
    if not _ran:
        return
    checked: Counter[str] = Counter()
    broken: Counter[str] = Counter()
    for r in _ran:
        checked.update(r["checked"])
        broken.update(r["violated"])
    tr = terminalreporter
    tr.section("fault-injection suite")
    tr.write_line(
        f"{len(_ran)} schedules, {sum(r['parts'] for r in _ran)} parts, "
        f"{sum(r['runs'] for r in _ran)} station runs, {sum(r['seconds'] for r in _ran):.0f} s"
    )
    for name in checked:
        tr.write_line(f"  {name:28s} checked {checked[name]:6d} times; broken in {broken[name]} schedules")
    failing = [r for r in _ran if r["violated"]]
    for r in failing:
        tr.write_line(f"  {r['name']}: {', '.join(r['violated'])}")
