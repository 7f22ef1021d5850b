"""A verdict reported to a sink survives ``kill -9`` of the station."""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sqlite3
import subprocess
import sys
import time

import psycopg
import pytest


def station_file(tmp_path, db, sink):
    path = tmp_path / "line.yaml"
    path.write_text(
        "name: line\n"
        "source: {type: synthetic, config: {count: 100000, width: 640, height: 480, defect_rate: 0.5}}\n"
        "steps: [{detector: bright_spot, config: {threshold: 200}}]\n"
        f"store: {{url: 'sqlite:///{db}', crops: {{save: all}}}}\n"
        f"sinks: [{{type: file, config: {{path: '{sink}'}}}}]\n"
    )
    return path


def reported_uids(sink):
    uids = []
    if sink.exists():
        for line in sink.read_text().splitlines():
            # A line cut by the kill was never completely reported.
            with contextlib.suppress(json.JSONDecodeError):
                uids.append(json.loads(line)["inspection_uid"])
    return uids


@pytest.mark.parametrize("seed", [1])
def test_reported_verdicts_survive_kill_9(tmp_path, seed):
    rng = random.Random(seed)
    db, sink = tmp_path / "line.db", tmp_path / "reported.jsonl"
    path = station_file(tmp_path, db, sink)
    kills = 0
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "inspector_core.cli", "run", str(path), "--quiet"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # Wait until this run has reported something, then kill at a random moment.
        before = len(reported_uids(sink))
        deadline = time.monotonic() + 60
        while len(reported_uids(sink)) == before and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
        kills += 1
    uids = reported_uids(sink)
    assert kills == 5 and len(uids) > 20
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {u for (u,) in con.execute("SELECT uid FROM inspections")}
    missing = [u for u in uids if u not in stored]
    assert not missing, f"{len(missing)} reported verdicts are not in the store"
    # Each run's inspections are a gap-free prefix of its captured frames: nothing in the
    # middle was skipped (a crash may only lose the not-yet-committed tail, never reported).
    for run_id, n, top in con.execute("SELECT run_id, count(*), max(seq) FROM inspections GROUP BY run_id"):
        assert n == top + 1, f"run {run_id}: {n} inspections but seq up to {top}"
    # Defects kept their crops through the kills.
    orphans = con.execute(
        "SELECT count(*) FROM defects d LEFT JOIN crops c ON c.defect_id = d.id WHERE c.id IS NULL"
    ).fetchone()[0]
    assert orphans == 0
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 5


def test_sigterm_drains_and_commits(tmp_path):
    db, sink = tmp_path / "line.db", tmp_path / "reported.jsonl"
    path = station_file(tmp_path, db, sink)
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector_core.cli", "run", str(path), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while len(reported_uids(sink)) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, errs = proc.communicate(timeout=60)
    assert proc.returncode == 0, errs.decode()
    con = sqlite3.connect(db)
    n = con.execute("SELECT count(*) FROM inspections").fetchone()[0]
    seen = con.execute("SELECT parts_seen FROM runs").fetchone()[0]
    # Every captured part was inspected and committed before exit, and reported.
    assert seen == n and len(reported_uids(sink)) == n
    assert "run 1 of station line" in out.decode()


@pytest.mark.postgres
def test_spooled_verdicts_survive_kill_9_and_are_written_once(tmp_path, pg_url):
    """kill -9 while the plant database is away: what the spool holds is on disk, and the next
    run writes it, once, under the run that inspected it."""
    from tests.tcp_proxy import TcpProxy

    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.start()
    url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    sink, spool_dir = tmp_path / "reported.jsonl", tmp_path / "spool"
    path = tmp_path / "line.yaml"
    path.write_text(
        "name: line\n"
        "source: {type: synthetic, config: {count: 100000, width: 320, height: 240, interval_ms: 20}}\n"
        "steps: [{detector: bright_spot, config: {threshold: 200}}]\n"
        f"store: {{url: '{url}', spool: '{spool_dir}'}}\n"
        f"sinks: [{{type: file, config: {{path: '{sink}'}}}}]\n"
    )
    cmd = [sys.executable, "-m", "inspector_core.cli", "run", str(path), "--quiet"]

    def spooled() -> set[str]:
        files = list(spool_dir.glob("line-*.spool.db"))
        if not files:
            return set()
        con = sqlite3.connect(f"file:{files[0]}?mode=ro", uri=True)
        try:
            return {json.loads(r)["uid"] for (r,) in con.execute("SELECT record FROM items WHERE kind = 'inspection'")}
        except sqlite3.OperationalError:
            return set()
        finally:
            con.close()

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(reported_uids(sink)) < 5 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proxy.cut()
        while len(spooled()) < 10 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    waiting = spooled()
    reported = reported_uids(sink)
    assert len(waiting) >= 10 and len(reported) >= 5
    proxy.start()
    try:
        again = subprocess.run(cmd + ["--limit", "3"], capture_output=True, text=True, timeout=120)
    finally:
        proxy.stop()
    assert again.returncode == 0, again.stderr
    assert spooled() == set()
    con = psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"))
    rows = con.execute("SELECT i.uid, r.parts_seen FROM inspections i JOIN runs r ON r.id = i.run_id").fetchall()
    con.close()
    uids = [u for u, _ in rows]
    assert len(uids) == len(set(uids))
    assert waiting <= set(uids) and set(reported) <= set(uids)
    by_run = dict(rows)
    assert all(by_run[u] is None for u in waiting)  # the killed run: never ended, its verdicts its own
