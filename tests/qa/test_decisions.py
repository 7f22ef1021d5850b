"""From reviews to decisions (issue 15): threshold proposals, compare, near misses, SPC on
measurements, the reviewed-crops export. Store tests run on SQLite and PostgreSQL; figures are
derived here from the known history (tests/qa/conftest.py) independently of the code."""

from __future__ import annotations

import hashlib
import json
import math
import statistics

import cv2
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from inspector_core.cli import main
from inspector_core.qa import accounts, compare, measurements, near_miss, proposals, review
from tests.qa.conftest import RULES

# Montgomery, Introduction to Statistical Quality Control, Table 6.3: piston-ring inside diameters
# (mm), 25 samples of 5. Published: x-double-bar 74.001, R-bar 0.023, X-bar limits 73.988 / 74.014,
# R chart UCL 0.049, LCL 0.
PISTON = """74.030 74.002 74.019 73.992 74.008|73.995 73.992 74.001 74.011 74.004|73.988 74.024 74.021 74.005 74.002
74.002 73.996 73.993 74.015 74.009|73.992 74.007 74.015 73.989 74.014|74.009 73.994 73.997 73.985 73.993
73.995 74.006 73.994 74.000 74.005|73.985 74.003 73.993 74.015 73.988|74.008 73.995 74.009 74.005 74.004
73.998 74.000 73.990 74.007 73.995|73.994 73.998 73.994 73.995 73.990|74.004 74.000 74.007 74.000 73.996
73.983 74.002 73.998 73.997 74.012|74.006 73.967 73.994 74.000 73.984|74.012 74.014 73.998 73.999 74.007
74.000 73.984 74.005 73.998 73.996|73.994 74.012 73.986 74.005 74.007|74.006 74.010 74.018 74.003 74.000
73.984 74.002 74.003 74.005 73.997|74.000 74.010 74.013 74.020 74.003|73.982 74.001 74.015 74.005 73.996
74.004 73.999 73.990 74.006 74.009|74.010 73.989 73.990 74.009 74.014|74.015 74.008 73.993 74.000 74.010
73.982 73.984 73.995 74.017 74.013"""
PISTON_VALUES = [float(x) for x in PISTON.replace("|", " ").split()]


def test_xbar_r_limits_reproduce_montgomerys_piston_ring_example():
    assert len(PISTON_VALUES) == 125
    c = measurements.chart(PISTON_VALUES, n=5, lsl=73.95, usl=74.05)
    lim = c.limits
    assert round(lim.centre, 3) == 74.001 and round(lim.r_centre, 3) == 0.023
    # Montgomery rounds x-double-bar and R-bar first (74.001 +- 0.577 * 0.023): within 1e-3.
    assert lim.ucl == pytest.approx(74.014, abs=1e-3) and lim.lcl == pytest.approx(73.988, abs=1e-3)
    assert lim.ucl == pytest.approx(lim.centre + 0.577 * lim.r_centre, rel=1e-12)
    assert round(lim.r_ucl, 3) == 0.049 and lim.r_lcl == 0.0
    # Montgomery's capability: sigma-hat = R-bar / d2 = 0.0099, Cp = 0.10 / (6 * 0.0099) = 1.68.
    assert lim.within_sigma == pytest.approx(0.02324 / 2.326, rel=1e-3)
    # (He rounds sigma-hat to 0.0099 first; unrounded, 0.10 / (6 * 0.02324 / 2.326) = 1.668.)
    assert c.capability is not None and c.capability.cp == pytest.approx(1.68, abs=0.015)
    assert c.capability.cp == pytest.approx(0.10 / (6 * lim.r_centre / 2.326), rel=1e-12)
    assert c.capability.cpk == pytest.approx((74.05 - lim.centre) / (3 * lim.r_centre / 2.326), rel=1e-12)
    assert c.capability.ppk == pytest.approx(
        (74.05 - statistics.fmean(PISTON_VALUES)) / (3 * statistics.stdev(PISTON_VALUES)), rel=1e-9
    )
    assert not c.alarms  # the example's phase I is in control


def test_frozen_limits_flag_a_shift_after_the_baseline():
    rng = np.random.default_rng(3)
    base = list(10 + rng.normal(0, 0.1, 30))
    shifted = list(10.5 + rng.normal(0, 0.1, 10))
    c = measurements.chart(base + shifted, n=1, baseline=30)
    assert c.limits.baseline_points == 30
    # I-MR constants: limits = x-bar +- 2.66 MR-bar, MR UCL = 3.267 MR-bar.
    mr = statistics.fmean(abs(b - a) for a, b in zip(base, base[1:], strict=False))
    assert c.limits.ucl == pytest.approx(statistics.fmean(base) + 2.66 * mr, rel=1e-3)
    assert c.limits.r_ucl == pytest.approx(3.267 * mr, rel=1e-9)
    phase2 = [p for p in c.points if p.phase == "II"]
    assert len(phase2) == 10 and all(p.rules for p in phase2)
    assert sum("WE1" in p.rules for p in phase2) >= 7
    # Limits from all 40 points (not frozen) are wider and flag fewer of the shifted points beyond 3 sigma.
    loose = measurements.chart(base + shifted, n=1)
    assert loose.limits.ucl > c.limits.ucl
    assert sum("WE1" in p.rules for p in loose.points[30:]) < sum("WE1" in p.rules for p in phase2)


def test_western_electric_and_nelson_rules():
    lim = measurements.limits([0.0, 1.0] * 10, 1)  # centre 0.5, MR-bar 1, sigma 1 / 1.128
    s = lim.sigma
    seq = [lim.centre + 2.5 * s, lim.centre, lim.centre + 2.5 * s]  # 2 of 3 beyond 2 sigma
    assert measurements.rules_hit(seq, lim)[2] == ("WE2",)
    run = [lim.centre + 0.1 * s] * 8
    assert "WE4" in measurements.rules_hit(run, lim)[7]
    trend = [lim.centre + 0.1 * s * k for k in range(6)]
    assert "N3" in measurements.rules_hit(trend, lim)[5]


@pytest.fixture
def reviewed(known, tmp_path, monkeypatch):
    """The known history with line1's failed scratches reviewed: confirmed at score >= 0.8,
    false alarms below; a station file for line1 with a comment."""
    from argon2 import PasswordHasher, profiles

    cheap = PasswordHasher.from_parameters(profiles.CHEAPEST)
    monkeypatch.setattr(accounts, "_hasher", cheap)
    url, parts = known
    store = review.open_writer(url)
    ann = accounts.add_user(store, "ann", "reviewer", "ann-password-1")
    with store.engine.connect() as c:
        from sqlalchemy import text

        rows = c.execute(
            text(
                "SELECT d.id, d.inspection_id, d.score FROM defects d JOIN inspections i ON i.id = d.inspection_id "
                "JOIN stations s ON s.id = i.station_id WHERE s.name = 'line1' AND d.kind = 'scratch' "
                "AND d.failed = :t ORDER BY d.id"
            ),
            {"t": True},
        ).all()
    assert len(rows) >= 6
    for did, iid, score in rows:
        label = "confirmed" if score >= 0.8 else "false_alarm"
        review.add_review(store, inspection_id=iid, defect_id=did, label=label, user=ann, via="cli")
    station = tmp_path / "line1.yaml"
    cfg = {"name": "line1", "source": {"type": "synthetic"}, "steps": [{"detector": "fake"}], **RULES}
    cfg["store"] = {"url": url}
    station.write_text("# line 1, north hall\n" + yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    yield store, rows, station, url
    store.close()


def test_threshold_proposal_drops_the_false_alarms_keeps_recall_and_writes_a_new_file(reviewed, tmp_path):
    store, rows, station, url = reviewed
    confirmed = sorted(s for _, _, s in rows if s >= 0.8)
    false_alarms = [s for _, _, s in rows if s < 0.8]
    assert confirmed and false_alarms
    ps = proposals.propose(store.engine, station.read_text(), criterion="keep-recall")
    p = next(p for p in ps if p.kind == "scratch" and p.field == "min_score")
    # Any value in (highest false alarm, lowest confirmed] judges them alike: the shortest is written.
    assert p.current == 0.5 and max(false_alarms) < p.proposed <= confirmed[0]
    assert p.proposed == proposals.shortest(max(false_alarms), confirmed[0]) and len(repr(p.proposed)) <= 5
    assert (p.now.tp, p.now.fp, p.now.fn) == (len(confirmed), len(false_alarms), 0)
    assert (p.then.tp, p.then.fp, p.then.fn) == (len(confirmed), 0, 0)
    # The what-if preview: exactly the false-alarm parts would have passed.
    assert p.preview is not None
    assert {c.inspection_id for c in p.preview.to_pass} == {i for _, i, s in rows if s < 0.8}
    assert not p.preview.to_fail
    assert all(c.station == "line1" for c in p.preview.to_pass)  # the station's parts only
    f1 = next(x for x in proposals.propose(store.engine, station.read_text(), criterion="f1", preview=False)
              if x.kind == "scratch" and x.field == "min_score")  # fmt: skip
    assert f1.then.f1 == 1.0
    # The size rule (min_size_mm 1.0) has nothing to gain: every reviewed finding is 2.5 mm.
    size = next(x for x in ps if x.kind == "scratch" and x.field == "min_size_mm")
    assert size.then.fp == size.now.fp

    new = tmp_path / "line1-proposed.yaml"
    old_text = station.read_text()
    r = CliRunner().invoke(main, ["propose", "thresholds", "--station-file", str(station), "--write", str(new)])
    assert r.exit_code == 0, r.output
    changed = [ln for ln in r.stdout.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
    assert changed == ["-    min_score: 0.5", f"+    min_score: {p.proposed}"]  # only the value, in place
    assert station.read_text() == old_text  # the old file is never touched
    text = new.read_text()
    assert text.startswith("# line 1, north hall")  # comments kept
    data = yaml.safe_load(text)
    assert data["rules"]["scratch"] == {"min_score": p.proposed, "min_size_mm": 1.0}
    assert data["rules"]["dent"] == RULES["rules"]["dent"]
    assert hashlib.sha256(text.encode()).hexdigest() != hashlib.sha256(old_text.encode()).hexdigest()
    again = CliRunner().invoke(main, ["propose", "thresholds", "--station-file", str(station), "--write", str(new)])
    assert again.exit_code != 0 and "exists" in again.output


@pytest.fixture
def reader(known):
    from inspector_core.qa.reader import open_reader

    store = open_reader(known[0])
    yield store.engine, known[1]
    store.close()


def test_near_misses_by_margin_and_compare_two_runs(reader):
    engine, parts = reader
    got = near_miss.near_misses(engine, stations=("line1",), within=0.2, limit=10_000)
    # Expected from the known parts: line1 findings that did not fail, margin <= 0.2.
    exp = []
    for p in parts:
        if p.station != "line1" or p.verdict not in ("PASS", "FAIL"):
            continue
        for kind, score, mm, failed in p.findings:
            if failed:
                continue
            rule = RULES["rules"].get(kind, RULES["default_rule"])
            if score < rule["min_score"]:
                exp.append(round(rule["min_score"] - score, 9))
            elif mm is not None and mm < rule.get("min_size_mm", 0):
                exp.append(round((rule["min_size_mm"] - mm) / rule["min_size_mm"], 9))
    exp = sorted(m for m in exp if m <= 0.2)
    assert exp and [round(n.margin, 9) for n in got] == exp
    assert all(n.field == "min_score" and n.kind == "scratch" and n.limit == 0.5 for n in got)

    # Compare the two runs (one per station): yield, reject rate and the tests of their difference.
    from sqlalchemy import text

    with engine.connect() as c:
        ids = dict(c.execute(text("SELECT s.name, r.id FROM runs r JOIN stations s ON s.id = r.station_id")).all())
    cmpn = compare.compare(engine, runs=(ids["line1"], ids["line2"]))
    for side, st in ((cmpn.before, "line1"), (cmpn.after, "line2")):
        judged = [p for p in parts if p.station == st and p.verdict != "NOT_INSPECTED"]
        assert side.judged == len(judged)
        assert side.passed == sum(p.verdict == "PASS" for p in judged)
        assert side.rejects == sum(p.verdict in ("FAIL", "ERROR") for p in judged)
    t = cmpn.tests[0]
    p = (t.k1 + t.k2) / (t.n1 + t.n2)
    z = (t.k1 / t.n1 - t.k2 / t.n2) / math.sqrt(p * (1 - p) * (1 / t.n1 + 1 / t.n2))
    assert t.z == pytest.approx(z) and t.p_z == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))
    scipy = pytest.importorskip("scipy.stats")
    assert t.p_fisher == pytest.approx(scipy.fisher_exact([[t.k1, t.n1 - t.k1], [t.k2, t.n2 - t.k2]]).pvalue)
    with pytest.raises(Exception, match="no run"):
        compare.compare(engine, runs=(ids["line1"], 999_999))
    by_hash = compare.compare(engine, config_hashes=("hash-line1", "hash-line2"))
    assert by_hash.before.judged == cmpn.before.judged


def test_export_reviewed_crops_false_alarm_rate_and_measurements(reviewed, tmp_path):
    store, rows, station, url = reviewed
    root = tmp_path / "ds"
    r = CliRunner().invoke(main, ["export", "reviewed", "--db", url, "--to", str(root), "--station", "line1"])
    assert r.exit_code == 0, r.output
    n_conf = sum(s >= 0.8 for _, _, s in rows)
    n_fa = len(rows) - n_conf
    assert len(list((root / "good").glob("*.jpg"))) + len(list((root / "good_test").glob("*.jpg"))) == n_fa
    assert len(list((root / "defect").glob("*.jpg"))) == n_conf
    masks = sorted((root / "mask/defect").glob("*.png"))
    assert len(masks) == n_conf
    # defect/ holds only the images (anomalib's Folder takes every image under abnormal_dir);
    # val_bad/ the same with NAME_mask.png beside (inspector train anomaly --val-bad).
    assert sorted(p.stem for p in (root / "defect").iterdir()) == [m.stem for m in masks]
    assert sorted(p.name for p in (root / "val_bad").glob("*_mask.png")) == [f"{m.stem}_mask.png" for m in masks]
    assert len(list((root / "val_bad").glob("*.jpg"))) == n_conf
    assert "--val-bad" in r.output and "val_bad" in r.output
    m = cv2.imread(str(masks[0]), cv2.IMREAD_GRAYSCALE)
    # Crop at frame (84, 34) scale 0.5 around the box (100, 50, 40, 20): mask (8, 8, 20, 10) of a 48x32 crop.
    ys, xs = np.nonzero(m)
    assert (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) == (8, 8, 20, 10)
    assert int(m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].min()) == 255  # filled
    coco = json.loads((root / "coco.json").read_text())
    assert len(coco["images"]) == len(rows) and len(coco["annotations"]) == n_conf
    assert coco["annotations"][0]["bbox"] == [8, 8, 20, 10]
    labels = [p.read_text() for p in (root / "yolo/labels").glob("*.txt")]
    assert sum(1 for t in labels if t.strip()) == n_conf
    assert any(t.strip() == "0 0.375000 0.406250 0.416667 0.312500" for t in labels)
    # The reviewed false-alarm rate of line1's run: n_fa of the reviewed FAIL parts.
    from sqlalchemy import text

    with store.engine.connect() as c:
        rid = c.execute(
            text("SELECT r.id FROM runs r JOIN stations s ON s.id = r.station_id WHERE s.name='line1'")
        ).scalar_one()
    s = compare.side(store.engine, "x", [rid])
    assert (s.false_alarms, s.reviewed_fails) == (n_fa, len(rows))

    # SPC on the stored measurements, with the station file's spec limits.
    series = measurements.read_series(store.engine, "line1", "scratch.length_mm")
    assert series and [t for t, _, _ in series] == sorted(t for t, _, _ in series)
    assert "scratch.length_mm" in measurements.series_names(store.engine, "line1")
    text = station.read_text() + "measurements:\n  scratch.length_mm: {lsl: 0, usl: 5, subgroup: 1, baseline: 10}\n"
    station.write_text(text)
    r = CliRunner().invoke(main, ["measurements", "--station-file", str(station), "--json"])
    assert r.exit_code in (0, 1), r.output
    charts = json.loads(r.stdout)
    assert charts[0]["series"] == "scratch.length_mm" and charts[0]["limits"]["baseline_points"] == 10
    assert charts[0]["capability"]["usl"] == 5
    bad = station.read_text().replace("usl: 5", "usl: -1")
    station.write_text(bad)
    r = CliRunner().invoke(main, ["measurements", "--station-file", str(station)])
    assert r.exit_code != 0 and "usl" in r.output


def test_rewrite_gives_a_default_rule_kind_its_own_rule_and_keeps_the_rest():
    text = (
        "name: s1  # the station\nsource: {type: synthetic}\nsteps:\n- detector: fake\n"
        "default_rule:\n  min_score: 0.7\n  min_size_px: 5\n"
    )
    t = proposals.Tally(0.9, 1, 0, 0, 1)
    p = proposals.Proposal("s1", "dent", "min_score", "rules.dent", 0.7, 0.9, "keep-recall", t, t, 12, 0)
    new = proposals.rewrite(text, [p])
    data = yaml.safe_load(new)
    assert data["rules"] == {"dent": {"min_score": 0.9, "min_size_px": 5.0}}
    assert data["default_rule"] == {"min_score": 0.7, "min_size_px": 5}
    assert "# the station" in new
    d = proposals.diff(text, new, "a.yaml", "b.yaml")
    assert d.startswith("--- a.yaml\n+++ b.yaml\n") and "+rules:" in d


def test_shortest_threshold_and_an_in_place_edit_of_a_flow_mapping():
    assert proposals.shortest(0.775, 0.824) == 0.8
    assert proposals.shortest(0.9221708, 0.9320943) == 0.93
    assert proposals.shortest(0.5, 0.5001) == 0.5001
    text = (
        "name: s1\nsteps:\n  - detector: fake   # indented sequence\n"
        "rules:\n  scratch: {min_score: 0.5, min_size_mm: 1}  # keep\n"
    )
    t = proposals.Tally(0.93, 1, 0, 0, 1)
    p = proposals.Proposal("s1", "scratch", "min_score", "rules.scratch", 0.5, 0.93, "keep-recall", t, t, 12, 0)
    new = proposals.rewrite(text, [p])
    assert new == text.replace("{min_score: 0.5,", "{min_score: 0.93,")
