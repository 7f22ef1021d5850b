"""SQLite WAL checkpoints off the writer's commits (issue 12, store rate): the writer's connections
do not checkpoint, a thread of its own does, the log stays bounded while the writer never pauses,
a reader holding the log never blocks the writer, a failing checkpointer hands the work back to
SQLite, and a verdict reported as committed survives ``kill -9`` in the middle of it all."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from inspector_core.store import (
    CropRecord,
    DefectRecord,
    InspectionRecord,
    Recorder,
    RunRecord,
    StepRecord,
    Store,
    checkpoint,
    utcnow,
)

ROOT = Path(__file__).resolve().parents[2]
CROP = bytes(range(256)) * 10  # 2.5 KB, the size of a station's JPEG crop


def _run() -> RunRecord:
    return RunRecord("wal", "h", "0", {}, "", "x" * 64, {})


def _records(run: RunRecord, n: int) -> list[InspectionRecord]:
    t0 = utcnow()
    return [
        InspectionRecord(
            uuid.uuid4().hex,
            None,
            None,
            i,
            f"p{i:06d}",
            t0 + timedelta(microseconds=500 * i),
            t0 + timedelta(microseconds=500 * i + 12_000),
            "FAIL",
            12.0,
            steps=[StepRecord(0, "front", "scratch", "ok", 0.9, 8.0, 1)],
            defects=[
                DefectRecord(
                    "front",
                    "scratch",
                    "scratch",
                    0.9,
                    True,
                    (10, 20, 30, 4),
                    30.0,
                    None,
                    {"length_px": 30.0},
                    "scratch",
                    CropRecord("jpeg", 88, 72, 5, 15, 1.0, CROP),
                )
            ],
            station=run.station,
            run_uid=run.uid,
        )
        for i in range(n)
    ]


def _log_pages(path: Path) -> int:
    """Frames in the log now (a passive checkpoint of nothing new copies nothing)."""
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]


def _count(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM inspections").fetchone()[0]


def test_the_writer_does_not_checkpoint_and_the_log_stays_bounded(tmp_path, monkeypatch):
    """Saturated (the queue never empty, so SQLite alone would never restart the log) with a
    small bound: the log is restarted by the writer between transactions and never grows far
    past the bound; the writer's connections had autocheckpoint 0, and get SQLite's back."""
    path = tmp_path / "s.db"
    store = Store(f"sqlite:///{path}")
    run = _run()
    seen: list[int] = []
    rec = Recorder(store, run=run, on_committed=lambda b: None, max_batch=200, max_group=200)
    cp = rec.checkpointer
    assert cp is not None
    cp.every_pages, cp.restart_pages = 100, 600
    orig = cp._checkpoint

    def watched(db: sqlite3.Connection) -> None:
        orig(db)
        seen.append(cp.log_pages)

    monkeypatch.setattr(cp, "_checkpoint", watched)
    rec.start()
    for r in _records(run, 4000):
        rec.submit(r)
    with store.engine.connect() as c:
        dbapi = c.connection.dbapi_connection
        assert dbapi is not None
        assert dbapi.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    assert rec.close(60, parts_seen=4000), rec.close_problem
    assert cp.error is None
    assert cp.restarts >= 2, (cp.restarts, seen)
    # A batch of 200 with its crops is about 300-350 frames: one batch past the bound before the
    # thread asks, one more before the writer restarts it.
    assert max(seen) < cp.restart_pages + 1000, seen
    with store.engine.connect() as c:
        dbapi = c.connection.dbapi_connection
        assert dbapi is not None
        assert dbapi.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == checkpoint.SQLITE_DEFAULT
    store.close()
    assert _count(path) == 4000
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_reader_on_the_log_never_blocks_the_writer(tmp_path):
    """A reader holding a snapshot keeps the log from being restarted; the writer's restart
    gives up at once (no busy wait) and commits go on at their pace; once the reader is gone the
    log is restarted."""
    path = tmp_path / "s.db"
    store = Store(f"sqlite:///{path}")
    run = _run()
    rec = Recorder(store, run=run, on_committed=lambda b: None, max_batch=100)
    cp = rec.checkpointer
    assert cp is not None
    cp.every_pages, cp.restart_pages = 50, 300
    rec.start()
    recs = _records(run, 3000)
    for r in recs[:200]:
        rec.submit(r)
    assert rec.flush(30)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM inspections").fetchone()[0] == 200
    restarts = cp.restarts
    t0 = time.monotonic()
    for r in recs[200:2000]:
        rec.submit(r)
    assert rec.flush(60)
    held = time.monotonic() - t0
    assert cp.restarts == restarts  # the snapshot held the log
    assert cp.restart_due
    assert held < 30, held  # not a busy timeout per batch
    reader.execute("COMMIT")
    reader.close()
    for r in recs[2000:]:
        rec.submit(r)
    assert rec.close(60, parts_seen=3000), rec.close_problem
    assert cp.restarts > restarts
    store.close()
    assert _count(path) == 3000


def test_a_failing_checkpointer_hands_the_log_back_to_sqlite(tmp_path, monkeypatch):
    path = tmp_path / "s.db"
    store = Store(f"sqlite:///{path}")
    run = _run()

    def refuse(*a, **kw):
        raise sqlite3.OperationalError("unable to open database file")

    rec = Recorder(store, run=run, on_committed=lambda b: None)
    monkeypatch.setattr(rec.checkpointer, "_connect", refuse)
    rec.start()
    for r in _records(run, 1500):
        rec.submit(r)
    assert rec.flush(60)
    cp = rec.checkpointer
    assert cp is not None and isinstance(cp.error, sqlite3.OperationalError)
    with store.engine.connect() as c:
        dbapi = c.connection.dbapi_connection
        assert dbapi is not None
        assert dbapi.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == checkpoint.SQLITE_DEFAULT
    # SQLite's own checkpoints kept the log near its 1000 pages.
    assert _log_pages(path) < 2500
    assert rec.close(60, parts_seen=1500), rec.close_problem
    store.close()
    assert _count(path) == 1500


def test_switched_off_sqlite_checkpoints_itself(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    assert Recorder(store, run=_run(), on_committed=lambda b: None, wal_checkpoints=False).checkpointer is None
    store.close()


CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from tests.core.test_wal_checkpoint import _records, _run
    from inspector_core.store import Recorder, Store

    store = Store({url!r})
    run = _run()

    def committed(batch):
        cp = rec.checkpointer
        print(" ".join([str(cp.restarts)] + [r.uid for r in batch]), flush=True)

    rec = Recorder(store, run=run, on_committed=committed, max_batch=100)
    rec.checkpointer.every_pages, rec.checkpointer.restart_pages = 100, 400
    rec.start()
    for _ in range(100):
        for r in _records(run, 2000):
            rec.submit(r)
    """
)


@pytest.mark.parametrize("kill_after_restarts", [1, 3])
def test_committed_verdicts_survive_kill_9_while_checkpointing(tmp_path, kill_after_restarts):
    """The writer saturated, passive checkpoints running beside it and the log restarted: every
    verdict reported as committed when ``kill -9`` lands is in the database afterwards."""
    path = tmp_path / "s.db"
    url = f"sqlite:///{path}"
    Store(url).close()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(root=str(ROOT), url=url)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    reported: list[str] = []
    deadline = time.monotonic() + 90
    try:
        for line in proc.stdout:
            restarts, *uids = line.decode().split()
            reported += uids
            if int(restarts) >= kill_after_restarts and len(reported) >= 1000 or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate(10)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, err.decode()
    for line in rest.split(b"\n")[:-1]:  # whole lines printed before the kill landed: reported too
        reported += line.decode().split()[1:]
    assert len(reported) >= 1000, (len(reported), err)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {u for (u,) in db.execute("SELECT uid FROM inspections")}
    missing = [u for u in reported if u not in stored]
    assert not missing, f"{len(missing)} of {len(reported)} reported verdicts lost: {json.dumps(missing[:3])}"


def test_a_paused_writer_has_what_it_wrote_checkpointed(tmp_path):
    """Fewer pages than a checkpoint's worth, then the line pauses: the thread checkpoints them
    ``idle_s`` after the last commit (not only once the next thousand pages have come)."""
    path = tmp_path / "s.db"
    store = Store(f"sqlite:///{path}")
    run = _run()
    rec = Recorder(store, run=run, on_committed=lambda b: None)
    cp = rec.checkpointer
    assert cp is not None
    cp.idle_s = 0.3
    rec.start()
    for r in _records(run, 20):
        rec.submit(r)
    assert rec.flush(30)
    assert cp.checkpoints == 0  # 20 verdicts are far from the 1000 pages
    deadline = time.monotonic() + 10
    while cp.checkpoints == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cp.checkpoints == 1 and cp.log_pages > 0
    assert rec.close(30, parts_seen=20), rec.close_problem
    store.close()
