"""QA sees latency through the store (capture -> verdict -> committed -> delivered per sink) and
the raw detector scores beside the normalised ones (issues 11 and 12)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score
from sqlalchemy import select

from inspector_core.cli import main
from inspector_core.qa import query as q
from inspector_core.store import DefectRecord, InspectionRecord, RunRecord, StepRecord, Store, schema, utcnow
from inspector_core.store.outbox import Outbox


def nearest_rank(values: list[float], p: int) -> float:
    s = sorted(values)
    return s[(len(s) * p + 99) // 100 - 1]


def _parts(run: RunRecord, n: int) -> tuple[list[InspectionRecord], list[int]]:
    """n parts, every third defective. The detector's normalised score saturates: 0 for every good
    part and for the faint defects alike (below its report floor), 1 for the clear ones; only its
    raw score ranks them."""
    t0 = utcnow() - timedelta(minutes=30)
    records, labels = [], []
    for i in range(n):
        bad = i % 3 == 0
        raw = (20.0 + i % 7) if bad else (5.0 + (i % 5))
        score = 1.0 if bad and i % 2 == 0 else 0.0
        defects = []
        if score:
            defects.append(
                DefectRecord(
                    "front",
                    "anomaly",
                    "anomaly",
                    score,
                    True,
                    (i, 2 * i, 16, 8),
                    16.0,
                    None,
                    {"area_px": float(i)},
                    f"m{i}",
                    None,
                    raw,
                )
            )
        at = t0 + timedelta(seconds=i)
        records.append(
            InspectionRecord(
                uuid.uuid4().hex,
                None,
                None,
                i,
                f"p{i:03d}",
                at,
                at + timedelta(milliseconds=5 + i % 11),
                "FAIL" if defects else "PASS",
                5.0 + i % 11,
                steps=[StepRecord(0, "front", "anomaly", "ok", score, 3.0, len(defects), raw_score=raw)],
                defects=defects,
                station=run.station,
                run_uid=run.uid,
            )
        )
        labels.append(int(bad))
    return records, labels


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'qa.db'}")
    yield s
    s.close()


def test_stats_show_the_committed_latency_and_the_delivered_latency_per_sink(store, tmp_path):
    run = RunRecord("line1", "h", "0", {}, "", "x" * 64, {}, sink_keys=("plc", "mqtt"))
    store.ensure_run(run)
    records, _ = _parts(run, 60)
    for i in range(0, 60, 20):
        store.write(records[i : i + 20])
    outbox = Outbox(store, "line1")
    ids = store.engine.connect().execute(select(schema.Inspection.id).order_by(schema.Inspection.id)).scalars().all()
    outbox.advance("plc", ids[9])  # the plc took the first 10, then the next 40
    outbox.advance("plc", ids[49])
    outbox.advance("plc", ids[49])  # a save that does not move the cursor adds nothing
    outbox.advance("mqtt", ids[29])
    with store.engine.connect() as c:
        rows = c.execute(
            select(schema.Inspection.id, schema.Inspection.latency_ms, schema.Inspection.decided_at)
            .add_columns(schema.Inspection.commit_latency_ms)
            .order_by(schema.Inspection.id)
        ).all()
        deliveries = c.execute(select(schema.SinkDelivery).order_by(schema.SinkDelivery.through_id)).all()
    assert [(d.sink, d.after_id, d.through_id) for d in deliveries] == [
        ("plc", 0, ids[9]),
        ("mqtt", 0, ids[29]),
        ("plc", ids[9], ids[49]),
    ]
    commit = [r.commit_latency_ms for r in rows]
    assert all(c > r.latency_ms for c, r in zip(commit, rows, strict=True))

    def delivered(sink: str) -> list[float]:
        out = []
        for r in rows:
            d = next((d for d in deliveries if d.sink == sink and d.after_id < r.id <= d.through_id), None)
            if d is not None:
                out.append(r.latency_ms + (d.delivered_at - r.decided_at).total_seconds() * 1000)
        return out

    for st in (
        q.stats(store.engine, q.make_filter(), buckets=q.Buckets("day")),
        q.stats_from_inspections(store.engine, q.make_filter(), buckets=q.Buckets("day")),
    ):
        [total] = st.totals
        assert (total.commit_latency_p50_ms, total.commit_latency_p99_ms) == (
            nearest_rank(commit, 50),
            nearest_rank(commit, 99),
        )
        assert total.latency_p50_ms < total.commit_latency_p50_ms
        by_sink = {d.sink: d for d in st.delivery}
        assert set(by_sink) == {"plc", "mqtt"}
        for sink, n in (("plc", 50), ("mqtt", 30)):
            lat = delivered(sink)
            d = by_sink[sink]
            assert (d.delivered, d.undelivered) == (n, 60 - n)
            assert (d.p50_ms, d.p99_ms) == (nearest_rank(lat, 50), nearest_rank(lat, 99))
            assert d.p50_ms >= total.commit_latency_p50_ms - 1  # delivered after committed
        assert st.as_dict()["delivery"][0]["sink"] in ("plc", "mqtt")
    # the command shows them
    out = CliRunner().invoke(main, ["stats", "--db", store.url], catch_exceptions=False).output
    assert "commit p50" in out and "capture to delivered, per sink" in out and "plc" in out


def test_history_json_carries_step_and_finding_scores_raw_and_normalised_and_boxes(store):
    run = RunRecord("line1", "h", "0", {}, "", "x" * 64, {})
    store.ensure_run(run)
    records, labels = _parts(run, 45)
    store.write(records)
    res = CliRunner().invoke(main, ["history", "--db", store.url, "--format", "json", "--all"], catch_exceptions=False)
    rows = json.loads(res.output)["rows"]
    assert len(rows) == 45
    by_part = {r["part_id"]: r for r in rows}
    y, raw, norm = [], [], []
    for rec, label in zip(records, labels, strict=True):
        row = by_part[rec.part_id]
        [step] = row["steps"]
        assert (step["step"], step["detector"], step["status"]) == ("front", "anomaly", "ok")
        assert step["raw_score"] == rec.steps[0].raw_score and step["score"] == rec.steps[0].score
        assert [(f["kind"], f["score"], f["raw_score"], f["failed"], f["box"]) for f in row["findings"]] == [
            (d.kind, d.score, d.raw_score, d.failed, list(d.box)) for d in rec.defects
        ]
        assert [(f["measurements"], f["message"]) for f in row["findings"]] == [
            (d.measurements, d.message) for d in rec.defects
        ]
        assert row["uid"] == rec.uid
        assert row["commit_latency_ms"] > row["latency_ms"]
        y.append(label)
        raw.append(step["raw_score"])
        norm.append(step["score"])
    # A QA engineer's AUROC, from the JSON alone: the raw scores rank every part; the normalised
    # ones, 0 for the faint defects, cannot.
    assert roc_auc_score(y, raw) == 1.0
    assert roc_auc_score(y, norm) < 0.8
    # The table and CSV formats are unchanged, and one inspection's detail has the raw scores.
    detail = q.inspection(store.engine, by_part["p000"]["id"])
    assert detail is not None and detail.steps[0].raw_score == 20.0 and detail.defects[0].raw_score == 20.0
    assert detail.commit_latency_ms == by_part["p000"]["commit_latency_ms"]
    page = q.history(store.engine, q.make_filter(), limit=5)
    assert page.rows[0].steps is None and "steps" not in page.rows[0].as_dict()
