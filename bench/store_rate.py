"""The store's line rate: inspections committed per second through the recorder, against the raw
grouped limit of the same rows on the same database in the same run.

Prints figures; it is not a test. Run: ``.venv/bin/python bench/store_rate.py [--n N] [--rounds R]``.

Each inspection has one step, one failed defect and its JPEG crop (about 2.5 KB), as a station
writes them. Two figures per database, measured alternately (``rounds`` times, each on a new
database migrated to the newest schema, so both start empty with the same indexes):

- **recorder**: :class:`~inspector_core.store.Recorder` as a station uses it (one producer
  thread submitting, the writer's group commit, at most 500 per transaction), timed from the
  first submit to ``close()`` (every verdict committed and reported, the run ended);
- **recorder, SQLite's own checkpoints** (SQLite only): the same with ``wal_checkpoints=False``,
  so that the write-ahead log is checkpointed inside the writer's commits (SQLite's
  autocheckpoint, as before the checkpointer thread of ``store/checkpoint.py``);
- **raw**: plain DBAPI ``executemany`` of the same rows (``inspections``, ``step_results``,
  ``defects``, ``crops``, ids given), grouped 500 inspections per commit; no roll-up, no
  duplicate check, no first-of-part probe, no spool: the limit of this database on this disk.

SQLite: WAL, ``synchronous=FULL`` (the store's setting), a file in a temporary folder.
PostgreSQL: a new database named ``inspector_bench_<hex>`` on 127.0.0.1:5432, dropped after.
Also printed: how long after ``committed_at`` the commit returned (the part of the committed
latency that ``commit_latency_ms`` does not see), at full rate and at a line's pace (200/s),
with the recorded capture-to-committed p50/p99 then; and ``os.getloadavg()`` beside every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspector_core.store import (
    CropRecord,
    DefectRecord,
    InspectionRecord,
    Recorder,
    RunRecord,
    StepRecord,
    Store,
    utcnow,
)

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
GROUP = 500
CHECKPOINTS: list[tuple[int, int]] = []
WRITER_CPU: dict[bool, list[float]] = {}
"""CPU us per inspection of the recorder's writer thread, by ``wal_checkpoints``."""
"""(checkpoints, log restarts) of each recorder run with the checkpointer thread."""


def _crop() -> bytes:
    rng = np.random.default_rng(0)
    patch = cv2.GaussianBlur(rng.integers(0, 255, (72, 88), np.uint8), (5, 5), 0)
    ok, buf = cv2.imencode(".jpg", patch, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


CROP = _crop()


def records(n: int, run_uid: str, station: str) -> list[InspectionRecord]:
    t0 = utcnow()
    out = []
    for i in range(n):
        at = t0 + timedelta(microseconds=500 * i)
        out.append(
            InspectionRecord(
                uuid.uuid4().hex,
                None,
                None,
                i,
                f"p{i:07d}",
                at,
                at + timedelta(milliseconds=12),
                "FAIL",
                12.0,
                steps=[StepRecord(0, "front", "scratch", "ok", 0.91, 8.5, 1)],
                defects=[
                    DefectRecord(
                        "front",
                        "scratch",
                        "scratch",
                        0.91,
                        True,
                        (1000, 800, 40, 30),
                        40.0,
                        2.0,
                        {"length_px": 40.0, "width_px": 2.0},
                        "scratch 40 px",
                        CropRecord("jpeg", 88, 72, 980, 780, 1.0, CROP),
                    )
                ],
                station=station,
                run_uid=run_uid,
            )
        )
    return out


def _run(station: str) -> RunRecord:
    return RunRecord(station, "bench", "0", {}, "", "x" * 64, {})


def recorder_rate(url: str, n: int, *, wal_checkpoints: bool = True) -> tuple[float, float, list[float]]:
    """Inspections/s through the recorder, this process's CPU us per inspection (all threads),
    and the gaps (ms) between each batch's committed_at and its commit returning."""
    store = Store(url)
    run = _run("rate")
    recs = records(n, run.uid, run.station)
    gaps: list[float] = []

    def committed(batch: list[InspectionRecord]) -> None:  # on the writer's thread
        now = utcnow()
        writer.append((time.thread_time(), len(done)))
        done.extend(batch)
        at = getattr(batch[-1], "committed_at", None)
        if at is not None:
            gaps.append((now - at).total_seconds() * 1000)

    done: list[InspectionRecord] = []
    writer: list[tuple[float, int]] = []
    rec = Recorder(store, run=run, on_committed=committed, wal_checkpoints=wal_checkpoints)
    rec.start()
    t0, c0 = time.perf_counter(), time.process_time()
    for r in recs:
        rec.submit(r)
    assert rec.close(120, parts_seen=n), rec.close_problem
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert len(done) == n and rec.committed == n, (len(done), rec.committed)
    cp = rec.checkpointer
    if cp is not None:
        assert cp.error is None, cp.error
        CHECKPOINTS.append((cp.checkpoints, cp.restarts))
    # The writer's thread, from its first commit to its last (the one that holds the write lock).
    WRITER_CPU.setdefault(wal_checkpoints, []).append(
        (writer[-1][0] - writer[0][0]) / (writer[-1][1] - writer[0][1]) * 1e6
    )
    store.close()
    return n / dt, cpu / n * 1e6, gaps


def write_rate(url: str, n: int) -> tuple[float, float]:
    """Inspections/s of ``Store.write`` alone, from one thread, 500 per call (the writer's work
    without the recorder's queue and threads), and CPU us per inspection."""
    store = Store(url)
    run = _run("write")
    store.ensure_run(run)
    recs = records(n, run.uid, run.station)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, n, GROUP):
        store.write(recs[i : i + GROUP])
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    store.close()
    return n / dt, cpu / n * 1e6


def paced(url: str, rate: float, seconds: float) -> tuple[list[float], list[float]]:
    """Verdicts submitted at a line's pace (``rate``/s, each stamped when submitted): the gaps (ms)
    from each batch's committed_at to its commit returning, and each verdict's capture-to-committed
    latency as the store recorded it."""
    store = Store(url)
    run = _run("paced")
    n = int(rate * seconds)
    recs = records(n, run.uid, run.station)
    gaps: list[float] = []

    def committed(batch: list[InspectionRecord]) -> None:
        now = utcnow()
        if batch[-1].committed_at is not None:
            gaps.append((now - batch[-1].committed_at).total_seconds() * 1000)

    rec = Recorder(store, run=run, on_committed=committed)
    rec.start()
    t0 = time.perf_counter()
    for i, r in enumerate(recs):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        r.captured_at = utcnow()
        r.decided_at = r.captured_at
        r.latency_ms = 0.0
        rec.submit(r)
    assert rec.close(60, parts_seen=n), rec.close_problem
    with store.engine.connect() as c:
        lat = [x for (x,) in c.exec_driver_sql("SELECT commit_latency_ms FROM inspections").all()]
    store.close()
    return gaps, lat


def _rows(recs: list[InspectionRecord], sid: int, rid: int, sqlite: bool) -> list[tuple[list[tuple[Any, ...]], ...]]:
    """The same rows the store writes, as positional parameters, per group of GROUP."""

    def t(x: Any) -> Any:
        return x.isoformat(" ") if sqlite else x

    groups: list[tuple[list[tuple[Any, ...]], ...]] = []
    iid = did = 0
    for g in range(0, len(recs), GROUP):
        ins: list[tuple[Any, ...]] = []
        steps: list[tuple[Any, ...]] = []
        defects: list[tuple[Any, ...]] = []
        crops: list[tuple[Any, ...]] = []
        for r in recs[g : g + GROUP]:
            iid += 1
            ins.append(
                (
                    iid,
                    r.uid,
                    sid,
                    rid,
                    r.seq,
                    r.part_id,
                    t(r.captured_at),
                    t(r.decided_at),
                    r.verdict,
                    r.latency_ms,
                    None,
                    None,
                    1,
                    None,
                    True,
                )
            )
            for s in r.steps:
                steps.append((iid, s.step_index, s.step, s.detector, s.status, s.score, s.latency_ms, s.n_findings))
            for d in r.defects:
                did += 1
                defects.append(
                    (did, iid, d.step, d.detector, d.kind, d.score, d.failed, *d.box, d.size_px, d.size_mm)
                    + (json.dumps(d.measurements), d.message)
                )
                c = d.crop
                assert c is not None
                crops.append((did, did, iid, c.format, c.width, c.height, c.x, c.y, c.scale, c.data))
        groups.append((ins, steps, defects, crops))
    return groups


SQL = (
    "INSERT INTO inspections (id, uid, station_id, run_id, seq, part_id, captured_at, decided_at, verdict,"
    " latency_ms, error, error_step, n_defects, source_meta, first_of_part) VALUES ({})",
    "INSERT INTO step_results (inspection_id, step_index, step, detector, status, score, latency_ms, n_findings)"
    " VALUES ({})",
    "INSERT INTO defects (id, inspection_id, step, detector, kind, score, failed, x, y, w, h, size_px, size_mm,"
    " measurements, message) VALUES ({})",
    "INSERT INTO crops (id, defect_id, inspection_id, format, width, height, x, y, scale, data) VALUES ({})",
)
ARITY = (15, 8, 15, 10)


def raw_rate(url: str, n: int) -> tuple[float, float]:
    """Inspections/s of the raw grouped inserts, and CPU us per inspection (this process)."""
    store = Store(url)  # the same schema and indexes
    run = _run("raw")
    sid, rid = store.ensure_run(run)
    store.close()
    sqlite = url.startswith("sqlite")
    groups = _rows(records(n, run.uid, run.station), sid, rid, sqlite)
    mark = "?" if sqlite else "%s"
    sql = [s.format(", ".join([mark] * k)) for s, k in zip(SQL, ARITY, strict=True)]
    if sqlite:
        db = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        t0, c0 = time.perf_counter(), time.process_time()
        for group in groups:
            db.execute("BEGIN IMMEDIATE")
            for s, rows in zip(sql, group, strict=True):
                db.executemany(s, rows)
            db.execute("COMMIT")
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        db.close()
    else:
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as pg:
            t0, c0 = time.perf_counter(), time.process_time()
            for group in groups:
                with pg.transaction(), pg.cursor() as cur:
                    for s, rows in zip(sql, group, strict=True):
                        cur.executemany(s, rows)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return n / dt, cpu / n * 1e6


def _pg_db() -> tuple[str, str]:
    name = f"inspector_bench_{uuid.uuid4().hex[:12]}"
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def _pg_drop(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def measure(backend: str, n: int, rounds: int, goal: float) -> dict[str, Any]:
    rates: list[float] = []
    autos: list[float] = []
    raws: list[float] = []
    writes: list[float] = []
    cpus: dict[str, list[float]] = {"raw": [], "recorder": [], "autockpt": [], "write": []}
    gaps: list[float] = []
    order = ("raw", "recorder", "autockpt", "write") if backend == "sqlite" else ("raw", "recorder", "write")
    for k in range(rounds):
        for what in order if k % 2 == 0 else order[::-1]:
            with tempfile.TemporaryDirectory() as d:
                name = None
                if backend == "sqlite":
                    url = f"sqlite:///{d}/{what}.db"
                else:
                    name, url = _pg_db()
                try:
                    if what == "raw":
                        r, cpu = raw_rate(url, n)
                        raws.append(r)
                    elif what == "write":
                        r, cpu = write_rate(url, n)
                        writes.append(r)
                    elif what == "autockpt":
                        r, cpu, _ = recorder_rate(url, n, wal_checkpoints=False)
                        autos.append(r)
                    else:
                        r, cpu, g = recorder_rate(url, n)
                        rates.append(r)
                        gaps += g
                    cpus[what].append(cpu)
                finally:
                    if name is not None:
                        _pg_drop(name)
            print(
                f"  {backend} round {k + 1} {what:8s}: {r:9,.0f} inspections/s, {cpu:6.1f} CPU us each  ({_load()})",
                flush=True,
            )
    rate, raw = statistics.median(rates), statistics.median(raws)
    ratios = [a / b for a, b in zip(rates, raws, strict=True)]
    gap = f"; commit returned {statistics.median(gaps):.1f} ms (median) after committed_at" if gaps else ""
    print(
        f"{backend}: recorder {rate:,.0f}/s vs raw grouped {raw:,.0f}/s (medians of {rounds}, n={n} each): "
        f"ratio {statistics.median(ratios):.2f} (per round {', '.join(f'{x:.2f}' for x in ratios)}); "
        f"goal >= {goal:,.0f}/s: {'met' if rate >= goal else 'MISSED'}{gap}  ({_load()})",
        flush=True,
    )
    if autos:
        aratios = [a / b for a, b in zip(autos, raws, strict=True)]
        gains = [a / b for a, b in zip(rates, autos, strict=True)]
        print(
            f"{backend}: recorder with SQLite's own checkpoints (in the writer's commits) "
            f"{statistics.median(autos):,.0f}/s: "
            f"ratio to raw {statistics.median(aratios):.2f} (per round {', '.join(f'{x:.2f}' for x in aratios)}); "
            f"checkpointer thread / own checkpoints per round {', '.join(f'{x:.2f}' for x in gains)}; CPU "
            f"{statistics.median(cpus['autockpt']):.1f} us; checkpoints (restarts) of the thread per run: "
            f"{', '.join(f'{c} ({r})' for c, r in CHECKPOINTS)}",
            flush=True,
        )
    wcpu = {k: statistics.median(v) for k, v in WRITER_CPU.items()}
    WRITER_CPU.clear()
    print(
        f"{backend}: CPU of the recorder's writer thread per inspection: {wcpu[True]:.1f} us"
        + (f" (with SQLite's own checkpoints {wcpu[False]:.1f} us)" if False in wcpu else ""),
        flush=True,
    )
    cpu_raw, cpu_rec = statistics.median(cpus["raw"]), statistics.median(cpus["recorder"])
    cpu_write = statistics.median(cpus["write"])
    wratios = [a / b for a, b in zip(writes, raws, strict=True)]
    print(
        f"{backend}: Store.write alone (one thread, 500 per call) {statistics.median(writes):,.0f}/s: ratio to raw "
        f"{statistics.median(wratios):.2f} (per round {', '.join(f'{x:.2f}' for x in wratios)})",
        flush=True,
    )
    print(
        f"{backend}: CPU of this process per inspection: recorder {cpu_rec:.1f} us, Store.write {cpu_write:.1f} us, "
        f"raw {cpu_raw:.1f} us (recorder/raw {cpu_rec / cpu_raw:.2f}; less disturbed by other load than wall time)",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as d:
        name = None
        if backend == "sqlite":
            url = f"sqlite:///{d}/paced.db"
        else:
            name, url = _pg_db()
        try:
            pgaps, plat = paced(url, 200, 3)
        finally:
            if name is not None:
                _pg_drop(name)
    plat.sort()
    print(
        f"{backend}: at a line's pace (200 verdicts/s for 3 s, verdict = capture): commit returned "
        f"{statistics.median(pgaps):.1f} ms (median; max {max(pgaps):.1f}) after committed_at over {len(pgaps)} "
        f"commits; commit_latency_ms p50 {plat[len(plat) // 2]:.1f} ms, "
        f"p99 {plat[(len(plat) * 99 + 99) // 100 - 1]:.1f} ms  ({_load()})",
        flush=True,
    )
    return {
        "rate": rate,
        "raw": raw,
        "ratio": statistics.median(ratios),
        "write": statistics.median(writes),
        "cpu_us": cpu_rec,
        "raw_cpu_us": cpu_raw,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="inspections per measurement (SQLite)")
    ap.add_argument("--pg-n", type=int, default=10_000, help="inspections per measurement (PostgreSQL)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", choices=("sqlite", "postgres"))
    a = ap.parse_args(argv)
    out = {}
    if a.only != "postgres":
        out["sqlite"] = measure("sqlite", a.n, a.rounds, 20_000)
    if a.only != "sqlite":
        out["postgres"] = measure("postgres", a.pg_n, a.rounds, 4_000)
    return out


if __name__ == "__main__":
    main()
