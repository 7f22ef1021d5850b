"""A sink's report carries the part's recipe (issue 14 recipes: ``inspections.recipe``) and each
failing finding its view (issue 14 views); the plugin kit's ``StoredInspection`` carries the recipe,
the views (``inspection_views``) and each step's and finding's view. Run like a user: a two-view
station with recipes and a file sink, then what the sink wrote and what the kit reads back."""

from __future__ import annotations

import json

from inspector_core.testing import StoredView, run_station
from tests.core.test_views import BRIGHT, PLUGIN, _station


def _recipes(cfg: dict) -> dict:
    cfg["recipes"] = {"plain": {"products": ["1"]}, "strict": {"rules": {"glare": {"min_score": 0.1}}}}
    cfg["recipe"] = "plain"
    cfg["sinks"] = [{"type": "file", "config": {"path": "verdicts.jsonl"}}]
    return cfg


def test_sink_report_has_the_recipe_and_each_finding_its_view(tmp_path):
    shots = [
        {"part": "a", "view": "top"},
        {"part": "a", "view": "side"},
        {"part": "b", "view": "top"},
        {"part": "b", "view": "side", "image": BRIGHT},
    ]
    res = run_station(_recipes(_station(shots)), tmp_path, plugins=[PLUGIN], installed=True)
    lines = [json.loads(x) for x in (tmp_path / "verdicts.jsonl").read_text().splitlines()]
    by_part = {r["part_id"]: r for r in lines}
    assert set(by_part) == {"a", "b"}
    inspections = {i.part_id: i for i in res.inspections()}
    for part, report in by_part.items():
        ins = inspections[part]
        assert report["recipe"] == "plain" == ins.recipe
        assert report["recipe_hash"] == ins.recipe_hash and len(ins.recipe_hash or "") == 64
    assert by_part["a"]["verdict"] == "PASS" and by_part["a"]["defects"] == []
    [found] = by_part["b"]["defects"]
    assert by_part["b"]["verdict"] == "FAIL" and found["view"] == "side" and found["step"] == "side_glare"
    assert found["box"] == [0, 0, 64, 48]

    b = inspections["b"]
    assert [(v.view, v.status, v.width, v.evidence_x) for v in b.views] == [
        ("top", "ok", 64, 0),
        ("side", "ok", 64, 64),
    ]
    assert all(isinstance(v, StoredView) and v.captured_at is not None for v in b.views)
    assert [(s.step, s.view) for s in b.step_results] == [("top_glare", "top"), ("side_glare", "side")]
    assert [(d.view, d.step) for d in b.failed_defects()] == [("side", "side_glare")]


def test_single_view_reports_have_no_view_and_no_recipe(tmp_path):
    import numpy as np

    cfg = {
        "steps": [{"detector": "bright", "name": "glare"}],
        "rules": {"glare": {"min_score": 0.5}},
        "sinks": [{"type": "file", "config": {"path": "verdicts.jsonl"}}],
    }
    images = {"p": np.full((48, 64), 230, np.uint8)}
    res = run_station(cfg, tmp_path, images=images, plugins=[PLUGIN], installed=True)
    [report] = [json.loads(x) for x in (tmp_path / "verdicts.jsonl").read_text().splitlines()]
    assert report["verdict"] == "FAIL" and report["recipe"] is None and report["recipe_hash"] is None
    assert "view" not in report["defects"][0]
    [ins] = res.inspections()
    assert ins.recipe is None and ins.views == [] and ins.defects[0].view is None and ins.step_results[0].view is None
