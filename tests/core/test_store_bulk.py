"""The writer's bulk path (issue 12): ids given by the writer, one executemany / COPY per table,
rows stored exactly as SQLAlchemy stores them, several writers on one database, the committed
latency, and the raw detector scores (issue 11) kept beside the normalised ones."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, func, insert, select

from inspector_core import hookimpl
from inspector_core.contract import Detector, Finding, View
from inspector_core.runtime.config import Step
from inspector_core.runtime.steps import StepWorker
from inspector_core.store import (
    CropRecord,
    DefectRecord,
    InspectionRecord,
    Recorder,
    RunRecord,
    StepRecord,
    Store,
    schema,
    utcnow,
)
from inspector_core.testing import run_station

TABLES = ("inspections", "step_results", "defects", "crops")


def _url(backend: str, tmp_path, request, name: str = "s.db") -> str:
    return f"sqlite:///{tmp_path / name}" if backend == "sqlite" else request.getfixturevalue("pg_url")


def _run(station: str) -> RunRecord:
    return RunRecord(station, "h", "0", {}, "", "x" * 64, {})


def _record(run: RunRecord, seq: int, *, at: datetime | None = None, **kw) -> InspectionRecord:
    at = at or utcnow()
    fields: dict[str, Any] = {
        "steps": [StepRecord(0, "front", "scratch", "ok", 0.8, 4.0, 1, raw_score=7.25)],
        "defects": [
            DefectRecord(
                "front",
                "scratch",
                "scratch",
                0.8,
                True,
                (10, 20, 30, 4),
                30.0,
                None,
                {"length_px": 30.0},
                "scratch 30 px \u00e9",
                CropRecord("jpeg", 8, 6, 5, 15, 1.0, b"\xff\xd8jpeg\x00bytes"),
                raw_score=7.25,
            ),
            DefectRecord("front", "scratch", "scratch", 0.2, False, (1, 2, 3, 4), None, None, {}, "", None),
        ],
        "source_meta": None,
    }
    fields.update(kw)
    return InspectionRecord(
        uuid.uuid4().hex,
        None,
        None,
        seq,
        f"{run.station}-p{seq:04d}",
        at,
        at + timedelta(milliseconds=12),
        "FAIL",
        12.0,
        station=run.station,
        run_uid=run.uid,
        **fields,
    )


def _raw_rows(engine, table: str) -> list[tuple]:
    """The table's rows as the driver hands them back (SQLite: the stored value and its type;
    PostgreSQL: each value's text), ordered by the columns that identify them."""
    cols = [c.name for c in schema.Base.metadata.tables[table].c]
    with engine.connect() as c:
        if engine.dialect.name == "sqlite":
            sel = ", ".join(f"{x}, typeof({x})" for x in cols)
        else:
            sel = ", ".join(f"{x}::text" for x in cols)
        return sorted(c.exec_driver_sql(f"SELECT {sel} FROM {table}").all(), key=repr)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_bulk_rows_are_stored_exactly_as_sqlalchemy_stores_them(backend, tmp_path, request):
    # The writer bypasses SQLAlchemy's per-row parameter handling (executemany of tuples, COPY);
    # a QA engineer's SQL must see the same text, types and JSON as rows SQLAlchemy inserts.
    url = _url(backend, tmp_path, request)
    store = Store(url)
    run = _run("l1")
    records = [
        _record(run, 0, at=datetime(2026, 12, 1, 8, 0, 0)),  # no microseconds
        _record(run, 1, at=datetime(2026, 12, 1, 8, 0, 0, 250), source_meta={"camera": "cam1", "exposure_us": 800}),
        _record(run, 2, steps=[], defects=[], error="step x: boom", error_step="x"),
    ]
    store.ensure_run(run)
    assert store.write(records) == 3
    # The same rows again, inserted by SQLAlchemy Core into a second database.
    if backend == "sqlite":
        other_url = f"sqlite:///{tmp_path / 'core.db'}"
    else:
        import psycopg

        name = f"inspector_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        other_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        other = Store(other_url)
        with store.engine.connect() as src, other.engine.begin() as dst:
            for table in ("stations", "runs", *TABLES):
                t = schema.Base.metadata.tables[table]
                rows = [dict(r._mapping) for r in src.execute(select(t))]
                dst.execute(insert(t), rows)
        for table in TABLES:
            assert _raw_rows(store.engine, table) == _raw_rows(other.engine, table), table
        other.close()
    finally:
        if backend != "sqlite":
            create_engine(other_url).dispose()
            with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    # And what was written is what the records said, children attached to their parents.
    with store.engine.connect() as c:
        rows = c.execute(select(schema.Inspection).order_by(schema.Inspection.id)).all()
        assert [r.seq for r in rows] == [0, 1, 2] and [r.n_defects for r in rows] == [1, 1, 0]
        assert rows[1].source_meta == {"camera": "cam1", "exposure_us": 800} and rows[0].source_meta is None
        d = c.execute(select(schema.Defect).order_by(schema.Defect.id)).all()
        assert [x.inspection_id for x in d] == [rows[0].id, rows[0].id, rows[1].id, rows[1].id]
        assert [x.raw_score for x in d] == [7.25, None, 7.25, None]
        crops = c.execute(select(schema.Crop.defect_id, schema.Crop.inspection_id, schema.Crop.data)).all()
        assert sorted(crops) == sorted(
            [(d[0].id, rows[0].id, b"\xff\xd8jpeg\x00bytes"), (d[2].id, rows[1].id, b"\xff\xd8jpeg\x00bytes")]
        )
        assert c.scalars(select(schema.StepResult.raw_score)).all() == [7.25, 7.25]
    store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_writers_of_two_stations_sharing_a_database_never_take_the_same_id(backend, tmp_path, request):
    # Each station's writer gives ids itself; two at once on one database must neither collide
    # (a collision would be a refused record, set aside) nor break a station's id order, which
    # is its commit order (the sinks' outbox reads a station's verdicts in id order).
    url = _url(backend, tmp_path, request)
    Store(url).close()
    runs = [_run("lineA"), _run("lineB")]
    written = {r.station: 0 for r in runs}
    errors: list[BaseException] = []

    def writer(run: RunRecord) -> None:
        store = Store(url, migrate=False)
        try:
            store.ensure_run(run)
            for b in range(15):
                batch = [_record(run, b * 20 + i) for i in range(20)]
                written[run.station] += store.write(batch)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=writer, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert written == {"lineA": 300, "lineB": 300}
    store = Store(url)
    with store.engine.connect() as c:
        for run in runs:
            seqs = c.scalars(
                select(schema.Inspection.seq)
                .join(schema.Station, schema.Station.id == schema.Inspection.station_id)
                .where(schema.Station.name == run.station)
                .order_by(schema.Inspection.id)
            ).all()
            assert seqs == list(range(300))
        # every defect and crop belongs to an inspection of the same part
        bad = c.execute(
            select(schema.Defect.id)
            .join(schema.Inspection, schema.Inspection.id == schema.Defect.inspection_id)
            .join(schema.Crop, schema.Crop.defect_id == schema.Defect.id)
            .where(schema.Crop.inspection_id != schema.Inspection.id)
        ).all()
        assert bad == []
        assert c.scalar(select(schema.Defect.id).order_by(schema.Defect.id.desc()).limit(1)) == 1200
    # a later write goes on after the last ids
    run = _run("lineA")
    store.ensure_run(run)
    store.write([_record(run, 0)])
    with store.engine.connect() as c:
        assert c.scalar(select(schema.Inspection.id).order_by(schema.Inspection.id.desc()).limit(1)) == 601
    store.close()


def test_a_record_knows_when_it_was_committed_and_the_store_keeps_its_committed_latency(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    run = _run("l1")
    store.ensure_run(run)
    decided = utcnow() - timedelta(milliseconds=400)  # the verdict came 400 ms before the writer took it
    r = _record(run, 0, at=decided - timedelta(milliseconds=12))
    r.decided_at = decided
    ni = _record(run, 1, steps=[], defects=[])
    ni.verdict, ni.latency_ms = "NOT_INSPECTED", None
    assert r.committed_at is None
    before = utcnow()
    assert store.write([r, ni]) == 2
    assert r.committed_at is not None and before <= r.committed_at <= utcnow()
    with store.engine.connect() as c:
        rows = c.execute(
            select(schema.Inspection.committed_at, schema.Inspection.commit_latency_ms).order_by(schema.Inspection.id)
        ).all()
    assert rows[0].committed_at == r.committed_at
    expect = 12.0 + (r.committed_at - decided).total_seconds() * 1000
    assert rows[0].commit_latency_ms == pytest.approx(expect) and rows[0].commit_latency_ms >= 412.0
    assert rows[1].commit_latency_ms is None and rows[1].committed_at == r.committed_at
    # Written again (a spool drained twice): skipped, its commit time stays the first one.
    again = InspectionRecord(**{**{f: getattr(r, f) for f in r.__dataclass_fields__}, "committed_at": None})
    assert store.write([again]) == 0 and again.committed_at is None
    store.close()


class RawSpy(Detector):
    name = "raw_spy"
    kinds = ("spot",)
    report_floor = 0.1

    def inspect(self, view):
        # a part the detector scores below its report floor (normalised 0.02: not stored), and
        # one finding above it; both carry the detector's raw score
        return [
            Finding("spot", 0.02, (0, 0, 2, 2), "faint", raw_score=41.5),
            Finding("spot", 0.3, (4, 4, 2, 2), "weak", raw_score=12.0),
        ]


def test_a_steps_raw_score_counts_findings_below_the_report_floor(tmp_path):
    worker = StepWorker(Step(0, "s", RawSpy, RawSpy.Config(), None, 2000.0), tmp_path)
    try:
        out = worker.run(View(np.zeros((16, 16), np.uint8), "p1"))
    finally:
        worker.close()
    assert out.status == "ok"
    assert [(f.score, f.raw_score) for f in out.findings] == [(0.3, 12.0)]  # the floor dropped the faint one
    assert out.raw_score == 41.5  # ... but not its raw score
    with pytest.raises(ValueError, match="raw_score must be a finite number"):
        Finding("spot", 0.5, (0, 0, 1, 1), raw_score=float("nan"))


class RawSpyPlugin:
    @staticmethod
    @hookimpl
    def inspector_register_detectors(register):
        register(RawSpy)


def test_a_station_stores_the_raw_scores_beside_the_normalised_ones(tmp_path):
    images = [np.zeros((16, 16), np.uint8) for _ in range(3)]
    result = run_station({"steps": [{"detector": "raw_spy"}]}, tmp_path, images=images, plugins=[RawSpyPlugin])
    store = Store(result.db_url)
    with store.engine.connect() as c:
        steps = c.execute(select(schema.StepResult.score, schema.StepResult.raw_score)).all()
        defects = c.execute(select(schema.Defect.score, schema.Defect.raw_score, schema.Defect.failed)).all()
    store.close()
    assert steps == [(0.3, 41.5)] * 3  # the step's raw score counts the finding below the floor
    assert defects == [(0.3, 12.0, False)] * 3  # only the one above it is stored


def test_a_fresh_batch_holding_an_already_stored_verdict_is_written_once_nothing_refused(tmp_path):
    # The writer skips the duplicate probe on its first attempt at a batch; should a uid be stored
    # all the same (a caller handing one record twice), the unique index refuses the batch, the
    # record-by-record retry probes, and the verdict is kept once, never set aside.
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    run = _run("l1")
    done: list[InspectionRecord] = []
    rec = Recorder(store, run=run, on_committed=done.extend)
    rec.start()
    first = _record(run, 0)
    rec.submit(first)
    assert rec.flush(10)
    again = _record(run, 0)
    again.uid = first.uid
    rec.submit(again)
    rec.submit(_record(run, 1))
    assert rec.close(10, parts_seen=3), rec.close_problem
    assert rec.refused == 0 and len(done) == 3
    with store.engine.connect() as c:
        assert c.scalars(select(schema.Inspection.seq).order_by(schema.Inspection.id)).all() == [0, 1]
    store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_first_of_part_probe_over_many_batches_marks_repeats_and_late_arrivals(backend, tmp_path, request):
    """The first-of-part probe (one parameter: json_each on SQLite, unnest on PostgreSQL, where
    psycopg prepares it from its fifth run) finds stored inspections of a part in every batch: a
    repeat is not first, an earlier capture that arrives later takes the first mark from it."""
    store = Store(_url(backend, tmp_path, request))
    run = _run("probe")
    store.ensure_run(run)
    t0 = utcnow() - timedelta(hours=1)
    expected: dict[str, tuple[datetime, str]] = {}  # part id -> (earliest capture, its uid)
    for batch in range(8):
        recs = []
        for i in range(12):
            part = f"part-{(batch * 7 + i) % 30:03d}"  # every part comes back in later batches
            late = i % 5 == 0  # captured before the part's stored inspections
            at = t0 - timedelta(seconds=batch * 12 + i) if late else t0 + timedelta(seconds=batch * 12 + i)
            r = _record(run, batch * 12 + i, at=at)
            r.part_id = part
            recs.append(r)
            if part not in expected or at < expected[part][0]:
                expected[part] = (at, r.uid)
        assert store.write(recs, fresh=True) == len(recs)
    with store.engine.connect() as c:
        rows = c.execute(
            select(schema.Inspection.uid, schema.Inspection.part_id, schema.Inspection.first_of_part)
        ).all()
        parts = c.execute(select(schema.InspectionHour.first_parts)).scalars().all()
    firsts = {uid for uid, _, f in rows if f}
    assert firsts == {uid for _, uid in expected.values()}
    assert len(rows) == 96 and len(firsts) == 30
    assert sum(parts) == 30  # the roll-up moved its first-part counts with the marks
    store.close()


def test_a_fresh_batch_of_one_already_stored_verdict_is_kept_once_not_set_aside(tmp_path):
    # The same as above when the writer happens to take the repeated verdict alone (a batch of one):
    # the unique index refuses it, the retry probes, nothing is set aside.
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    run = _run("l1")
    store.ensure_run(run)
    first = _record(run, 0)
    assert store.write([first], fresh=True) == 1
    done: list[InspectionRecord] = []
    rec = Recorder(store, run=run, on_committed=done.extend)
    rec.start()
    again = _record(run, 0)
    again.uid = first.uid
    rec._write([again], fresh=True)  # the writer's own first attempt at a batch of one
    assert rec.close(10, parts_seen=1), rec.close_problem
    assert rec.refused == 0 and done == [again]
    with store.engine.connect() as c:
        assert c.scalars(select(schema.Inspection.uid)).all() == [first.uid]
    store.close()


def _sizes_of_a_backlog(tmp_path, n: int, slow_s: float = 0.0, **kw) -> tuple[list[int], Store]:
    """The transactions of a writer that starts with ``n`` verdicts waiting (each reported only
    after its commit: it is in the database when ``on_committed`` hears of it)."""
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    run = _run("g1")
    sizes: list[int] = []

    def committed(batch: list[InspectionRecord]) -> None:
        with store.engine.connect() as c:  # another connection: only committed rows are seen
            stored = c.execute(select(func.count()).select_from(schema.Inspection)).scalar_one()
        assert stored == sum(sizes) + len(batch)
        sizes.append(len(batch))

    rec = Recorder(store, run=run, on_committed=committed, **kw)
    if slow_s:
        write = store.write

        def slow(records, **a):
            if len(records) > rec.max_batch:
                time.sleep(slow_s)
            return write(records, **a)

        store.write = slow  # type: ignore[method-assign]
    for i in range(n):  # all waiting before the writer starts: it is behind from the first batch
        rec.submit(_record(run, i))
    rec.start()
    assert rec.close(60, parts_seen=n), rec.close_problem
    return sizes, store


def test_a_writer_behind_takes_bigger_groups_and_reports_each_after_its_commit(tmp_path):
    sizes, store = _sizes_of_a_backlog(tmp_path, 2600, max_batch=500, max_group=2000)
    assert sizes == [2000, 600], sizes
    with store.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(schema.Inspection)).scalar_one() == 2600
    store.close()
    with pytest.raises(ValueError, match="max_group"):
        Recorder(store, run=_run("g2"), on_committed=lambda b: None, max_batch=500, max_group=100)


def test_a_group_slow_to_write_halves_the_next_ones(tmp_path):
    # write_timeout_s 1: a group taking more than 0.25 s halves the next; down to max_batch.
    sizes, store = _sizes_of_a_backlog(
        tmp_path, 70, slow_s=0.3, max_batch=5, max_group=20, write_timeout_s=1.0, max_queue=100
    )
    assert sizes[:3] == [20, 10, 5], sizes
    assert sum(sizes) == 70
    store.close()


def test_sqlite_bulk_rows_leave_out_only_columns_null_in_every_row(tmp_path):
    # SQLite: the columns NULL in every row of a batch are left out of the INSERT (sqlite3 looks
    # for an adapter for each None it binds). A column NULL in the first row only is kept, and so
    # are NOT NULL columns and those with a DEFAULT (left out, they would not store NULL).
    from inspector_core.store import database

    spec = database._STEP_COLUMNS
    names = spec[1].split()
    at = {n: i for i, n in enumerate(names)}
    row = (1, 0, "front", "scratch", "ok", 0.5, None, 4.0, 1, None, None)
    later = (2, 0, "front", "scratch", "ok", 0.5, 3.5, 4.0, 1, None, None)  # raw_score only here
    narrow, rows = database._without_nulls(spec, [row, later])
    assert narrow[1].split() == [n for n in names if n not in ("error", "view")]
    assert rows == [tuple(v for n, v in zip(names, r, strict=True) if n not in ("error", "view")) for r in (row, later)]
    same, kept = database._without_nulls(spec, [later[: at["error"]] + ("boom",) + later[at["error"] + 1 :]])
    assert same[1].split() == [n for n in names if n != "view"] and len(kept[0]) == len(names) - 1
    # Never left out: a column with a DEFAULT (first_of_part) or NOT NULL, even if given None.
    ins = database._INSPECTION_COLUMNS[1].split()
    optional = {ins[i] for i in database._nullable(database._INSPECTION_COLUMNS)}
    assert "first_of_part" not in optional and "uid" not in optional and "id" not in optional
    assert {"error", "error_step", "recipe", "recipe_hash", "source_meta"} <= optional
    # What the migrations made agrees: no column left out has a DEFAULT in the database.
    url = f"sqlite:///{tmp_path / 's.db'}"
    Store(url).close()
    import sqlite3

    with sqlite3.connect(tmp_path / "s.db") as db:
        for spec in (database._INSPECTION_COLUMNS, database._STEP_COLUMNS, database._DEFECT_COLUMNS):
            info = {r[1]: (r[3], r[4]) for r in db.execute(f"PRAGMA table_info({spec[0]})")}
            cols = spec[1].split()
            for i in database._nullable(spec):
                assert info[cols[i]] == (0, None), (spec[0], cols[i], info[cols[i]])
