"""Retention of whole-frame evidence: by age and by a size quota, per class, with holds (issue 15).

What goes (:func:`plan`): a ``stored`` evidence row of the station older than its class's days
(``pass_days`` for sampled PASS frames, ``fail_days`` for failed parts'), then, while the
station's stored bytes exceed ``max_bytes``, the oldest of the rest (PASS frames before failed
ones). Never a held one: a frame is held while its inspection has a review (the ``reviews`` log)
or a hold (``held_at``) made after its last release (``released_at``): a person's word keeps the
picture it was about until a person releases it (:func:`release`).

How it goes (:func:`apply`), so that no row names a deleted file, chunk by chunk of :data:`BATCH`
rows in capture order:

1. in a write transaction, the chunk's rows are marked ``expired`` (``sha256`` cleared,
   ``expired_at`` set), re-checking in that transaction that each is still stored and not held;
2. after its commit, each of their files that no ``stored`` row names any more is handed to the
   deleting threads (which work while the next chunk is marked) and deleted, unless it was written
   after the pass began (a writer storing the same bytes again rewrites the file before it
   commits: its fresh time keeps it);
3. once every chunk is done, the sweep deletes files no row names that are older than
   ``orphan_grace_s`` (a writer killed between its file and its commit; a row removed with its
   inspection; a pass killed between steps 1 and 2) and stale temporary files.

A file is only ever deleted after the rows naming it are gone, never before: a crash between
the steps leaves at worst an orphan file, which the next sweep removes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import stat
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, any_, bindparam, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql

from inspector_core.store.database import Store
from inspector_core.store.evidence import EXT
from inspector_core.store.evidence_records import Evidence
from inspector_core.store.records import utcnow
from inspector_core.store.review_records import Review
from inspector_core.store.schema import Station

BATCH = 10_000
"""Rows marked per transaction (a writer waits at most one such transaction)."""
SQLITE_CACHE_KIB = 65536
"""SQLite's page cache while marking (its default is 2 MB)."""
SQLITE_CHECKPOINT_PAGES = 32768
"""WAL pages (4 kB) after which the marking connection checkpoints (SQLite's default: 1,000)."""
NAMED_CHUNK = 5000
"""Names looked up per query (whether a stored row still names a file)."""
DELETERS = 32
"""Threads deleting files: the cost is mostly waiting for the filesystem (a journalled block free
per file), which threads overlap."""


def held() -> Any:
    """SQL: the evidence row is held (a review or a hold after its last release)."""
    e = Evidence
    after_release = or_(e.released_at.is_(None), Review.created_at > e.released_at)
    reviewed = exists().where(Review.inspection_id == e.inspection_id, after_release)
    on_hold = and_(e.held_at.is_not(None), or_(e.released_at.is_(None), e.held_at > e.released_at))
    return or_(on_hold, reviewed)


@dataclasses.dataclass
class ClassCount:
    rows: int = 0
    bytes: int = 0

    def add(self, n: int | None) -> None:
        self.rows += 1
        self.bytes += n or 0


@dataclasses.dataclass
class Plan:
    """What a retention pass removes (or would): per class, by age and by quota."""

    station: str
    now: datetime
    stored: dict[str, ClassCount] = dataclasses.field(default_factory=dict)
    """Per class: the station's stored evidence before the pass."""
    by_age: dict[str, ClassCount] = dataclasses.field(default_factory=dict)
    by_quota: dict[str, ClassCount] = dataclasses.field(default_factory=dict)
    held: dict[str, ClassCount] = dataclasses.field(default_factory=dict)
    """Per class: held frames that age or the quota would have removed."""
    ids: list[int] = dataclasses.field(default_factory=list)
    reasons: dict[int, str] = dataclasses.field(default_factory=dict)
    max_bytes: int | None = None
    over_quota: int = 0
    """Bytes the station stays over ``max_bytes`` after the pass: held frames (never removed)."""
    orphans: tuple[int, int] = (0, 0)
    """Files no row names, older than the grace period: (files, bytes) the sweep removes."""

    def going(self, kept_as: str) -> ClassCount:
        a, q = self.by_age.get(kept_as, ClassCount()), self.by_quota.get(kept_as, ClassCount())
        return ClassCount(a.rows + q.rows, a.bytes + q.bytes)


@dataclasses.dataclass
class Report:
    plan: Plan
    expired_rows: int = 0
    files_deleted: int = 0
    bytes_deleted: int = 0
    files_kept_shared: int = 0
    """Files of expired rows that another stored row still names (the same bytes)."""
    orphans_deleted: int = 0
    orphan_bytes: int = 0
    seconds: float = 0.0
    phases: dict[str, float] = dataclasses.field(default_factory=dict)
    """Seconds per phase: ``plan``; ``rows`` (marking) and ``named`` (which files another stored
    row still names), summed over the chunks, while the files are deleted beside them;
    ``files_after_rows`` (waiting for the deletes still running when the last chunk is marked);
    ``sweep``."""


def _station_id(store: Store, station: str) -> int | None:
    with store.transaction() as conn:
        return conn.scalar(select(Station.id).where(Station.name == station))


PLAN_CHUNK = 50_000
"""Rows read per transaction by :func:`plan` (each read is short: a writer is never held up and
the store's call timeout is never reached, however many frames the station keeps)."""


def plan(store: Store, station: str, policy: Any, *, now: datetime | None = None) -> Plan:
    """What retention would remove now from ``station``'s evidence (``policy``: its
    ``store.retention``: ``pass_days``, ``fail_days``, ``max_bytes``).

    Counted in the database: the stored rows per class (one GROUP BY), the held ones among those
    old enough (one more), then the ids that go by age and, only when the rest is over the quota,
    the oldest of the rest, each read in capture order in chunks of :data:`PLAN_CHUNK` rows (its
    own short transaction) and stopping as soon as the quota is met. The same plan as
    :func:`plan_reference` (tested)."""
    now = now or utcnow()
    p = Plan(station, now, max_bytes=None if policy.max_bytes is None else int(policy.max_bytes))
    sid = _station_id(store, station)
    if sid is None:
        return p
    e = Evidence
    days = {"pass": policy.pass_days, "fail": policy.fail_days}
    mine = (e.station_id == sid, e.status == "stored")
    with store.transaction() as conn:
        for kept_as, n, stored_bytes in conn.execute(
            select(e.kept_as, func.count(), func.coalesce(func.sum(e.bytes), 0)).where(*mine).group_by(e.kept_as)
        ):
            p.stored[kept_as] = ClassCount(int(n), int(stored_bytes or 0))
    total = sum(c.bytes for c in p.stored.values())
    cutoff = {c: now - timedelta(days=d) for c, d in days.items() if d is not None and c in p.stored}
    for cls, before in cutoff.items():
        old = (*mine, e.kept_as == cls, e.captured_at < before)
        with store.transaction() as conn:
            n, held_bytes = conn.execute(
                select(func.count(), func.coalesce(func.sum(e.bytes), 0)).where(*old, held())
            ).one()
        if n:
            p.held[cls] = ClassCount(int(n), int(held_bytes or 0))
        reason = f"retention: older than {cls}_days ({days[cls]:g})"
        for rid, size in _in_capture_order(store, (*old, ~held())):
            p.by_age.setdefault(cls, ClassCount()).add(size)
            p.ids.append(rid)
            p.reasons[rid] = reason
            total -= size or 0
    if p.max_bytes is not None and total > p.max_bytes:
        # Oldest first, PASS frames before failed parts'; never a held one.
        reason = f"retention: over the quota max_bytes ({p.max_bytes})"
        for cls in ("pass", "fail"):
            if total <= p.max_bytes:
                break
            if cls not in p.stored:
                continue
            young = (e.captured_at >= cutoff[cls],) if cls in cutoff else ()
            for rid, size in _in_capture_order(store, (*mine, e.kept_as == cls, *young, ~held())):
                if total <= p.max_bytes:
                    break
                p.by_quota.setdefault(cls, ClassCount()).add(size)
                p.ids.append(rid)
                p.reasons[rid] = reason
                total -= size or 0
        p.over_quota = max(0, total - p.max_bytes)
    return p


def _in_capture_order(store: Store, where: tuple[Any, ...]) -> Iterator[tuple[int, int | None]]:
    """``(id, bytes)`` of the evidence rows matching ``where``, by ``(captured_at, id)``, read in
    chunks of :data:`PLAN_CHUNK` (keyset: each chunk starts after the last row of the one before)."""
    e = Evidence
    after: tuple[datetime, int] | None = None
    while True:
        q = select(e.id, e.bytes, e.captured_at).where(*where)
        if after is not None:
            q = q.where(or_(e.captured_at > after[0], and_(e.captured_at == after[0], e.id > after[1])))
        with store.transaction() as conn:
            rows = conn.execute(q.order_by(e.captured_at, e.id).limit(PLAN_CHUNK)).all()
        for rid, nbytes, _ in rows:
            yield rid, nbytes
        if len(rows) < PLAN_CHUNK:
            return
        after = (rows[-1][2], rows[-1][0])


def plan_reference(store: Store, station: str, policy: Any, *, now: datetime | None = None) -> Plan:
    """:func:`plan` the straightforward way: every stored row of the station read in one query
    (with its held flag) and walked in Python. One transaction over the whole station: on a month
    of 1,000,000 frames it outlived the store's 30 s call timeout under load, so the pass never
    began. Kept as the definition :func:`plan` is tested against."""
    now = now or utcnow()
    p = Plan(station, now, max_bytes=None if policy.max_bytes is None else int(policy.max_bytes))
    sid = _station_id(store, station)
    if sid is None:
        return p
    e = Evidence
    days = {"pass": policy.pass_days, "fail": policy.fail_days}
    with store.transaction() as conn:
        q = (
            select(e.id, e.kept_as, e.captured_at, e.bytes, held().label("held"))
            .where(e.station_id == sid, e.status == "stored")
            .order_by(e.captured_at, e.id)
        )
        rows = [(r[0], r[1], r[2], r[3], bool(r[4])) for r in conn.execute(q)]
    total = 0
    rest: list[tuple[int, str, int | None]] = []
    for rid, kept_as, at, n, is_held in rows:
        p.stored.setdefault(kept_as, ClassCount()).add(n)
        d = days.get(kept_as)
        if d is not None and at < now - timedelta(days=d):
            if is_held:
                p.held.setdefault(kept_as, ClassCount()).add(n)
                total += n or 0
            else:
                p.by_age.setdefault(kept_as, ClassCount()).add(n)
                p.ids.append(rid)
                p.reasons[rid] = f"retention: older than {kept_as}_days ({d:g})"
            continue
        total += n or 0
        if not is_held:
            rest.append((rid, kept_as, n))
    if p.max_bytes is not None and total > p.max_bytes:
        # Oldest first, PASS frames before failed parts' (rest is in capture order).
        for cls in ("pass", "fail"):
            for rid, kept_as, n in rest:
                if total <= p.max_bytes:
                    break
                if kept_as != cls:
                    continue
                p.by_quota.setdefault(kept_as, ClassCount()).add(n)
                p.ids.append(rid)
                p.reasons[rid] = f"retention: over the quota max_bytes ({p.max_bytes})"
                total -= n or 0
        p.over_quota = max(0, total - p.max_bytes)
    return p


def _chunks(xs: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(xs), n):
        yield xs[i : i + n]


def _among(conn: Any, col: Any, values: list[Any]) -> Any:
    """SQL: ``col`` is one of ``values``. On PostgreSQL one array parameter (``= ANY``): psycopg
    parses a statement's text on every execution, and 10,000 placeholders cost more than the
    update itself."""
    if conn.dialect.name == "postgresql":
        return col == any_(bindparam(None, values, type_=postgresql.ARRAY(col.type)))
    return col.in_(values)


def _mark(store: Store, ids: list[int], reasons: dict[int, str]) -> tuple[int, list[tuple[str, str, int | None]]]:
    """Step 1 for one chunk, in one write transaction: the rows of ``ids`` still stored and not
    held are marked expired; returns how many, and their files as (sha256, format, bytes)."""
    e = Evidence
    with store.transaction(write=True) as conn:
        if conn.dialect.name == "sqlite":
            # The chunk dirties a few thousand pages of the sha256 index (random keys): hold them
            # in memory rather than spill them to the WAL and read them back within the transaction.
            conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
            # ... and checkpoint every few chunks, not after each: a page the chunks keep
            # dirtying (the same index pages) is then copied back to the database file once.
            conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint = {SQLITE_CHECKPOINT_PAGES}")
        still = select(e.id, e.sha256, e.format, e.bytes).where(_among(conn, e.id, ids), e.status == "stored", ~held())
        if conn.dialect.name == "postgresql":
            still = still.with_for_update()  # SQLite: BEGIN IMMEDIATE already holds the write lock
        got = conn.execute(still).all()
        by_reason: dict[str, list[int]] = {}
        for rid, *_ in got:
            by_reason.setdefault(reasons[rid], []).append(rid)
        at = utcnow()
        for reason, gone in by_reason.items():
            conn.execute(
                update(e)
                .where(_among(conn, e.id, gone), e.status == "stored")
                .values(status="expired", sha256=None, expired_at=at, reason=reason)
            )
    return len(got), [(sha, fmt or "jpeg", n) for _, sha, fmt, n in got if sha]


def _still_named(store: Store, shas: list[str]) -> set[str]:
    """Those of ``shas`` that a ``stored`` row (of any station) names."""
    e = Evidence
    named: set[str] = set()
    for part in _chunks(shas, NAMED_CHUNK):
        with store.transaction() as conn:
            named.update(conn.scalars(select(e.sha256).where(_among(conn, e.sha256, part), e.status == "stored")))
    return named


def apply(
    store: Store, root: Path, station: str, policy: Any, *, now: datetime | None = None, sweep: bool = True
) -> Report:
    """Remove what :func:`plan` says (rows first, then their files), then sweep orphan files.

    Chunk by chunk (:data:`BATCH` rows, in capture order): the rows are marked in one write
    transaction; once it is committed, the chunk's files no stored row names any more are handed
    to :data:`DELETERS` threads, which delete them while the next chunk is marked. So no file is
    deleted before its row is committed expired, and the rows' and the files' costs overlap."""
    t0 = time.perf_counter()
    p = plan(store, station, policy, now=now)
    rep = Report(p)
    rep.phases["plan"] = time.perf_counter() - t0
    started = time.time()
    rows_s = named_s = 0.0
    jobs: list[Future[list[bool]]] = []
    sizes: list[list[tuple[str, int]]] = []
    kept: set[str] = set()
    deleted: set[str] = set()
    base = str(root)  # paths as strings: a Path per file cost more than its unlink's Python part
    with ThreadPoolExecutor(DELETERS) as pool:
        for ids in _chunks(p.ids, BATCH):
            t1 = time.perf_counter()
            expired, marked = _mark(store, ids, p.reasons)
            rep.expired_rows += expired
            t2 = time.perf_counter()
            rows_s += t2 - t1
            # Committed: now the files of this chunk that no stored row names any more.
            by_sha = {(sha, fmt): n for sha, fmt, n in marked}
            named = _still_named(store, sorted({sha for sha, _ in by_sha}))
            named_s += time.perf_counter() - t2
            todo: list[tuple[str, str, int]] = []
            for (sha, fmt), n in sorted(by_sha.items()):
                if sha in named:
                    kept.add(sha)  # another stored row names it (the same bytes): unless it expires later
                else:
                    todo.append((f"{base}/{sha[:2]}/{sha[2:4]}/{sha}.{EXT.get(fmt, fmt)}", sha, n or 0))
            # In name order (consecutive deletes in the same folders), by a few threads: a file
            # written back to disk costs the filesystem a journalled block free, which threads share.
            for part in _chunks(todo, 256):
                sizes.append([(sha, n) for _, sha, n in part])
                jobs.append(pool.submit(_unlink_all, [path for path, _, _ in part], started))
        t1 = time.perf_counter()
        for job, ns in zip(jobs, sizes, strict=True):
            for ok, (sha, n) in zip(job.result(), ns, strict=True):
                deleted.add(sha)
                if ok:
                    rep.files_deleted += 1
                    rep.bytes_deleted += n
    rep.files_kept_shared = len(kept - deleted)
    rep.phases["rows"] = rows_s
    rep.phases["named"] = named_s
    rep.phases["files_after_rows"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    if sweep:
        rep.orphans_deleted, rep.orphan_bytes = sweep_orphans(store, root, grace_s=policy.orphan_grace_s)
    rep.phases["sweep"] = time.perf_counter() - t1
    rep.seconds = time.perf_counter() - t0
    return rep


def _unlink_all(paths: list[str], before: float) -> list[bool]:
    return [_unlink_if_older(path, before) for path in paths]


def _unlink_if_older(path: str, before: float) -> bool:
    try:
        if os.stat(path).st_mtime >= before:
            return False  # written again since the pass began: a writer is about to commit a row naming it
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def _folders(root: Path) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """Per top folder ``ab/``: its name and (folder, file name) of every entry in its ``ab/cd/``
    folders, listed by name only (no stat)."""
    if not root.is_dir():
        return
    for a in os.scandir(root):
        if not a.is_dir() or len(a.name) != 2:
            continue
        entries: list[tuple[str, str]] = []
        for b in os.scandir(a.path):
            if not b.is_dir() or len(b.name) != 2:
                continue
            with os.scandir(b.path) as it:
                entries.extend((b.path, f.name) for f in it)
        yield a.name, entries


HEX = frozenset("0123456789abcdef")


def _named_in_folder(store: Store, top: str, shas: list[str]) -> set[str]:
    """Those of ``shas`` (names found under the top folder ``top``) that a ``stored`` row names:
    for a hex folder, every stored name starting with ``top`` read in one index range (a 256th
    of the names, in order), rather than a look-up per name."""
    if not shas:
        return set()
    if not set(top) <= HEX:
        return _still_named(store, shas)
    e = Evidence
    nxt = int(top, 16) + 1
    where = [e.sha256 >= top, e.status == "stored"]
    if nxt < 256:
        where.append(e.sha256 < f"{nxt:02x}")
    with store.transaction() as conn:
        return {sha for sha in conn.scalars(select(e.sha256).where(*where)) if sha} & set(shas)


def _old_file(path: str, cutoff: float) -> int | None:
    """The size of ``path`` if it is a regular file older than ``cutoff``, else None."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return st.st_size if st.st_mtime < cutoff and stat.S_ISREG(st.st_mode) else None


def sweep_orphans(
    store: Store, root: Path, *, grace_s: float, dry_run: bool = False, now: float | None = None
) -> tuple[int, int]:
    """Delete evidence files no ``stored`` row names, older than ``grace_s`` (and temporary files
    left by a killed writer, as old); returns (files, bytes). Rows of every station count: a
    folder may be shared.

    Folder by folder (``ab/``, a 256th of the files), the files are listed by name only, the names
    looked up in the database, and only the files no stored row names are stat'ed (their age) and
    deleted: a sweep over a million named files costs a million directory entries and index
    look-ups, not a million stats."""
    exts = {f".{x}" for x in EXT.values()}
    cutoff = (now or time.time()) - grace_s
    n = size = 0
    for top, entries in _folders(root):
        cand: dict[str, list[str]] = {}
        for folder, name in entries:
            if name.startswith(".") and name.endswith(".tmp"):
                path = os.path.join(folder, name)
                got = _old_file(path, cutoff)
                if got is not None:
                    if not dry_run:
                        _remove(path)
                    n += 1
                    size += got
                continue
            stem, ext = os.path.splitext(name)
            if ext in exts and len(stem) == 64:
                cand.setdefault(stem, []).append(os.path.join(folder, name))
        named = _named_in_folder(store, top, sorted(cand))
        for sha, paths in cand.items():
            if sha in named:
                continue
            for path in paths:
                got = _old_file(path, cutoff)
                if got is not None and (dry_run or _unlink_if_older(path, cutoff)):
                    n += 1
                    size += got
    return n, size


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def hold(store: Store, inspection_id: int, by: str) -> int:
    """Put the frame of inspection ``inspection_id`` on hold (retention keeps it); returns rows."""
    with store.transaction(write=True) as conn:
        return conn.execute(
            update(Evidence).where(Evidence.inspection_id == inspection_id).values(held_at=utcnow(), held_by=by)
        ).rowcount


def release(store: Store, inspection_id: int, by: str) -> int:
    """Release the frame of inspection ``inspection_id``: reviews and holds made before now no
    longer keep it (a later review or hold does again); returns rows."""
    with store.transaction(write=True) as conn:
        return conn.execute(
            update(Evidence).where(Evidence.inspection_id == inspection_id).values(released_at=utcnow(), released_by=by)
        ).rowcount


def stored_bytes(store: Store, station: str) -> int:
    """The station's stored evidence bytes (the quota's measure)."""
    sid = _station_id(store, station)
    if sid is None:
        return 0
    with store.transaction() as conn:
        return int(
            conn.scalar(
                select(func.coalesce(func.sum(Evidence.bytes), 0)).where(
                    Evidence.station_id == sid, Evidence.status == "stored"
                )
            )
            or 0
        )
