"""Two stations, two processes, one plant PostgreSQL at the same time; then the history and
the stats across both, through the QA command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.postgres

CLI = [sys.executable, "-m", "inspector_core.cli"]


def station(tmp_path, name, url, seed, count):
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\n"
        f"source: {{type: synthetic, config: {{count: {count}, seed: {seed}, width: 640, height: 480}}}}\n"
        "steps: [{detector: bright_spot, config: {threshold: 200}}, {detector: raiser, config: {every_nth: 10}}]\n"
        f"store: {{url: '{url}'}}\n"
    )
    return path


def test_two_stations_write_one_plant_database(tmp_path, pg_url):
    procs = [
        subprocess.Popen(
            CLI + ["run", str(station(tmp_path, name, pg_url, seed, 40)), "--quiet"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, seed in (("line1", 1), ("line2", 2))
    ]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    hist = subprocess.run(
        CLI + ["history", "--db", pg_url, "--format", "json", "--limit", "200"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert hist.returncode == 0, hist.stderr
    rows = json.loads(hist.stdout)
    rows = rows["rows"]
    assert len(rows) == 80
    assert {r["station"] for r in rows} == {"line1", "line2"}
    for name in ("line1", "line2"):
        mine = [r for r in rows if r["station"] == name]
        assert len(mine) == 40
        assert sum(r["verdict"] == "ERROR" for r in mine) == 4  # every 10th part raised
    stats = subprocess.run(
        CLI + ["stats", "--db", pg_url, "--format", "json"], capture_output=True, text=True, timeout=120
    )
    assert stats.returncode == 0, stats.stderr
    doc = json.loads(stats.stdout)
    totals = {p["station"]: p for p in doc["totals"]}
    assert set(totals) == {"line1", "line2"}
    for name in ("line1", "line2"):
        assert totals[name]["parts"] == 40 and totals[name]["errors"] == 4
