"""Time the QA queries on a store of 1,000,000 inspections, on SQLite and on PostgreSQL.

Fills a fresh database (SQLite file / a new PostgreSQL database, dropped afterwards) through
the real migrations, with a month of history from 4 stations: about 5% FAIL (with 1-2 failing
defects, each with a small JPEG crop), 0.5% ERROR, 0.3% NOT_INSPECTED, below-rule candidate
findings on 8% of PASS parts, one step result per part, and some re-inspected part ids. Then
prints the time of the common queries through :mod:`inspector_core.qa` (the code the CLI
and the dashboard run), best of 3, and the goals: first page of a filtered history < 100 ms,
stats for a month < 1 s.

    python bench/history_queries.py                      # both databases, 1,000,000 rows
    python bench/history_queries.py --rows 200000 --only sqlite
    python bench/history_queries.py --sqlite-path /tmp/h.db --keep   # reuse the filled file
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspector_core.qa import query as q
from inspector_core.qa.filters import I
from inspector_core.store import Store

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
STATIONS = ["line1", "line2", "line3", "line4"]
KINDS = ["scratch", "scratch", "scratch", "dent", "dent", "misalignment", "anomaly"]
END = datetime(2026, 11, 22, 0, 0, 0)
DAYS = 30
CONFIG = "name: {name}\nrules:\n  scratch: {{min_score: 0.5}}\n  dent: {{min_score: 0.6}}\n"


def crop_bytes(rng: np.random.Generator, n: int = 16) -> list[bytes]:
    out = []
    for _ in range(n):
        img = rng.normal(120, 25, (48, 64, 3)).clip(0, 255).astype(np.uint8)
        out.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
    return out


def generate(n: int, seed: int = 1) -> Iterator[tuple[str, tuple, list[tuple], tuple]]:
    """Yields ("i", inspection, [defects], step) tuples with explicit ids, in time order."""
    rng = np.random.default_rng(seed)
    crops = crop_bytes(rng)
    start = END - timedelta(days=DAYS)
    span = DAYS * 86400.0
    offsets = np.sort(rng.random(n)) * span
    stations = rng.integers(0, len(STATIONS), n)
    r = rng.random(n)
    lat = rng.gamma(4.0, 6.0, n) + 5
    did = 0
    for i in range(n):
        iid = i + 1
        sid = int(stations[i]) + 1
        at = start + timedelta(seconds=float(offsets[i]))
        if r[i] < 0.003:
            verdict = "NOT_INSPECTED"
        elif r[i] < 0.008:
            verdict = "ERROR"
        elif r[i] < 0.058:
            verdict = "FAIL"
        else:
            verdict = "PASS"
        # 1% of part ids are inspected again (a re-test after a fail, or a re-run).
        part = f"S{sid}-{i:08d}" if rng.random() > 0.01 else f"S{sid}-{max(0, i - 50):08d}"
        latency = None if verdict == "NOT_INSPECTED" else float(lat[i])
        defects = []
        if verdict == "FAIL":
            for _ in range(1 + (rng.random() < 0.3)):
                did += 1
                defects.append(
                    (
                        did,
                        iid,
                        str(KINDS[rng.integers(len(KINDS))]),
                        float(0.5 + 0.5 * rng.random()),
                        True,
                        crops[did % len(crops)],
                    )
                )
        elif verdict == "PASS" and rng.random() < 0.08:
            did += 1
            defects.append((did, iid, "scratch", float(0.1 + 0.35 * rng.random()), False, None))
        n_failed = sum(1 for d in defects if d[4])
        score = max((d[3] for d in defects), default=0.0)
        insp = (
            iid,
            uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | iid).hex,
            sid,
            sid,
            i,
            part,
            at,
            at + timedelta(milliseconds=latency or 0),
            verdict,
            latency,
            "step s: boom" if verdict == "ERROR" else None,
            "s" if verdict == "ERROR" else None,
            n_failed,
        )
        step = (
            None
            if verdict == "NOT_INSPECTED"
            else (
                iid,
                0,
                "s",
                "bench",
                "error" if verdict == "ERROR" else "ok",
                None if verdict == "ERROR" else score,
                (latency or 0) * 0.8,
                len(defects),
            )
        )
        yield insp, defects, step


def _prepare(url: str) -> Store:
    """The schema at 0002 (before the roll-up) with the 4 stations and their runs as plain rows:
    the fill below writes the base tables with raw SQL, then :func:`_finish` migrates to head, and
    migration 0003 backfills ``first_of_part`` and the hourly roll-up from them, as on a real
    upgraded database. (``Store.begin_run`` is not used: it writes the head schema's runs, with
    ``runs.uid`` from 0005, which a 0002 database does not have.)"""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from inspector_core.store import MIGRATIONS

    store = Store(url, migrate=False)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    at = END - timedelta(days=DAYS + 1)
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        for k, name in enumerate(STATIONS, 1):
            conn.execute(
                text("INSERT INTO stations (id, name, created_at) VALUES (:k, :n, :t)"), {"k": k, "n": name, "t": at}
            )
            conn.execute(
                text(
                    "INSERT INTO runs (id, station_id, started_at, hostname, software_version, plugins, config_yaml, "
                    "config_hash, models) VALUES (:k, :k, :t, 'bench', '0.1.0', :p, :c, :h, '{}')"
                ),
                {
                    "k": k,
                    "t": at,
                    "p": '{"bench": {"distribution": "bench", "version": "1"}}',
                    "c": CONFIG.format(name=name),
                    "h": "0" * 64,
                },
            )
    return store


def fill_sqlite(url: str, n: int) -> None:
    import sqlite3

    store = _prepare(url)
    path = store.engine.url.database
    store.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    ins, steps, defects, crops = [], [], [], []

    def flush() -> None:
        db.executemany(
            "INSERT INTO inspections (id, uid, station_id, run_id, seq, part_id, captured_at, decided_at, "
            "verdict, latency_ms, error, error_step, n_defects) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            ins,
        )
        db.executemany(
            "INSERT INTO step_results (inspection_id, step_index, step, plugin, status, score, latency_ms, "
            "n_findings) VALUES (?,?,?,?,?,?,?,?)",
            steps,
        )
        db.executemany(
            "INSERT INTO defects (id, inspection_id, step, plugin, kind, score, failed, x, y, w, h, size_px, "
            "size_mm, measurements, message) VALUES (?,?,'s','bench',?,?,?,100,100,40,12,42.0,2.1,"
            "'{\"length_px\": 42.0}','')",
            defects,
        )
        db.executemany(
            "INSERT INTO crops (defect_id, inspection_id, format, width, height, x, y, scale, data) "
            "VALUES (?,?,'jpeg',64,48,84,84,1.0,?)",
            crops,
        )
        ins.clear(), steps.clear(), defects.clear(), crops.clear()

    for insp, ds, step in generate(n):
        ins.append(tuple(x.isoformat(" ") if isinstance(x, datetime) else x for x in insp))
        if step:
            steps.append(step)
        for did, iid, kind, score, failed, crop in ds:
            defects.append((did, iid, kind, score, int(failed)))
            if crop is not None:
                crops.append((did, iid, crop))
        if len(ins) >= 50_000:
            flush()
    flush()
    db.execute("COMMIT")
    db.close()
    _finish(url)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("ANALYZE")
    db.close()


def _finish(url: str) -> None:
    t = time.perf_counter()
    Store(url).close()  # migration 0003: backfill of first_of_part and the roll-up
    print(f"  migration 0003 (roll-up backfill): {time.perf_counter() - t:.0f} s", flush=True)


def fill_pg(url: str, n: int) -> None:
    import psycopg

    store = _prepare(url)
    store.close()
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        pending_s: list[tuple] = []
        pending_d: list[tuple] = []
        with cur.copy(
            "COPY inspections (id, uid, station_id, run_id, seq, part_id, captured_at, decided_at, verdict, "
            "latency_ms, error, error_step, n_defects) FROM STDIN"
        ) as cp:
            for insp, ds, step in generate(n):
                cp.write_row(insp)
                if step:
                    pending_s.append(step)
                pending_d.extend(ds)
        with cur.copy(
            "COPY step_results (inspection_id, step_index, step, plugin, status, score, latency_ms, "
            "n_findings) FROM STDIN"
        ) as cp:
            for step in pending_s:
                cp.write_row(step)
        with cur.copy(
            "COPY defects (id, inspection_id, step, plugin, kind, score, failed, x, y, w, h, size_px, size_mm, "
            "measurements, message) FROM STDIN"
        ) as cp:
            for did, iid, kind, score, failed, _ in pending_d:
                cp.write_row(
                    (
                        did,
                        iid,
                        "s",
                        "bench",
                        kind,
                        score,
                        failed,
                        100,
                        100,
                        40,
                        12,
                        42.0,
                        2.1,
                        '{"length_px": 42.0}',
                        "",
                    )
                )
        with cur.copy(
            "COPY crops (defect_id, inspection_id, format, width, height, x, y, scale, data) FROM STDIN"
        ) as cp:
            for did, iid, _, _, _, crop in pending_d:
                if crop is not None:
                    cp.write_row((did, iid, "jpeg", 64, 48, 84, 84, 1.0, crop))
        for table in ("inspections", "defects", "step_results", "crops"):
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        conn.commit()
    _finish(url)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    times, res = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        res = fn()
        times.append((time.perf_counter() - t) * 1000)
    return min(times), res


def run_queries(url: str, label: str) -> list[tuple[str, str, float, str, float | None]]:
    store = Store(url)
    e = store.engine
    now = END
    f = q.make_filter
    from sqlalchemy import func, select

    with e.connect() as conn:
        mid = conn.scalar(select(func.max(I.id))) // 2
        some_part = conn.scalar(select(I.part_id).where(I.id == mid))
    deep_cursor = _cursor_at(e, f(), 49)
    month = f(since=now - timedelta(days=30))
    cases: list[tuple[str, str, Callable[[], Any], float | None]] = [
        ("history", "first page, no filter", lambda: q.history(e, f()), 100),
        ("history", "station line2", lambda: q.history(e, f(stations=("line2",))), 100),
        ("history", "verdict FAIL", lambda: q.history(e, f(verdicts=("FAIL",))), 100),
        (
            "history",
            "line3 FAIL last 8h",
            lambda: q.history(e, f(stations=("line3",), verdicts=("FAIL",), since=now - timedelta(hours=8))),
            100,
        ),
        ("history", "ERROR, whole month", lambda: q.history(e, f(verdicts=("ERROR",))), 100),
        (
            "history",
            "NOT_INSPECTED on line4",
            lambda: q.history(e, f(verdicts=("NOT_INSPECTED",), stations=("line4",))),
            100,
        ),
        ("history", "kind dent", lambda: q.history(e, f(kinds=("dent",))), 100),
        ("history", "kind anomaly, score >= 0.95", lambda: q.history(e, f(kinds=("anomaly",), min_score=0.95)), 100),
        ("history", f"part id exact ({some_part})", lambda: q.history(e, f(part_id=some_part)), 100),
        ("history", f"part id glob {some_part[:7]}*", lambda: q.history(e, f(part_id=some_part[:7] + "*")), 100),
        ("history", "part id glob, no match (*x*)", lambda: q.history(e, f(part_id="*x*")), 100),
        (
            "history",
            "one day, 2 weeks ago",
            lambda: q.history(e, f(since=now - timedelta(days=14), until=now - timedelta(days=13))),
            100,
        ),
        ("history", "page 50 by cursor", lambda: q.history(e, f(), cursor=deep_cursor), 100),
        ("history", "page 50 by offset", lambda: q.history(e, f(), offset=49 * 50), 100),
        ("detail", "one inspection", lambda: q.inspection(e, mid), 100),
        ("crops", "gallery: scratch >= 0.9", lambda: q.crops(e, f(kinds=("scratch",), min_score=0.9), limit=60), 100),
        ("stats", "month per day", lambda: q.stats(e, month, buckets=q.Buckets("day")), 1000),
        ("stats", "month per shift", lambda: q.stats(e, month, buckets=q.Buckets("shift")), 1000),
        (
            "stats",
            "month per day, line1",
            lambda: q.stats(e, f(since=now - timedelta(days=30), stations=("line1",)), buckets=q.Buckets("day")),
            1000,
        ),
        (
            "stats",
            "last 24h per hour",
            lambda: q.stats(e, f(since=now - timedelta(hours=24)), buckets=q.Buckets("hour")),
            1000,
        ),
        (
            "whatif",
            "line1, a week, scratch.min_score=0.3",
            lambda: q.whatif(
                e, f(stations=("line1",), since=now - timedelta(days=7)), q.parse_overrides(["scratch.min_score=0.3"])
            ),
            None,
        ),
    ]
    out = []
    for group, name, fn, goal in cases:
        ms, res = timed(fn)
        n = (
            len(res.rows)
            if hasattr(res, "rows")
            else len(res)
            if isinstance(res, list)
            else (
                f"{len(res.periods)} periods"
                if hasattr(res, "periods")
                else (f"{len(res.to_fail)} to fail" if hasattr(res, "to_fail") else "")
            )
        )
        out.append((group, name, ms, str(n), goal))
        mark = "" if goal is None else ("ok" if ms < goal else f"OVER {goal:.0f} ms")
        print(f"  {label:10s} {group:8s} {name:40s} {ms:9.1f} ms  {str(n):>12s}  {mark}", flush=True)
    store.close()
    return out


def _cursor_at(e, f, pages: int) -> str | None:
    cursor = None
    for _ in range(pages):
        cursor = q.history(e, f, cursor=cursor).next_cursor
    return cursor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--only", choices=["sqlite", "postgres"])
    ap.add_argument("--sqlite-path", help="use (or fill, if absent) this SQLite file")
    ap.add_argument("--pg-db", help="use (or fill, if absent) this PostgreSQL database name; kept afterwards")
    ap.add_argument("--keep", action="store_true", help="keep the databases")
    args = ap.parse_args()

    if args.only != "postgres":
        path = Path(args.sqlite_path) if args.sqlite_path else Path(tempfile.mkdtemp()) / "bench.db"
        url = f"sqlite:///{path}"
        if not path.exists():
            t = time.perf_counter()
            fill_sqlite(url, args.rows)
            print(
                f"SQLite: filled {args.rows:,} inspections in {time.perf_counter() - t:.0f} s "
                f"({path.stat().st_size / 1e6:.0f} MB) at {path}",
                flush=True,
            )
        run_queries(url, "sqlite")
        if not args.keep and not args.sqlite_path:
            path.unlink()

    if args.only != "sqlite":
        import psycopg

        name = args.pg_db or f"inspector_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        try:
            if not exists:
                t = time.perf_counter()
                fill_pg(url, args.rows)
                print(
                    f"PostgreSQL: filled {args.rows:,} inspections in {time.perf_counter() - t:.0f} s "
                    f"(database {name})",
                    flush=True,
                )
            run_queries(url, "postgres")
        finally:
            if not (args.keep or args.pg_db):
                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
