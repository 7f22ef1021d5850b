"""Review of the seams between the station, the recorder, the spool and the sinks' delivery
(issue 10, helper R): what one part of the code assumed about another that was not true.
Each test failed before its fix."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from inspector_core.store import InspectionRecord, Recorder, RunRecord, Spool, Store, spool_file, utcnow
from tests.tcp_proxy import TcpProxy


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


def part(i: int, run: RunRecord) -> InspectionRecord:
    now = utcnow()
    return InspectionRecord(
        uuid.uuid4().hex, None, None, i, f"P-{i:05d}", now, now, "PASS", 1.0, run_uid=run.uid, station=run.station
    )


def wait_for(cond, timeout: float, step: float = 0.05) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(step)


def rows(pg_url: str, sql: str) -> list[tuple]:
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as c:
        return c.execute(sql).fetchall()


@pytest.fixture
def proxy():
    p = TcpProxy(("127.0.0.1", 5432))
    p.start()
    yield p
    p.stop()


# ---------------------------------------------------------------------------- the recorder's last words


def test_events_raised_while_the_recorder_closes_are_written(tmp_path, pg_url, proxy):
    """The database comes back after the last flush (e.g. during the sinks' drain): close()
    drains the spool and ends the run, but the ``store_recovered`` event it raised on the way
    was appended to a queue nobody read any more: the outage was left without its end."""
    Store(pg_url).close()
    store = Store(pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"), migrate=False)
    run = run_of()
    # retry_s long: the writer does not try the database again by itself before close().
    rec = Recorder(store, run=run, on_committed=lambda b: None, spool_dir=tmp_path, write_timeout_s=2.0, retry_s=30.0)
    rec.start()
    rec.submit(part(0, run))
    wait_for(lambda: rec.committed == 1, 10)
    proxy.cut()
    rec.submit(part(1, run))
    rec.submit(part(2, run))
    wait_for(lambda: rec.outage and rec.waiting == 2, 10)
    proxy.start()
    assert rec.close(10, parts_seen=3)
    store.close()
    assert rows(pg_url, "SELECT count(*) FROM inspections") == [(3,)]
    assert rows(pg_url, "SELECT parts_seen FROM runs") == [(3,)]
    kinds = [k for (k,) in rows(pg_url, "SELECT kind FROM events ORDER BY id")]
    assert kinds == ["store_unreachable", "store_recovered"]


def test_a_spool_that_fails_at_the_end_of_the_run_is_not_a_clean_close(tmp_path, pg_url, proxy):
    """The end of a run spooled during an outage: if the spool itself fails there, the writer
    thread died with the exception (only the thread excepthook saw it), ``error`` stayed unset
    and ``close()`` returned True, so the station exited as if the run's end were kept."""
    store = Store(pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"), migrate=False)
    proxy.cut()  # down from the start: the whole run goes to the spool
    run = run_of()
    rec = Recorder(store, run=run, on_committed=lambda b: None, spool_dir=tmp_path, write_timeout_s=2.0, retry_s=30.0)
    rec.start()
    assert rec.outage
    rec.submit(part(0, run))
    wait_for(lambda: rec.waiting == 1, 10)

    def broken(*_a, **_k):
        raise sqlite3.OperationalError("disk I/O error")

    rec.spool.end_run = broken  # type: ignore[method-assign]
    assert rec.close(10, parts_seen=1) is False
    assert rec.error is not None
    assert rec.close_problem is not None and "disk I/O error" in rec.close_problem
    store.close()


# ---------------------------------------------------------------------------- a run wholly in an outage


def _station_file(tmp_path: Path, url: str, count: int, sink: Path | None = None) -> Path:
    path = tmp_path / "line.yaml"
    sinks = f"sinks: [{{type: file, config: {{path: '{sink}'}}}}]\n" if sink else ""
    path.write_text(
        "name: line\n"
        f"source: {{type: synthetic, config: {{count: {count}, width: 320, height: 240}}}}\n"
        "steps: [{detector: bright_spot, config: {threshold: 200}}]\n"
        f"store: {{url: '{url}', spool: '{tmp_path / 'spool'}'}}\n" + sinks
    )
    return path


def _run(path: Path):
    from inspector_core.plugins import load
    from inspector_core.runtime.config import load_station
    from inspector_core.runtime.station import StationRuntime

    reg = load()
    runtime = StationRuntime(load_station(path, reg), reg)
    runtime.run()
    return runtime


def test_verdicts_of_a_run_wholly_in_an_outage_reach_its_sink(tmp_path, pg_url, monkeypatch):
    """A station's first run with a sink while the plant database is down: no cursor can be
    opened, every verdict waits in the spool. The next run drains the spool (recording that run
    after its own) and only then opens the new cursor 'just before the current run's first
    inspection', i.e. after the drained ones: they were committed but never sent."""
    import json

    proxy = TcpProxy(("127.0.0.1", 5432))  # not started: refused
    url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    sink = tmp_path / "reported.jsonl"
    first = _run(_station_file(tmp_path, url, 5, sink))
    assert first.run_id is None and first.failure and "wait in the spool" in first.failure
    proxy.start()
    from inspector_core.store.outbox import Outbox

    real_open = Outbox.open

    def late_open(self, *a, **k):  # a loaded machine: the writer's drain commits first
        time.sleep(1.0)
        return real_open(self, *a, **k)

    monkeypatch.setattr(Outbox, "open", late_open)
    try:
        second = _run(_station_file(tmp_path, url, 3, sink))
    finally:
        proxy.stop()
    assert second.failure is None
    stored = [u for (u,) in rows(pg_url, "SELECT uid FROM inspections ORDER BY id")]
    assert len(stored) == 8
    reported = [json.loads(line)["inspection_uid"] for line in sink.read_text().splitlines()]
    assert sorted(reported) == sorted(stored)


def test_summary_of_a_run_wholly_in_an_outage_names_the_run(tmp_path, pg_url):
    """`inspector run` while the database is down the whole run: exit 1 with the spool named
    (as before), and the summary's title said 'run None of station line'. It names the run by
    its uid, the key the spool and later the runs table know it by."""
    proxy = TcpProxy(("127.0.0.1", 5432))  # not started: refused
    url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    path = _station_file(tmp_path, url, 3)
    done = subprocess.run(
        [sys.executable, "-m", "inspector_core.cli", "run", str(path), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "COLUMNS": "200"},
    )
    assert done.returncode == 1, done.stderr
    assert "wait in the spool" in done.stderr
    out = done.stdout + done.stderr
    assert "run None" not in out
    assert "of station line" in out and "not yet in the store" in out


def test_a_spool_drained_at_start_is_handed_on_without_an_error(tmp_path, caplog, monkeypatch):
    """The writer starts (and drains what an earlier run left in the spool) before the station
    has built its sinks' delivery: every batch drained then hit an AttributeError in the
    station's on_committed ('handing N committed verdicts on' logged with a traceback)."""
    db = tmp_path / "line.db"
    url = f"sqlite:///{db}"
    Store(url).close()
    earlier = run_of("line")
    spool = Spool(
        spool_file(tmp_path / "spool", "line", Store(url, migrate=False).display_url),
        station="line",
        database=Store(url, migrate=False).display_url,
    )
    spool.put(earlier, [part(i, earlier) for i in range(4)], [])
    spool.close()
    from inspector_core.runtime import station as station_module

    real = station_module.Delivery.__init__

    def slow_init(self, *a, **k):  # a loaded machine: the writer's drain commits first
        time.sleep(0.5)
        real(self, *a, **k)

    monkeypatch.setattr(station_module.Delivery, "__init__", slow_init)
    with caplog.at_level(logging.ERROR):
        runtime = _run(_station_file(tmp_path, url, 2))
    assert runtime.failure is None
    assert [n for (n,) in sqlite3.connect(db).execute("SELECT count(*) FROM inspections")] == [6]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert runtime.tally.total == 2


def test_a_spool_the_station_cannot_use_is_a_clear_error_at_start(tmp_path):
    """The spool refuses a file of another format (or station, or database) when it is opened,
    with a SpoolError naming the file and the remedy; the station built its Recorder (which
    opens the spool) outside the `try` that turns store errors into a StationError, so
    `inspector run` ended in a SpoolError traceback instead of that message."""
    from inspector_core.runtime.station import StationError

    url = f"sqlite:///{tmp_path / 'line.db'}"
    display = Store(url, migrate=False).display_url
    path = spool_file(tmp_path / "spool", "line", display)
    Spool(path, station="line", database=display).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'format'")
    db.close()
    with pytest.raises(StationError, match=r"format '99'.*move it aside"):
        _run(_station_file(tmp_path, url, 2))


def test_a_last_batch_the_spool_cannot_keep_is_not_a_clean_close(tmp_path, pg_url, proxy):
    """The same on the writer's last batch: events only (no verdict held), the spool failing,
    the writer stopped without recording the run's end and close() returned True."""
    store = Store(pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"), migrate=False)
    proxy.cut()
    run = run_of()
    rec = Recorder(store, run=run, on_committed=lambda b: None, spool_dir=tmp_path, write_timeout_s=2.0, retry_s=30.0)
    rec.start()
    assert rec.flush(10)

    def broken(*_a, **_k):
        raise sqlite3.OperationalError("disk I/O error")

    rec.spool.put = broken  # type: ignore[method-assign]
    rec.event("source_failed", "the camera is gone")
    assert rec.close(10, parts_seen=0) is False
    assert rec.close_problem is not None and "disk I/O error" in rec.close_problem
    store.close()


# ---------------------------------------------------------------------------- the sinks' drain


def test_the_sinks_drain_is_bounded_when_the_database_stalls_at_shutdown(pg_url, proxy, tmp_path):
    """At shutdown the delivery counts each sink's backlog in the store after the drain. With
    the database silent, each count waited for the store's call timeout (30 s) per sink, after
    a drain of 0.5 s (ABORT_DRAIN_S, a second Ctrl-C): the station hung ~30 s longer per sink.
    Now those last calls get a few seconds and the backlog is reported as unknown."""
    import threading
    from datetime import UTC, datetime

    from inspector_core.contract import Report, Sink
    from inspector_core.runtime import delivery
    from inspector_core.store.outbox import Outbox

    Store(pg_url).close()
    store = Store(pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"), migrate=False)
    sid, rid = store.begin_run(
        "drain", hostname="h", software_version="0", plugins={}, config_yaml="", config_hash="0", models={}
    )
    got: list[str] = []
    three = threading.Event()

    class Collect(Sink):
        name = "collect"

        def send(self, report: Report) -> None:
            got.append(report.inspection_uid)
            if len(got) == 3:
                three.set()

    events: list[tuple[str, str]] = []
    d = delivery.Delivery(
        [(k, Collect(None, station_dir=tmp_path)) for k in ("a", "b")],
        Outbox(store, "drain"),
        on_event=lambda k, m: events.append((k, m)),
        run_id=lambda: rid,
    )
    d.start()
    now = datetime.now(UTC)
    store.write([InspectionRecord(f"{i:032x}", sid, rid, i, f"p{i}", now, now, "PASS", 1.0) for i in range(3)])
    assert three.wait(10)
    wait_for(lambda: len(got) == 6, 10)
    time.sleep(1.2)  # past cursor_every_s: each worker has written its cursor and waits
    proxy.stall()
    t0 = time.monotonic()
    backlog = d.close(drain_s=0.5)
    took = time.monotonic() - t0
    proxy.resume()
    store.close()
    assert took < 8, f"close took {took:.1f} s"
    assert backlog == {"a": None, "b": None}
    assert [k for k, _ in events] == ["sink_backlog"] and "unknown" in events[0][1]


def test_a_verdict_committed_just_before_the_drain_is_delivered(tmp_path):
    """A sink worker read its backlog (empty), then the recorder committed the run's last
    verdict and the station began the drain; the worker saw `draining` set after an empty read
    and stopped: that verdict was committed and never sent in this run (seen as a flake of
    test_outbox.py::test_stations_sharing_a_plant_database_each_deliver_their_own under load).
    Reproduced exactly by doing the commit and the drain's start inside that read."""
    import threading
    from datetime import UTC, datetime

    from inspector_core.contract import Report, Sink
    from inspector_core.runtime import delivery
    from inspector_core.store.outbox import Outbox

    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    sid, rid = store.begin_run(
        "race", hostname="h", software_version="0", plugins={}, config_yaml="", config_hash="0", models={}
    )
    now = datetime.now(UTC)

    def record(i: int) -> InspectionRecord:
        return InspectionRecord(f"{i:032x}", sid, rid, i, f"p{i}", now, now, "PASS", 1.0)

    got: list[str] = []

    class Collect(Sink):
        name = "collect"

        def send(self, report: Report) -> None:
            got.append(report.inspection_uid)

    raced = threading.Event()

    class Racing(Outbox):
        armed = False

        def pending(self, after: int, limit: int):
            found = super().pending(after, limit)
            if self.armed and not found:
                self.armed = False
                store.write([record(1)])  # the recorder's last commit, just after this read
                for w in d.workers:  # and the station's Delivery.close() starting the drain
                    w.draining.set()
                    w.wake.set()
                raced.set()
            return found

    outbox = Racing(store, "race")
    events: list[tuple[str, str]] = []
    d = delivery.Delivery(
        [("collect", Collect(None, station_dir=tmp_path))],
        outbox,
        on_event=lambda k, m: events.append((k, m)),
        run_id=lambda: rid,
    )
    store.write([record(0)])
    d.start()
    wait_for(lambda: got == [f"{0:032x}"], 10)
    outbox.armed = True
    d.wake()
    assert raced.wait(10)
    assert d.close(drain_s=3) == {"collect": 0}, events
    assert got == [f"{0:032x}", f"{1:032x}"]
    store.close()


def test_the_recorder_benchmark_runs_and_checks_close(tmp_path):
    """bench/host_overhead.py (make bench) still built the Recorder without its run (a
    TypeError since the recorder records the run itself) and ignored close()'s result."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "host_overhead", Path(__file__).resolve().parents[2] / "bench" / "host_overhead.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.recorder_rate(tmp_path, 20) > 0


# ---------------------------------------------------------------------------- Ctrl-C during the shutdown


def test_ctrl_c_during_the_sinks_drain_still_ends_the_run(tmp_path):
    """The station restored the default SIGINT handler as soon as the parts were inspected, so
    a Ctrl-C during the shutdown (the sinks' 5 s drain with a webhook that is down, the
    recorder's flush) raised KeyboardInterrupt out of it: a traceback, no end of the run
    (runs.ended_at/parts_seen NULL), the sink_backlog event lost, and a second Ctrl-C could
    never cut the drain short as the delivery promises. The handler now stays until the run is
    ended: Ctrl-C twice during the drain cuts it to ABORT_DRAIN_S and the run ends cleanly."""
    import os
    import signal

    db = tmp_path / "x.db"
    station = tmp_path / "station.yaml"
    station.write_text(
        "name: drain\n"
        "source: {type: synthetic, config: {count: 3, width: 320, height: 240}}\n"
        "steps: [{detector: bright_spot}]\n"
        "sinks: [{type: webhook, config: {url: 'http://127.0.0.1:1/v'}}]\n"
        f"store: {{url: 'sqlite:///{db}'}}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector_core.cli", "run", str(station), "--quiet"],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def committed() -> int:
            if not db.exists():
                return 0
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
                    return c.execute("SELECT count(*) FROM inspections").fetchone()[0]
            except sqlite3.Error:
                return 0

        wait_for(lambda: committed() == 3 or proc.poll() is not None, 30)
        time.sleep(1.0)  # every part inspected and committed: the sinks' drain (5 s) is on
        assert proc.poll() is None, "the drain should still be going on"
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert proc.returncode == 0, err
    assert took < 3.5, f"exit {took:.1f} s after the second Ctrl-C"
    with sqlite3.connect(db) as c:
        ended, parts = c.execute("SELECT ended_at, parts_seen FROM runs").fetchone()
        kinds = [k for (k,) in c.execute("SELECT kind FROM events ORDER BY id")]
    assert ended is not None and parts == 3
    assert "sink_backlog" in kinds and "interrupted" in kinds, kinds


def test_a_station_creates_the_folder_of_its_sqlite_store(tmp_path):
    """The station opens its store without migrating and lets the recorder migrate it when it
    answers; the recorder pings first, and only migrate() made the SQLite file's folder, so a
    store in a folder that does not exist yet (validated fine) was 'unable to open database
    file' and the station could not start. The writer makes the folder before it connects."""
    url = f"sqlite:///{tmp_path / 'data' / 'sub' / 'line.db'}"
    runtime = _run(_station_file(tmp_path, url, 2))
    assert runtime.failure is None and runtime.run_id is not None
    with sqlite3.connect(tmp_path / "data" / "sub" / "line.db") as c:
        assert c.execute("SELECT count(*) FROM inspections").fetchone()[0] == 2


def test_an_abandoned_sink_worker_sends_no_more(tmp_path):
    """After the drain the workers are abandoned; tenacity's stop is only asked after a failed
    attempt, so a slow sink that still accepts kept being sent the rest of its batch (up to
    100 reports) after Delivery.close() had returned, the sinks were reported closed and the
    station had closed its store. Now a worker stops before its next send once abandoned."""
    from datetime import UTC, datetime

    from inspector_core.contract import Report, Sink
    from inspector_core.runtime import delivery
    from inspector_core.store.outbox import Outbox

    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    sid, rid = store.begin_run(
        "slow", hostname="h", software_version="0", plugins={}, config_yaml="", config_hash="0", models={}
    )
    now = datetime.now(UTC)
    got: list[str] = []

    class Slow(Sink):
        name = "slow"

        def send(self, report: Report) -> None:
            time.sleep(0.2)
            got.append(report.inspection_uid)

    d = delivery.Delivery(
        [("slow", Slow(None, station_dir=tmp_path))],
        Outbox(store, "slow"),
        on_event=lambda k, m: None,
        run_id=lambda: rid,
    )
    store.write([InspectionRecord(f"{i:032x}", sid, rid, i, f"p{i}", now, now, "PASS", 1.0) for i in range(30)])
    d.start()
    wait_for(lambda: len(got) >= 1, 10)
    d.close(drain_s=0.5)
    at_close = len(got)
    time.sleep(1.0)
    assert len(got) <= at_close + 1, f"{len(got) - at_close} reports sent after close() returned"
    store.close()
