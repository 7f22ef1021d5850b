"""A station run end to end, then the store read back, as a QA engineer would."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from inspector_core.testing import run_station

SYNTH = {"type": "synthetic", "config": {"count": 24, "seed": 7, "defect_rate": 0.5}}


def station(source, **extra):
    cfg = {
        "source": source,
        "steps": [{"detector": "bright_spot", "config": {"threshold": 200, "min_area_px": 30}}],
        "store": {"crops": {"save": "failed", "format": "jpeg"}},
    }
    cfg.update(extra)
    return cfg


def check_run(result, n_frames):
    rows = result.inspections()
    # Every frame leaves as exactly one inspection, in capture order.
    assert [r.seq for r in rows] == list(range(n_frames))
    assert len({r.uid for r in rows}) == n_frames
    for r in rows:
        assert r.verdict in ("PASS", "FAIL")
        # Every step's score is stored for every part, PASS ones too.
        assert len(r.steps) == 1 and r.steps[0].status == "ok" and r.steps[0].score is not None
        assert r.steps[0].latency_ms is not None and r.steps[0].latency_ms >= 0
        failed = [d for d in r.defects if d.failed]
        assert (r.verdict == "FAIL") == bool(failed)
        assert r.n_defects == len(failed)
        for d in failed:
            # Each failing defect has a crop that decodes to the size recorded.
            img = cv2.imdecode(np.frombuffer(d.crop.data, np.uint8), cv2.IMREAD_UNCHANGED)
            assert img is not None and img.shape[1] == d.crop.width and img.shape[0] == d.crop.height
            assert d.crop.x <= d.x and d.crop.y <= d.y
    return rows


def test_synthetic_parts_end_to_end(tmp_path):
    sink = tmp_path / "reported.jsonl"
    cfg = station(SYNTH, sinks=[{"type": "file", "config": {"path": str(sink)}}])
    result = run_station(cfg, tmp_path)
    rows = check_run(result, 24)
    # The label on every synthetic plate is bright: every part fails bright_spot at 200.
    assert sum(r.verdict == "FAIL" for r in rows) == 24
    reported = [json.loads(line) for line in sink.read_text().splitlines()]
    assert [r["inspection_uid"] for r in reported] == [r.uid for r in rows]
    assert all(rep["verdict"] == row.verdict for rep, row in zip(reported, rows, strict=True))


def test_roi_boxes_are_in_frame_pixels(tmp_path):
    # The label sits at (422, 334)-(602, 434) of a 1024x768 synthetic frame.
    cfg = station(SYNTH)
    cfg["steps"][0]["roi"] = {"x": 400, "y": 300, "width": 300, "height": 200}
    rows = run_station(cfg, tmp_path, limit=3).inspections()
    assert len(rows) == 3
    for r in rows:
        d = max(r.defects, key=lambda d: d.w * d.h)
        assert 400 <= d.x <= 430 and 320 <= d.y <= 345 and 170 <= d.w <= 190


@pytest.mark.data
def test_real_photographs_every_file_recorded(tmp_path, data_dir):
    folder = data_dir / "mvtec_ad" / "transistor" / "test"
    files = sorted(p for p in folder.rglob("*.png"))
    assert len(files) >= 20
    cfg = station({"type": "folder", "config": {"path": str(folder), "pattern": "*.png", "recursive": True}})
    cfg["store"]["crops"]["save"] = "all"
    result = run_station(cfg, tmp_path)
    rows = check_run(result, len(files))
    assert sorted(r.part_id for r in rows) == sorted(p.relative_to(folder).with_suffix("").as_posix() for p in files)
    assert {r.source_meta["path"] for r in rows} == {str(p) for p in files}
    # Scores are stored for PASS parts too, and some parts do pass on real images.
    assert any(r.verdict == "PASS" for r in rows)
