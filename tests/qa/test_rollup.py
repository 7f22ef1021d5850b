"""The hourly roll-up (inspection_hours, inspection_hour_latency, inspections.first_of_part):
kept by Store.write in the inspections' transaction, equal to a recount from the inspections
after a random workload (repeats, late arrivals, duplicates, re-writes), and rebuilt by
migration 0003 on a database written at 0002."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import timedelta

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import column as sa_column
from sqlalchemy import create_engine, insert, inspect, select
from sqlalchemy import table as sa_table

import inspector_core.qa.filters as qa_filters
from inspector_core.qa import query as q
from inspector_core.store import (
    MIGRATIONS,
    InspectionRecord,
    Store,
    hour_of,
    latency_bucket,
    schema,
)
from tests.qa.conftest import T0

I, H, HL = schema.Inspection, schema.InspectionHour, schema.InspectionHourLatency
VERDICTS = ["PASS"] * 14 + ["FAIL", "FAIL", "ERROR", "NOT_INSPECTED"]


def random_batches(ids: dict[str, tuple[int, int]], seed: int = 7, n: int = 900) -> list[list[InspectionRecord]]:
    """Records over ~50 h on two stations: a pool of part ids reused often (re-inspections),
    some captured before earlier-written ones (late arrivals: the first of a part moves),
    within-batch repeats of a part id, and whole records sent twice (spool re-writes)."""
    rng = random.Random(seed)
    records = []
    for k in range(n):
        st = rng.choice(sorted(ids))
        sid, rid = ids[st]
        pid = f"{st}-{rng.randrange(260):04d}"
        at = T0 + timedelta(minutes=3.3 * k + rng.uniform(-240, 30), microseconds=rng.randrange(10**6))
        verdict = rng.choice(VERDICTS)
        lat = (
            None
            if verdict == "NOT_INSPECTED"
            else rng.choice([rng.uniform(2, 90), rng.lognormvariate(3, 0.8), 0.004, 250.0])
        )
        records.append(
            InspectionRecord(
                uuid.uuid4().hex, sid, rid, k, pid, at, at + timedelta(milliseconds=lat or 0), verdict, lat
            )
        )
    batches, k = [], 0
    while k < len(records):
        size = rng.choice([1, 2, 7, 30, 90])
        batch = records[k : k + size]
        if batches and rng.random() < 0.3:  # a re-write of part of an earlier batch
            batch = batch + rng.sample(batches[-1], min(3, len(batches[-1])))
        batches.append(batch)
        k += size
    return batches


def recount(engine) -> tuple[dict, dict, dict]:
    """The roll-up computed from the inspections alone, in Python; and first_of_part."""
    with engine.connect() as conn:
        rows = list(conn.execute(select(I.id, I.station_id, I.part_id, I.captured_at, I.verdict, I.latency_ms)))
    by_part = defaultdict(list)
    for r in rows:
        by_part[(r.station_id, r.part_id)].append(r)
    first_ids = {min(rs, key=lambda r: (r.captured_at, r.id)).id for rs in by_part.values()}
    hours: dict = defaultdict(lambda: [0, 0, 0, 0, 0.0, None, None])
    lat: dict = defaultdict(int)
    for r in rows:
        key = (r.station_id, hour_of(r.captured_at), r.verdict)
        h = hours[key]
        h[0] += 1
        if r.id in first_ids:
            h[1] += 1
            h[2] += r.verdict == "PASS" and len(by_part[(r.station_id, r.part_id)]) == 1
        if r.latency_ms is not None:
            h[3] += 1
            h[4] += r.latency_ms
            h[5] = r.latency_ms if h[5] is None else min(h[5], r.latency_ms)
            h[6] = r.latency_ms if h[6] is None else max(h[6], r.latency_ms)
            lat[(*key, latency_bucket(r.latency_ms))] += 1
    return dict(hours), dict(lat), {r.id: r.id in first_ids for r in rows}


def stored_rollup(engine) -> tuple[dict, dict, dict]:
    with engine.connect() as conn:
        hours = {
            (r.station_id, r.hour, r.verdict): [
                r.parts,
                r.first_parts,
                r.first_passed,
                r.latency_count,
                r.latency_sum,
                r.latency_min,
                r.latency_max,
            ]
            for r in conn.execute(select(H))
        }
        lat = {(r.station_id, r.hour, r.verdict, r.bucket): r.n for r in conn.execute(select(HL)) if r.n}
        first = dict(conn.execute(select(I.id, I.first_of_part)).all())
    return hours, lat, {k: bool(v) for k, v in first.items()}


def assert_rollup_matches(engine) -> None:
    want_h, want_l, want_f = recount(engine)
    got_h, got_l, got_f = stored_rollup(engine)
    assert got_f == want_f
    assert got_l == want_l
    assert set(got_h) == set(want_h)
    for k, w in want_h.items():
        g = got_h[k]
        assert g[:4] == w[:4], k
        assert g[4] == pytest.approx(w[4]) and g[5:] == w[5:], k


def begin(store: Store) -> dict[str, tuple[int, int]]:
    return {
        st: store.begin_run(
            st,
            hostname="t",
            software_version="0",
            plugins={},
            config_yaml=f"name: {st}\n",
            config_hash="0" * 64,
            models={},
        )
        for st in ("lineA", "lineB")
    }


def test_rollup_equals_recount_after_random_workload(db_url):
    store = Store(db_url)
    ids = begin(store)
    written = 0
    for batch in random_batches(ids):
        written += store.write(batch)
    assert written == 900
    assert_rollup_matches(store.engine)
    # Some parts were inspected several times, and some first inspections arrived late.
    with store.engine.connect() as conn:
        assert conn.scalar(select(H.parts).where(H.parts > H.first_parts).limit(1))
    # The roll-up path and the inspections path agree on every count over the whole history.
    e = store.engine
    for period in ("hour", "shift", "day"):
        a = q.stats(e, q.make_filter(), buckets=q.Buckets(period, utc_offset_h=2))
        b = q.stats_from_inspections(e, q.make_filter(), buckets=q.Buckets(period, utc_offset_h=2))

        def strip(rows):
            return [{**p.as_dict(), "latency_p50_ms": None, "latency_p99_ms": None} for p in rows]

        assert strip(a.periods) == strip(b.periods) and strip(a.totals) == strip(b.totals)
        assert [t.latency_p99_ms for t in a.totals] == [t.latency_p99_ms for t in b.totals]
    store.close()


def test_rollup_window_edges_and_verdict_filter(db_url):
    # A window that starts and ends inside hours: whole hours from the roll-up, the ends
    # from the inspections; counts equal the inspections read directly.
    store = Store(db_url)
    ids = begin(store)
    for batch in random_batches(ids, seed=11, n=400):
        store.write(batch)
    e = store.engine
    for f in (
        q.make_filter(since=T0 + timedelta(hours=3, minutes=17), until=T0 + timedelta(hours=11, minutes=41)),
        q.make_filter(since=T0 + timedelta(minutes=5), until=T0 + timedelta(minutes=55)),
        q.make_filter(stations=("lineB",), verdicts=("FAIL", "ERROR"), since=T0 + timedelta(hours=2, seconds=1)),
    ):
        got = q.stats(e, f, buckets=q.Buckets("hour"))
        with e.connect() as conn:
            rows = list(conn.execute(select(I.station_id, I.captured_at, I.verdict).where(*qa_filters._where(f, "x"))))
        assert sum(t.parts for t in got.totals) == len(rows)
        assert sum(t.failed for t in got.totals) == sum(r.verdict == "FAIL" for r in rows)
        assert {p.start: p.parts for p in got.periods if p.station == "lineB"} == _count_by_hour(rows, ids["lineB"][0])
    store.close()


def _count_by_hour(rows, sid):
    out: dict = defaultdict(int)
    for r in rows:
        if r.station_id == sid:
            out[hour_of(r.captured_at)] += 1
    return dict(out)


def test_same_batch_twice_leaves_rollup_unchanged(db_url):
    store = Store(db_url)
    ids = begin(store)
    batches = random_batches(ids, seed=3, n=120)
    for batch in batches:
        store.write(batch)
    before = stored_rollup(store.engine)
    everything = [r for b in batches for r in b]
    assert store.write(everything) == 0  # a spool drained twice
    assert store.write(batches[-1] + batches[-1]) == 0
    assert stored_rollup(store.engine) == before
    assert_rollup_matches(store.engine)
    store.close()


def _upgrade(url: str, rev: str) -> None:
    engine = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, rev)
    engine.dispose()


def test_migration_0003_backfills_a_0002_database(db_url, tmp_path):
    # The same history written through the writer (head) and inserted into a 0002 database
    # then upgraded: identical roll-up, first_of_part and stats.
    ref_url = f"sqlite:///{tmp_path / 'ref.db'}"
    ref = Store(ref_url)
    ids = begin(ref)
    for batch in random_batches(ids, seed=5, n=600):
        ref.write(batch)

    _upgrade(db_url, "0002")
    old = create_engine(db_url)
    with ref.engine.connect() as src, old.begin() as dst:
        # the inspections' columns at 0002 (first_of_part came with 0003, committed_at and
        # commit_latency_ms with 0008)
        at_0002 = {c["name"] for c in inspect(dst).get_columns("inspections")}
        cols = [c for c in I.__table__.c if c.name in at_0002]
        table_0002 = sa_table("inspections", *[sa_column(c.name, c.type) for c in cols])
        for table in (schema.Station.__table__, schema.Run.__table__):
            # only the columns the table had at 0002 (later migrations add some)
            at_0002 = {c["name"] for c in inspect(dst).get_columns(table.name)}
            dst.execute(
                insert(table),
                [{k: v for k, v in r._mapping.items() if k in at_0002} for r in src.execute(select(table))],
            )
        rows = [dict(r._mapping) for r in src.execute(select(*cols).order_by(I.id))]
        random.Random(1).shuffle(rows)  # physical order must not matter
        dst.execute(insert(table_0002), rows)
        if dst.dialect.name == "postgresql":  # explicit ids: move the sequences past them
            for t in ("stations", "runs", "inspections"):
                dst.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT max(id) FROM {t}))")
    old.dispose()

    upgraded = Store(db_url)  # migrates 0002 -> head, backfilling
    assert stored_rollup(upgraded.engine)[2] == stored_rollup(ref.engine)[2]
    assert_rollup_matches(upgraded.engine)
    h_ref, l_ref, _ = stored_rollup(ref.engine)
    h_up, l_up, _ = stored_rollup(upgraded.engine)
    assert l_up == l_ref and {k: v[:4] + v[5:] for k, v in h_up.items()} == {k: v[:4] + v[5:] for k, v in h_ref.items()}

    def same(st):  # an 0002 database never had the committed latency (migration 0008): NULL after it
        d = st.as_dict()
        for p in d["totals"] + d["periods"]:
            p["commit_latency_p50_ms"] = p["commit_latency_p99_ms"] = None
        return d

    for period in ("day", "shift"):
        f = q.make_filter(since=T0 + timedelta(hours=1, minutes=30))
        a = same(q.stats(ref.engine, f, buckets=q.Buckets(period)))
        b = same(q.stats(upgraded.engine, f, buckets=q.Buckets(period)))
        assert a == b
        a = same(q.stats(ref.engine, f, buckets=q.Buckets(period), period_latency_max_rows=0))
        b = same(q.stats(upgraded.engine, f, buckets=q.Buckets(period), period_latency_max_rows=0))
        assert a == b
    # and the upgraded database goes on being written correctly
    more = random_batches(ids, seed=9, n=60)
    for batch in more:
        upgraded.write(batch)
    assert_rollup_matches(upgraded.engine)
    ref.close()
    upgraded.close()
