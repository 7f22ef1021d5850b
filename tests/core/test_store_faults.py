"""The store under faults: a database that stalls (packets held, not refused), records it refuses,
a spool replayed elsewhere or of an unknown format, a full queue, a kill during the first
migration, and readers that must not write. Real PostgreSQL through tests/tcp_proxy.py."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, select

from inspector_core.store import (
    DefectRecord,
    InspectionRecord,
    Recorder,
    RunRecord,
    Spool,
    SpoolError,
    Store,
    StoreError,
    schema,
    spool_file,
    utcnow,
)
from tests.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]


def run_of(station: str = "line1") -> RunRecord:
    return RunRecord(
        station,
        hostname="test",
        software_version="0",
        plugins={},
        config_yaml=f"name: {station}\n",
        config_hash="c" * 64,
        models={},
    )


def part(i: int, **kw) -> InspectionRecord:
    now = utcnow()
    return InspectionRecord(
        uuid.uuid4().hex, None, None, i, f"P-{i:05d}", now, now, kw.pop("verdict", "PASS"), 1.0, **kw
    )


def via(proxy: TcpProxy, pg_url: str) -> str:
    return pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")


def plain(pg_url: str) -> str:
    return pg_url.replace("postgresql+psycopg://", "postgresql://")


def rows(pg_url: str, sql: str) -> list[tuple]:
    with psycopg.connect(plain(pg_url)) as c:
        return c.execute(sql).fetchall()


def wait_for(cond, timeout: float, step: float = 0.05) -> float:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(step)
    return time.monotonic() - t0


@pytest.fixture
def proxy():
    p = TcpProxy(("127.0.0.1", 5432))
    p.start()
    yield p
    p.stop()


# ---------------------------------------------------------------------------- a database that stalls


def test_stalled_database_engages_the_spool_within_seconds(tmp_path, pg_url, proxy):
    """Item 4: packets held (not refused) used to stall the writer for good. Now the write is cut
    after write_timeout_s, the spool engages, submit never waits long, and after the stall every
    verdict is in the database once; a verdict is reported only once it is there."""
    Store(pg_url).close()
    store = Store(via(proxy, pg_url), migrate=False)
    not_yet_committed: list[str] = []

    def on_committed(batch: list[InspectionRecord]) -> None:
        uids = {r.uid for r in batch}
        stored = {u for (u,) in rows(pg_url, "SELECT uid FROM inspections")}
        not_yet_committed.extend(uids - stored)
        reported.extend(uids)

    reported: list[str] = []
    rec = Recorder(store, run=run_of(), on_committed=on_committed, spool_dir=tmp_path, write_timeout_s=2.0, retry_s=0.5)
    rec.start()
    for i in range(5):
        rec.submit(part(i))
    wait_for(lambda: rec.committed == 5, 10)
    proxy.stall()
    t0 = time.monotonic()
    slowest = 0.0
    for i in range(5, 25):
        s = time.monotonic()
        rec.submit(part(i))
        slowest = max(slowest, time.monotonic() - s)
        time.sleep(0.05)
    wait_for(lambda: rec.outage and rec.waiting > 0, 10)
    engaged = time.monotonic() - t0
    assert engaged < 6, f"spool engaged {engaged:.1f} s after the stall"
    assert slowest < 0.5  # the station never waited on the stalled database
    wait_for(lambda: rec.waiting == 20, 10)
    assert len(reported) == 5  # spooled verdicts are not reported yet
    proxy.resume()
    wait_for(lambda: not rec.outage and rec.waiting == 0, 20)
    assert rec.close(10, parts_seen=25)
    store.close()
    uids = [u for (u,) in rows(pg_url, "SELECT uid FROM inspections")]
    assert len(uids) == 25 == len(set(uids))
    assert sorted(reported) == sorted(set(reported)) == sorted(uids)
    assert not_yet_committed == []
    kinds = [k for (k,) in rows(pg_url, "SELECT kind FROM events ORDER BY id")]
    assert kinds == ["store_unreachable", "store_recovered"]
    assert rows(pg_url, "SELECT parts_seen FROM runs") == [(25,)]


def test_every_call_has_a_bounded_time(pg_url, proxy):
    """Connect, statement and commit are bounded: a stalled database raises within the time."""
    Store(pg_url).close()
    store = Store(via(proxy, pg_url), migrate=False, call_timeout_s=1.5, connect_timeout_s=2)
    store.ping()
    proxy.stall()
    for call in (store.ping, store.current_revision, lambda: store.write([part(0, station="x", run_uid="y")])):
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="no answer within 1.5 s|cannot reach"):
            call()
        assert time.monotonic() - t0 < 5
    store.engine.dispose()
    t0 = time.monotonic()
    with pytest.raises(StoreError):
        store.ping()  # a new connection: connect_timeout
    assert time.monotonic() - t0 < 5
    proxy.resume()
    store.ping()
    store.close()
    eng = Store(pg_url, migrate=False).engine
    with eng.connect() as c:
        assert c.exec_driver_sql("SHOW statement_timeout").scalar() == "30s"
    eng.dispose()


def test_a_locked_sqlite_store_is_bounded_too(tmp_path):
    """SQLite: a lock held elsewhere costs at most the call's time, not the whole busy timeout."""
    db = tmp_path / "s.db"
    store = Store(f"sqlite:///{db}", call_timeout_s=1.0, busy_timeout_s=30)
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    t0 = time.monotonic()
    with pytest.raises(Exception, match="database is locked"):
        store.station_id("line1")
    assert time.monotonic() - t0 < 3
    blocker.execute("ROLLBACK")
    assert store.station_id("line1") == 1
    with store.engine.connect() as c:  # readers keep the store's own busy timeout
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    store.close()


# ---------------------------------------------------------------------------- records the database refuses


def test_refused_records_are_set_aside_and_the_writer_goes_on(tmp_path, pg_url):
    """Item 3: a record the database refuses used to kill the writer thread with no error set.
    Now each record of a refused batch is tried alone; only the bad ones are set aside (spool
    table ``refused``) with a ``record_refused`` event; the rest is written, the writer goes on."""
    store = Store(pg_url)
    reported: list[str] = []
    rec = Recorder(store, run=run_of(), on_committed=lambda b: reported.extend(r.uid for r in b), spool_dir=tmp_path)
    rec.start()
    nul = part(1)
    nul.part_id = "bad\x00id"  # PostgreSQL text cannot hold NUL
    huge = part(3, defects=[DefectRecord("s", "p", "scratch", 0.9, True, (2**40, 0, 1, 1), None, None, {}, "m")])
    batch = [part(0), nul, part(2), huge, part(4)]
    with rec._cond:  # the writer takes none of them until all five are queued: one batch
        for r in batch:
            rec.submit(r)
    wait_for(lambda: rec.committed + rec.refused == 5, 10)
    rec.event("operator_note", "a note with a \x00 in it")  # an event it refuses is set aside too
    for i in range(5, 8):  # and the writer goes on
        rec.submit(part(i))
    wait_for(lambda: rec.committed == 6, 10)
    assert rec.error is None and rec._thread.is_alive()
    assert rec.close(10, parts_seen=8)
    store.close()
    stored = {u for (u,) in rows(pg_url, "SELECT uid FROM inspections")}
    assert stored == set(reported) and len(stored) == 6 and not {nul.uid, huge.uid} & stored
    events = rows(pg_url, "SELECT kind, message FROM events WHERE kind = 'record_refused' ORDER BY id")
    assert len(events) == 2
    assert nul.uid in events[0][1] and "NUL" in events[0][1]
    assert huge.uid in events[1][1] and "out of range" in events[1][1]
    spool = Spool(spool_file(tmp_path, "line1", store.display_url), station="line1", database=store.display_url)
    refused = spool.refused()
    assert [uid for _, uid, _ in refused[:2]] == [nul.uid, huge.uid]
    assert [kind for kind, _, _ in refused] == ["inspection", "inspection", "event"]
    spool.close()


# ---------------------------------------------------------------------------- the spool


def test_station_starts_with_its_database_down_and_the_next_run_writes_the_spool(tmp_path, pg_url):
    """Items 3 and 21: records carry no database ids. A run that started and ended while the
    database was away is recorded from the spool by the next run: its run row (with its end),
    its verdicts and its outage events, attached by station name and run uid even though the
    database gave other stations the ids first."""
    proxy = TcpProxy(("127.0.0.1", 5432))  # not started: connections are refused
    url = via(proxy, pg_url)
    down = Store(url, migrate=False)
    first = run_of("line1")
    rec = Recorder(
        down, run=first, on_committed=lambda b: pytest.fail("reported while the database was away"), spool_dir=tmp_path
    )
    rec.start()
    assert rec.outage and rec.run_id is None
    spooled = [part(i) for i in range(6)]
    for r in spooled:
        rec.submit(r)
    rec.event("camera_gap", "the camera skipped a frame")
    assert rec.close(10, parts_seen=6)
    assert rec.waiting == 6 and rec.outage
    down.close()

    # The plant database meanwhile got other stations (so line1's ids differ from anything local).
    store = Store(pg_url)
    store.begin_run("line0", hostname="h", software_version="0", plugins={}, config_yaml="", config_hash="0", models={})
    store.begin_run("line2", hostname="h", software_version="0", plugins={}, config_yaml="", config_hash="0", models={})
    store.close()
    proxy.start()
    try:
        up = Store(url, migrate=False)
        reported: list[str] = []
        second = run_of("line1")
        rec2 = Recorder(up, run=second, on_committed=lambda b: reported.extend(r.uid for r in b), spool_dir=tmp_path)
        rec2.start()
        later = part(100)
        rec2.submit(later)
        wait_for(lambda: rec2.waiting == 0 and rec2.committed == 7, 10)
        assert rec2.close(10, parts_seen=1)
        up.close()
    finally:
        proxy.stop()
    assert sorted(reported) == sorted([r.uid for r in spooled] + [later.uid])
    got = rows(
        pg_url,
        "SELECT r.uid, s.name, r.parts_seen, r.ended_at IS NOT NULL, count(i.id) FROM runs r "
        "JOIN stations s ON s.id = r.station_id LEFT JOIN inspections i ON i.run_id = r.id "
        "AND i.station_id = s.id WHERE s.name = 'line1' GROUP BY r.uid, s.name, r.parts_seen, "
        "r.ended_at ORDER BY r.parts_seen DESC",
    )
    assert got == [(first.uid, "line1", 6, True, 6), (second.uid, "line1", 1, True, 1)]
    events = rows(pg_url, "SELECT r.uid, e.kind FROM events e JOIN runs r ON r.id = e.run_id ORDER BY e.id")
    assert [k for u, k in events if u == first.uid] == ["store_unreachable", "camera_gap", "run_ended_in_outage"]


def test_a_spool_is_never_drained_into_another_database(tmp_path):
    a, b = "postgresql+psycopg://u@db1/plant", "postgresql+psycopg://u@db2/plant"
    assert spool_file(tmp_path, "line1", a) != spool_file(tmp_path, "line1", b)
    path = spool_file(tmp_path, "line1", a)
    Spool(path, station="line1", database=a).close()
    with pytest.raises(
        SpoolError,
        match=r"belongs to station 'line1' and database .*db1.*not to station 'line1' "
        r"and .*db2.*never drained elsewhere",
    ):
        Spool(path, station="line1", database=b)
    with pytest.raises(SpoolError, match="belongs to station 'line1'"):
        Spool(path, station="line9", database=a)


def test_a_spool_of_an_unknown_format_is_refused(tmp_path):
    path = tmp_path / "x.spool.db"
    Spool(path, station="s", database="d").close()
    with sqlite3.connect(path) as c:
        c.execute("UPDATE meta SET value = '99' WHERE key = 'format'")
    with pytest.raises(SpoolError, match=r"format '99', this release reads format 2"):
        Spool(path, station="s", database="d")
    legacy = tmp_path / "old.spool.db"
    with sqlite3.connect(legacy) as c:
        c.execute("CREATE TABLE spool (id INTEGER PRIMARY KEY, record TEXT NOT NULL)")
    with pytest.raises(SpoolError, match="format 1 .*database ids"):
        Spool(legacy, station="s", database="d")


def test_spooled_records_are_validated_on_read(tmp_path):
    """A row that does not validate (or names another run than the row it is in) is moved to
    ``refused``, never written, never lost; the others are read."""
    spool = Spool(tmp_path / "s.db", station="line1", database="d")
    run, other = run_of(), run_of()
    good = [part(i, station="line1", run_uid=run.uid) for i in range(3)]
    spool.put(run, good)
    with spool.db:
        spool.db.execute("UPDATE items SET record = json_set(record, '$.seq', 'many') WHERE id = 2")
        spool.db.execute(
            "INSERT INTO items (kind, run_uid, record) VALUES ('inspection', ?, ?)",
            (run.uid, json.dumps({"not": "a record"})),
        )
    spool.put(other, [part(9, station="line1", run_uid=other.uid)])
    with spool.db:  # a record moved under another run
        spool.db.execute("UPDATE items SET run_uid = ? WHERE id = 5", (run.uid,))
    items = spool.peek(10)
    assert [i.record.uid for i in items] == [good[0].uid, good[2].uid]
    assert all(i.record.station_id is None and i.record.run_id is None for i in items)
    errors = [e for _, _, e in spool.refused()]
    assert len(errors) == 3 and "seq" in errors[0] and "names run" in errors[2]
    spool.close()


def test_an_older_releases_spool_is_named_not_drained(tmp_path):
    legacy = tmp_path / "line1.spool.db"
    with sqlite3.connect(legacy) as c:
        c.execute("CREATE TABLE spool (id INTEGER PRIMARY KEY, record TEXT NOT NULL)")
        c.executemany("INSERT INTO spool (record) VALUES (?)", [("{}",), ("{}",)])
    db = tmp_path / "s.db"
    store = Store(f"sqlite:///{db}")
    rec = Recorder(store, run=run_of(), on_committed=lambda b: None, spool_dir=tmp_path)
    rec.start()
    assert rec.close(10, parts_seen=0)
    store.close()
    (message,) = sqlite3.connect(db).execute("SELECT message FROM events WHERE kind = 'legacy_spool'").fetchone()
    assert f"spool {legacy} holds 2 verdicts (format 1" in message and "does not drain it" in message
    assert sqlite3.connect(legacy).execute("SELECT count(*) FROM spool").fetchone()[0] == 2


# ---------------------------------------------------------------------------- the queue


def test_a_full_queue_makes_the_station_wait_and_says_so(tmp_path):
    """The queue is bounded; a full one blocks submit (policy wait), recorded as events."""
    db = tmp_path / "s.db"
    store = Store(f"sqlite:///{db}", busy_timeout_s=30)
    rec = Recorder(store, run=run_of(), on_committed=lambda b: None, spool_dir=tmp_path, max_queue=4)
    rec.start()
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the database is busy: the writer waits in its busy timeout
    done = threading.Event()

    def producer():
        for i in range(12):
            rec.submit(part(i))
        done.set()

    t = threading.Thread(target=producer, daemon=True)
    t.start()
    time.sleep(1.0)
    assert not done.is_set() and len(rec._pending) == 4  # bounded, and the producer waits
    blocker.execute("ROLLBACK")
    blocker.close()
    assert done.wait(15)
    assert rec.close(10, parts_seen=12)
    store.close()
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM inspections").fetchone()[0] == 12
    kinds = [k for (k,) in con.execute("SELECT kind FROM events ORDER BY id")]
    assert kinds[:2] == ["recorder_backpressure", "recorder_backpressure_ended"]
    assert "overload policy wait" in con.execute("SELECT message FROM events ORDER BY id").fetchone()[0]


def test_drop_oldest_lets_not_inspected_records_past_a_full_queue(tmp_path):
    db = tmp_path / "s.db"
    store = Store(f"sqlite:///{db}", busy_timeout_s=30)
    rec = Recorder(
        store, run=run_of(), on_committed=lambda b: None, spool_dir=tmp_path, max_queue=3, overload="drop-oldest"
    )
    rec.start()
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    rec.submit(part(0))
    wait_for(lambda: not rec._pending and rec._busy, 5)  # the writer took it and waits on the lock
    for i in range(1, 4):
        rec.submit(part(i))
    t0 = time.monotonic()
    for i in range(4, 7):  # the capture thread's: never waits on the first bound
        rec.submit(part(i, verdict="NOT_INSPECTED"))
    assert time.monotonic() - t0 < 0.5 and len(rec._pending) == 6
    waited = threading.Event()
    threading.Thread(target=lambda: (rec.submit(part(7)), waited.set()), daemon=True).start()
    assert not waited.wait(0.5)  # an inspected verdict waits for room: it is never dropped
    blocker.execute("ROLLBACK")
    blocker.close()
    assert waited.wait(10)
    assert rec.close(10, parts_seen=8)
    store.close()
    assert sqlite3.connect(db).execute("SELECT count(*) FROM inspections").fetchone()[0] == 8


def test_close_has_a_time_limit_and_says_what_is_left(tmp_path, pg_url, proxy):
    Store(pg_url).close()
    store = Store(via(proxy, pg_url), migrate=False)
    rec = Recorder(store, run=run_of(), on_committed=lambda b: None, spool_dir=tmp_path, write_timeout_s=5.0)
    rec.start()
    proxy.stall()
    for i in range(3):
        rec.submit(part(i))
    time.sleep(0.2)
    t0 = time.monotonic()
    assert rec.close(0.5, parts_seen=3) is False
    assert time.monotonic() - t0 < 1.5
    assert "did not finish within 0.5 s" in rec.close_problem
    proxy.resume()
    rec._thread.join(20)
    assert not rec._thread.is_alive()


# ---------------------------------------------------------------------------- events


def test_events_are_written_by_the_recorder_thread_only(tmp_path, monkeypatch):
    """Item 11: events used to be written from the main thread (a second writer), where a
    database that is down blocked the main loop."""
    import yaml

    from inspector_core.plugins import load
    from inspector_core.runtime.config import load_station
    from inspector_core.runtime.station import StationRuntime

    writers: list[str] = []
    original = Store.add_events

    def spy(self, events, **kw):
        writers.append(threading.current_thread().name)
        return original(self, events, **kw)

    monkeypatch.setattr(Store, "add_events", spy)
    path = tmp_path / "station.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "line1",
                "source": {"type": "synthetic", "config": {"count": 12, "width": 320, "height": 240}},
                "steps": [{"detector": "bright_spot", "config": {"threshold": 200}}],
                "store": {"url": f"sqlite:///{tmp_path / 's.db'}"},
            }
        )
    )
    reg = load()
    runtime = StationRuntime(
        load_station(path, reg), reg, on_progress=lambda tally: runtime.event("progress", f"{tally.total} parts")
    )
    assert runtime.run().total == 12
    assert writers and set(writers) == {"inspector-recorder"}
    kinds = [k for (k,) in sqlite3.connect(tmp_path / "s.db").execute("SELECT kind FROM events")]
    assert "progress" in kinds


# ---------------------------------------------------------------------------- migrations


MIGRATE = (
    "import sys; from inspector_core.store import Store; print('go', flush=True); "
    "Store(sys.argv[1]).close(); print('done', flush=True)"
)


def _kill_while_migrating(url: str, rng: random.Random, span: float) -> str:
    proc = subprocess.Popen(
        [sys.executable, "-c", MIGRATE, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout.readline().strip() == "go"
    time.sleep(rng.uniform(0.0, span))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    return "done" if proc.returncode == 0 else "killed"


def _migration_span(url: str) -> float:
    """How long a first migration takes, from 'go' (imports done) to its end."""
    proc = subprocess.Popen([sys.executable, "-c", MIGRATE, url], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "go"
    t0 = time.monotonic()
    assert proc.stdout.readline().strip() == "done"
    span = time.monotonic() - t0
    proc.wait(10)
    return span


def test_kill_9_during_the_first_migration_leaves_a_store_that_starts(tmp_path):
    """Item 17: the driver committed each CREATE TABLE at once, so a kill during the first start
    left 'table stations already exists' forever. Now migrations are one transaction."""
    rng = random.Random(17)
    span = _migration_span(f"sqlite:///{tmp_path / 'probe.db'}")
    outcomes = []
    for k in range(5):
        db = tmp_path / f"s{k}.db"
        url = f"sqlite:///{db}"
        outcomes.append(_kill_while_migrating(url, rng, span))
        tables = set()
        if db.exists():
            tables = {n for (n,) in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        # All or nothing: never tables without the revision that says what they are.
        assert not tables or "alembic_version" in tables, tables
        store = Store(url)  # the retried start succeeds
        assert store.check_revision() == store.head_revision()
        store.close()
    assert outcomes.count("killed") >= 3, outcomes


def test_a_store_left_half_migrated_by_an_older_release_says_what_to_do(tmp_path):
    db = tmp_path / "half.db"
    with sqlite3.connect(db) as c:
        c.execute(
            "CREATE TABLE stations (id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL UNIQUE, "
            "created_at DATETIME NOT NULL)"
        )
    with pytest.raises(
        StoreError,
        match=r"has some of Inspector's tables but no schema revision .*stations already "
        r"exists.*killed while migrating.*delete the file",
    ):
        Store(f"sqlite:///{db}")


def test_stations_starting_together_on_a_new_sqlite_file_all_start(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
        )
        for _ in range(2)
    ]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0 and out.split() == ["go", "done"], err
    store = Store(url, migrate=False)
    assert store.check_revision() == store.head_revision()
    store.close()


def test_kill_9_during_the_first_migration_on_postgres(pg_url):
    rng = random.Random(5)
    span = 0.6  # a first migration on PostgreSQL here: about 0.3-0.8 s
    for _ in range(3):
        _kill_while_migrating(pg_url, rng, span)
        store = Store(pg_url)
        assert store.check_revision() == store.head_revision()
        store.close()


# ---------------------------------------------------------------------------- readers


def test_readers_open_without_migrating_and_check_the_revision(tmp_path, pg_url):
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(StoreError, match=r"holds no Inspector schema .*needs revision \d+.*inspector run"):
        Store(f"sqlite:///{empty}", migrate=False).check_revision()
    assert empty.stat().st_size == 0 and not list(tmp_path.glob("empty.db-*"))  # not a byte written
    with pytest.raises(StoreError, match="no such file"):
        Store(f"sqlite:///{tmp_path / 'nope.db'}", migrate=False).check_revision()
    assert not (tmp_path / "nope.db").exists()

    store = Store(pg_url)
    head = store.head_revision()
    assert Store(pg_url, migrate=False).check_revision() == head
    with store.engine.begin() as c:
        c.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(
        StoreError,
        match=rf"at schema revision 9999, newer than this release knows \(its newest is "
        rf"{head}\); upgrade Inspector",
    ):
        Store(pg_url, migrate=False).check_revision()
    with store.engine.begin() as c:
        c.exec_driver_sql("UPDATE alembic_version SET version_num = '0003'")
    with pytest.raises(
        StoreError,
        match=rf"at schema revision 0003, older than this release's {head}; upgrade "
        r"the database: run a station on it once .*alembic -c .*upgrade head",
    ):
        Store(pg_url, migrate=False).check_revision()
    assert rows(pg_url, "SELECT version_num FROM alembic_version") == [("0003",)]  # the reader wrote nothing
    store.close()


def test_cannot_reach_is_told_apart_from_a_refusal(pg_url):
    free = TcpProxy(("127.0.0.1", 5432)).port  # nothing listens there
    with pytest.raises(StoreError, match="cannot reach the database .*check that the server runs"):
        Store(f"postgresql+psycopg://postgres@127.0.0.1:{free}/x", migrate=False).check_revision()
    with pytest.raises(StoreError, match="cannot reach the database"):
        Store("postgresql+psycopg://postgres@no-such-host.invalid/x", migrate=False).check_revision()
    with pytest.raises(
        StoreError,
        match=r"refused the connection .*does not exist.*check the user, password, "
        r"database name",
    ):
        Store(pg_url.rsplit("/", 1)[0] + "/no_such_database", migrate=False).check_revision()
    with pytest.raises(StoreError, match=r"refused the connection .*role .*nobody.* does not exist"):
        Store(pg_url.replace("postgres@", "nobody@"), migrate=False).check_revision()


def test_schema_of_a_migrated_database_matches_the_model(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    with store.engine.connect() as c:
        diff = [d for d in compare_metadata(MigrationContext.configure(c), schema.Base.metadata) if "uid" in str(d)]
    assert diff == []
    engine = create_engine(f"sqlite:///{tmp_path / 's.db'}")
    with engine.connect() as c:
        assert c.execute(select(schema.Run.uid)).all() == []
    engine.dispose()
    store.close()
