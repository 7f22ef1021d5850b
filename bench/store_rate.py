"""The store's line rate: inspections committed per second through the recorder, against the raw
grouped limit of the same rows on the same database in the same run.

Prints figures; it is not a test. Run: ``.venv/bin/python bench/store_rate.py [--n N] [--rounds R]``.

Each inspection has one step, one failed defect and its JPEG crop (about 2.5 KB), as a station
writes them. Figures per database, measured alternately (``rounds`` times, the order reversed
every other round, each on a new database migrated to the newest schema, so all start empty with
the same indexes):

- **recorder**: :class:`~inspector_core.store.Recorder` as a station uses it (one producer thread
  submitting, the writer's group commit: 500 per transaction while it keeps up; on SQLite up to
  ``max_group`` (2,000) when more wait, as they always do here), timed from the first submit to
  the last verdict's commit reported (``on_committed``), as raw's clock stops at its last
  ``COMMIT``; the rate to ``close()`` returning (the end of the run recorded, the threads joined,
  the connections closed: SQLite's last connection checkpoints the whole log then) is printed
  too. The group sizes it used are printed;
- **recorder, groups of 500** (SQLite): the same with ``max_group=500`` (the recorder before it
  grouped more under backlog);
- **raw**: plain DBAPI ``executemany`` of **the same rows the store writes**, as the driver is
  handed them (the same columns, in their storage form: captured from ``Store.write`` into a
  scratch file before the clock starts, then replayed into the new database; on SQLite the store
  leaves out the columns NULL in every row of a batch, so raw does too: ``--extra`` also times the
  rows with every column bound, as before), one transaction per group of the recorder's size (and of
  500 for the recorder with groups of 500); no roll-up, no first-of-part probe, no id allocation,
  no spool: the limit of this database on this disk for these rows. SQLite: the same connection
  settings as the store (WAL, ``synchronous=FULL``, foreign keys) and SQLite's own checkpoints;
- PostgreSQL: also the server's CPU per inspection (the backends of these connections, read from
  ``/proc``: the server is local; its WAL writer and checkpointer are not counted);
- optional (``--extra``): the recorder with SQLite's own WAL checkpoints
  (``wal_checkpoints=False``), ``Store.write`` alone from one thread, and (SQLite) raw with every
  column bound.

Beside every wall rate: the CPU this process spent per inspection (``time.process_time``: all
its threads) and, for the recorder, its writer thread's CPU per inspection; and
``os.getloadavg()``. On a shared machine the CPU per inspection is the figure that holds.
SQLite: a file in a temporary folder. PostgreSQL: a new database named ``inspector_bench_<hex>``
on 127.0.0.1:5432, dropped after.
Also printed: how long after ``committed_at`` the commit returned (the part of the committed
latency that ``commit_latency_ms`` does not see), at full rate and at a line's pace (200/s),
with the recorded capture-to-committed p50/p99 then.
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
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
    database,
    utcnow,
)

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BATCH = 500
"""The recorder's ``max_batch`` (its default): verdicts per transaction while it keeps up."""
GROUPS = {"sqlite": 2000, "postgres": 500}
"""The recorder's ``max_group`` by default (``recorder.SQLITE_GROUP`` on SQLite, ``max_batch``
elsewhere): verdicts per transaction when more wait."""
GROUP = GROUPS["sqlite"]


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


SERVER_CPU: list[float] = []
"""PostgreSQL: the server's CPU us per inspection of each measurement (its backends for this
bench's connections, read from /proc: the server is local), in the order measured."""


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _backends(url: str) -> dict[int, float]:
    """The CPU seconds so far of each PostgreSQL backend connected to the database of ``url``
    (``{}`` for SQLite)."""
    if url.startswith("sqlite"):
        return {}
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as c:
        pids = [
            p
            for (p,) in c.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ]
    return {p: _proc_cpu(p) for p in pids}


def _server_cpu(url: str, before: dict[int, float], n: int) -> None:
    if url.startswith("sqlite"):
        return
    after = _backends(url)
    SERVER_CPU.append(sum(v - before.get(p, 0.0) for p, v in after.items()) / n * 1e6)


def recorder_rate(
    url: str, n: int, *, wal_checkpoints: bool = True, max_group: int | None = None
) -> tuple[float, float, float, list[float], list[int], float]:
    """Inspections/s through the recorder, from the first submit to the last verdict's commit
    reported (``on_committed``: raw's clock also stops at its last COMMIT); this process's CPU us per
    inspection (all threads, to ``close()``); the writer thread's CPU us per inspection (from its
    first commit to its last); the gaps (ms) between each batch's committed_at and its commit
    returning; the size of each transaction; inspections/s to ``close()`` returning (the end of the
    run recorded, the threads joined, the pool's connections closed: SQLite's last connection
    checkpoints the whole log then)."""
    store = Store(url)
    run = _run("rate")
    recs = records(n, run.uid, run.station)
    # The n records made up front stand for frames a station meets one at a time (its queue holds
    # at most max_queue): frozen, they stay out of the collector's full passes, which otherwise
    # run on the writer's thread and charge it 5-6 us per verdict for the bench's own objects.
    gc.collect()
    gc.freeze()
    gaps: list[float] = []
    sizes: list[int] = []
    writer: list[tuple[float, int]] = []
    last = [0.0]
    done = 0

    def committed(batch: list[InspectionRecord]) -> None:  # on the writer's thread
        nonlocal done
        now = utcnow()
        writer.append((time.thread_time(), done))
        last[0] = time.perf_counter()
        done += len(batch)
        sizes.append(len(batch))
        at = batch[-1].committed_at
        if at is not None:
            gaps.append((now - at).total_seconds() * 1000)

    rec = Recorder(
        store, run=run, on_committed=committed, wal_checkpoints=wal_checkpoints, max_batch=BATCH, max_group=max_group
    )
    rec.start()
    server = _backends(url)
    t0, c0 = time.perf_counter(), time.process_time()
    for r in recs:
        rec.submit(r)
    assert rec.close(300, parts_seen=n), rec.close_problem
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    _server_cpu(url, server, n)
    assert done == n and rec.committed == n, (done, rec.committed)
    cp = rec.checkpointer
    if cp is not None:
        assert cp.error is None, cp.error
    store.close()
    gc.unfreeze()
    # The writer thread from the end of its first commit to the end of its last.
    wcpu = (writer[-1][0] - writer[0][0]) / (writer[-1][1] - writer[0][1]) * 1e6
    return n / (last[0] - t0), cpu / n * 1e6, wcpu, gaps, sizes, n / dt


def write_rate(url: str, n: int, group: int) -> tuple[float, float]:
    """Inspections/s of ``Store.write`` alone, from one thread, ``group`` per call, as the recorder
    calls it (ids of the run known, first attempt), and CPU us per inspection."""
    store = Store(url)
    run = _run("write")
    sid, rid = store.ensure_run(run)
    recs = records(n, run.uid, run.station)
    for r in recs:
        r.station_id, r.run_id = sid, rid
    store.write(recs[:1], fresh=True)  # connected (the server's backend is there to be read)
    server = _backends(url)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(1, n, group):
        store.write(recs[i : i + group], fresh=True)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    _server_cpu(url, server, n - 1)
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
    # The n records made up front stand for frames a station meets one at a time (its queue holds
    # at most max_queue): frozen, they stay out of the collector's full passes, which otherwise
    # run on the writer's thread and charge it 5-6 us per verdict for the bench's own objects.
    gc.collect()
    gc.freeze()
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


Rows = list[list[tuple[tuple[str, str], list[tuple[Any, ...]]]]]
"""Per transaction, per table: (the table and its columns, the rows)."""
_CAPTURED: dict[tuple[int, int], tuple[tuple[int, int], Rows]] = {}
_EVERY_COLUMN: dict[tuple[int, int], Rows] = {}
"""The same rows with every column, before ``Store.write`` left out those NULL in every row of a
batch (``--extra``: the raw figure of the statements as the store sent them before)."""


def store_rows(n: int, group: int) -> tuple[tuple[int, int], Rows]:
    """The rows ``Store.write`` hands the driver for ``n`` bench inspections written ``group`` per
    transaction, table by table (every column, in SQLite's storage form), and the (station, run)
    ids they name. Captured once per (n, group) from ``Store.write`` into a scratch SQLite file."""
    key = (n, group)
    if key not in _CAPTURED:
        with tempfile.TemporaryDirectory() as d:
            store = Store(f"sqlite:///{d}/rows.db")
            run = _run("raw")
            ids = store.ensure_run(run)
            recs = records(n, run.uid, run.station)
            for r in recs:
                r.station_id, r.run_id = ids
            groups: Rows = []
            full: Rows = []
            send_rows = database._send_rows
            without_nulls = database._without_nulls

            def whole(spec: tuple[str, str], rows: list[tuple[Any, ...]]) -> Any:
                full[-1].append((spec, rows))
                return without_nulls(spec, rows)

            def grab(conn: Any, spec: tuple[str, str], rows: list[tuple[Any, ...]]) -> None:
                groups[-1].append((spec, rows))  # what the driver is handed: the statement's columns, the rows
                send_rows(conn, spec, rows)  # written too, so the next transaction's ids follow on

            database._send_rows = grab
            database._without_nulls = whole
            try:
                for i in range(0, n, group):
                    groups.append([])
                    full.append([])
                    store.write(recs[i : i + group], fresh=True)
            finally:
                database._send_rows = send_rows
                database._without_nulls = without_nulls
            store.close()
        _CAPTURED[key] = ids, groups
        _EVERY_COLUMN[key] = full
    return _CAPTURED[key]


_DATETIMES = {"inspections": ("captured_at", "decided_at", "committed_at")}
_BOOLEANS = {"inspections": ("first_of_part",), "defects": ("failed",)}


def _for_postgres(groups: Rows) -> Rows:
    """SQLite's storage form -> PostgreSQL's: datetimes as ``datetime``, booleans (0/1 on SQLite) as
    ``bool`` (JSON stays its text)."""
    out: Rows = []
    for group in groups:
        tables = []
        for (table, columns), rows in group:
            at = [i for i, c in enumerate(columns.split()) if c in _DATETIMES.get(table, ())]
            flags = [i for i, c in enumerate(columns.split()) if c in _BOOLEANS.get(table, ())]
            if at or flags:
                conv = []
                for row in rows:
                    r = list(row)
                    for i in at:
                        if r[i] is not None:
                            r[i] = datetime.fromisoformat(r[i])
                    for i in flags:
                        r[i] = bool(r[i])
                    conv.append(tuple(r))
                rows = conv
            tables.append(((table, columns), rows))
        out.append(tables)
    return out


def raw_rate(url: str, n: int, group: int, *, every_column: bool = False) -> tuple[float, float]:
    """Inspections/s of the raw grouped inserts of the store's own rows, ``group`` inspections per
    transaction, and CPU us per inspection (this process). ``every_column``: the rows with every
    column bound, NULLs included, as the store sent them before it left those out."""
    store = Store(url)  # the same schema, indexes and connection settings
    run = _run("raw")
    ids = store.ensure_run(run)
    store.close()
    captured_ids, groups = store_rows(n, group)
    sqlite = url.startswith("sqlite")
    if every_column or not sqlite:  # PostgreSQL: the store sends every column (COPY), so raw does
        groups = _EVERY_COLUMN[(n, group)]
    assert ids == captured_ids, (ids, captured_ids)  # the rows name this station and run
    mark = "?" if sqlite else "%s"

    def sql(table: str, columns: str) -> str:
        names = columns.split()
        return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join([mark] * len(names))})"

    if not sqlite:
        groups = _for_postgres(groups)
    plan = [[(sql(*spec), rows) for spec, rows in group] for group in groups]
    if sqlite:
        store = Store(url, migrate=False)
        with store.engine.connect() as conn:  # the store's own connection setup (synchronous=FULL, ...)
            db = conn.connection.dbapi_connection
            assert db is not None
            assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            t0, c0 = time.perf_counter(), time.process_time()
            for tables in plan:
                db.execute("BEGIN IMMEDIATE")
                for s, rows in tables:
                    db.executemany(s, rows)
                db.execute("COMMIT")
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        store.close()
    else:
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as pg:
            pid = pg.info.backend_pid
            s0 = _proc_cpu(pid)
            t0, c0 = time.perf_counter(), time.process_time()
            for tables in plan:
                with pg.transaction(), pg.cursor() as cur:
                    for s, rows in tables:
                        cur.executemany(s, rows)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            SERVER_CPU.append((_proc_cpu(pid) - s0) / n * 1e6)
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


def _median_ratio(a: list[float], b: list[float]) -> tuple[float, str]:
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return statistics.median(ratios), ", ".join(f"{x:.2f}" for x in ratios)


def measure(backend: str, n: int, rounds: int, goal: float, extra: bool = False) -> dict[str, Any]:
    global GROUP
    GROUP = GROUPS[backend]
    rate: dict[str, list[float]] = collections.defaultdict(list)
    cpu: dict[str, list[float]] = collections.defaultdict(list)
    wcpu: dict[str, list[float]] = collections.defaultdict(list)
    scpu: dict[str, list[float]] = collections.defaultdict(list)
    closed: dict[str, list[float]] = collections.defaultdict(list)
    loads: list[float] = []
    gaps: list[float] = []
    sizes: collections.Counter[int] = collections.Counter()
    order = ["raw", "recorder"] + (["raw500", "recorder500"] if GROUP != BATCH else [])
    if extra:
        order += ["autockpt", "write", "rawall"] if backend == "sqlite" else ["write"]
    t = time.perf_counter()
    store_rows(n, GROUP)
    store_rows(n, BATCH)
    print(f"  {backend}: the store's rows captured for the raw figures in {time.perf_counter() - t:.1f} s", flush=True)
    for k in range(rounds):
        for what in order if k % 2 == 0 else order[::-1]:
            with tempfile.TemporaryDirectory() as d:
                name = None
                if backend == "sqlite":
                    url = f"sqlite:///{d}/{what}.db"
                else:
                    name, url = _pg_db()
                w = rc = None
                try:
                    if what.startswith("raw"):
                        r, c = raw_rate(url, n, BATCH if what == "raw500" else GROUP, every_column=what == "rawall")
                    elif what == "write":
                        r, c = write_rate(url, n, GROUP)
                    else:
                        r, c, w, g, z, rc = recorder_rate(
                            url,
                            n,
                            wal_checkpoints=what != "autockpt",
                            max_group=BATCH if what == "recorder500" else None,  # None: the default
                        )
                        wcpu[what].append(w)
                        closed[what].append(rc)
                        if what == "recorder":
                            gaps += g
                            sizes.update(z)
                finally:
                    if name is not None:
                        _pg_drop(name)
            rate[what].append(r)
            cpu[what].append(c)
            srv = ""
            if backend != "sqlite":
                scpu[what].append(SERVER_CPU[-1])
                srv = f", server {SERVER_CPU[-1]:6.1f}"
            loads.append(os.getloadavg()[0])
            print(
                f"  {backend} round {k + 1} {what:11s}: {r:9,.0f} inspections/s, {c:6.1f} CPU us each"
                + (f" (writer thread {w:5.1f}; to close() {rc:,.0f}/s)" if w is not None else "")
                + srv
                + f"  ({_load()})",
                flush=True,
            )
    med = {k: statistics.median(v) for k, v in rate.items()}
    mcpu = {k: statistics.median(v) for k, v in cpu.items()}
    mw = {k: statistics.median(v) for k, v in wcpu.items()}
    ratio, per = _median_ratio(rate["recorder"], rate["raw"])
    cratio, cper = _median_ratio(closed["recorder"], rate["raw"])
    if GROUP == BATCH:  # no groups on this database: the same figures
        for key in ("raw", "recorder"):
            rate[f"{key}500"], cpu[f"{key}500"] = rate[key], cpu[key]
            med[f"{key}500"], mcpu[f"{key}500"] = med[key], mcpu[key]
        wcpu["recorder500"] = wcpu["recorder"]
        mw["recorder500"] = mw["recorder"]
    ratio500, per500 = _median_ratio(rate["recorder500"], rate["raw500"])
    gain, pgain = _median_ratio(rate["recorder"], rate["recorder500"])
    common = sizes.most_common(3)
    load = f"1-min load {min(loads):.1f}-{max(loads):.1f}"
    print(
        f"{backend}: recorder {med['recorder']:,.0f}/s vs raw grouped {med['raw']:,.0f}/s at the same group size "
        f"({GROUP}; medians of {rounds}, n={n} each): ratio {ratio:.2f} (per round {per}); goal >= {goal:,.0f}/s: "
        f"{'met' if med['recorder'] >= goal else 'MISSED'}; commit returned "
        f"{statistics.median(gaps):.1f} ms (median) after committed_at  ({load})",
        flush=True,
    )
    print(
        f"{backend}: the recorder's transactions: {sum(sizes.values()) / rounds:g} per {n} verdicts, most common sizes "
        f"{', '.join(f'{s} x{c}' for s, c in common)}",
        flush=True,
    )
    if GROUP != BATCH:
        print(
            f"{backend}: groups of {BATCH} (as before): recorder {med['recorder500']:,.0f}/s vs raw "
            f"{med['raw500']:,.0f}/s: ratio {ratio500:.2f} (per round {per500}); "
            f"recorder {GROUP} / {BATCH} per round {pgain} (median {gain:.2f})",
            flush=True,
        )
    print(
        f"{backend}: CPU per inspection (this process, all threads; medians): recorder {mcpu['recorder']:.1f} us "
        f"(writer thread {mw['recorder']:.1f}), raw {mcpu['raw']:.1f} us (recorder/raw "
        f"{mcpu['recorder'] / mcpu['raw']:.2f}); groups of {BATCH}: recorder {mcpu['recorder500']:.1f} us (writer "
        f"thread {mw['recorder500']:.1f}), raw {mcpu['raw500']:.1f} us; derived from CPU alone (one core for "
        f"the writer thread): {1e6 / mw['recorder']:,.0f}/s",
        flush=True,
    )
    if scpu:
        ms = {k: statistics.median(v) for k, v in scpu.items()}
        print(
            f"{backend}: the server's CPU per inspection (its backends for these connections; not its WAL writer "
            f"or checkpointer): recorder {ms['recorder']:.1f} us, raw {ms['raw']:.1f} us; client + server: "
            f"recorder {mcpu['recorder'] + ms['recorder']:.1f} us, raw {mcpu['raw'] + ms['raw']:.1f} us; derived "
            f"on 2 free cores: recorder {2e6 / (mcpu['recorder'] + ms['recorder']):,.0f}/s",
            flush=True,
        )
    print(
        f"{backend}: the recorder to close() returning (the end of the run recorded, threads joined, connections "
        f"closed; raw's clock stops at its last COMMIT): {statistics.median(closed['recorder']):,.0f}/s, ratio to raw "
        f"{cratio:.2f} (per round {cper})",
        flush=True,
    )
    if "rawall" in med:
        fratio, fper = _median_ratio(rate["rawall"], rate["raw"])
        print(
            f"{backend}: raw with every column bound (NULLs included, as the store sent them before) "
            f"{med['rawall']:,.0f}/s, CPU {mcpu['rawall']:.1f} us: {fratio:.2f} of raw (per round {fper})",
            flush=True,
        )
    if "autockpt" in med:
        aratio, aper = _median_ratio(rate["autockpt"], rate["raw"])
        print(
            f"{backend}: recorder with SQLite's own checkpoints (in the writer's commits) {med['autockpt']:,.0f}/s: "
            f"ratio to raw {aratio:.2f} (per round {aper}); CPU {mcpu['autockpt']:.1f} us (writer thread "
            f"{mw['autockpt']:.1f})",
            flush=True,
        )
    if "write" in med:
        wratio, wper = _median_ratio(rate["write"], rate["raw"])
        print(
            f"{backend}: Store.write alone (one thread, {GROUP} per call) {med['write']:,.0f}/s: ratio to raw "
            f"{wratio:.2f} (per round {wper}); CPU {mcpu['write']:.1f} us",
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
        "rate": med["recorder"],
        "raw": med["raw"],
        "ratio": ratio,
        "ratio500": ratio500,
        "cpu_us": mcpu["recorder"],
        "writer_cpu_us": mw["recorder"],
        "raw_cpu_us": mcpu["raw"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="inspections per measurement (SQLite)")
    ap.add_argument("--pg-n", type=int, default=10_000, help="inspections per measurement (PostgreSQL)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", choices=("sqlite", "postgres"))
    ap.add_argument("--extra", action="store_true", help="also SQLite's own checkpoints and Store.write alone (slower)")
    a = ap.parse_args(argv)
    out = {}
    if a.only != "postgres":
        out["sqlite"] = measure("sqlite", a.n, a.rounds, 20_000, a.extra)
    if a.only != "sqlite":
        out["postgres"] = measure("postgres", a.pg_n, a.rounds, 4_000, a.extra)
    return out


if __name__ == "__main__":
    main()
