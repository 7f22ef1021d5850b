"""The sinks' durable outbox: every committed verdict reaches every sink at least once, from the
store, each sink in its own worker; failures and backlogs are recorded, never silent."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import select

from inspector_core import hookimpl
from inspector_core.contract import Report, Sink
from inspector_core.plugins import load
from inspector_core.runtime import delivery
from inspector_core.runtime.station import StationError
from inspector_core.store import DefectRecord, InspectionRecord, Store, schema
from inspector_core.store.outbox import Cursor, Outbox, sink_states
from inspector_core.testing import StationResult, run_station

REPO = Path(__file__).resolve().parents[2]


def _registry(*sinks: type[Sink]):
    class Plugin:
        @staticmethod
        @hookimpl
        def inspector_register_sinks(register):
            for cls in sinks:
                register(cls)

    return load(extra=[("test_sinks", Plugin)])


def _station(count: int, sinks: list[dict], **extra) -> dict:
    return {
        "source": {"type": "synthetic", "config": {"count": count, "width": 320, "height": 240}},
        "steps": [{"detector": "bright_spot"}],
        "sinks": sinks,
        **extra,
    }


def _events(db_url: str, kind: str | None = None) -> list[tuple[str, str]]:
    store = Store(db_url)
    try:
        with store.engine.connect() as c:
            q = select(schema.Event.kind, schema.Event.message).order_by(schema.Event.id)
            if kind:
                q = q.where(schema.Event.kind == kind)
            return [(k, m) for k, m in c.execute(q)]
    finally:
        store.close()


def _all_uids(db_url: str) -> list[str]:
    store = Store(db_url)
    try:
        with store.engine.connect() as c:
            return list(c.scalars(select(schema.Inspection.uid).order_by(schema.Inspection.id)))
    finally:
        store.close()


@pytest.fixture
def quick_retries(monkeypatch):
    """Retries in milliseconds, ``sink_failing`` after 3 failures, a short drain."""
    policy = delivery.DeliveryPolicy(
        first_wait_s=0.01, max_wait_s=0.05, failing_after=3, poll_s=0.1, cursor_every_s=0.1, drain_s=3.0
    )
    monkeypatch.setattr(delivery, "POLICY", policy)
    return policy


class Flaky(Sink):
    """Refuses its first ``refuse`` sends, whatever the report, then accepts."""

    name = "flaky"
    refuse = 6
    calls = 0
    got: list[str] = []

    def send(self, report: Report) -> None:
        type(self).calls += 1
        if type(self).calls <= self.refuse:
            raise ConnectionError("PLC busy")
        type(self).got.append(report.inspection_uid)


def test_sink_that_fails_its_first_sends_gets_every_verdict_and_the_failure_is_recorded(tmp_path, quick_retries):
    Flaky.calls, Flaky.got = 0, []
    result = run_station(_station(12, [{"type": "flaky"}]), tmp_path, registry=_registry(Flaky))
    uids = [r.uid for r in result.inspections()]
    assert len(uids) == 12
    # Every committed verdict at least once, first deliveries in commit order.
    assert list(dict.fromkeys(Flaky.got)) == uids
    kinds = [k for k, _ in _events(result.db_url) if k.startswith("sink_")]
    assert kinds == ["sink_failing", "sink_recovered"]
    failing = _events(result.db_url, "sink_failing")[0][1]
    assert "sink flaky (flaky) keeps failing" in failing and "ConnectionError: PLC busy" in failing
    [state] = sink_states(Store(result.db_url).engine, "test")
    assert state.backlog == 0 and state.failing_since is None and state.last_error == "ConnectionError: PLC busy"


class Slow(Sink):
    name = "slow"
    at: dict[str, float] = {}

    def send(self, report: Report) -> None:
        time.sleep(0.25)
        self.at[report.inspection_uid] = time.monotonic()


class Fast(Sink):
    name = "fast"
    at: dict[str, float] = {}

    def send(self, report: Report) -> None:
        self.at[report.inspection_uid] = time.monotonic()


def test_slow_sink_delays_no_other(tmp_path, quick_retries):
    Slow.at, Fast.at = {}, {}
    t0 = time.monotonic()
    result = run_station(_station(8, [{"type": "slow"}, {"type": "fast"}]), tmp_path, registry=_registry(Slow, Fast))
    uids = [r.uid for r in result.inspections()]
    assert set(Slow.at) == set(Fast.at) == set(uids)
    slow = sorted(Slow.at.values())
    fast_done = max(Fast.at.values())
    # The fast sink had every verdict before the slow one had delivered half of them
    # (sequential sinks would have made it wait for each slow send).
    assert fast_done < slow[3], (fast_done - t0, [s - t0 for s in slow])
    assert slow[-1] - slow[0] >= 7 * 0.25 * 0.9


class Down(Sink):
    """A sink that is down for the whole run."""

    name = "down"

    def send(self, report: Report) -> None:
        raise TimeoutError("no answer from 10.0.0.9")


class Up(Sink):
    name = "up"
    got: list[str] = []

    def send(self, report: Report) -> None:
        self.got.append(report.inspection_uid)


def test_backlog_at_shutdown_is_recorded_shown_and_delivered_by_the_next_start(tmp_path, quick_retries, monkeypatch):
    monkeypatch.setattr(
        delivery,
        "POLICY",
        delivery.DeliveryPolicy(first_wait_s=0.01, max_wait_s=0.05, failing_after=3, poll_s=0.1, drain_s=0.3),
    )
    reg = _registry(Down, Up)
    first = run_station(_station(6, [{"type": "down", "name": "plc"}]), tmp_path, registry=reg)
    backlog = _events(first.db_url, "sink_backlog")
    assert len(backlog) == 1
    assert "sink plc: 6 verdicts not yet delivered" in backlog[0][1]
    assert "TimeoutError: no answer from 10.0.0.9" in backlog[0][1]
    [state] = sink_states(Store(first.db_url).engine, "test")
    assert (state.sink, state.backlog) == ("plc", 6)
    assert state.failing_since is not None and "no answer" in (state.last_error or "")

    # `inspector status` shows it.
    from inspector_core import cli

    monkeypatch.setattr(cli, "_registry", reg)
    out = CliRunner().invoke(cli.main, ["status", str(first.station_file)])
    assert out.exit_code == 0, out.output
    assert "plc" in out.output and "6 not delivered" in out.output and "no answer from 10.0.0.9" in out.output

    # And the dashboard's overview has a tile for it.
    from fastapi.testclient import TestClient

    from inspector_core.qa.reader import open_reader
    from inspector_core.qa.web import create_app

    page = TestClient(create_app(open_reader(first.db_url).engine), base_url="http://127.0.0.1").get("/")
    assert page.status_code == 200
    assert "test &rarr; plc" in page.text and "6 not delivered" in page.text and "<strong>failing</strong>" in page.text

    # The same sink key, now reachable: the earlier run's verdicts come first, then this run's.
    Up.got = []
    second = run_station(_station(2, [{"type": "up", "name": "plc"}]), tmp_path, registry=reg)
    assert Up.got == [r.uid for r in first.inspections()] + [r.uid for r in second.inspections()]
    [state] = sink_states(Store(second.db_url).engine, "test")
    assert state.backlog == 0 and state.failing_since is None
    assert [k for k, _ in _events(second.db_url) if k.startswith("sink_")][-1] == "sink_recovered"


def test_a_new_sink_starts_at_the_current_run_and_a_removed_one_is_recorded(tmp_path, quick_retries):
    reg = _registry(Up)
    run_station(_station(5, [{"type": "file", "config": {"path": "a.jsonl"}}]), tmp_path, registry=reg)
    Up.got = []
    second = run_station(_station(3, [{"type": "up"}]), tmp_path, registry=reg)
    assert Up.got == [r.uid for r in second.inspections()]  # not the 5 of the earlier run
    [(kind, msg)] = _events(second.db_url, "sink_removed")
    assert "sink file is no longer in the station config" in msg and "with 0 verdicts" in msg
    assert [s.sink for s in sink_states(Store(second.db_url).engine)] == ["up"]


def test_two_sinks_of_one_type_need_names(tmp_path):
    sinks = [{"type": "file", "config": {"path": "a.jsonl"}}, {"type": "file", "config": {"path": "b.jsonl"}}]
    with pytest.raises(StationError, match=r"sinks\[1\] and sinks\[0\] both have the key 'file'.*distinct `name:`"):
        run_station(_station(2, sinks), tmp_path)
    sinks[1]["name"] = "archive"
    result = run_station(_station(4, sinks), tmp_path)
    uids = [r.uid for r in result.inspections()]
    for f in ("a.jsonl", "b.jsonl"):
        assert [json.loads(x)["inspection_uid"] for x in (tmp_path / f).read_text().splitlines()] == uids


def _strict(text: str):
    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_reports_are_strict_json_whatever_the_detector_gave(tmp_path):
    """An infinite score, a bytes message, a NaN size: the report the outbox builds from the
    stored rows, and the file sink's line, are strict JSON."""
    from inspector_sinks import FileConfig, FileSink, report_json

    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    sid, rid = store.begin_run(
        "odd", hostname="h", software_version="0", plugins={}, config_yaml="", config_hash="0", models={}
    )
    outbox = Outbox(store, "odd")
    assert outbox.open(["file"], run_id=rid) == ({"file": Cursor(0)}, {})
    now = datetime.now(UTC)
    store.write(
        [
            InspectionRecord(
                uid="a" * 32,
                station_id=sid,
                run_id=rid,
                seq=0,
                part_id="p1",
                captured_at=now,
                decided_at=now,
                verdict="FAIL",
                latency_ms=5.0,
                defects=[
                    DefectRecord("s", "det", "scratch", math.inf, True, (1, 2, 3, 4), math.nan, None, {}, b"\xffbytes"),
                ],
            )
        ]
    )
    [pending] = outbox.pending(0, 10)
    d = _strict(report_json(pending.report))
    assert d["defects"] == [
        {
            "kind": "scratch",
            "score": None,
            "box": [1, 2, 3, 4],
            "size_px": None,
            "size_mm": None,
            "message": "\ufffdbytes",
            "step": "s",
        }
    ]
    assert d["latency_ms"] == 5.0 and d["inspection_uid"] == "a" * 32

    # A report built in code (a third-party host, a test) with non-JSON values: the file sink copes.
    odd = Report(
        "odd",
        1,
        "b" * 32,
        "p2",
        "FAIL",
        now,
        math.nan,
        None,
        ({"kind": "dent", "score": math.inf, "box": (1, 2, 3, 4), "message": b"\x00raw"},),
    )
    sink = FileSink(FileConfig(path="out.jsonl"), station_dir=tmp_path)
    sink.send(odd)
    sink.close()
    [line] = (tmp_path / "out.jsonl").read_text().splitlines()
    got = _strict(line)
    assert got["latency_ms"] is None and got["defects"][0]["score"] is None
    assert got["defects"][0]["message"] == "\x00raw" and got["defects"][0]["box"] == [1, 2, 3, 4]
    store.close()


KILLED_STATION = textwrap.dedent('''
    """Runs a station whose file sink is slow (SINK_SLEEP_S), so the outbox has a backlog when it is killed."""
    import os
    import sys
    import time

    from inspector_core import hookimpl
    from inspector_core.plugins import load
    from inspector_core.runtime.config import load_station
    from inspector_core.runtime.station import StationRuntime
    from inspector_sinks import FileSink


    class SlowFile(FileSink):
        name = "slowfile"

        def send(self, report):
            time.sleep(float(os.environ.get("SINK_SLEEP_S", "0")))
            super().send(report)


    class Plugin:
        @staticmethod
        def inspector_register_sinks(register):
            register(SlowFile)


    Plugin.inspector_register_sinks = hookimpl(Plugin.inspector_register_sinks)
    reg = load(extra=[("slowfile", Plugin)])
    StationRuntime(load_station(sys.argv[1], reg), reg, limit=int(sys.argv[2])).run()
''')


def test_kill_9_mid_delivery_then_restart_delivers_every_committed_verdict(tmp_path):
    script = tmp_path / "station_run.py"
    script.write_text(KILLED_STATION)
    db = tmp_path / "inspector.db"
    out = tmp_path / "verdicts.jsonl"
    station = tmp_path / "station.yaml"
    station.write_text(
        yaml.safe_dump(
            {
                "name": "killed",
                "source": {"type": "synthetic", "config": {"count": 400, "width": 320, "height": 240}},
                "steps": [{"detector": "bright_spot"}],
                "store": {"url": f"sqlite:///{db}"},
                "sinks": [{"type": "slowfile", "config": {"path": str(out), "fsync": False}}],
            }
        )
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(station), "400"],
        env={**env, "SINK_SLEEP_S": "0.03"},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lines = out.read_text().count("\n") if out.exists() else 0
            if lines >= 20:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.02)
        else:
            pytest.fail("the station delivered nothing within 30 s")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    url = f"sqlite:///{db}"
    committed = _all_uids(url)
    delivered = {_strict(x)["inspection_uid"] for x in out.read_text().splitlines()}
    assert len(committed) > len(delivered) >= 20, "killed mid-delivery: a backlog should remain"

    restart = subprocess.run(
        [sys.executable, str(script), str(station), "2"], env=env, cwd=tmp_path, capture_output=True, timeout=120
    )
    assert restart.returncode == 0, restart.stderr.decode()
    committed = _all_uids(url)
    lines = out.read_text().splitlines()
    delivered_after = [_strict(x)["inspection_uid"] for x in lines]
    missing = set(committed) - set(delivered_after)
    assert not missing, f"{len(missing)} of {len(committed)} committed verdicts never delivered"
    # At least once, and not "everything again": only what was in flight at the kill is repeated.
    assert len(delivered_after) - len(set(delivered_after)) <= 100


def test_wake_and_poll_without_a_recorder(tmp_path, quick_retries):
    """A verdict committed by another writer (an earlier process) is found by polling alone."""
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    sid, rid = store.begin_run(
        "poll", hostname="h", software_version="0", plugins={}, config_yaml="", config_hash="0", models={}
    )
    got: list[str] = []
    done = threading.Event()

    class Collect(Sink):
        name = "collect"

        def send(self, report: Report) -> None:
            got.append(report.inspection_uid)
            if len(got) == 3:
                done.set()

    events: list[tuple[str, str]] = []
    d = delivery.Delivery(
        [("collect", Collect(None, station_dir=tmp_path))],
        Outbox(store, "poll"),
        on_event=lambda k, m: events.append((k, m)),
        run_id=lambda: rid,
    )
    d.start()
    now = datetime.now(UTC)
    store.write(
        [
            InspectionRecord(
                uid=f"{i:032x}",
                station_id=sid,
                run_id=rid,
                seq=i,
                part_id=f"p{i}",
                captured_at=now,
                decided_at=now,
                verdict="PASS",
                latency_ms=1.0,
            )
            for i in range(3)
        ]
    )
    assert done.wait(5), got
    assert d.close() == {"collect": 0} and not events
    assert got == [f"{i:032x}" for i in range(3)]
    store.close()


def test_a_send_that_hangs_is_recorded_as_failing_then_recovered(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    sid, rid = store.begin_run(
        "hang", hostname="h", software_version="0", plugins={}, config_yaml="", config_hash="0", models={}
    )
    release = threading.Event()
    got: list[str] = []

    class Hangs(Sink):
        name = "hangs"

        def send(self, report: Report) -> None:
            if not got:
                release.wait(10)
            got.append(report.part_id)

    events: list[tuple[str, str]] = []
    policy = delivery.DeliveryPolicy(hung_after_s=0.3, poll_s=0.05)
    d = delivery.Delivery(
        [("plc", Hangs(None, station_dir=tmp_path))],
        Outbox(store, "hang"),
        on_event=lambda k, m: events.append((k, m)),
        run_id=lambda: rid,
        policy=policy,
    )
    d.start()
    now = datetime.now(UTC)
    store.write(
        [
            InspectionRecord(
                uid=f"{i:032x}",
                station_id=sid,
                run_id=rid,
                seq=i,
                part_id=f"p{i}",
                captured_at=now,
                decided_at=now,
                verdict="PASS",
                latency_ms=1.0,
            )
            for i in range(2)
        ]
    )
    deadline = time.monotonic() + 5
    while not events and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [k for k, _ in events] == ["sink_failing"]
    assert "sink plc (hangs) keeps failing on part p0" in events[0][1] and "has not returned for" in events[0][1]
    assert not got
    release.set()
    assert d.close() == {"plc": 0}
    assert got == ["p0", "p1"] and [k for k, _ in events] == ["sink_failing", "sink_recovered"]
    store.close()


def test_status_shows_the_spool_while_the_database_is_away(tmp_path):
    """A plant database that is down: the verdicts wait in the spool, and `inspector status`
    says so (and that it cannot reach the database) instead of only failing."""
    from inspector_core import cli
    from inspector_core.runtime.config import load_station
    from inspector_core.runtime.station import StationRuntime

    station = tmp_path / "station.yaml"
    station.write_text(
        yaml.safe_dump(
            {
                "name": "away",
                **_station(3, [{"type": "file", "config": {"path": "v.jsonl"}}]),
                "store": {"url": "postgresql+psycopg://inspector@127.0.0.1:1/plant"},
            }
        )
    )
    reg = load()
    runtime = StationRuntime(load_station(station, reg), reg)
    runtime.run()
    assert runtime.tally.total == 3 and not (tmp_path / "v.jsonl").read_text()  # nothing committed: nothing sent
    out = CliRunner().invoke(cli.main, ["status", str(station)])
    assert out.exit_code == 1
    assert "cannot reach" in out.output
    assert "spool " in out.output and ": 3 verdicts and" in out.output and "wait for the database" in out.output


@pytest.mark.postgres
def test_stations_sharing_a_plant_database_each_deliver_their_own(tmp_path, pg_url):
    """Two stations write to one PostgreSQL database at once (their ids interleave): each
    station's sink gets every one of its own verdicts and none of the other's."""
    results: dict[str, StationResult] = {}

    def run(name: str) -> None:
        folder = tmp_path / name
        folder.mkdir()
        cfg = {"name": name, **_station(15, [{"type": "file", "config": {"path": "v.jsonl"}}])}
        cfg["source"]["config"]["interval_ms"] = 10
        results[name] = run_station(cfg, folder, db_url=pg_url)

    threads = [threading.Thread(target=run, args=(n,)) for n in ("line1", "line2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert set(results) == {"line1", "line2"}
    for name, result in results.items():
        sent = [json.loads(x)["inspection_uid"] for x in (tmp_path / name / "v.jsonl").read_text().splitlines()]
        assert sent == [r.uid for r in result.inspections()], name
    with Store(pg_url).engine.connect() as c:
        stations = list(c.scalars(select(schema.Inspection.station_id).order_by(schema.Inspection.id)))
    assert len(set(stations)) == 2 and stations != sorted(stations), "the two stations' ids should interleave"


def test_a_second_interrupt_cuts_the_drain_short_and_records_the_backlog(tmp_path):
    """`inspector run` with a sink that is down: after Ctrl-C the sinks may drain for
    ``drain_s`` (5 s); a second Ctrl-C cuts that to ``ABORT_DRAIN_S``, and what the sink still
    owes is recorded (``sink_backlog``)."""
    db = tmp_path / "x.db"
    station = tmp_path / "station.yaml"
    cfg = {"name": "abort", **_station(500, [{"type": "webhook", "config": {"url": "http://127.0.0.1:1/v"}}])}
    cfg["source"]["config"]["interval_ms"] = 20
    # A slow step keeps parts queued, so the second Ctrl-C comes while the first one's "finish the
    # captured parts" is still going on (what a second Ctrl-C is for).
    cfg["steps"] = [{"detector": "sleeper", "config": {"sleep_ms": 150}}]
    cfg["store"] = {"url": f"sqlite:///{db}"}
    station.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector_core.cli", "run", str(station), "--quiet"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not db.exists() or len(_all_uids(f"sqlite:///{db}")) < 5):
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        proc.wait(20)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err = proc.stderr.read().decode()
        proc.stderr.close()
    assert took < delivery.POLICY.drain_s, (took, err)
    events = _events(f"sqlite:///{db}", "sink_backlog")
    assert len(events) == 1, err
    msg = events[0][1]
    assert "sink webhook:" in msg and "verdicts not yet delivered" in msg and "ConnectError" in msg


def _committed(store: Store, sid: int, rid: int, count: int) -> list[str]:
    now = datetime.now(UTC)
    uids = [f"{i:032x}" for i in range(count)]
    store.write(
        [
            InspectionRecord(
                uid=uid,
                station_id=sid,
                run_id=rid,
                seq=i,
                part_id=f"p{i}",
                captured_at=now,
                decided_at=now,
                verdict="PASS",
                latency_ms=1.0,
            )
            for i, uid in enumerate(uids)
        ]
    )
    return uids


def _file_delivery(tmp_path: Path, store: Store, rid: int, events: list[tuple[str, str]]):
    from inspector_sinks import FileConfig, FileSink

    sink = FileSink(FileConfig(path="out.jsonl"), station_dir=tmp_path)
    assert delivery.groups(sink)
    return delivery.Delivery(
        [("file", sink)], Outbox(store, "grouped"), on_event=lambda k, m: events.append((k, m)), run_id=lambda: rid
    )


def _cursor(db: Path) -> int:
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT inspection_id FROM sink_cursors").fetchone()[0]
    finally:
        con.close()


def test_the_file_sink_makes_the_waiting_verdicts_durable_with_one_fsync_before_any_counts_as_delivered(
    tmp_path, quick_retries, monkeypatch
):
    db = tmp_path / "x.db"
    store = Store(f"sqlite:///{db}")
    sid, rid = store.begin_run(
        "grouped", hostname="h", software_version="0", plugins={}, config_yaml="", config_hash="0", models={}
    )
    outbox = Outbox(store, "grouped")
    assert outbox.open(["file"], run_id=rid) == ({"file": Cursor(0)}, {})
    uids = _committed(store, sid, rid, 30)  # all waiting when the worker first reads
    out = tmp_path / "out.jsonl"
    real_fsync = os.fsync
    at_fsync: list[tuple[int, int]] = []  # (lines in the file, the cursor in the store) at each fsync

    def fsync(fd: int) -> None:
        at_fsync.append((out.read_text().count("\n"), _cursor(db)))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    events: list[tuple[str, str]] = []
    d = _file_delivery(tmp_path, store, rid, events)
    d.start()
    assert d.close() == {"file": 0} and not events
    assert at_fsync == [(30, 0)], "one fsync for the 30 waiting verdicts, before the cursor moved"
    assert [_strict(x)["inspection_uid"] for x in out.read_text().splitlines()] == uids
    assert _cursor(db) == max(p.inspection_id for p in outbox.pending(0, 100))
    store.close()


def test_a_group_whose_fsync_fails_is_sent_again_whole_and_the_file_has_each_line_once(
    tmp_path, quick_retries, monkeypatch
):
    db = tmp_path / "x.db"
    store = Store(f"sqlite:///{db}")
    sid, rid = store.begin_run(
        "grouped", hostname="h", software_version="0", plugins={}, config_yaml="", config_hash="0", models={}
    )
    assert Outbox(store, "grouped").open(["file"], run_id=rid) is not None
    uids = _committed(store, sid, rid, 12)
    real_fsync = os.fsync
    failed: list[int] = []

    def fsync(fd: int) -> None:
        if not failed:
            failed.append(_cursor(db))
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    events: list[tuple[str, str]] = []
    d = _file_delivery(tmp_path, store, rid, events)
    d.start()
    assert d.close() == {"file": 0} and not events  # one failure: retried, below failing_after
    assert failed == [0]
    assert [_strict(x)["inspection_uid"] for x in (tmp_path / "out.jsonl").read_text().splitlines()] == uids
    store.close()


def test_the_file_sink_drops_a_line_cut_short_by_a_crash_when_it_opens(tmp_path):
    from inspector_sinks import FileConfig, FileSink

    out = tmp_path / "out.jsonl"
    out.write_text('{"inspection_uid": "a"}\n{"inspection_uid": "b"}\n{"inspection_uid": "c", "ver')
    sink = FileSink(FileConfig(path="out.jsonl"), station_dir=tmp_path)
    sink.send(Report("s", 1, "d" * 32, "p", "PASS", datetime.now(UTC), 1.0, None, ()))
    sink.close()
    assert [_strict(x)["inspection_uid"] for x in out.read_text().splitlines()] == ["a", "b", "d" * 32]
    out.write_text('{"inspection_uid": "cut')  # nothing but a cut line
    FileSink(FileConfig(path="out.jsonl"), station_dir=tmp_path).close()
    assert out.read_bytes() == b""


def test_a_sink_changing_send_alone_keeps_send_and_the_base_sends_one_by_one():
    from inspector_sinks import FileSink

    class SlowFile(FileSink):
        name = "slowfile"

        def send(self, report: Report) -> None:
            super().send(report)

    class Grouping(SlowFile):
        def send_many(self, reports) -> None:
            super().send_many(reports)

    sinks = [Flaky, SlowFile, Grouping, FileSink]
    assert [delivery.groups(object.__new__(c)) for c in sinks] == [False, False, True, True]
