"""The review tiles (``review.counts``: findings left, PASS parts near the threshold, current labels,
reviews in the log), read from the ``review_parts`` roll-up and two indexed counts (migration 0015),
equal a count done here in plain Python over every row, on random histories and random review logs,
on SQLite and PostgreSQL: several stations and runs with different rules (a default rule, a kind
that never fails, a run whose rules cannot be read), candidates on PASS, FAIL and ERROR parts,
reviews of parts and findings with changes of mind; windows, station filters and score bands; the
roll-up built in bulk, kept by ``add_review`` after every review, and built by migration 0015 from
a log written before it."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
import yaml
from sqlalchemy import insert, select

from inspector_core.qa import accounts, review
from inspector_core.qa.whatif import RuleSet, run_rules
from inspector_core.store import DefectRecord, InspectionRecord, StepRecord, Store, review_outcomes
from inspector_core.store.review_records import LABELS, PassCandidate, Review
from inspector_core.store.schema import Defect, Inspection, Run, Station
from tests.qa.conftest import T0

RULE_SETS: dict[str, dict[str, Any]] = {
    "line1": {"rules": {"scratch": {"min_score": 0.5}, "dent": {"min_score": 0.6}}},
    "line2": {
        "rules": {"scratch": {"min_score": 0.4}, "blob": {"min_score": 0.3, "fail": False}},
        "default_rule": {"min_score": 0.7},
    },
    "line3": {"rules": {"dent": {"min_score": 0.55}}},
}
KINDS = ("scratch", "dent", "blob", "misalignment")


def write_random_history(url: str, n: int = 700, seed: int = 11) -> None:
    """``n`` parts over four days from three stations (two runs on line1 with different rules, one
    run on line3 whose stored config has no readable rules), every part judged by its run's rules
    from random findings, written through the real Store."""
    rng = np.random.default_rng(seed)
    store = Store(url)
    runs: list[tuple[str, int, int, dict[str, Any]]] = []
    for name, cfg in RULE_SETS.items():
        sid, rid = store.begin_run(
            name,
            hostname="test",
            software_version="0.1.0",
            plugins={},
            config_yaml=yaml.safe_dump({"name": name, **cfg}),
            config_hash=uuid.uuid4().hex,
            models={},
        )
        runs.append((name, sid, rid, cfg))
    stricter: dict[str, Any] = {"rules": {"scratch": {"min_score": 0.3}}, "default_rule": {"min_score": 0.45}}
    sid, rid = store.begin_run(
        "line1", hostname="test", software_version="0.1.0", plugins={},
        config_yaml=yaml.safe_dump({"name": "line1", **stricter}), config_hash=uuid.uuid4().hex, models={},
    )  # fmt: skip
    runs.append(("line1", sid, rid, stricter))
    sid, rid = store.begin_run(
        "line3", hostname="test", software_version="0.1.0", plugins={},
        config_yaml="rules: [not, a, mapping]\n", config_hash=uuid.uuid4().hex, models={},
    )  # fmt: skip
    runs.append(("line3", sid, rid, {"rules": {}}))
    records = []
    for seq in range(n):
        name, sid, rid, cfg = runs[int(rng.integers(len(runs)))]
        rules = cfg.get("rules", {})
        default = cfg.get("default_rule", {"min_score": 0.5})
        at = T0 + timedelta(minutes=float(rng.uniform(0, 4 * 24 * 60)))
        defects = []
        for _ in range(int(rng.choice([0, 0, 1, 1, 2, 3]))):
            kind = str(rng.choice(KINDS))
            rule = rules.get(kind, default)
            score = round(float(rng.uniform(0, 1)), 3)
            failed = rule.get("fail", True) and score >= rule["min_score"]
            defects.append(
                DefectRecord("fake", "fake", kind, score, bool(failed), (10, 20, 30, 40), 10.0, None, {}, "")
            )
        verdict = "FAIL" if any(d.failed for d in defects) else "PASS"
        if rng.random() < 0.05:
            verdict = "ERROR"  # findings stay (a later step raised): never in the queue
        records.append(
            InspectionRecord(
                uuid.uuid4().hex, sid, rid, seq, f"{name}-{seq:05d}", at, at + timedelta(milliseconds=20), verdict,
                20.0, steps=[StepRecord(0, "fake", "fake", "ok", 0.0, 10.0, len(defects))], defects=defects,
            )
        )  # fmt: skip
    store.write(records)
    store.close()


def add_random_reviews(store: Store, user_id: int, n: int, seed: int) -> None:
    """``n`` random reviews as plain rows (findings, candidates among them, and whole parts; every
    label, also where ``add_review`` would refuse it), a seventh of them changed later."""
    rng = np.random.default_rng(seed)
    with store.engine.connect() as c:
        parts = c.execute(select(Inspection.id)).scalars().all()
        findings = c.execute(select(Defect.id, Defect.inspection_id)).all()
    rows = []
    for _ in range(n):
        if rng.random() < 0.6:
            did, iid = findings[int(rng.integers(len(findings)))]
            rows.append(
                {
                    "inspection_id": iid,
                    "defect_id": did,
                    "label": str(rng.choice(["confirmed", "false_alarm", "unsure"])),
                }
            )
        else:
            iid = parts[int(rng.integers(len(parts)))]
            rows.append({"inspection_id": iid, "defect_id": None, "label": str(rng.choice(LABELS))})
    rows += [dict(r, label="unsure" if r["label"] != "unsure" else "confirmed") for r in rows[::7]]
    for k, r in enumerate(rows):
        r.update(reason="", user_id=user_id, via="cli", created_at=T0 + timedelta(days=5, seconds=k))
    with store.engine.begin() as c:
        c.execute(insert(Review), rows)
        review_outcomes.refresh_all(c, None)  # plain rows bypass add_review: the roll-ups built in bulk


def brute_force(store: Store, stations=(), since=None, until=None, near=review.NEAR) -> review.ReviewCounts:
    """The tiles counted in Python from every row, by their definitions."""
    with store.engine.connect() as c:
        names = dict(c.execute(select(Station.id, Station.name)).all())
        rules: dict[int, RuleSet | None] = {}
        for rid, cfg in c.execute(select(Run.id, Run.config_yaml)):
            try:
                rules[rid] = run_rules(cfg)
            except ValueError:
                rules[rid] = None
        parts = {r.id: r for r in c.execute(select(Inspection.id, Inspection.station_id, Inspection.run_id,
                                                   Inspection.captured_at, Inspection.verdict))}  # fmt: skip
        defects = c.execute(select(Defect.id, Defect.inspection_id, Defect.kind, Defect.score, Defect.failed)).all()
        log = c.execute(
            select(Review.id, Review.inspection_id, Review.defect_id, Review.label).order_by(Review.id)
        ).all()

    def inside(iid: int) -> bool:
        p = parts[iid]
        return (
            (not stations or names[p.station_id] in stations)
            and (since is None or p.captured_at >= since)
            and (until is None or p.captured_at < until)
        )

    latest = {(r.inspection_id, r.defect_id): r.label for r in log}
    reviewed_parts = {iid for iid, did in latest if did is None}
    left = sum(
        1
        for d in defects
        if d.failed
        and parts[d.inspection_id].verdict == "FAIL"
        and inside(d.inspection_id)
        and (d.inspection_id, d.id) not in latest
        and d.inspection_id not in reviewed_parts
    )

    def near_threshold(d) -> bool:
        rs = rules[parts[d.inspection_id].run_id]
        if rs is None or d.failed:
            return False
        rule = rs.rules.get(d.kind, rs.default)
        return rule.fail and rule.min_score - near <= d.score < rule.min_score

    near_parts = {
        d.inspection_id
        for d in defects
        if parts[d.inspection_id].verdict == "PASS"
        and inside(d.inspection_id)
        and d.inspection_id not in reviewed_parts
        and near_threshold(d)
    }
    labels = Counter(label for (iid, _), label in latest.items() if inside(iid))
    return review.ReviewCounts(
        left, len(near_parts), {k: labels.get(k, 0) for k in LABELS}, sum(1 for r in log if inside(r.inspection_id))
    )


WINDOWS = [
    {},
    {"since": T0 + timedelta(days=1)},
    {"since": T0 + timedelta(hours=30), "until": T0 + timedelta(hours=70)},
    {"stations": ["line2"]},
    {"stations": ["line1", "line3"], "since": T0 + timedelta(hours=12)},
    {"stations": ["no-such-line"]},
    {"near": 0.05},
    {"near": 1.0, "stations": ["line1"]},
    {"since": T0 + timedelta(days=9)},
]


@pytest.fixture
def history(db_url, monkeypatch):
    from argon2 import PasswordHasher, profiles

    monkeypatch.setattr(accounts, "_hasher", PasswordHasher.from_parameters(profiles.CHEAPEST))
    write_random_history(db_url)
    store = review.open_writer(db_url)
    yield store, accounts.add_user(store, "ann", "reviewer", "ann-password-1")
    store.close()


def test_the_tiles_equal_a_count_in_python_on_random_reviews(history):
    store, ann = history
    assert review.counts(store.engine) == brute_force(store)  # no reviews yet
    add_random_reviews(store, ann.id, 400, seed=4)
    for window in WINDOWS:
        want = brute_force(store, **window)
        assert review.counts(store.engine, **window) == want, window
        assert review.counts_reference(store.engine, **window) == want, window
        if not window.get("since", T0) > T0 + timedelta(days=4) and window.get("stations") != ["no-such-line"]:
            assert want.findings_left and want.near_pass_left and want.reviews, (window, want)
    everything = brute_force(store)
    assert all(everything.labels[k] for k in LABELS), everything


def test_add_review_keeps_the_tiles_exact_after_every_review(history):
    """Reviews through ``add_review`` from the queue (findings, PASS parts near the threshold,
    whole parts, changes of mind): after each one the tiles are the count in Python."""
    store, ann = history
    add_random_reviews(store, ann.id, 60, seed=8)
    rng = np.random.default_rng(9)
    items = review.queue(store.engine, limit=40, near=0.3)
    assert {i.defect_id is None for i in items} == {True, False}
    for n, it in enumerate(items[:25]):
        if it.defect_id is not None:
            label = str(rng.choice(["confirmed", "false_alarm", "unsure"]))
            review.add_review(store, inspection_id=it.inspection_id, defect_id=it.defect_id, label=label, user=ann)
            if rng.random() < 0.3:
                review.add_review(store, inspection_id=it.inspection_id, label="confirmed", user=ann)
        elif rng.random() < 0.5:
            review.add_review(
                store, inspection_id=it.inspection_id, label="missed", kind="scratch", step="fake", user=ann
            )
        else:
            review.add_review(store, inspection_id=it.inspection_id, label="unsure", user=ann)
        for window in ({}, {"near": 0.3}, {"stations": ["line2"], "since": T0 + timedelta(days=2)}):
            assert review.counts(store.engine, **window) == brute_force(store, **window), (n, window)


def test_migration_0015_builds_the_tiles_roll_up_from_an_older_log(history):
    """A store at the revision before 0015 with reviews in its log: upgrading to 0015 gives the
    count in Python."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from inspector_core.store import MIGRATIONS

    store, ann = history
    add_random_reviews(store, ann.id, 200, seed=5)
    want = brute_force(store, since=T0 + timedelta(days=1))
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0015-1")
        assert "review_parts" not in conn.dialect.get_table_names(conn)
        command.upgrade(cfg, "head")
        assert conn.execute(text("SELECT count(*) FROM review_parts")).scalar_one() > 100
    assert review.counts(store.engine, since=T0 + timedelta(days=1)) == want


def test_a_score_band_outside_0_1_is_refused(history):
    store, _ = history
    with pytest.raises(review.ReviewError, match="near: a score band between 0 and 1"):
        review.counts(store.engine, near=0)


def test_the_trigger_copies_every_candidate_of_a_pass_part_and_no_other(history, db_url):
    """``pass_candidates`` (a trigger on ``defects``, migration 0015) holds exactly the candidate
    findings of PASS parts with their part's station, run and time: the random history written
    through the Store, then one more batch written after the first (the trigger, not the backfill)."""
    store, _ = history
    write_random_history(db_url, n=60, seed=12)  # a second Store and batch on the same database
    with store.engine.connect() as c:
        got = set(c.execute(select(*PassCandidate.__table__.c)).all())
        parts = {r.id: r for r in c.execute(select(Inspection))}
        want = {
            (d.id, d.inspection_id, p.station_id, p.run_id, p.captured_at, d.kind, d.score)
            for d in c.execute(select(Defect.id, Defect.inspection_id, Defect.kind, Defect.score, Defect.failed))
            if not d.failed and (p := parts[d.inspection_id]).verdict == "PASS"
        }
    assert got == want and len(want) > 100
