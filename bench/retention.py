"""A retention pass over a month of one station's evidence: how long ``inspector retention`` takes.

Prints figures; it is not a test. Run: ``.venv/bin/python bench/retention.py [--n 100000] [--pg]``.

Generates ``n`` inspections spread evenly over the last 30 days (70 % sampled PASS frames, 30 %
failed parts' frames), each with its ``evidence`` row (written through ``Store.write``, the
station writer's transaction) and a small content-addressed file (about 1 kB of random bytes,
named by its SHA-256 under ``ab/cd/``; written without fsync: the generation is not what is
measured; then ``sync``, as month-old files are written back). One in 200 inspections has a review (held). Then, timed:

- the dry run (:func:`inspector_core.store.retention.plan` and the orphan sweep's count);
- the pass (:func:`~inspector_core.store.retention.apply` with ``pass_days: 7, fail_days: 90``
  and a quota that removes a further slice of the oldest PASS frames), i.e. rows marked expired
  in transactions of 10,000, each chunk's files deleted beside the next chunk's marking, then the
  orphan sweep over every file (100 orphans planted, old enough);
- and it checks the result: every stored row's file exists, no file without a stored row.

SQLite by default (a file in a temporary folder, ``synchronous=FULL``); ``--pg``: a new
database on 127.0.0.1:5432, dropped after. ``os.getloadavg()`` is printed beside every time.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspector_core.runtime.config import RetentionPolicy
from inspector_core.store import RunRecord, Store
from inspector_core.store import retention as ret
from inspector_core.store.evidence import evidence_path
from inspector_core.store.evidence_records import Evidence
from inspector_core.store.records import utcnow


def load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def _data(i: int) -> bytes:
    """Inspection ``i``'s file: about 1 kB, the same bytes on every run (a kept store is refilled)."""
    return hashlib.shake_256(b"inspector bench frame %d" % i).digest(900 + i % 200)


def _file(root: Path, i: int, *, only_missing: bool = False) -> tuple[str, int, bool]:
    """Inspection ``i``'s file written (unless ``only_missing`` and it is there): (sha256, bytes, written)."""
    data = _data(i)
    sha = hashlib.sha256(data).hexdigest()
    p = evidence_path(root, sha, "jpeg")
    if only_missing and p.exists():
        return sha, len(data), False
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return sha, len(data), True


def _orphans(root: Path) -> None:
    old = time.time() - 7200
    for k in range(100):  # orphans: a killed writer's files
        data = f"orphan {k}".encode()
        p = evidence_path(root, hashlib.sha256(data).hexdigest(), "jpeg")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (old, old))


def refill(root: Path, n: int) -> int:
    """Write back the files a pass deleted (same bytes, same names) and the orphans; returns files written."""
    with ThreadPoolExecutor(4) as pool:
        made = pool.map(lambda i: _file(root, i, only_missing=True), range(n), chunksize=512)
        written = sum(1 for _, _, w in made if w)
    _orphans(root)
    os.sync()
    return written


def generate(store: Store, root: Path, n: int) -> tuple[int, int]:
    """``n`` inspections with their evidence rows and files. The rows are plain rows (inserted in
    chunks of 20,000, one transaction each: at 1,000,000 the station writer's path took 26 min
    under load 22, and filling is not what is measured); the files are written by 4 threads."""
    from sqlalchemy import insert

    from inspector_core.store.schema import Inspection

    run = RunRecord("line1", "bench", "0", {}, "", "h", {})
    sid, rid = store.ensure_run(run)
    now = utcnow()
    span = timedelta(days=30)
    total = 0
    chunk = 20_000
    with ThreadPoolExecutor(4) as pool:
        for k0 in range(0, n, chunk):
            ks = range(k0, min(n, k0 + chunk))
            made = list(pool.map(lambda i: _file(root, i, only_missing=True), ks, chunksize=256))
            ins, ev = [], []
            for i, (sha, size, _) in zip(ks, made, strict=True):
                at = now - span + span * (i / n)
                fail = i % 10 < 3
                total += size
                ins.append(
                    {"id": i + 1, "uid": uuid.uuid4().hex, "station_id": sid, "run_id": rid, "seq": i,
                     "part_id": f"P{i:07d}", "captured_at": at, "decided_at": at,
                     "verdict": "FAIL" if fail else "PASS", "latency_ms": 10.0, "n_defects": 0}
                )  # fmt: skip
                ev.append(
                    {"inspection_id": i + 1, "station_id": sid, "captured_at": at,
                     "kept_as": "fail" if fail else "pass", "status": "stored", "sha256": sha, "format": "jpeg",
                     "width": 64, "height": 48, "scale": 0.1, "bytes": size, "created_at": at}
                )  # fmt: skip
            with store.engine.begin() as conn:
                conn.execute(insert(Inspection), ins)
                conn.execute(insert(Evidence), ev)
    if store.engine.dialect.name == "postgresql":
        with store.engine.begin() as conn:
            conn.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('inspections', 'id'), (SELECT max(id) FROM inspections))"
            )
    # One in 200 reviewed (held), straight into the review log with one user.
    with store.transaction(write=True) as conn:
        conn.exec_driver_sql(
            "INSERT INTO users (name, role, password_hash, created_at) "
            "VALUES ('bench', 'reviewer', 'x', CURRENT_TIMESTAMP)"
        )
        uid = conn.exec_driver_sql("SELECT id FROM users WHERE name = 'bench'").scalar_one()
        conn.exec_driver_sql(
            "INSERT INTO reviews (inspection_id, label, reason, user_id, via, created_at) "
            f"SELECT inspection_id, 'confirmed', '', {uid}, 'cli', CURRENT_TIMESTAMP "
            "FROM evidence WHERE mod(id, 200) = 0"
        )
    _orphans(root)
    os.sync()  # month-old files are on disk, not only in the page cache: deleting them costs more
    return n, total


def check(store: Store, root: Path) -> tuple[int, int]:
    from sqlalchemy import select

    with store.engine.connect() as conn:  # no call timeout: this reads every stored row at once
        stored = {
            r[0]: r[1]
            for r in conn.execute(select(Evidence.sha256, Evidence.format).where(Evidence.status == "stored"))
        }
    files = {p.stem for p in root.rglob("*.jpg")}
    missing = [s for s, f in stored.items() if not evidence_path(root, s, f).is_file()]
    assert not missing, f"{len(missing)} stored rows name a missing file"
    extra = files - set(stored)
    assert not extra, f"{len(extra)} files no stored row names"
    return len(stored), len(files)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--pg", action="store_true", help="PostgreSQL on 127.0.0.1:5432 instead of SQLite")
    ap.add_argument(
        "--dir", help="a folder for the files (and the SQLite file), left in place afterwards with the filled "
        "store as a template (SQLite: ev.db.template-N; PostgreSQL: database inspector_bench_tpl_N): a later run "
        "with the same --dir and --n starts from a copy of it and writes back the files a pass deleted; rm -rf "
        "the folder and DROP the database when done; default: a temporary folder, removed"
    )  # fmt: skip
    args = ap.parse_args()
    keep = contextlib.nullcontext(args.dir) if args.dir else tempfile.TemporaryDirectory(prefix="retention-bench-")
    with keep as tmp:
        Path(tmp).mkdir(parents=True, exist_ok=True)
        root = Path(tmp) / "ev.db.evidence"
        # With --dir the filled store is kept as a template (a SQLite file, a PostgreSQL database)
        # and each later run starts from a copy of it, its deleted files written back.
        tpl_file = Path(tmp) / f"ev.db.template-{args.n}"
        tpl_db = f"inspector_bench_tpl_{args.n}"
        pg_name = None
        admin = "postgresql://postgres@127.0.0.1:5432/postgres"
        if args.pg:
            import psycopg

            pg_name = f"inspector_bench_{uuid.uuid4().hex[:10]}"
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_name}"
        else:
            url = f"sqlite:///{tmp}/ev.db"
        try:
            t0 = time.perf_counter()
            reuse = False
            if args.dir and args.pg:
                with psycopg.connect(admin, autocommit=True) as c:
                    reuse = c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (tpl_db,)).fetchone() is not None
            elif args.dir:
                reuse = tpl_file.is_file()
            if reuse:
                if args.pg:
                    with psycopg.connect(admin, autocommit=True) as c:
                        c.execute(f'CREATE DATABASE "{pg_name}" TEMPLATE "{tpl_db}"')
                else:
                    for f in ("ev.db", "ev.db-wal", "ev.db-shm"):
                        (Path(tmp) / f).unlink(missing_ok=True)
                    shutil.copyfile(tpl_file, Path(tmp) / "ev.db")
                written = refill(root, args.n)
                n, total = args.n, sum(900 + i % 200 for i in range(args.n))
                print(f"reused the store of {n} rows ({total / 1e6:.0f} MB of files, {written} written back) "
                      f"in {time.perf_counter() - t0:.1f} s; {load()}", flush=True)  # fmt: skip
                store = Store(url)
            elif args.dir:
                if args.pg:
                    with psycopg.connect(admin, autocommit=True) as c:
                        c.execute(f'CREATE DATABASE "{tpl_db}"')
                    tpl = Store(url.replace(pg_name, tpl_db))
                    n, total = generate(tpl, root, args.n)
                    tpl.close()
                    with psycopg.connect(admin, autocommit=True) as c:
                        c.execute(f'CREATE DATABASE "{pg_name}" TEMPLATE "{tpl_db}"')
                    store = Store(url)
                else:
                    store = Store(url)
                    n, total = generate(store, root, args.n)
                    with store.engine.connect() as conn:
                        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                    store.close()
                    shutil.copyfile(Path(tmp) / "ev.db", tpl_file)
                    store = Store(url)
                kept = tpl_db if args.pg else tpl_file
                print(f"generated {n} evidence rows + files ({total / 1e6:.0f} MB), kept as a template ({kept}), "
                      f"in {time.perf_counter() - t0:.1f} s; {load()}", flush=True)  # fmt: skip
            else:
                if args.pg:
                    with psycopg.connect(admin, autocommit=True) as c:
                        c.execute(f'CREATE DATABASE "{pg_name}"')
                store = Store(url)
                n, total = generate(store, root, args.n)
                print(
                    f"generated {n} evidence rows + files ({total / 1e6:.0f} MB) "
                    f"in {time.perf_counter() - t0:.1f} s; {load()}", flush=True
                )  # fmt: skip
            # Quota: what age leaves, less about 5 % of the whole.
            age_only = RetentionPolicy(pass_days=7, fail_days=90, orphan_grace_s=3600)
            p = ret.plan(store, "line1", age_only)
            left = sum(c.bytes for c in p.stored.values()) - sum(c.bytes for c in p.by_age.values())
            policy = RetentionPolicy(pass_days=7, fail_days=90, max_bytes=left - total * 0.05, orphan_grace_s=3600)
            t0, c0 = time.perf_counter(), time.process_time()
            plan = ret.plan(store, "line1", policy)
            orphans = ret.sweep_orphans(store, root, grace_s=3600, dry_run=True)
            dry, dry_cpu = time.perf_counter() - t0, time.process_time() - c0
            for c in ("pass", "fail"):
                print(
                    f"  {c}: stored {plan.stored[c].rows}; by age {plan.by_age.get(c, ret.ClassCount()).rows}, "
                    f"by quota {plan.by_quota.get(c, ret.ClassCount()).rows}, "
                    f"held {plan.held.get(c, ret.ClassCount()).rows}"
                )
            print(f"dry run (plan + orphan count {orphans[0]}): {dry:.2f} s, CPU {dry_cpu:.2f} s; {load()}", flush=True)
            t0, c0 = time.perf_counter(), time.process_time()
            rep = ret.apply(store, root, "line1", policy)
            took, cpu = time.perf_counter() - t0, time.process_time() - c0
            print(
                f"retention pass ({'PostgreSQL' if args.pg else 'SQLite'}): {rep.expired_rows} rows expired, "
                f"{rep.files_deleted} files deleted ({rep.bytes_deleted / 1e6:.0f} MB), {rep.orphans_deleted} orphans "
                f"swept, in {took:.1f} s ({rep.expired_rows / took:.0f} rows+files/s), this process's CPU "
                f"(user + system, the unlinks included) {cpu:.1f} s; {load()}"
            )
            print("  phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in rep.phases.items()))
            stored, files = check(store, root)
            print(f"checked: {stored} stored rows, {files} files, each row's file there and no file without a row")
            t0 = time.perf_counter()
            again = ret.apply(store, root, "line1", policy)
            print(
                f"a second pass (nothing to do: {again.expired_rows} rows): {time.perf_counter() - t0:.1f} s; {load()}"
            )
            store.close()
        finally:
            if pg_name:
                import psycopg

                with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
                    c.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
