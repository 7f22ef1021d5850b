"""``review.review_stats`` (read from the ``review_outcomes`` roll-up, migration 0014) equals
``review_stats_reference`` (the straightforward Python tally of the module's rules over the log) on
random review logs, on SQLite and PostgreSQL: every label on parts and findings, changes of mind,
missed defects of kinds and steps the machine reported and did not, windows and station filters;
the roll-up built in bulk (as migration 0014 does), kept by ``add_review`` after every review, and
built by the migration itself from a log written before it."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import insert, select

from inspector_core.qa import accounts, review
from inspector_core.store import review_outcomes
from inspector_core.store.review_records import Review
from inspector_core.store.schema import Defect, Inspection
from tests.qa.conftest import T0

LABELS = ("confirmed", "false_alarm", "missed", "unsure")


@pytest.fixture
def reviewed(known, monkeypatch):
    """The known history with about 180 random reviews, inserted as plain rows (so that also
    combinations ``add_review`` refuses, such as false_alarm on a PASS part, are counted alike)."""
    from argon2 import PasswordHasher, profiles

    monkeypatch.setattr(accounts, "_hasher", PasswordHasher.from_parameters(profiles.CHEAPEST))
    url, _ = known
    store = review.open_writer(url)
    user = accounts.add_user(store, "ann", "reviewer", "ann-password-1")
    rng = np.random.default_rng(15)
    with store.engine.connect() as c:
        parts = c.execute(select(Inspection.id)).scalars().all()
        findings = c.execute(select(Defect.id, Defect.inspection_id)).all()
    rows = []
    for _ in range(180):
        if rng.random() < 0.55:
            did, iid = findings[int(rng.integers(len(findings)))]
            label = str(rng.choice(["confirmed", "false_alarm", "unsure"]))
            rows.append({"inspection_id": iid, "defect_id": did, "label": label})
        else:
            iid = parts[int(rng.integers(len(parts)))]
            label = str(rng.choice(LABELS))
            row = {"inspection_id": iid, "defect_id": None, "label": label}
            if label == "missed":
                row["kind"] = str(rng.choice(["scratch", "dent", "misalignment", "blob"]))
                row["step"] = str(rng.choice(["fake", "other"])) if rng.random() < 0.8 else None
            rows.append(row)
    # Changes of mind: a second review of some subjects (the latest counts).
    rows += [dict(r, label="confirmed" if r["label"] != "confirmed" else "unsure") for r in rows[::7]]
    for k, r in enumerate(rows):
        r.setdefault("step", None)
        r.setdefault("kind", None)
        r.update(reason="", user_id=user.id, via="cli", created_at=T0 + timedelta(days=3, seconds=k))
    with store.engine.begin() as c:
        c.execute(insert(Review), rows)
        review_outcomes.refresh_all(c, None)  # plain rows bypass add_review: built in bulk, as 0014 and 0015 do
    yield store
    store.close()


@pytest.mark.parametrize(
    "window",
    [
        {},
        {"stations": ["line1"]},
        {"stations": ["line2", "line1"]},
        {"since": T0 + timedelta(hours=10)},
        {"since": T0 + timedelta(hours=5), "until": T0 + timedelta(hours=30), "stations": ["line2"]},
        {"since": T0 + timedelta(days=9)},
    ],
)
def test_review_stats_equal_the_straightforward_tally(reviewed, window):
    fast = review.review_stats(reviewed.engine, **window)
    slow = review.review_stats_reference(reviewed.engine, **window)
    assert fast == slow
    if "since" not in window or window["since"] < T0 + timedelta(days=2):
        assert slow and all(s.reviewed for s in slow)
        assert all(sum(getattr(s, c) for s in slow) > 0 for c in ("tp", "fp", "fn", "tn"))


def test_add_review_keeps_the_roll_up_exact_after_every_review(known, monkeypatch):
    """Reviews through ``add_review`` (queue items, whole parts, changes of mind, missed defects):
    after each one the roll-up gives the reference's figures."""
    from argon2 import PasswordHasher, profiles

    monkeypatch.setattr(accounts, "_hasher", PasswordHasher.from_parameters(profiles.CHEAPEST))
    url, _ = known
    store = review.open_writer(url)
    try:
        ann = accounts.add_user(store, "ann", "reviewer", "ann-password-1")
        items = review.queue(store.engine, limit=60)
        rng = np.random.default_rng(3)
        for steps, it in enumerate(items[:24], 1):
            if it.defect_id is not None:
                for label in rng.choice(["confirmed", "false_alarm", "unsure"], 1 + int(rng.random() < 0.3)):
                    review.add_review(
                        store, inspection_id=it.inspection_id, defect_id=it.defect_id, label=str(label), user=ann
                    )
                if rng.random() < 0.3:  # the whole part too
                    review.add_review(store, inspection_id=it.inspection_id, label="confirmed", user=ann)
            elif rng.random() < 0.5:
                review.add_review(
                    store, inspection_id=it.inspection_id, label="missed", kind=str(rng.choice(["scratch", "dent"])),
                    step="fake", box=[1, 2, 3, 4], user=ann,
                )  # fmt: skip
            else:
                review.add_review(store, inspection_id=it.inspection_id, label="confirmed", user=ann)
            assert review.review_stats(store.engine) == review.review_stats_reference(store.engine), steps
        got = review.review_stats(store.engine)
        assert sum(s.tp for s in got) and sum(s.tn for s in got)
    finally:
        store.close()


def test_migration_0014_builds_the_roll_up_from_an_older_log(db_url, monkeypatch):
    """A store at 0013 with reviews in its log: upgrading to 0014 gives the reference's figures."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from inspector_core.store import MIGRATIONS
    from tests.qa.conftest import write_known

    write_known(db_url)
    store = review.open_writer(db_url)
    try:
        monkeypatch.setattr(accounts, "_hasher", __import__("argon2").PasswordHasher.from_parameters(
            __import__("argon2").profiles.CHEAPEST))  # fmt: skip
        ann = accounts.add_user(store, "ann", "reviewer", "ann-password-1")
        for it in review.queue(store.engine, limit=30):
            review.add_review(
                store, inspection_id=it.inspection_id, defect_id=it.defect_id, user=ann,
                label="false_alarm" if it.defect_id and it.inspection_id % 3 == 0 else "confirmed",
            )  # fmt: skip
        expected = review.review_stats_reference(store.engine)
        assert expected == review.review_stats(store.engine)
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with store.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0013")
            assert "review_outcomes" not in conn.dialect.get_table_names(conn)
            command.upgrade(cfg, "head")
            assert conn.execute(text("SELECT count(*) FROM review_outcomes")).scalar_one() >= 20
        assert review.review_stats(store.engine) == expected and expected
    finally:
        store.close()


def test_the_queue_asks_only_for_the_pass_parts_its_page_shows(known, monkeypatch):
    """The page is the same as when the queue fetched ``limit`` PASS parts (as before), for page
    sizes and interleavings where the failed findings last and where they run out, and it holds
    as many PASS parts as ``_passes_needed`` says (a page of 40 with enough failed findings: 8)."""
    url, _ = known
    store = review.open_writer(url)
    try:
        fewer = review._passes_needed
        for limit, every in ((40, 4), (7, 4), (3, 1), (60, 2), (200, 4), (1, 4)):
            monkeypatch.setattr(review, "_passes_needed", lambda f, n, p: n)
            before = review.queue(store.engine, limit=limit, pass_every=every)
            monkeypatch.setattr(review, "_passes_needed", fewer)
            assert review.queue(store.engine, limit=limit, pass_every=every) == before, (limit, every)
            assert (
                sum(i.defect_id is None for i in before)
                == fewer(sum(i.defect_id is not None for i in before), limit, every)
                or len(before) < limit
            )
        assert fewer(40, 40, 4) == 8 and fewer(0, 40, 4) == 40 and fewer(10, 40, 4) == 30
    finally:
        store.close()
