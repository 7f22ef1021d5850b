"""One definition of first-pass yield for every path: the roll-up (``stats``) and the
inspections (``stats_from_inspections``) agree on random windows, including windows that split
a part's inspections, and both equal the definition computed here in plain Python."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import timedelta

from sqlalchemy import select

from inspector_core.qa import query as q
from inspector_core.store import InspectionRecord, Store, schema
from tests.qa.conftest import T0
from tests.qa.test_rollup import begin, random_batches

I = schema.Inspection


def test_a_window_that_splits_a_part_gives_one_first_pass_yield(db_url):
    # Part A: inspected once, PASS. Part B: PASS in the window, inspected again 3 h later.
    # The roll-up said 0.5 and the inspections path 1.0 for the same window.
    store = Store(db_url)
    sid, rid = begin(store)["lineA"]
    at = [("A", T0), ("B", T0 + timedelta(minutes=5)), ("B", T0 + timedelta(hours=3))]
    store.write(
        [InspectionRecord(uuid.uuid4().hex, sid, rid, k, pid, t, t, "PASS", 5.0) for k, (pid, t) in enumerate(at)]
    )
    f = q.make_filter(since=T0, until=T0 + timedelta(hours=1))
    for st in (
        q.stats(store.engine, f, buckets=q.Buckets("day")),
        q.stats_from_inspections(store.engine, f, buckets=q.Buckets("day")),
    ):
        (t,) = st.totals
        assert (t.parts, t.distinct_parts, t.first_pass, t.first_pass_yield) == (2, 2, 1, 0.5)
    # A window holding only B's second inspection has no first part at all.
    late = q.make_filter(since=T0 + timedelta(hours=2, minutes=30), until=T0 + timedelta(hours=4))
    for st in (
        q.stats(store.engine, late, buckets=q.Buckets("hour")),
        q.stats_from_inspections(store.engine, late, buckets=q.Buckets("hour")),
    ):
        (t,) = st.totals
        assert (t.parts, t.distinct_parts, t.first_pass, t.first_pass_yield) == (1, 0, 0, None)
    store.close()


def expected_first_parts(rows, f: q.HistoryFilter, buckets: q.Buckets, names: dict[int, str]) -> dict:
    """``{(station, bucket): (first parts, first-pass parts)}`` by the definition in
    inspector_core/qa/query.py, from every stored inspection."""
    by_part = defaultdict(list)
    for r in rows:
        by_part[(r.station_id, r.part_id)].append(r)
    out: dict = defaultdict(lambda: [0, 0])
    for rs in by_part.values():
        first = min(rs, key=lambda r: (r.captured_at, r.id))
        if f.since and first.captured_at < f.since or f.until and first.captured_at >= f.until:
            continue
        if f.stations and names[first.station_id] not in f.stations or f.verdicts and first.verdict not in f.verdicts:
            continue
        cell = out[(names[first.station_id], buckets.of(first.captured_at))]
        cell[0] += 1
        cell[1] += first.verdict == "PASS" and len(rs) == 1
    return {k: tuple(v) for k, v in out.items()}


def test_rollup_and_inspections_agree_on_random_windows(db_url):
    store = Store(db_url)
    ids = begin(store)
    for batch in random_batches(ids, seed=23, n=500):
        store.write(batch)
    e = store.engine
    with e.connect() as conn:
        rows = conn.execute(select(I.id, I.station_id, I.part_id, I.captured_at, I.verdict)).all()
    names = {sid: st for st, (sid, _) in ids.items()}
    times = sorted(r.captured_at for r in rows)
    lo, hi = times[0] - timedelta(hours=1), times[-1] + timedelta(hours=1)
    span = (hi - lo).total_seconds()
    rng = random.Random(2026)
    split_windows = 0
    for n in range(30):
        since = lo + timedelta(seconds=rng.uniform(0, span))
        until = since + timedelta(seconds=rng.uniform(60, span / 3))
        fields: dict = {"since": since if n % 7 else None, "until": until if n % 5 else None}
        if n % 4 == 1:
            fields["stations"] = ("lineB",)
        if n % 6 == 2:
            fields["verdicts"] = ("PASS", "FAIL")
        f = q.make_filter(**fields)
        buckets = q.Buckets(rng.choice(["hour", "shift", "day"]), utc_offset_h=rng.randrange(-5, 6))
        a = q.stats(e, f, buckets=buckets)
        b = q.stats_from_inspections(e, f, buckets=buckets)
        assert q.uses_rollup(f)

        def counts(st):
            return [
                {k: v for k, v in p.as_dict().items() if not k.startswith("latency_")} for p in st.periods + st.totals
            ]

        assert counts(a) == counts(b), f
        want = expected_first_parts(rows, f, buckets, names)
        got = {
            (p.station, p.bucket): (p.distinct_parts, p.first_pass)
            for p in a.periods
            if p.distinct_parts or p.first_pass
        }
        assert got == want, f
        inside = {
            (r.station_id, r.part_id)
            for r in rows
            if (not f.since or r.captured_at >= f.since) and (not f.until or r.captured_at < f.until)
        }
        outside = {
            (r.station_id, r.part_id)
            for r in rows
            if (f.since and r.captured_at < f.since) or (f.until and r.captured_at >= f.until)
        }
        split_windows += bool(inside & outside)
    # Most windows cut through some part's inspections (the case the two paths disagreed on).
    assert split_windows >= 20
    store.close()
