"""The query module against a known history, on SQLite and on the real PostgreSQL: every
figure is compared with one computed here in plain Python from the same parts."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import timedelta

import pytest
from sqlalchemy import func, select

import inspector_core.qa.history as qa_history
from inspector_core.qa import query as q
from inspector_core.store import Store, schema
from tests.qa.conftest import HOSTILE_IDS, T0, write_known


def engine_of(url):
    return Store(url).engine


def ids(page):
    return [r.part_id for r in page.rows]


def all_rows(engine, f):
    return list(q.iter_history(engine, f, batch=17))


def test_newest_first_and_paging(known):
    url, parts = known
    e = engine_of(url)
    rows = all_rows(e, q.make_filter())
    assert len(rows) == len(parts)
    keys = [(r.captured_at, r.id) for r in rows]
    assert keys == sorted(keys, reverse=True)
    # Keyset pages and offset pages give the same rows, none twice.
    by_offset = []
    for page in range(0, len(parts), 40):
        by_offset += q.history(e, q.make_filter(), limit=40, offset=page).rows
    assert [r.id for r in by_offset] == [r.id for r in rows]
    assert len({r.id for r in rows}) == len(rows)


@pytest.mark.parametrize(
    "fields, expect",
    [
        ({"stations": ("line1",)}, lambda p: p.station == "line1"),
        ({"verdicts": ("FAIL", "ERROR")}, lambda p: p.verdict in ("FAIL", "ERROR")),
        (
            {"verdicts": ("NOT_INSPECTED",), "stations": ("line2",)},
            lambda p: p.verdict == "NOT_INSPECTED" and p.station == "line2",
        ),
        ({"kinds": ("dent",)}, lambda p: any(k == "dent" and f for k, _, _, f in p.findings)),
        ({"kinds": ("scratch",), "include_candidates": True}, lambda p: any(k == "scratch" for k, *_ in p.findings)),
        ({"min_score": 0.8}, lambda p: any(s >= 0.8 and f for _, s, _, f in p.findings)),
        (
            {"kinds": ("scratch",), "min_score": 0.8},
            lambda p: any(k == "scratch" and s >= 0.8 and f for k, s, _, f in p.findings),
        ),
        ({"min_size_mm": 2.6}, lambda p: any((mm or 0) >= 2.6 and f for _, _, mm, f in p.findings)),
        (
            {"detector": "fake", "stations": ("line1",)},
            lambda p: p.station == "line1" and any(f for *_, f in p.findings),
        ),
        ({"detector": "other"}, lambda p: False),
        (
            {"since": T0 + timedelta(hours=10), "until": T0 + timedelta(hours=20)},
            lambda p: T0 + timedelta(hours=10) <= p.at < T0 + timedelta(hours=20),
        ),
        ({"part_id": "line1-P00*"}, lambda p: p.part_id.startswith("line1-P00")),
        ({"part_id": "line?-P0010"}, lambda p: p.part_id in ("line1-P0010", "line2-P0010")),
        ({"part_id": "LINE1-P0010"}, lambda p: False),  # case-sensitive on both databases
    ],
)
def test_filters(known, fields, expect):
    url, parts = known
    rows = all_rows(engine_of(url), q.make_filter(**fields))
    assert sorted(r.part_id for r in rows) == sorted(p.part_id for p in parts if expect(p))
    assert rows or not any(expect(p) for p in parts)


def test_hostile_strings_match_only_themselves(known):
    url, parts = known
    e = engine_of(url)
    before = {t.name: _count(e, t) for t in schema.Base.metadata.sorted_tables}
    for pid in HOSTILE_IDS:
        assert ids(q.history(e, q.make_filter(part_id=pid))) == [pid] if "*" not in pid and "?" not in pid else True
    # %, _ and \ are literal in a glob; * and ? are the only wildcards.
    assert ids(q.history(e, q.make_filter(part_id="100%_*"))) == ["100%_off"]
    assert ids(q.history(e, q.make_filter(part_id="100__off"))) == []
    assert ids(q.history(e, q.make_filter(part_id="back\\*"))) == ["back\\slash"]
    assert ids(q.history(e, q.make_filter(part_id="[set]*"))) == ["[set]*?"]
    assert ids(q.history(e, q.make_filter(part_id="*'*"))) == sorted(
        [p for p in HOSTILE_IDS if "'" in p], key=lambda p: -HOSTILE_IDS.index(p)
    )
    # SQL in any string filter is a value that matches nothing; no table changes.
    for evil in ("x' OR '1'='1", "'; DELETE FROM inspections; --", "line1' --", '" OR ""="'):
        f = q.make_filter(stations=(evil,), kinds=(evil,), detector=evil, part_id=evil)
        assert q.history(e, f).rows == []
        assert q.history(e, q.make_filter(stations=(evil,))).rows == []
        assert q.history(e, q.make_filter(kinds=(evil,))).rows == []
        assert q.stats(e, q.make_filter(stations=(evil,)), buckets=q.Buckets("day")).totals == []
    after = {t.name: _count(e, t) for t in schema.Base.metadata.sorted_tables}
    assert after == before


def _count(e, table):
    with e.connect() as c:
        return c.scalar(select(func.count()).select_from(table))


def test_malformed_filters_say_what_is_wrong():
    with pytest.raises(q.QueryError, match="min_score"):
        q.make_filter(min_score=1.5)
    with pytest.raises(q.QueryError, match="verdicts"):
        q.make_filter(verdicts=("MAYBE",))
    with pytest.raises(q.QueryError, match="since .* must be before until"):
        q.make_filter(since=T0, until=T0 - timedelta(hours=1))
    with pytest.raises(q.QueryError, match="unknown_field|Extra inputs"):
        q.make_filter(unknown_field=1)
    with pytest.raises(q.QueryError, match="cursor"):
        qa_history._parse_cursor("not-a-cursor")


def nearest_rank(values, p):
    values = sorted(values)
    return values[-(-len(values) * p // 100) - 1]


def test_stats_on_known_data(known):
    url, parts = known
    st = q.stats(engine_of(url), q.make_filter(), buckets=q.Buckets("day"))
    for t in st.totals:
        mine = [p for p in parts if p.station == t.station]
        v = Counter(p.verdict for p in mine)
        assert (t.parts, t.passed, t.failed, t.errors, t.not_inspected) == (
            len(mine),
            v["PASS"],
            v["FAIL"],
            v["ERROR"],
            v["NOT_INSPECTED"],
        )
        assert t.yield_ == pytest.approx(v["PASS"] / (len(mine) - v["NOT_INSPECTED"]))
        by_id = defaultdict(list)
        for p in mine:
            by_id[p.part_id].append(p.verdict)
        first_pass = sum(1 for vs in by_id.values() if vs == ["PASS"])
        assert (t.distinct_parts, t.first_pass) == (len(by_id), first_pass)
        lats = [p.latency for p in mine if p.latency is not None]
        assert (t.latency_p50_ms, t.latency_p99_ms) == (nearest_rank(lats, 50), nearest_rank(lats, 99))
    assert {t.station for t in st.totals} == {"line1", "line2"}
    # re-inspected parts lower first-pass yield below yield on line1
    line1 = next(t for t in st.totals if t.station == "line1")
    assert line1.first_pass_yield < line1.yield_
    # per day
    for p in st.periods:
        day = p.start.date()
        mine = [x for x in parts if x.station == p.station and x.at.date() == day]
        assert p.parts == len(mine) and p.label == day.isoformat()
        assert p.failed == sum(x.verdict == "FAIL" for x in mine)
    # Pareto: counted defects by kind, largest first, cumulative ends at 100%
    expect = Counter(k for p in parts for k, _, _, failed in p.findings if failed)
    assert [(r.kind, r.defects) for r in st.pareto] == sorted(expect.items(), key=lambda kv: (-kv[1], kv[0]))
    assert st.pareto[-1].cumulative == pytest.approx(1.0)


def test_stats_large_window_paths_agree(known):
    # The base-table path taken for large windows (no per-period percentiles) gives the same
    # counts, first-pass figures and total percentiles as for small ones. (The path stats take
    # for filters the roll-up cannot answer.)
    url, _ = known
    e = engine_of(url)
    small = q.stats_from_inspections(e, q.make_filter(), buckets=q.Buckets("day"))
    large = q.stats_from_inspections(e, q.make_filter(), buckets=q.Buckets("day"), period_latency_max_rows=0)
    strip = lambda rows: [{**p.as_dict(), "latency_p50_ms": None, "latency_p99_ms": None} for p in rows]  # noqa: E731
    assert strip(large.periods) == strip(small.periods)
    assert [t.as_dict() for t in large.totals] == [t.as_dict() for t in small.totals]
    assert all(p.latency_p50_ms is None for p in large.periods)
    assert all(p.latency_p50_ms is not None for p in small.periods if p.judged)


def test_stats_rollup_large_window_percentiles_within_bound(known):
    # On the roll-up, a large window reads latency percentiles off the histogram: same
    # counts, percentiles within sqrt(1.05) - 1 of the exact ones, per period too.
    url, _ = known
    e = engine_of(url)
    exact = q.stats(e, q.make_filter(), buckets=q.Buckets("day"))
    approx = q.stats(e, q.make_filter(), buckets=q.Buckets("day"), period_latency_max_rows=0)
    strip = lambda rows: [{**p.as_dict(), "latency_p50_ms": None, "latency_p99_ms": None} for p in rows]  # noqa: E731
    assert strip(approx.periods) == strip(exact.periods)
    assert strip(approx.totals) == strip(exact.totals)
    bound = 1.05**0.5 - 1
    for a, x in zip(approx.periods + approx.totals, exact.periods + exact.totals, strict=True):
        for fld in ("latency_p50_ms", "latency_p99_ms"):
            if x.judged:
                assert abs(getattr(a, fld) / getattr(x, fld) - 1) <= bound + 1e-12


def test_stats_hour_and_shift_buckets(known):
    url, parts = known
    e = engine_of(url)
    hours = q.stats(e, q.make_filter(stations=("line1",)), buckets=q.Buckets("hour"))
    expect = Counter(p.at.replace(minute=0, second=0) for p in parts if p.station == "line1")
    assert {p.start: p.parts for p in hours.periods} == dict(expect)
    # Shifts of 8 h from 06:00 in plant time UTC+2: 04:00, 12:00, 20:00 UTC.
    shifts = q.stats(e, q.make_filter(stations=("line1",)), buckets=q.Buckets("shift", utc_offset_h=2))
    assert {p.start.hour for p in shifts.periods} <= {4, 12, 20}
    assert sum(p.parts for p in shifts.periods) == sum(expect.values())
    for p in shifts.periods:
        assert p.parts == sum(
            1 for x in parts if x.station == "line1" and p.start <= x.at < p.start + timedelta(hours=8)
        )


def test_p_chart_limits_and_flags():
    def ps(label, n, rejects):
        p = q.PeriodStats("s", 0, label, T0)
        p.parts, p.failed, p.passed = n, rejects, n - rejects
        return p

    periods = [ps(str(i), 200, 10) for i in range(9)] + [ps("bad", 200, 60)]
    points, p_bar = q.p_chart(periods)
    assert p_bar["s"] == pytest.approx(150 / 2000)
    sigma = (0.075 * 0.925 / 200) ** 0.5
    assert points[0].ucl == pytest.approx(0.075 + 3 * sigma)
    assert points[0].lcl == pytest.approx(0.075 - 3 * sigma)
    assert [p.label for p in points if p.out_of_control] == ["bad"]


def test_whatif_replays_and_modifies_nothing(known):
    url, parts = known
    e = engine_of(url)
    before = Counter(r.verdict for r in all_rows(e, q.make_filter()))
    # The recorded rules reproduce every stored verdict.
    same = q.whatif(e, q.make_filter(), {})
    assert same.to_fail == [] and same.to_pass == []
    assert same.parts == sum(1 for p in parts if p.verdict != "NOT_INSPECTED")
    # A looser scratch rule fails the PASS parts whose scratch candidates are >= 0.3 and >= 1 mm.
    looser = q.whatif(e, q.make_filter(), q.parse_overrides(["scratch.min_score=0.3"]))
    expect = sorted(
        p.part_id
        for p in parts
        if p.verdict == "PASS" and any(k == "scratch" and s >= 0.3 and (mm or 0) >= 1.0 for k, s, mm, _ in p.findings)
    )
    assert sorted(c.part_id for c in looser.to_fail) == expect and expect
    assert all(c.before == "PASS" and c.after == "FAIL" and c.kinds == ("scratch",) for c in looser.to_fail)
    assert looser.to_pass == []
    # A stricter one passes FAIL parts whose only failing finding is a scratch under 0.8.
    stricter = q.whatif(e, q.make_filter(stations=("line1",)), q.parse_overrides(["scratch.min_score=0.8"]))
    expect = sorted(
        p.part_id
        for p in parts
        if p.station == "line1"
        and p.verdict == "FAIL"
        and not any(f and (k != "scratch" or s >= 0.8) for k, s, _, f in p.findings)
    )
    assert sorted(c.part_id for c in stricter.to_pass) == expect and expect
    assert stricter.rejects_after == stricter.rejects_before - len(expect)
    # Switching a kind off, and the default rule.
    off = q.whatif(e, q.make_filter(), q.parse_overrides(["dent.fail=false"]))
    assert {c.part_id for c in off.to_pass} == {
        p.part_id for p in parts if p.verdict == "FAIL" and [k for k, _, _, f in p.findings if f] == ["dent"]
    }
    dflt = q.whatif(e, q.make_filter(), q.parse_overrides(["default.min_score=0.99"]))
    assert {c.part_id for c in dflt.to_pass} == {
        p.part_id for p in parts if p.verdict == "FAIL" and [k for k, _, _, f in p.findings if f] == ["misalignment"]
    }
    assert Counter(r.verdict for r in all_rows(e, q.make_filter())) == before


@pytest.mark.parametrize(
    "bad, message",
    [
        ("scratch.min_score", "expected KIND.FIELD=VALUE"),
        ("scratch.threshold=0.7", "unknown rule field 'threshold'"),
        ("scratch.min_score=1.7", "less than or equal to 1"),
        ("scratch.min_score=high", "valid number"),
        ("'; DROP TABLE x; --.min_score=0.1", "expected KIND.FIELD=VALUE"),
    ],
)
def test_whatif_bad_rules(bad, message):
    with pytest.raises(q.QueryError, match=message):
        q.parse_overrides([bad])


def test_crops_and_detail(known):
    url, parts = known
    e = engine_of(url)
    crops = q.crops(e, q.make_filter(kinds=("scratch",), min_score=0.85), limit=None)
    assert crops and all(c.kind == "scratch" and c.score >= 0.85 and c.failed for c in crops)
    with_candidates = q.crops(e, q.make_filter(kinds=("scratch",), include_candidates=True), limit=None)
    assert any(not c.failed for c in with_candidates)
    fmt, data = q.crop_image(e, crops[0].crop_id)
    assert fmt == "jpeg" and data[:2] == b"\xff\xd8"
    d = q.inspection(e, crops[0].inspection_id)
    assert d.run["config_hash"].startswith("hash-") and d.run["plugins"]["fake"]["version"] == "1.2.3"
    assert d.steps and d.steps[0].score is not None
    f = next(x for x in d.defects if x.crop_id == crops[0].crop_id)
    # The box drawn on the crop: (defect x - crop x) * scale.
    assert f.crop_box[0] == pytest.approx((f.box[0] - 84) * 0.5)
    assert q.inspection(e, 10**9) is None


@pytest.mark.postgres
def test_part_id_prefix_glob_uses_the_pattern_index_on_postgres(pg_url):
    """A glob with a literal prefix is a range scan of ix_inspections_part_pattern (migration
    0004), not a scan of the table: the plan of the very statement the query module sends."""
    from sqlalchemy import event

    write_known(pg_url)
    e = engine_of(pg_url)
    sent: list[tuple[str, dict]] = []

    def capture(conn, cursor, statement, params, context, executemany):
        if "FROM inspections" in statement and "LIKE" in statement:
            sent.append((statement, params))

    event.listen(e, "before_cursor_execute", capture)
    assert q.history(e, q.make_filter(part_id="line1-P00*")).rows
    event.remove(e, "before_cursor_execute", capture)
    statement, params = sent[0]
    raw = e.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("SET enable_seqscan = off")  # a table this small would be scanned anyway
        cur.execute("EXPLAIN " + statement, params)
        plan = "\n".join(r[0] for r in cur.fetchall())
    finally:
        raw.close()
    assert "ix_inspections_part_pattern" in plan, plan
    assert "~>=~" in plan, plan  # the prefix became an index range
