"""Whole-frame evidence from a running station: files written and fsynced before their rows
commit, content-addressed, downscaled or full; a full disk or a free-space floor drops the
frames (recorded) and never a verdict; the config is validated; the CLI says what would go."""

from __future__ import annotations

import errno
import hashlib
import json
import sqlite3
import time

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from inspector_core.plugins import load
from inspector_core.runtime.config import ConfigError, load_station
from inspector_core.store import InspectionRecord, Recorder, RunRecord, Store
from inspector_core.store.evidence import EvidenceWriter, evidence_path
from inspector_core.testing import run_station

SYNTH = {"type": "synthetic", "config": {"count": 8, "seed": 7, "defect_rate": 0.5}}
# The synthetic plate's label is bright: bright_spot at 200 fails every part; at 256 none.
FAIL_ALL = [{"detector": "bright_spot", "config": {"threshold": 200, "min_area_px": 30}}]


def evidence_rows(db):
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    return con.execute(
        "SELECT i.verdict, i.seq, e.* FROM evidence e JOIN inspections i ON i.id = e.inspection_id ORDER BY i.seq"
    ).fetchall()


def test_station_keeps_failed_frames_downscaled_and_samples_passed(tmp_path):
    cfg = {
        "source": SYNTH,
        "steps": [{"detector": "scratch"}],
        "store": {"evidence": {"fail": "downscaled", "pass_sample": 1.0, "max_side": 512, "min_free_bytes": 0}},
    }
    result = run_station(cfg, tmp_path)
    verdicts = {r.seq: r.verdict for r in result.inspections()}
    assert set(verdicts.values()) == {"PASS", "FAIL"}
    got = evidence_rows(tmp_path / "inspector.db")
    assert [r["seq"] for r in got] == sorted(verdicts)  # every part: FAIL ones and (sample 1.0) PASS ones
    root = tmp_path / "inspector.db.evidence"
    for r in got:
        assert r["status"] == "stored" and r["kept_as"] == ("fail" if r["verdict"] == "FAIL" else "pass")
        path = evidence_path(root, r["sha256"], r["format"])
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["sha256"] and len(data) == r["bytes"]
        assert path.parent.parent.name == r["sha256"][:2] and path.parent.name == r["sha256"][2:4]
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert (img.shape[1], img.shape[0]) == (r["width"], r["height"]) == (512, 384)
        assert r["scale"] == pytest.approx(0.5)


def test_full_frames_and_no_pass_sample(tmp_path):
    cfg = {
        "source": SYNTH,
        "steps": [{"detector": "scratch"}],
        "store": {"evidence": {"fail": "full", "format": "png", "min_free_bytes": 0}},
    }
    result = run_station(cfg, tmp_path)
    fails = sorted(r.seq for r in result.inspections() if r.verdict == "FAIL")
    got = evidence_rows(tmp_path / "inspector.db")
    assert fails and [r["seq"] for r in got] == fails
    assert all((r["width"], r["height"], r["scale"], r["format"]) == (1024, 768, 1.0, "png") for r in got)


def test_no_evidence_by_default(tmp_path):
    import yaml

    from inspector_core.runtime.evidence import evidence_root, evidence_writer

    path = tmp_path / "s.yaml"
    spec = {"name": "s", "source": SYNTH, "steps": FAIL_ALL, "store": {"url": "sqlite:///x/s.db"}}
    path.write_text(yaml.safe_dump(spec))
    assert evidence_writer(load_station(path, load())) is None
    spec["store"]["evidence"] = {"pass_sample": 0.01, "dir": "frames"}
    path.write_text(yaml.safe_dump(spec))
    st = load_station(path, load())
    assert evidence_writer(st) is not None and evidence_root(st) == tmp_path / "frames"
    spec["store"]["evidence"] = {"fail": "full"}
    path.write_text(yaml.safe_dump(spec))
    assert evidence_root(load_station(path, load())) == tmp_path / "x" / "s.db.evidence"


def test_files_are_written_and_fsynced_before_the_transaction(tmp_path, monkeypatch):
    """At the moment the writer hands a batch to the database, each stored row's file is
    complete on disk (and was fsynced: os.fsync is called on it before)."""
    import os

    import inspector_core.store.evidence as ev

    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(ev.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    seen: list[bool] = []
    real_write = Store.write

    def write(self, records, **kw):
        for r in records:
            if r.evidence is not None and r.evidence.status == "stored":
                p = evidence_path(tmp_path / "inspector.db.evidence", r.evidence.sha256, r.evidence.format)
                seen.append(p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == r.evidence.sha256)
        return real_write(self, records, **kw)

    import inspector_core.store.recorder as recorder

    real_late = recorder.add_evidence
    late: list[bool] = []

    def add_late(store, rows, **kw):
        # A row that follows its verdict (its file was not ready within LATE_AFTER_S): same rule.
        for r, e in rows:
            p = evidence_path(tmp_path / "inspector.db.evidence", e.sha256, e.format)
            late.append(r.committed_at is not None and p.is_file())
        return real_late(store, rows, **kw)

    monkeypatch.setattr(Store, "write", write)
    monkeypatch.setattr(recorder, "add_evidence", add_late)
    cfg = {"source": SYNTH, "steps": FAIL_ALL, "store": {"evidence": {"fail": "downscaled", "min_free_bytes": 0}}}
    run_station(cfg, tmp_path)
    assert len(seen) + len(late) == 8 and all(seen) and all(late)
    assert len(evidence_rows(tmp_path / "inspector.db")) == 8
    assert len(synced) >= 2 * 8  # the file and its folder, each frame


def _events(db):
    return [tuple(r) for r in sqlite3.connect(db).execute("SELECT kind, message FROM events ORDER BY id")]


def test_disk_full_drops_frames_never_verdicts(tmp_path, monkeypatch):
    import inspector_core.store.evidence as ev

    calls = {"n": 0}
    real = ev.write_file

    def full_after_three(path, data):
        calls["n"] += 1
        if 4 <= calls["n"] <= 6:  # the disk fills after three frames, then space is freed
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    real_init = EvidenceWriter.__init__

    def init(self, root, policy, **kw):
        kw.setdefault("writer", full_after_three)
        real_init(self, root, policy, **kw)

    monkeypatch.setattr(EvidenceWriter, "__init__", init)
    cfg = {"source": SYNTH, "steps": FAIL_ALL, "store": {"evidence": {"fail": "downscaled", "min_free_bytes": 0}}}
    result = run_station(cfg, tmp_path)
    assert [r.verdict for r in result.inspections()] == ["FAIL"] * 8  # every verdict recorded
    got = evidence_rows(tmp_path / "inspector.db")
    status = [r["status"] for r in got]
    assert status == ["stored"] * 3 + ["dropped"] * 3 + ["stored"] * 2
    assert all("disk full" in r["reason"] and r["sha256"] is None for r in got if r["status"] == "dropped")
    kinds = [k for k, _ in _events(tmp_path / "inspector.db")]
    assert kinds.count("evidence_dropped") == 1 and kinds.count("evidence_resumed") == 1
    assert kinds.index("evidence_dropped") < kinds.index("evidence_resumed")
    root = tmp_path / "inspector.db.evidence"
    assert {p.stem for p in root.rglob("*.jpg")} == {r["sha256"] for r in got if r["status"] == "stored"}
    assert not list(root.rglob("*.tmp"))


def test_free_space_floor_drops_frames(tmp_path):
    cfg = {"source": SYNTH, "steps": FAIL_ALL, "store": {"evidence": {"fail": "full", "min_free_bytes": 1e18}}}
    result = run_station(cfg, tmp_path)
    assert len(result.inspections()) == 8
    got = evidence_rows(tmp_path / "inspector.db")
    assert len(got) == 8 and {r["status"] for r in got} == {"dropped"}
    assert "min_free_bytes" in got[0]["reason"]
    msgs = [m for k, m in _events(tmp_path / "inspector.db") if k == "evidence_dropped"]
    assert len(msgs) == 1 and "verdicts are still recorded" in msgs[0] and "inspector retention" in msgs[0]


def test_backlog_of_frames_is_bounded(tmp_path):
    """More frames waiting for the writer than max_pending: the extra ones are dropped at once
    (recorded), the station does not hold them in memory."""
    from inspector_core.runtime.config import EvidencePolicy

    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    policy = EvidencePolicy(fail="downscaled", max_pending=2, min_free_bytes=0)
    w = EvidenceWriter(tmp_path / "b.db.evidence", policy)
    rec = Recorder(store, run=RunRecord("s", "h", "0", {}, "", "x", {}), on_committed=lambda b: None, evidence=w)
    img = np.zeros((32, 32, 3), np.uint8)
    from datetime import datetime

    records = [
        InspectionRecord(f"{i:032x}", None, None, i, f"p{i}", datetime(2026, 1, 1), datetime(2026, 1, 1), "FAIL", 1.0)
        for i in range(5)
    ]
    for r in records:  # submitted before the writer starts: nothing is taken off the queue yet
        rec.submit(r, img)
    assert [r.evidence.status if r.evidence else None for r in records] == [None, None, "dropped", "dropped", "dropped"]
    rec.start()
    assert rec.close(timeout=30, parts_seen=5)
    got = evidence_rows(tmp_path / "b.db")
    assert [r["status"] for r in got] == ["stored", "stored", "dropped", "dropped", "dropped"]
    assert "more than 2 frames" in got[2]["reason"]


def test_spooled_row_whose_file_is_gone_is_marked_lost(tmp_path):
    from inspector_core.runtime.config import EvidencePolicy
    from inspector_core.store.records import EvidenceRecord

    w = EvidenceWriter(tmp_path / "e", EvidencePolicy(fail="full", min_free_bytes=0))
    kept = w.keep(np.zeros((8, 8, 3), np.uint8), "fail")
    assert kept.status == "stored"
    w.check_stored(kept)
    assert kept.status == "stored"
    gone = EvidenceRecord("fail", "stored", None, "ef" * 32, "jpeg", 8, 8, 1.0, 10)
    w.check_stored(gone)
    assert (gone.status, gone.sha256) == ("lost", None)
    # And the record (with its evidence) goes through the spool's JSON unchanged.
    from datetime import datetime

    r = InspectionRecord("a" * 32, 1, 1, 0, "p", datetime(2026, 1, 1), datetime(2026, 1, 1), "FAIL", 1.0)
    r.evidence = kept
    assert InspectionRecord.from_json(r.to_json()).evidence == kept
    from inspector_core.store.records import SPOOLED_INSPECTION

    assert SPOOLED_INSPECTION.validate_json(SPOOLED_INSPECTION.dump_json(r)).evidence == kept


@pytest.mark.parametrize(
    ("evidence", "where"),
    [
        ({"fail": "half"}, "store.evidence.fail"),
        ({"pass_sample": 1.5}, "store.evidence.pass_sample"),
        ({"max_side": 10}, "store.evidence.max_side"),
        ({"format": "gif"}, "store.evidence.format"),
        ({"quality": 0}, "store.evidence.quality"),
        ({"colour": 1}, "store.evidence.colour"),
    ],
)
def test_config_is_validated(tmp_path, evidence, where):
    import yaml

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "source": SYNTH, "steps": FAIL_ALL, "store": {"evidence": evidence}}))
    with pytest.raises(ConfigError) as err:
        load_station(path, load())
    assert where in str(err.value)


def test_retention_config_is_validated(tmp_path):
    import yaml

    path = tmp_path / "s.yaml"
    store = {"retention": {"pass_days": -1, "max_bytes": "lots"}}
    path.write_text(yaml.safe_dump({"name": "s", "source": SYNTH, "steps": FAIL_ALL, "store": store}))
    with pytest.raises(ConfigError) as err:
        load_station(path, load())
    assert "store.retention.pass_days" in str(err.value) and "store.retention.max_bytes" in str(err.value)


def test_cli_dry_run_then_run(tmp_path):
    from inspector_core.cli import main

    cfg = {
        "source": SYNTH,
        "steps": FAIL_ALL,
        "store": {"evidence": {"fail": "downscaled", "min_free_bytes": 0}, "retention": {"fail_days": 1}},
    }
    run_station(cfg, tmp_path)
    db = tmp_path / "inspector.db"
    # Make the run's parts 2 days old (retention's age is captured_at).
    con = sqlite3.connect(db)
    con.execute("UPDATE evidence SET captured_at = datetime(captured_at, '-2 days')")
    con.commit()
    station = str(tmp_path / "station.yaml")
    runner = CliRunner()
    dry = runner.invoke(main, ["retention", "--station-file", station, "--dry-run", "--json"])
    assert dry.exit_code == 0, (dry.output, repr(dry.exception))
    out = json.loads(dry.output)
    assert out["classes"]["fail"]["by_age_rows"] == 8 and out["classes"]["fail"]["by_age_bytes"] > 0
    assert out["expired_rows"] == 0
    assert {r["status"] for r in evidence_rows(db)} == {"stored"}
    text = runner.invoke(main, ["retention", "--station-file", station, "--dry-run"])
    assert "fail: 8 stored" in text.output and "would go: 8 by age" in text.output
    # Hold one (a reviewer's name is checked), then run: it alone stays.
    iid = evidence_rows(db)[0]["inspection_id"]
    nobody = runner.invoke(main, ["retention", "hold", str(iid), "--station-file", station, "--as", "nobody"])
    assert nobody.exit_code != 0 and "inspector users add" in nobody.output
    from inspector_core.qa.accounts import add_user

    add_user(Store(f"sqlite:///{db}", migrate=False), "carol", "reviewer", "correct horse battery")
    held = runner.invoke(main, ["retention", "hold", str(iid), "--station-file", station, "--as", "carol"])
    assert held.exit_code == 0, held.output
    done = runner.invoke(main, ["retention", "--station-file", station])
    assert done.exit_code == 0, done.output
    assert "7 rows marked expired, 7 files deleted" in done.output
    status = [r["status"] for r in evidence_rows(db)]
    assert status == ["stored"] + ["expired"] * 7
    assert len(list((tmp_path / "inspector.db.evidence").rglob("*.jpg"))) == 1


def test_a_slow_disk_does_not_hold_the_verdicts_back(tmp_path):
    """Files that take long to write: the verdicts commit without waiting for them, the evidence
    rows follow (each after its file is on disk), and close() waits for the last ones."""
    from datetime import datetime

    from inspector_core.runtime.config import EvidencePolicy
    from inspector_core.store import evidence as ev

    def slow(path, data):
        time.sleep(0.5)
        ev.write_file(path, data)

    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    w = EvidenceWriter(tmp_path / "s.db.evidence", EvidencePolicy(fail="full", min_free_bytes=0), writer=slow)
    committed: list[float] = []
    rec = Recorder(
        store,
        run=RunRecord("s", "h", "0", {}, "", "x", {}),
        on_committed=lambda b: committed.extend(time.monotonic() for _ in b),
        evidence=w,
    )
    rec.start()
    t0 = time.monotonic()
    for i in range(4):
        at = datetime(2026, 1, 1)
        r = InspectionRecord(f"{i:032x}", None, None, i, f"p{i}", at, at, "FAIL", 1.0)
        rec.submit(r, np.full((16, 16, 3), i, np.uint8))
    assert rec.flush(timeout=30)
    assert len(committed) == 4 and committed[0] - t0 < 0.45  # the first verdict did not wait for its file
    assert rec.close(timeout=30, parts_seen=4)
    got = evidence_rows(tmp_path / "s.db")
    assert [r["status"] for r in got] == ["stored"] * 4
    for r in got:
        assert evidence_path(tmp_path / "s.db.evidence", r["sha256"], r["format"]).is_file()


def test_recorder_writes_evidence_rows_on_postgresql(pg_url, tmp_path, monkeypatch):
    """The writer's two paths on the real PostgreSQL: rows in the verdicts' own transaction
    (COPY) and late rows (a file slower than the writer's wait)."""
    from datetime import datetime

    from sqlalchemy import select

    from inspector_core.runtime.config import EvidencePolicy
    from inspector_core.store import evidence as ev
    from inspector_core.store.evidence_records import Evidence

    calls = {"n": 0}

    def every_other_slow(path, data):
        calls["n"] += 1
        if calls["n"] % 2 == 0:
            time.sleep(0.1)
        ev.write_file(path, data)

    import inspector_core.store.recorder as recorder

    late: list[int] = []
    real_late = recorder.add_evidence
    monkeypatch.setattr(
        recorder, "add_evidence", lambda st, rows, **kw: (late.append(len(rows)), real_late(st, rows, **kw))[1]
    )
    store = Store(pg_url)
    root = tmp_path / "pg.evidence"
    w = EvidenceWriter(root, EvidencePolicy(fail="full", min_free_bytes=0), writer=every_other_slow)
    rec = Recorder(store, run=RunRecord("s", "h", "0", {}, "", "x", {}), on_committed=lambda b: None, evidence=w)
    rec.start()
    for i in range(6):
        at = datetime(2026, 1, 1, 0, 0, i)
        r = InspectionRecord(f"{i:032x}", None, None, i, f"p{i}", at, at, "FAIL", 1.0)
        rec.submit(r, np.full((16, 16, 3), i * 10, np.uint8))
        time.sleep(0.05)
    assert rec.close(timeout=30, parts_seen=6)
    with store.transaction() as conn:
        got = list(conn.execute(select(Evidence).order_by(Evidence.captured_at)))
    assert len(got) == 6 and {g.status for g in got} == {"stored"}
    assert 1 <= sum(late) < 6  # some rows late, the others in their verdicts' transaction
    assert [g.captured_at.second for g in got] == list(range(6))
    for g in got:
        data = evidence_path(root, g.sha256, g.format).read_bytes()
        assert hashlib.sha256(data).hexdigest() == g.sha256 and g.bytes == len(data)
    store.close()
