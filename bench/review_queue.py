"""Time the review loop (issue 15) on a month of history, on SQLite and on PostgreSQL, the two
alternating: the queue's first page a reviewer's page asks for (failed findings newest first with
near-threshold PASS parts), the tiles above it (``review.counts``: what is left, the current labels,
the reviews in the log), precision / recall per station for the month (``review_stats``), then
appending one review.

The store is filled fast with plain rows (executemany on SQLite, COPY on PostgreSQL, through the
real migrations: :func:`bench.history_queries.fill_sqlite` / ``fill_pg``): 1,000,000 inspections
over 30 days from 4 stations, about 5 % FAIL with 1-2 failing findings and a JPEG crop each,
below-rule candidate findings on 8 % of PASS parts. Then ``--reviews`` reviews (default 50,000)
are inserted as plain rows: 90 % on failed findings picked at random over the month (4 in 5
confirmed, 1 in 5 false alarm), 10 % on PASS parts with a candidate finding (9 in 10 confirmed
PASS, 1 in 10 a missed defect). Goals (issue 15): queue first page < 100 ms, precision / recall per
station for a month < 1 s; the tiles < 100 ms (a QA engineer waits for them).

Each figure: p50 and p99 (nearest rank) of the wall time and of this process's CPU time
(``time.process_time``: SQLite works inside it, PostgreSQL's server does not) over ``--repeat``
rounds (default 100); each round makes every call on one database, then on the other, so both
see the same load; the load average (1 minute) is sampled each round and printed as its range.
The first (cold) call of each is printed apart. Then, once per database: the fast figures against
the straightforward ones (``counts_reference``, ``review_stats_reference``), appends, and again.

    python bench/review_queue.py                       # both databases, 1,000,000 inspections
    python bench/review_queue.py --rows 200000 --reviews 10000 --only sqlite
    python bench/review_queue.py --sqlite-path /tmp/r.db --pg-db review_bench   # kept, reused
"""

from __future__ import annotations

import argparse
import contextlib
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
            review_outcomes.refresh_all(conn, None)
            print(f"  review_outcomes built for {len(rows)} reviews in {time.perf_counter() - t:.1f} s; {load()}")
        return len(rows)
    finally:
        store.close()


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def p99(values: list[float]) -> float:
    """The 99th percentile by nearest rank."""
    v = sorted(values)
    return v[min(len(v) - 1, max(0, -(-99 * len(v) // 100) - 1))]


class Target:
    """One database under test: its store, a reviewer, and the calls timed on it."""

    def __init__(self, label: str, url: str) -> None:
        self.label = label
        self.store = review.open_writer(url)
        self.user = accounts.add_user(self.store, f"bench-{uuid.uuid4().hex[:6]}", "reviewer", "bench-password")
        month = END - timedelta(days=DAYS)
        e = self.store.engine
        self.calls: dict[str, Callable[[], Any]] = {
            "queue first page (40)": lambda: review.queue(e, since=month, limit=40),
            "tiles (review.counts)": lambda: review.counts(e, since=month),
            "precision/recall per station, month": lambda: review.review_stats(e, since=month),
        }
        self.wall: dict[str, list[float]] = {k: [] for k in self.calls}
        self.cpu: dict[str, list[float]] = {k: [] for k in self.calls}
        self.first: dict[str, float] = {}

    def once(self, what: str) -> Any:
        t, c = time.perf_counter(), time.process_time()
        out = self.calls[what]()
        wall, cpu = (time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000
        if what not in self.first:
            self.first[what] = wall  # the first (cold) call, not in the percentiles
        else:
            self.wall[what].append(wall)
            self.cpu[what].append(cpu)
        return out


def bench(targets: list[Target], repeat: int, appends: int) -> None:
    """``repeat`` rounds; in each, every call on every database, the databases alternating (so that
    both see the same load), then the figures per database and call."""
    loads: list[float] = []
    for t in targets:  # the first calls (cold caches), then the rounds
        for what in t.calls:
            t.once(what)
    for _ in range(repeat):
        for t in targets:
            for what in t.calls:
                t.once(what)
        loads.append(os.getloadavg()[0])
    span = f"load {min(loads):.1f}-{max(loads):.1f} (1-min average, sampled each round)"
    for t in targets:
        for what in t.calls:
            w, c = t.wall[what], t.cpu[what]
            print(
                f"{t.label}: {what}: wall p50 {statistics.median(w):.1f} ms, p99 {p99(w):.1f} ms; client CPU p50 "
                f"{statistics.median(c):.1f} ms, p99 {p99(c):.1f} ms; first call {t.first[what]:.1f} ms "
                f"(n={len(w)}, alternating with the other database); {span}",
                flush=True,
            )
    month = END - timedelta(days=DAYS)
    for t in targets:
        e = t.store.engine
        tiles = review.counts(e, since=month)
        c0 = time.perf_counter()
        ref = review.counts_reference(e, since=month)
        print(
            f"{t.label}: tiles {tiles}; the straightforward counts (counts_reference) once "
            f"{(time.perf_counter() - c0) * 1000:.0f} ms, equal: {tiles == ref}; {load()}",
            flush=True,
        )
        fast = review.review_stats(e, since=month)
        c0 = time.perf_counter()
        slow = review.review_stats_reference(e, since=month)
        print(
            f"{t.label}: the straightforward tally (review_stats_reference) once: "
            f"{(time.perf_counter() - c0) * 1000:.0f} ms, equal to the roll-up's: {slow == fast}; {load()}",
            flush=True,
        )
        write = []
        for it in review.queue(e, since=month, limit=appends):
            c0 = time.perf_counter()
            review.add_review(
                t.store, inspection_id=it.inspection_id, defect_id=it.defect_id, label="confirmed", user=t.user
            )
            write.append((time.perf_counter() - c0) * 1000)
        if write:
            print(
                f"{t.label}: one review appended (and its part's roll-ups rewritten) p50 "
                f"{statistics.median(write):.1f} ms, max {max(write):.1f} ms (n={len(write)}); {load()}",
                flush=True,
            )
        same = review.review_stats(e, since=month) == review.review_stats_reference(e, since=month)
        same_tiles = review.counts(e, since=month) == review.counts_reference(e, since=month)
        print(
            f"{t.label}: after them, roll-ups equal to the straightforward tallies: {same and same_tiles}", flush=True
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--reviews", type=int, default=50_000)
    ap.add_argument("--only", choices=["sqlite", "postgres"])
    ap.add_argument("--repeat", type=int, default=100, help="rounds (n of each figure; default 100)")
    ap.add_argument("--appends", type=int, default=20)
    ap.add_argument("--sqlite-path", help="use (or fill, if absent) this SQLite file; kept afterwards")
    ap.add_argument("--pg-db", help="use (or fill, if absent) this PostgreSQL database name; kept afterwards")
    a = ap.parse_args()
    targets: list[Target] = []
    with contextlib.ExitStack() as stack:
        if a.only != "postgres":
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
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
            targets.append(Target(f"sqlite, {a.rows} inspections, {n} reviews", url))
        if a.only != "sqlite":
            import psycopg

            name = a.pg_db or f"inspector_bench_review_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
                if not exists:
                    conn.execute(f'CREATE DATABASE "{name}"')
            if not a.pg_db:
                stack.callback(_drop_pg, name)
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
            if exists:
                Store(url).close()
                n = _count_reviews(url)
                print(f"postgres: reusing database {name} ({n} reviews); {load()}", flush=True)
            else:
                t = time.perf_counter()
                fill_pg(url, a.rows)
                n = add_reviews(url, a.reviews)
                print(
                    f"postgres: filled {a.rows} inspections, {n} reviews in {time.perf_counter() - t:.0f} s", flush=True
                )
            # A live plant database is vacuumed and analyzed by autovacuum (statistics, and the
            # visibility map its index-only scans need); one filled or migrated seconds ago is not yet.
            with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
            targets.append(Target(f"postgres, {a.rows} inspections, {n} reviews", url))
        try:
            bench(targets, a.repeat, a.appends)
        finally:
            for target in targets:
                target.store.close()


def _drop_pg(name: str) -> None:
    import psycopg

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
