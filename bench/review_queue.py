"""Time the review loop (issue 15) on a filled store, on SQLite and on PostgreSQL: the queue a
reviewer's page asks for after each key (failed findings newest first with near-threshold PASS
parts, and the counts), appending one review, and the statistics on the reviewed parts.

The store is filled through the station's own writer (``Store.write``): two weeks from 4
stations, 5 % FAIL (one failing finding with a JPEG crop), a candidate finding below the rules on
8 % of PASS parts (scores 0.2-0.5 against min_score 0.5: about half of them inside the default
0.15 band), one step per part. The window is the last 7 days. Each figure is the median of
``--repeat`` calls, with the load average beside it.

    python bench/review_queue.py                       # both databases, 200,000 inspections
    python bench/review_queue.py --rows 50000 --only sqlite
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
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspector_core.qa import accounts, review
from inspector_core.store import CropRecord, DefectRecord, InspectionRecord, StepRecord, Store

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
STATIONS = ["line1", "line2", "line3", "line4"]
END = datetime(2026, 11, 22)
DAYS = 14
CONFIG = "name: {name}\nrules:\n  scratch: {{min_score: 0.5}}\n  dent: {{min_score: 0.6}}\n"


def fill(url: str, n: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    img = rng.normal(120, 25, (48, 64, 3)).clip(0, 255).astype(np.uint8)
    crop = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
    store = Store(url)
    runs = {
        s: store.begin_run(
            s,
            hostname="bench",
            software_version="0",
            plugins={},
            config_yaml=CONFIG.format(name=s),
            config_hash="0" * 64,
            models={},
        )
        for s in STATIONS
    }
    start = END - timedelta(days=DAYS)
    at = np.sort(rng.random(n)) * DAYS * 86400
    batch: list[InspectionRecord] = []
    for k in range(n):
        st = STATIONS[k % len(STATIONS)]
        sid, rid = runs[st]
        t = start + timedelta(seconds=float(at[k]))
        r = rng.random()
        defects = []
        verdict = "PASS"
        if r < 0.05:
            verdict = "FAIL"
            kind = "scratch" if rng.random() < 0.6 else "dent"
            defects.append((kind, 0.6 + 0.4 * rng.random(), True))
        elif r < 0.05 + 0.08:
            defects.append(("scratch", 0.2 + 0.3 * rng.random(), False))
        recs = [
            DefectRecord(
                "s",
                "bench",
                kind,
                float(score),
                failed,
                (100, 100, 40, 12),
                42.0,
                2.1,
                {},
                "",
                CropRecord("jpeg", 64, 48, 84, 84, 1.0, crop),
            )
            for kind, score, failed in defects
        ]
        top = max((d[1] for d in defects), default=0.0)
        batch.append(
            InspectionRecord(
                uuid.uuid4().hex,
                sid,
                rid,
                k,
                f"{st}-{k:07d}",
                t,
                t + timedelta(milliseconds=20),
                verdict,
                20.0,
                steps=[StepRecord(0, "s", "bench", "ok", float(top), 5.0, len(defects), None)],
                defects=recs,
            )
        )
        if len(batch) >= 5000:
            store.write(batch)
            batch = []
    store.write(batch)
    store.close()


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def bench(url: str, label: str, repeat: int, reviews: int) -> None:
    store = review.open_writer(url)
    since = END - timedelta(days=7)
    try:
        ann = accounts.add_user(store, f"bench-{uuid.uuid4().hex[:6]}", "reviewer", "bench-password")
        items = review.queue(store.engine, since=since, limit=reviews)
        passes = sum(1 for i in items if i.defect_id is None)
        q_ms = median_ms(lambda: review.queue(store.engine, since=since, limit=40), repeat)
        c_ms = median_ms(lambda: review.counts(store.engine, since=since), repeat)
        write = []
        for n, it in enumerate(items):
            t = time.perf_counter()
            if it.defect_id is None:
                review.add_review(store, inspection_id=it.inspection_id, label="confirmed", user=ann)
            else:
                lab = "false_alarm" if n % 5 == 0 else "confirmed"
                review.add_review(store, inspection_id=it.inspection_id, defect_id=it.defect_id, label=lab, user=ann)
            write.append((time.perf_counter() - t) * 1000)
        s_ms = median_ms(lambda: review.review_stats(store.engine, since=since), repeat)
        left = review.counts(store.engine, since=since)
        print(
            f"{label}: queue(40) {q_ms:.1f} ms, counts {c_ms:.1f} ms, one review p50 {statistics.median(write):.1f} ms "
            f"max {max(write):.1f} ms (n={len(write)}, {passes} PASS parts), stats {s_ms:.1f} ms; "
            f"left in the window: {left.findings_left} findings, {left.near_pass_left} near-threshold PASS parts; "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--only", choices=["sqlite", "postgres"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--reviews", type=int, default=100)
    a = ap.parse_args()
    if a.only != "postgres":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'review.db'}"
            t = time.perf_counter()
            fill(url, a.rows)
            print(f"sqlite: filled {a.rows} inspections in {time.perf_counter() - t:.0f} s", flush=True)
            bench(url, f"sqlite, {a.rows} inspections", a.repeat, a.reviews)
    if a.only != "sqlite":
        import psycopg

        name = f"inspector_bench_review_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
            t = time.perf_counter()
            fill(url, a.rows)
            # A live plant database is analyzed by autovacuum; one filled seconds ago has no statistics
            # yet (without them the planner walks every PASS part of the window: queue 510 ms, not 136).
            with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
                conn.execute("ANALYZE")
            print(f"postgres: filled {a.rows} inspections in {time.perf_counter() - t:.0f} s (and ANALYZE)", flush=True)
            bench(url, f"postgres, {a.rows} inspections", a.repeat, a.reviews)
        finally:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
