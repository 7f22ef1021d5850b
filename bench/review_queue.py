"""Time the review loop (issue 15) on a month of history, on SQLite and on PostgreSQL: the queue a
reviewer's page asks for (failed findings newest first with near-threshold PASS parts, and the
counts), precision / recall per station for the month (``review_stats``), and appending one review.

The store is filled fast with plain rows (executemany on SQLite, COPY on PostgreSQL, through the
real migrations: :func:`bench.history_queries.fill_sqlite` / ``fill_pg``): 1,000,000 inspections
over 30 days from 4 stations, about 5 % FAIL with 1-2 failing findings and a JPEG crop each,
below-rule candidate findings on 8 % of PASS parts. Then ``--reviews`` reviews (default 50,000)
are inserted as plain rows: 90 % on failed findings picked at random over the month (4 in 5
confirmed, 1 in 5 false alarm), 10 % on PASS parts with a candidate finding (9 in 10 confirmed
PASS, 1 in 10 a missed defect). Goals (issue 15): queue first page < 100 ms, precision / recall per
station for a month < 1 s. Each figure: the first (cold) call and the p50 of ``--repeat``, with the
load average and n beside it.

    python bench/review_queue.py                       # both databases, 1,000,000 inspections
    python bench/review_queue.py --rows 200000 --reviews 10000 --only sqlite
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.history_queries import DAYS, END, fill_pg, fill_sqlite
from inspector_core.qa import accounts, review
from inspector_core.store import Store, review_outcomes
from inspector_core.store.review_records import Review
from inspector_core.store.schema import Defect, Inspection

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _review(
    iid: int,
    did: int | None,
    label: str,
    step: str | None = None,
    kind: str | None = None,
    box: tuple[int | None, ...] = (None, None, None, None),
) -> dict[str, object]:
    x, y, w, h = box
    return {
        "inspection_id": iid,
        "defect_id": did,
        "label": label,
        "step": step,
        "kind": kind,
        "x": x,
        "y": y,
        "w": w,
        "h": h,
    }


def add_reviews(url: str, n: int, seed: int = 2) -> int:
    """Inserts ``n`` reviews as plain rows by one bench user; returns that user's id."""
    rng = np.random.default_rng(seed)
    store = review.open_writer(url)
    try:
        user = accounts.add_user(store, f"bench-{uuid.uuid4().hex[:6]}", "reviewer", "bench-password")
        with store.engine.connect() as conn:
            failed = conn.execute(
                select(Defect.id, Defect.inspection_id, Inspection.captured_at)
                .join(Inspection, Inspection.id == Defect.inspection_id)
                .where(Defect.failed.is_(True))
            ).all()
            passes = conn.execute(
                select(Defect.inspection_id, Inspection.captured_at)
                .join(Inspection, Inspection.id == Defect.inspection_id)
                .where(Defect.failed.is_(False), Inspection.verdict == "PASS")
            ).all()
        n_pass = min(n // 10, len(passes))
        n_fail = min(n - n_pass, len(failed))
        rows: list[dict[str, object]] = []
        for j in rng.choice(len(failed), n_fail, replace=False):
            did, iid, _ = failed[int(j)]
            rows.append(_review(iid, did, "false_alarm" if rng.random() < 0.2 else "confirmed"))
        for j in rng.choice(len(passes), n_pass, replace=False):
            iid, _ = passes[int(j)]
            if rng.random() < 0.1:
                rows.append(_review(iid, None, "missed", "s", "scratch", (100, 100, 40, 12)))
            else:
                rows.append(_review(iid, None, "confirmed"))
        at0 = END - timedelta(hours=1)
        for k, r in enumerate(rows):
            r.update(reason="", user_id=user.id, via="web", created_at=at0 + timedelta(milliseconds=k))
        with store.engine.begin() as conn:
            for k in range(0, len(rows), 5000):
                conn.execute(insert(Review), rows[k : k + 5000])
            # Plain rows bypass add_review, which keeps the roll-up: built in bulk, as migration 0014 does.
            t = time.perf_counter()
            review_outcomes.refresh(conn, None)
            print(f"  review_outcomes built for {len(rows)} reviews in {time.perf_counter() - t:.1f} s; {load()}")
        return len(rows)
    finally:
        store.close()


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, float, float, Any]:
    """(first call ms, p50 and p99 (nearest rank) of the next ``repeat`` ms, p50 of their CPU ms in
    this process (``time.process_time``: the figure that holds under load; a database server's
    own CPU is not in it), last result)."""
    t = time.perf_counter()
    out = fn()
    first = (time.perf_counter() - t) * 1000
    times, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        times.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    times.sort()
    p99 = times[min(len(times) - 1, max(0, -(-99 * len(times) // 100) - 1))]
    return first, statistics.median(times), p99, statistics.median(cpu), out


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def bench(url: str, label: str, repeat: int, appends: int) -> None:
    store = review.open_writer(url)
    month = END - timedelta(days=DAYS)
    try:
        ann = accounts.add_user(store, f"bench-{uuid.uuid4().hex[:6]}", "reviewer", "bench-password")

        def show(what: str, fn: Callable[[], Any], n: int, extra: Callable[[Any], str] = lambda _: "") -> Any:
            first, p50, p99, cpu, out = timed(fn, n)
            print(
                f"{label}: {what}: first {first:.1f} ms, p50 {p50:.1f} ms, p99 {p99:.1f} ms, client CPU p50 "
                f"{cpu:.1f} ms (n={n}){extra(out)}; {load()}",
                flush=True,
            )
            return out

        show("queue first page (40)", lambda: review.queue(store.engine, since=month, limit=40), max(repeat, 20))
        show("counts", lambda: review.counts(store.engine, since=month), repeat, lambda c: f": {c}")
        st = show(
            "precision/recall per station, month",
            lambda: review.review_stats(store.engine, since=month),
            max(repeat, 10),
            lambda st: f", {len(st)} rows over {len({s.station for s in st})} stations",
        )
        one = sorted({s.station for s in st})[0]
        show(
            f"the same for one station ({one})",
            lambda: review.review_stats(store.engine, stations=[one], since=month),
            max(repeat, 10),
        )
        fast = review.review_stats(store.engine, since=month)
        t = time.perf_counter()
        slow = review.review_stats_reference(store.engine, since=month)
        print(
            f"{label}: the straightforward tally (review_stats_reference) once: "
            f"{(time.perf_counter() - t) * 1000:.0f} ms, equal to the roll-up's: {slow == fast}; {load()}",
            flush=True,
        )
        items = review.queue(store.engine, since=month, limit=appends)
        write = []
        for it in items:
            t = time.perf_counter()
            review.add_review(
                store, inspection_id=it.inspection_id, defect_id=it.defect_id, label="confirmed", user=ann
            )
            write.append((time.perf_counter() - t) * 1000)
        print(
            f"{label}: one review appended (and its part's roll-up rewritten) p50 {statistics.median(write):.1f} ms, "
            f"max {max(write):.1f} ms (n={len(write)}); {load()}",
            flush=True,
        )
        same = review.review_stats(store.engine, since=month) == review.review_stats_reference(
            store.engine, since=month
        )
        print(f"{label}: after them, roll-up equal to the straightforward tally: {same}", flush=True)
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--reviews", type=int, default=50_000)
    ap.add_argument("--only", choices=["sqlite", "postgres"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--appends", type=int, default=20)
    ap.add_argument("--sqlite-path", help="use (or fill, if absent) this SQLite file; kept afterwards")
    ap.add_argument("--pg-db", help="use (or fill, if absent) this PostgreSQL database name; kept afterwards")
    a = ap.parse_args()
    if a.only != "postgres":
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(a.sqlite_path) if a.sqlite_path else Path(tmp) / "review.db"
            url = f"sqlite:///{path}"
            if path.exists():
                Store(url).close()  # a kept file: migrated to this release's head if it is older
                n = _count_reviews(url)
                print(f"sqlite: reusing {path} ({n} reviews); {load()}", flush=True)
            else:
                t = time.perf_counter()
                fill_sqlite(url, a.rows)
                n = add_reviews(url, a.reviews)
                print(
                    f"sqlite: filled {a.rows} inspections, {n} reviews in {time.perf_counter() - t:.0f} s; {load()}",
                    flush=True,
                )
            bench(url, f"sqlite, {a.rows} inspections, {n} reviews", a.repeat, a.appends)
    if a.only != "sqlite":
        import psycopg

        name = a.pg_db or f"inspector_bench_review_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        try:
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
            if exists:
                Store(url).close()
                n = _count_reviews(url)
                print(f"postgres: reusing database {name} ({n} reviews); {load()}", flush=True)
            else:
                t = time.perf_counter()
                fill_pg(url, a.rows)
                n = add_reviews(url, a.reviews)
                # A live plant database is analyzed by autovacuum; one filled seconds ago has no statistics yet.
                with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
                    conn.execute("ANALYZE")
                print(
                    f"postgres: filled {a.rows} inspections, {n} reviews in {time.perf_counter() - t:.0f} s "
                    f"(and ANALYZE); {load()}",
                    flush=True,
                )
            bench(url, f"postgres, {a.rows} inspections, {n} reviews", a.repeat, a.appends)
        finally:
            if not a.pg_db:
                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _count_reviews(url: str) -> int:
    store = Store(url, migrate=False)
    try:
        with store.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(Review)) or 0)
    finally:
        store.close()


if __name__ == "__main__":
    main()
