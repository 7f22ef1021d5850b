"""Retention of evidence by age, quota and hold, on SQLite and PostgreSQL: what goes, in which
order (rows before files), and that no row is left naming a missing file nor a file no row names."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy import select

from inspector_core.store import retention as ret
from inspector_core.store.evidence import evidence_path
from inspector_core.store.evidence_records import Evidence
from tests.evidence.conftest import NOW, retention


def rows(env) -> dict[int, tuple[str, str | None, str | None]]:
    with env.store.transaction() as conn:
        return {r.inspection_id: (r.status, r.sha256, r.format) for r in conn.execute(select(Evidence))}


def files(env) -> set[str]:
    return {p.stem for p in env.root.rglob("*.png")}


def consistent(env) -> None:
    """Every stored row's file is there, and every file is named by a stored row."""
    got = rows(env)
    named = {sha for st, sha, _ in got.values() if st == "stored"}
    for st, sha, fmt in got.values():
        if st == "stored":
            assert evidence_path(env.root, sha, fmt).is_file()
        else:
            assert sha is None
    assert files(env) == named


def age_files(env, seconds: float) -> None:
    """Make every evidence file look ``seconds`` old (retention spares files written during its pass)."""
    t = time.time() - seconds
    for p in env.root.rglob("*.png"):
        os.utime(p, (t, t))


def test_age_per_class_held_and_released(env):
    from inspector_core.qa.accounts import add_user
    from inspector_core.qa.review import add_review

    old_pass = env.part("PASS", 8)
    new_pass = env.part("PASS", 6)
    old_fail = env.part("FAIL", 91)
    mid_fail = env.part("FAIL", 30)
    reviewed = env.part("FAIL", 120)
    held = env.part("PASS", 20)
    age_files(env, 7200)
    alice = add_user(env.store, "alice", "reviewer", "correct horse battery")
    add_review(env.store, inspection_id=reviewed, label="confirmed", user=alice, reason="real scratch")
    assert ret.hold(env.store, held, "alice") == 1
    policy = retention(pass_days=7, fail_days=90)

    # The plan (a dry run) changes nothing.
    plan = ret.plan(env.store, "line1", policy, now=NOW)
    assert (plan.by_age["pass"].rows, plan.by_age["fail"].rows) == (1, 1)
    assert (plan.held["pass"].rows, plan.held["fail"].rows) == (1, 1)
    assert plan.by_age["pass"].bytes > 0
    before = rows(env)
    assert all(st == "stored" for st, _, _ in before.values()) and len(files(env)) == 6

    rep = ret.apply(env.store, env.root, "line1", policy, now=NOW)
    after = rows(env)
    assert rep.expired_rows == 2 and rep.files_deleted == 2
    assert after[old_pass][0] == after[old_fail][0] == "expired"
    for iid in (new_pass, mid_fail, reviewed, held):
        assert after[iid][0] == "stored"
    consistent(env)

    # Released, the reviewed and the held frames go on the next pass; a later review holds again.
    ret.release(env.store, reviewed, "alice")
    ret.release(env.store, held, "alice")
    add_review(env.store, inspection_id=held, label="unsure", user=alice, reason="look again")
    rep = ret.apply(env.store, env.root, "line1", policy, now=NOW)
    after = rows(env)
    assert after[reviewed][0] == "expired" and after[held][0] == "stored"
    consistent(env)


def test_quota_removes_oldest_pass_first(env):
    ids = [env.part("PASS", 5 - i * 0.1) for i in range(4)] + [env.part("FAIL", 6 - i * 0.1) for i in range(4)]
    age_files(env, 7200)
    sizes = _bytes(env)
    total = sum(sizes.values())
    # Room for all but about three frames: the three oldest PASS frames go, no failed one.
    quota = total - sizes[ids[0]] - sizes[ids[1]] - sizes[ids[2]] // 2
    policy = retention(pass_days=None, fail_days=None, max_bytes=quota)
    plan = ret.plan(env.store, "line1", policy, now=NOW)
    assert plan.by_quota["pass"].rows == 3 and "fail" not in plan.by_quota
    ret.apply(env.store, env.root, "line1", policy, now=NOW)
    after = rows(env)
    assert [after[i][0] for i in ids] == ["expired"] * 3 + ["stored"] * 5
    assert ret.stored_bytes(env.store, "line1") <= quota
    consistent(env)
    # A quota below what the failed frames need: they go too, oldest first.
    ret.apply(env.store, env.root, "line1", retention(pass_days=None, fail_days=None, max_bytes=1), now=NOW)
    assert all(st == "expired" for st, _, _ in rows(env).values())
    consistent(env)


def _bytes(env) -> dict[int, int]:
    with env.store.transaction() as conn:
        return {r.inspection_id: r.bytes for r in conn.execute(select(Evidence))}


def test_shared_bytes_and_fresh_files_are_kept(env):
    # Two parts whose frames encode to the same bytes share one file: expiring one keeps it.
    old = env.part("PASS", 30, seed=7)
    young = env.part("PASS", 1, seed=7)
    assert rows(env)[old][1] == rows(env)[young][1]
    age_files(env, 7200)
    rep = ret.apply(env.store, env.root, "line1", retention(pass_days=7), now=NOW)
    assert rep.expired_rows == 1 and rep.files_deleted == 0 and rep.files_kept_shared == 1
    consistent(env)
    # A file written again after the pass began (a writer about to commit the same bytes) stays.
    third = env.part("PASS", 20, seed=8)
    sha = rows(env)[third][1]
    path = evidence_path(env.root, sha, "png")
    future = time.time() + 60
    os.utime(path, (future, future))
    rep = ret.apply(env.store, env.root, "line1", retention(pass_days=7, orphan_grace_s=3600), now=NOW)
    assert rep.expired_rows == 1 and rep.files_deleted == 0 and path.is_file()
    # ... until the sweep finds it old and named by no row.
    os.utime(path, (time.time() - 7200, time.time() - 7200))
    n, size = ret.sweep_orphans(env.store, env.root, grace_s=3600)
    assert n == 1 and size > 0 and not path.is_file()
    consistent(env)


def test_orphan_sweep_spares_young_and_named_files(env):
    named = env.part("FAIL", 1)
    age_files(env, 7200)
    orphan_old = evidence_path(env.root, "ab" * 32, "png")
    orphan_new = evidence_path(env.root, "cd" * 32, "png")
    tmp_old = orphan_old.with_name(".x.png.123.tmp")
    for p in (orphan_old, orphan_new, tmp_old):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 10)
    t = time.time() - 7200
    os.utime(orphan_old, (t, t))
    os.utime(tmp_old, (t, t))
    assert ret.sweep_orphans(env.store, env.root, grace_s=3600, dry_run=True) == (2, 20)
    assert orphan_old.is_file() and tmp_old.is_file()
    assert ret.sweep_orphans(env.store, env.root, grace_s=3600) == (2, 20)
    assert not orphan_old.exists() and not tmp_old.exists() and orphan_new.is_file()
    assert rows(env)[named][0] == "stored" and evidence_path(env.root, rows(env)[named][1], "png").is_file()


def test_a_review_made_during_the_pass_keeps_the_frame(env, monkeypatch):
    """The rows are re-checked (stored, not held) in the transaction that expires them."""
    from inspector_core.qa.accounts import add_user
    from inspector_core.qa.review import add_review

    iid = env.part("FAIL", 200)
    age_files(env, 7200)
    bob = add_user(env.store, "bob", "reviewer", "correct horse battery")
    real_plan = ret.plan

    def plan_then_review(*a, **kw):
        p = real_plan(*a, **kw)
        add_review(env.store, inspection_id=iid, label="confirmed", user=bob, reason="seen just now")
        return p

    monkeypatch.setattr(ret, "plan", plan_then_review)
    rep = ret.apply(env.store, env.root, "line1", retention(fail_days=90), now=NOW)
    assert rep.plan.by_age["fail"].rows == 1 and rep.expired_rows == 0
    assert rows(env)[iid][0] == "stored"
    consistent(env)


def test_the_chunked_plan_equals_the_straightforward_one(env, monkeypatch):
    """``plan`` (counted in the database, rows read in keyset chunks, here of 3) gives the same
    counts, ids and reasons as ``plan_reference`` (one query, walked in Python) on a mix of ages,
    classes, reviews, holds and releases, under age only, age + quota, quota only, and a quota
    nothing can meet (held frames over it)."""
    import random

    from inspector_core.qa.accounts import add_user
    from inspector_core.qa.review import add_review

    rnd = random.Random(7)
    ids = [env.part(rnd.choice(["PASS", "PASS", "FAIL", "ERROR"]), rnd.uniform(0, 120)) for _ in range(40)]
    alice = add_user(env.store, "alice", "reviewer", "correct horse battery")
    for iid in rnd.sample(ids, 6):
        add_review(env.store, inspection_id=iid, label="unsure", user=alice)
    for iid in rnd.sample(ids, 5):
        ret.hold(env.store, iid, "alice")
    ret.release(env.store, ids[0], "alice")
    monkeypatch.setattr(ret, "PLAN_CHUNK", 3)
    total = ret.stored_bytes(env.store, "line1")
    for policy in (
        retention(pass_days=7, fail_days=90),
        retention(pass_days=7, fail_days=90, max_bytes=total // 3),
        retention(pass_days=None, fail_days=None, max_bytes=total // 2),
        retention(pass_days=30, fail_days=None, max_bytes=1),
        retention(pass_days=1000, fail_days=1000),
    ):
        fast, slow = (
            ret.plan(env.store, "line1", policy, now=NOW),
            ret.plan_reference(env.store, "line1", policy, now=NOW),
        )
        assert sorted(fast.ids) == sorted(slow.ids) and fast.reasons == slow.reasons, policy
        for name in ("stored", "by_age", "by_quota", "held"):
            assert getattr(fast, name) == getattr(slow, name), (policy, name)
        assert fast.over_quota == slow.over_quota
    assert slow.stored and ret.plan(env.store, "line1", retention(pass_days=7, fail_days=90), now=NOW).ids


def test_chunks_share_files_and_overlap_the_deletes(env, monkeypatch):
    """In chunks of 2 rows: a file two expired rows in different chunks share goes (once) with the
    second; one a kept row still names stays; every expired row's file is gone afterwards."""
    monkeypatch.setattr(ret, "BATCH", 2)
    shared_gone = [env.part("PASS", 30, seed=11), env.part("PASS", 10, seed=11)]  # chunks 1 and 3
    others = [env.part("PASS", 20 - k) for k in range(3)]
    kept_young = env.part("PASS", 1, seed=12)
    shared_kept = env.part("PASS", 25, seed=12)
    age_files(env, 7200)
    rep = ret.apply(env.store, env.root, "line1", retention(pass_days=7), now=NOW)
    assert rep.expired_rows == 6 == len(rep.plan.ids)
    assert rep.files_deleted == 4 and rep.files_kept_shared == 1
    got = rows(env)
    assert all(got[i][0] == "expired" for i in (*shared_gone, *others, shared_kept))
    assert got[kept_young][0] == "stored"
    consistent(env)


def test_a_pass_killed_between_chunks_leaves_a_consistent_store(env, monkeypatch):
    """A pass that dies while marking its third chunk (that transaction rolled back, as a kill
    leaves it) never leaves a stored row naming a missing file; the files of the chunks already
    committed are gone or left as orphans, which the next pass sweeps."""
    ids = [env.part("PASS", 30 - k) for k in range(10)]
    age_files(env, 7200)
    monkeypatch.setattr(ret, "BATCH", 3)
    real_mark, calls = ret._mark, []

    def dies_on_the_third(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real_mark(*a, **kw)

    monkeypatch.setattr(ret, "_mark", dies_on_the_third)
    try:
        ret.apply(env.store, env.root, "line1", retention(pass_days=7), now=NOW)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the pass was meant to die")
    got = rows(env)
    assert sorted(st for st, _, _ in got.values()).count("expired") == 6
    for st, sha, fmt in got.values():  # never a stored row without its file
        assert st != "stored" or evidence_path(env.root, sha, fmt).is_file()
    monkeypatch.setattr(ret, "_mark", real_mark)
    ret.apply(env.store, env.root, "line1", retention(pass_days=7, orphan_grace_s=0), now=NOW)
    assert all(rows(env)[i][0] == "expired" for i in ids)
    consistent(env)


KILLED_PASS = """
import sys, time
from pathlib import Path
from inspector_core.runtime.config import RetentionPolicy
from inspector_core.store import Store
from inspector_core.store import retention as ret

real_unlink, real_mark = ret._unlink_if_older, ret._mark
def slow_unlink(path, before):
    time.sleep(0.05)
    return real_unlink(path, before)
def slow_mark(*a):
    time.sleep(0.1)
    return real_mark(*a)
ret._unlink_if_older, ret._mark = slow_unlink, slow_mark
ret.BATCH, ret.DELETERS = 4, 2
store = Store(sys.argv[1], migrate=False)
print("started", flush=True)
ret.apply(store, Path(sys.argv[2]), "line1", RetentionPolicy(pass_days=7))
"""


def test_a_real_kill_mid_pass_leaves_a_consistent_store(env, tmp_path):
    """SIGKILL of ``inspector retention``'s pass while it deletes files (slowed down): no stored
    row names a missing file; the next pass removes what the killed one left."""
    import signal
    import subprocess
    import sys

    ids = [env.part("PASS", 30 - k * 0.5) for k in range(40)]
    age_files(env, 7200)
    script = tmp_path / "pass.py"
    script.write_text(KILLED_PASS)
    url = env.store.engine.url.render_as_string(hide_password=False)
    proc = subprocess.Popen(
        [sys.executable, str(script), url, str(env.root)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"started"
    deadline = time.time() + 60
    while time.time() < deadline and sum(st == "expired" for st, _, _ in rows(env).values()) < 12:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    got = rows(env)
    expired = sum(st == "expired" for st, _, _ in got.values())
    assert 12 <= expired < 40, expired  # killed mid-pass, not before nor after
    for st, sha, fmt in got.values():
        assert st != "stored" or evidence_path(env.root, sha, fmt).is_file()
    ret.apply(env.store, env.root, "line1", retention(pass_days=7, orphan_grace_s=0))
    assert all(rows(env)[i][0] == "expired" for i in ids)
    consistent(env)


def test_the_sweep_reads_each_folders_names_at_its_edges(env):
    """The sweep looks names up per top folder (an index range ``ab`` <= sha256 < ``ac``): named
    files at the ends of the range (``00...``, ``ff...``) stay, old orphans beside them go, and a
    non-hex folder is looked up name by name."""
    from sqlalchemy import update

    a, b = env.part("FAIL", 1), env.part("FAIL", 2)
    for iid, sha in ((a, "f" * 64), (b, "0" * 64)):
        old_sha, fmt = rows(env)[iid][1:]
        evidence_path(env.root, old_sha, fmt).rename(_mkdirs(evidence_path(env.root, sha, fmt)))
        with env.store.transaction(write=True) as conn:
            conn.execute(update(Evidence).where(Evidence.inspection_id == iid).values(sha256=sha))
    orphans = [evidence_path(env.root, s, "png") for s in ("f" * 63 + "e", "0" * 63 + "1", "ab" * 32)]
    odd = env.root / "zz" / "zz" / ("e" * 64 + ".png")
    for p in (*orphans, odd):
        _mkdirs(p).write_bytes(b"x" * 10)
    age_files(env, 7200)
    assert ret.sweep_orphans(env.store, env.root, grace_s=3600, dry_run=True) == (4, 40)
    assert ret.sweep_orphans(env.store, env.root, grace_s=3600) == (4, 40)
    assert not any(p.exists() for p in (*orphans, odd))
    consistent(env)


def _mkdirs(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    return p
