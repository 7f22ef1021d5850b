"""Multi-view parts (issue 14, docs/views.md): a part's views joined by part id under a deadline,
each step on its own view's frame, one inspection per part whose verdict combines the views; a
missing view is ERROR naming it, and every frame that joins no part (late, duplicate, of no view)
is a recorded event. Run like a user: stations on a scripted camera, then what the store holds,
what ``inspector history`` prints and what the dashboard's inspection page shows."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from pydantic import Field
from sqlalchemy import create_engine, text

from inspector_core import Detector, Finding, Frame, FrameSource, PluginConfig, View, hookimpl
from inspector_core.runtime.config import ConfigError, load_station
from inspector_core.testing import host_registry, run_station

BRIGHT, DARK, BROKEN = "bright", "dark", "broken"


class Shot(PluginConfig):
    part: str
    view: str | None = Field(None, description="meta['view'] of the frame; None: no tag")
    after_ms: float = Field(0, ge=0, description="pause before this frame")
    image: str = DARK


class ScriptedConfig(PluginConfig):
    shots: list[Shot]


class Scripted(FrameSource):
    """One camera at several positions: each frame tagged with its view (``meta["view"]``)."""

    name = "scripted"
    Config = ScriptedConfig

    def __init__(self, config: ScriptedConfig, context: Any) -> None:
        super().__init__(config, context)
        self._stop = threading.Event()

    def frames(self) -> Iterator[Frame]:
        for s in self.config.shots:
            if s.after_ms and self._stop.wait(s.after_ms / 1000):
                return
            meta = {} if s.view is None else {"view": s.view}
            if s.image == "raise":
                raise RuntimeError("the camera's cable is out")
            if s.image == BROKEN:
                yield Frame(s.part, None, datetime.now(UTC), meta, error="the camera timed out")
                continue
            img = np.full((48, 64), 230 if s.image == BRIGHT else 20, np.uint8)
            yield Frame(s.part, img, datetime.now(UTC), meta)

    def close(self) -> None:
        self._stop.set()


class Bright(Detector):
    """A finding over the whole view when it is bright (mean above 128): FAIL parts are bright."""

    name = "bright"
    kinds = ("glare",)

    def inspect(self, view: View) -> list[Finding]:
        h, w = view.image.shape[:2]
        if float(view.image.mean()) <= 128:
            return []
        return [Finding("glare", 0.9, (0, 0, w, h), message="bright view")]


class _Plugin:
    @hookimpl
    def inspector_register_sources(self, register: Any) -> None:
        register(Scripted)

    @hookimpl
    def inspector_register_detectors(self, register: Any) -> None:
        register(Bright)


PLUGIN = ("views-test", _Plugin())


def _station(shots: list[dict[str, Any]], deadline_ms: float = 300, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "source": {"type": "scripted", "config": {"shots": shots}},
        "views": {"top": {}, "side": {}},
        "join": {"deadline_ms": deadline_ms},
        "steps": [
            {"detector": "bright", "name": "top_glare", "view": "top"},
            {"detector": "bright", "name": "side_glare", "view": "side"},
        ],
        "rules": {"glare": {"min_score": 0.5}},
        "store": {"crops": {"save": "failed", "format": "png"}},
    }
    cfg.update(extra)
    return cfg


def _run(tmp_path: Path, cfg: dict[str, Any], db_url: str | None = None):
    return run_station(cfg, tmp_path, plugins=[PLUGIN], installed=True, db_url=db_url)


def _rows(url: str, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            return list(c.execute(text(sql), params))
    finally:
        engine.dispose()


def _parts(url: str) -> dict[str, Any]:
    return {
        r.part_id: r
        for r in _rows(
            url, "SELECT id, part_id, seq, verdict, error, error_step, n_defects FROM inspections ORDER BY seq"
        )
    }


# ---------------------------------------------------------------------------- the station file


def _problems(tmp_path: Path, cfg: dict[str, Any]) -> str:
    cfg = {"name": "v", **cfg}
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(ConfigError) as exc:
        load_station(path, host_registry([PLUGIN], installed=True))
    return str(exc.value)


def test_views_are_checked_before_anything_starts(tmp_path):
    shots = [{"part": "a", "view": "top"}]
    base = _station(shots)
    wrong = {**base, "steps": [{**base["steps"][0], "view": "tpo"}, base["steps"][1]]}
    assert "steps[0].view: 'tpo' is not a view of this station (views: top, side); did you mean 'top'?" in (
        _problems(tmp_path, wrong)
    )
    unnamed = {**base, "steps": [{"detector": "bright", "name": "x"}, base["steps"][1]]}
    msg = _problems(tmp_path, unnamed)
    assert "steps[0].view: missing: this station has views (top, side)" in msg
    assert "views.top: no step looks at this view" in msg
    no_views = {k: v for k, v in base.items() if k not in ("views", "join")}
    assert "steps[0].view: 'top': the station declares no views" in _problems(tmp_path, no_views)
    same_tag = {**base, "views": {"top": {"tag": "p1"}, "side": {"tag": "p1"}}}
    assert "views.side.tag: 'p1' is also the tag of view 'top'" in _problems(tmp_path, same_tag)
    both = {**base, "views": {"top": {}, "side": {"tag": "s", "source": base["source"]}}}
    assert "views.side.tag: a view with its own source: needs no tag" in _problems(tmp_path, both)
    all_own = {**base, "views": {"top": {"source": base["source"]}, "side": {"source": base["source"]}}}
    assert "every view has a source of its own" in _problems(tmp_path, all_own)
    bad_deadline = {**base, "join": {"deadline_ms": 0}}
    assert "join.deadline_ms: Input should be greater than 0" in _problems(tmp_path, bad_deadline)
    # On a line every view is a trigger of the station's source: a view's own camera is refused.
    lined = {**both, "views": {"top": {}, "side": {"source": base["source"]}}, "line": {"protocol": "modbus"}}
    assert "views.side.source: on a line (line:) every view is a trigger of the station's source" in (
        _problems(tmp_path, lined)
    )


# ---------------------------------------------------------------------------- the join


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_complete_parts_one_inspection_each_with_its_views(tmp_path, backend, request):
    url = None if backend == "sqlite" else request.getfixturevalue("pg_url")
    shots = [
        {"part": "a", "view": "top"},
        {"part": "a", "view": "side"},
        {"part": "b", "view": "side", "image": BRIGHT},  # the side view first: order within a part is free
        {"part": "b", "view": "top"},
        {"part": "c", "view": "top", "image": BRIGHT},
        {"part": "c", "view": "side", "image": BRIGHT},
    ]
    res = _run(tmp_path, _station(shots, sinks=[{"type": "file", "config": {"path": "verdicts.jsonl"}}]), url)
    url = res.db_url
    parts = _parts(url)
    assert {p: r.verdict for p, r in parts.items()} == {"a": "PASS", "b": "FAIL", "c": "FAIL"}
    assert res.tally.counts()["PASS"] == 1
    views = _rows(
        url,
        "SELECT i.part_id, v.view, v.status, v.captured_at, v.width, v.evidence_x FROM inspection_views v "
        "JOIN inspections i ON i.id = v.inspection_id ORDER BY i.seq, v.id",
    )
    assert [(r.part_id, r.view, r.status, r.width, r.evidence_x) for r in views] == [
        (p, v, "ok", 64, x) for p in "abc" for v, x in (("top", 0), ("side", 64))
    ]
    assert all(r.captured_at is not None for r in views)
    steps = _rows(
        url,
        "SELECT i.part_id, s.step, s.view, s.n_findings FROM step_results s JOIN inspections i "
        "ON i.id = s.inspection_id ORDER BY i.seq, s.step_index",
    )
    assert [(r.part_id, r.step, r.view, r.n_findings) for r in steps] == [
        ("a", "top_glare", "top", 0),
        ("a", "side_glare", "side", 0),
        ("b", "top_glare", "top", 0),
        ("b", "side_glare", "side", 1),
        ("c", "top_glare", "top", 1),
        ("c", "side_glare", "side", 1),
    ]
    defects = _rows(
        url,
        "SELECT i.part_id, d.view, d.step, c.id AS crop FROM defects d JOIN inspections i ON i.id = d.inspection_id "
        "LEFT JOIN crops c ON c.defect_id = d.id ORDER BY i.seq, d.id",
    )
    assert [(r.part_id, r.view, r.step) for r in defects] == [
        ("b", "side", "side_glare"),
        ("c", "top", "top_glare"),
        ("c", "side", "side_glare"),
    ]
    assert all(r.crop is not None for r in defects)  # each crop cut from its own view's frame
    # A sink is told each failing finding's view: its box is in that view's frame.
    reports = {r["part_id"]: r for r in map(json.loads, (tmp_path / "verdicts.jsonl").read_text().splitlines())}
    assert [(d["step"], d["view"]) for d in reports["c"]["defects"]] == [("top_glare", "top"), ("side_glare", "side")]
    assert [e.kind for e in res.events() if e.kind.startswith("view_")] == []


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_missing_view_is_error_naming_it_never_pass(tmp_path, backend, request):
    url = None if backend == "sqlite" else request.getfixturevalue("pg_url")
    shots = [
        {"part": "a", "view": "top"},  # its side never comes
        {"part": "b", "view": "top", "after_ms": 500},
        {"part": "b", "view": "side"},
        {"part": "c", "view": "side", "image": BRIGHT, "after_ms": 100},  # its top never comes: at the end
    ]
    res = _run(tmp_path, _station(shots, deadline_ms=200), url)
    parts = _parts(res.db_url)
    a, b, c = parts["a"], parts["b"], parts["c"]
    assert (a.verdict, a.error_step, a.error) == ("ERROR", "view:side", "view 'side' missing: no frame within 200 ms")
    assert b.verdict == "PASS"
    assert (c.verdict, c.error_step) == ("ERROR", "view:top")
    assert c.error.startswith("view 'top' missing: ") and c.n_defects == 1  # the side view's finding is kept
    views = _rows(
        res.db_url,
        "SELECT i.part_id, v.view, v.status, v.error, v.captured_at FROM inspection_views v "
        "JOIN inspections i ON i.id = v.inspection_id WHERE v.status <> 'ok' ORDER BY i.seq",
    )
    assert [(r.part_id, r.view, r.status, r.captured_at) for r in views] == [
        ("a", "side", "missing", None),
        ("c", "top", "missing", None),
    ]
    steps = _rows(
        res.db_url,
        "SELECT s.step, s.status, s.error FROM step_results s JOIN inspections i ON i.id = s.inspection_id "
        "WHERE i.part_id = 'a' ORDER BY s.step_index",
    )
    assert [(r.step, r.status) for r in steps] == [("top_glare", "ok"), ("side_glare", "error")]
    assert steps[1].error == "view 'side' missing: no frame within 200 ms"


def test_late_duplicate_and_unknown_frames_are_recorded_not_dropped(tmp_path):
    shots = [
        {"part": "a", "view": "top"},
        {"part": "a", "view": "side", "after_ms": 450, "image": BRIGHT},  # past the 150 ms deadline: late
        {"part": "b", "view": "top"},
        {"part": "b", "view": "top", "image": BRIGHT},  # a second top frame: the first one is inspected
        {"part": "b", "view": "side"},
        {"part": "b", "view": "side", "after_ms": 20},  # after b was decided: a duplicate
        {"part": "c", "view": "bottom"},  # no such view
        {"part": "c"},  # no tag at all
    ]
    res = _run(tmp_path, _station(shots, deadline_ms=150))
    parts = _parts(res.db_url)
    assert sorted(parts) == ["a", "b"]  # one inspection per part; c never had a view of this station
    assert (parts["a"].verdict, parts["a"].error_step) == ("ERROR", "view:side")
    assert parts["b"].verdict == "PASS"  # the bright duplicate was not inspected
    events = [(e.kind, e.message) for e in res.events() if e.kind.startswith("view_")]
    kinds = [k for k, _ in events]
    assert kinds == ["view_late", "view_duplicate", "view_duplicate", "view_unknown", "view_unknown"]
    late = events[0][1]
    assert late.startswith("part 'a': view 'side' arrived ") and "past join.deadline_ms 150" in late
    assert "part 'b': a second frame of view 'top'" in events[1][1]
    assert "part 'b': another frame of view 'side'" in events[2][1]
    assert "part 'c': a frame of no view of this station (view='bottom'; views: top, side)" in events[3][1]
    assert "no 'view' in the frame's metadata" in events[4][1]
    note = _rows(
        res.db_url,
        "SELECT v.note FROM inspection_views v JOIN inspections i ON i.id = v.inspection_id "
        "WHERE i.part_id = 'b' AND v.view = 'top'",
    )[0].note
    assert note.startswith("a second frame of this view arrived ") and note.endswith("and was not inspected")


def test_verdicts_combine_views_and_a_complete_part_is_not_held_behind_a_waiting_one(tmp_path):
    shots = [
        {"part": "slow", "view": "top", "image": BRIGHT},  # waits for a side view that never comes
        {"part": "quick", "view": "top"},
        {"part": "quick", "view": "side", "image": BRIGHT},
        {"part": "broken", "view": "top", "image": BRIGHT},
        {"part": "broken", "view": "side", "image": BROKEN},
        {"part": "end", "view": "top", "after_ms": 600},
        {"part": "end", "view": "side"},
    ]
    res = _run(tmp_path, _station(shots, deadline_ms=300))
    parts = _parts(res.db_url)
    # Decided in the order they were complete (or their time was up), each once.
    assert [p for p, _ in sorted(parts.items(), key=lambda kv: kv[1].seq)] == ["quick", "broken", "slow", "end"]
    assert parts["quick"].verdict == "FAIL"  # one view failing fails the part
    # A view that cannot be inspected makes the part ERROR even though the other view failed it.
    assert (parts["broken"].verdict, parts["broken"].error_step) == ("ERROR", "view:side")
    assert parts["broken"].error == "view 'side': the camera timed out"
    assert (parts["slow"].verdict, parts["slow"].error_step) == ("ERROR", "view:side")  # missing beats FAIL
    assert parts["end"].verdict == "PASS"
    status = _rows(
        res.db_url,
        "SELECT v.status, v.error FROM inspection_views v JOIN inspections i ON i.id = v.inspection_id "
        "WHERE i.part_id = 'broken' AND v.view = 'side'",
    )[0]
    assert (status.status, status.error) == ("error", "view 'side': the camera timed out")


def test_two_cameras_joined_by_part_id_with_evidence_side_by_side(tmp_path):
    """Two folder sources (two cameras) with the same file names; the back camera lacks one part."""
    front, back = tmp_path / "front", tmp_path / "back"
    front.mkdir()
    back.mkdir()
    for i in range(4):
        cv2.imwrite(str(front / f"p{i}.png"), np.full((40, 50, 3), 20, np.uint8))
        if i != 2:
            img = np.full((30, 60), 230 if i == 1 else 20, np.uint8)
            cv2.imwrite(str(back / f"p{i}.png"), img)
    cfg = _station([], deadline_ms=300)
    cfg["source"] = {"type": "folder", "config": {"path": "front", "interval_ms": 60}}
    cfg["views"] = {"front": {}, "back": {"source": {"type": "folder", "config": {"path": "back", "interval_ms": 60}}}}
    cfg["steps"] = [
        {"detector": "bright", "name": "front_glare", "view": "front"},
        {"detector": "bright", "name": "back_glare", "view": "back"},
    ]
    cfg["store"]["evidence"] = {"fail": "full", "min_free_bytes": 0}
    res = _run(tmp_path, cfg)
    parts = _parts(res.db_url)
    assert {p: (r.verdict, r.error_step) for p, r in parts.items()} == {
        "p0": ("PASS", None),
        "p1": ("FAIL", None),
        "p2": ("ERROR", "view:back"),
        "p3": ("PASS", None),
    }
    meta = _rows(
        res.db_url,
        "SELECT v.view, v.source_meta, v.evidence_x FROM inspection_views v JOIN inspections i "
        "ON i.id = v.inspection_id WHERE i.part_id = 'p1' ORDER BY v.id",
    )
    paths = [json.loads(r.source_meta)["path"] for r in meta]
    assert paths[0].endswith("front/p1.png") and paths[1].endswith("back/p1.png")
    assert [r.evidence_x for r in meta] == [0, 50]
    # The whole-frame evidence of the failed part: both views side by side, colour, 110 x 40 px.
    ev = _rows(
        res.db_url,
        "SELECT e.width, e.height, e.status FROM evidence e JOIN inspections i ON i.id = e.inspection_id "
        "WHERE i.part_id = 'p1'",
    )[0]
    assert (ev.width, ev.height, ev.status) == (110, 40, "stored")


# ---------------------------------------------------------------------------- QA sees the views


@pytest.fixture
def two_view_store(tmp_path):
    shots = [
        {"part": "ok1", "view": "top"},
        {"part": "ok1", "view": "side"},
        {"part": "bad", "view": "top", "image": BRIGHT},
        {"part": "bad", "view": "side", "image": BRIGHT},
        {"part": "gone", "view": "top", "after_ms": 50},
    ]
    return _run(tmp_path, _station(shots, deadline_ms=150))


def test_history_json_and_table_show_one_inspection_with_its_views(two_view_store):
    from inspector_core.cli import main

    url = two_view_store.db_url
    out = CliRunner().invoke(main, ["history", "--db", url, "--format", "json"])
    assert out.exit_code == 0, out.output
    rows = {r["part_id"]: r for r in json.loads(out.output)["rows"]}
    assert sorted(rows) == ["bad", "gone", "ok1"]
    bad = rows["bad"]
    assert [(v["view"], v["status"], v["kinds"], v["n_defects"], len(v["crop_ids"])) for v in bad["views"]] == [
        ("top", "ok", ["glare"], 1, 1),
        ("side", "ok", ["glare"], 1, 1),
    ]
    assert [(f["step"], f["view"]) for f in bad["findings"]] == [("top_glare", "top"), ("side_glare", "side")]
    assert [(s["step"], s["view"]) for s in bad["steps"]] == [("top_glare", "top"), ("side_glare", "side")]
    gone = rows["gone"]
    assert gone["verdict"] == "ERROR" and [(v["view"], v["status"]) for v in gone["views"]] == [
        ("top", "ok"),
        ("side", "missing"),
    ]
    assert gone["views"][1]["error"] == "view 'side' missing: the source ended before it"
    csv = CliRunner().invoke(main, ["history", "--db", url, "--format", "csv"])
    assert csv.exit_code == 0, csv.output
    lines = csv.output.splitlines()
    assert lines[0].rstrip().endswith(",recipe,views")
    assert any(line.rstrip().endswith(",top:ok:glare; side:ok:glare") for line in lines)
    assert any(line.rstrip().endswith(",top:ok; side:missing") for line in lines)
    table = CliRunner().invoke(main, ["history", "--db", url])
    assert table.exit_code == 0, table.output
    assert "views" in table.output and "side: missing" in table.output and "top: glare x1 (crops" in table.output


def test_history_of_a_single_view_station_keeps_its_shape(tmp_path):
    from inspector_core.cli import main

    res = run_station(
        {"source": {"type": "synthetic", "config": {"count": 2, "seed": 1}}, "steps": [{"detector": "scratch"}]},
        tmp_path,
    )
    rows = json.loads(CliRunner().invoke(main, ["history", "--db", res.db_url, "--format", "json"]).output)["rows"]
    assert rows and all("views" not in r and all("view" not in s for s in r["steps"]) for r in rows)
    assert _rows(res.db_url, "SELECT count(*) AS n FROM inspection_views")[0].n == 0


def test_the_dashboard_page_shows_each_view_with_its_findings_and_crops(two_view_store):
    from fastapi.testclient import TestClient

    from inspector_core.qa.web import create_app
    from inspector_core.store import Store

    url = two_view_store.db_url
    ids = {r.part_id: r.id for r in _rows(url, "SELECT id, part_id FROM inspections")}
    client = TestClient(create_app(Store(url, migrate=False).engine), base_url="http://127.0.0.1")
    page = client.get(f"/inspections/{ids['bad']}").text
    assert page.count('<section class="view"') == 2
    top = page[page.index('id="view-top"') : page.index('id="view-side"')]
    side = page[page.index('id="view-side"') :]
    assert top.count('<img src="/crops/') == 1 and "step top_glare on view top" in top
    assert side.count('<img src="/crops/') == 1 and "step side_glare on view side" in side
    gone = client.get(f"/inspections/{ids['gone']}").text
    assert "(view side)" in gone and "view &#39;side&#39; missing" in gone
    detail = client.get(f"/api/inspections/{ids['gone']}").json()
    assert [(v["view"], v["status"]) for v in detail["views"]] == [("top", "ok"), ("side", "missing")]


def test_the_join_waits_no_longer_than_its_deadline(tmp_path):
    """A part whose other view never comes is decided about one deadline after its first view."""
    shots = [
        {"part": "a", "view": "top"},
        {"part": "b", "view": "top", "after_ms": 1500},
        {"part": "b", "view": "side"},
    ]
    t0 = time.monotonic()
    res = _run(tmp_path, _station(shots, deadline_ms=250))
    assert time.monotonic() - t0 < 30
    rows = _rows(res.db_url, "SELECT part_id, latency_ms FROM inspections ORDER BY seq")
    a = next(r for r in rows if r.part_id == "a")
    assert 250 <= a.latency_ms < 1200  # decided by the deadline, not by the next part at 1.5 s


# ---------------------------------------------------------------------------- the store


def test_a_multi_view_record_survives_the_spool_codec():
    from inspector_core.store import DefectRecord, InspectionRecord, StepRecord
    from inspector_core.store.records import SPOOLED_INSPECTION, ViewRecord

    at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    rec = InspectionRecord(
        "u1", None, None, 0, "p", at, at, "ERROR", 5.0, "view 'side' missing", "view:side",
        steps=[StepRecord(0, "t", "bright", "ok", 0.9, 1.0, 1, view="top")],
        defects=[DefectRecord("t", "bright", "glare", 0.9, True, (0, 0, 4, 4), 16.0, None, {}, "", view="top")],
        views=[ViewRecord("top", "ok", at, {"path": "a.png"}, evidence_x=0, width=4, height=4),
               ViewRecord("side", "missing", error="view 'side' missing")],
    )  # fmt: skip
    assert SPOOLED_INSPECTION.validate_json(SPOOLED_INSPECTION.dump_json(rec)) == rec
    assert InspectionRecord.from_json(rec.to_json()) == rec
    old = json.loads(rec.to_json())
    del old["views"]  # a record spooled before migration 0013
    assert InspectionRecord.from_json(json.dumps(old)).views == []


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migration_0013_up_and_down(tmp_path, backend, request):
    from alembic import command
    from alembic.config import Config

    from inspector_core.store import MIGRATIONS

    url = f"sqlite:///{tmp_path / 's.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    engine = create_engine(url)
    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0013")
        cols = {
            r[0] for r in conn.execute(text("SELECT view, status, evidence_x FROM inspection_views")).cursor.description
        }
        assert cols == {"view", "status", "evidence_x"}
        conn.execute(text("SELECT view FROM step_results")).all()
        conn.execute(text("SELECT view FROM defects")).all()
        command.downgrade(cfg, "0012")
        tables = {r[0] for r in conn.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'table'" if backend == "sqlite"
            else "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ))}  # fmt: skip
        assert "inspection_views" not in tables and "step_results" in tables
    engine.dispose()


def test_after_the_stop_begun_parts_are_finished_and_new_ones_recorded_not_begun(tmp_path):
    shots = [
        {"part": "a", "view": "top"},
        {"part": "b", "view": "top"},
        {"part": "a", "view": "side"},  # a is complete: the limit of 1 part is reached
        {"part": "c", "view": "top"},  # read while b is finished: c is new after the stop, not begun, recorded
        {"part": "b", "view": "side", "after_ms": 50},  # b was begun before the stop: finished
    ]
    res = run_station(_station(shots, deadline_ms=1000), tmp_path, plugins=[PLUGIN], installed=True, limit=1)
    parts = _parts(res.db_url)
    assert {p: r.verdict for p, r in parts.items()} == {"a": "PASS", "b": "PASS"}
    events = [e.message for e in res.events() if e.kind == "view_not_inspected"]
    assert events == [
        "part 'c': view 'top' arrived after the station began to stop; its part was not begun, "
        "this frame is not inspected"
    ]


def test_a_camera_that_fails_ends_the_run_with_its_open_parts_recorded(tmp_path):
    own = [{"part": "a"}, {"part": "b", "after_ms": 100, "image": "raise"}]
    cfg = _station([{"part": "a"}, {"part": "b", "after_ms": 50}, {"part": "c", "after_ms": 400}], deadline_ms=2000)
    cfg["views"] = {"top": {}, "side": {"source": {"type": "scripted", "config": {"shots": own}}}}
    res = _run(tmp_path, cfg)
    parts = _parts(res.db_url)
    assert parts["a"].verdict == "PASS"
    assert (parts["b"].verdict, parts["b"].error_step) == ("ERROR", "view:side")
    assert parts["b"].error == "view 'side' missing: the source failed before it"
    failed = [e.message for e in res.events() if e.kind == "source_failed"]
    assert len(failed) == 1 and "view 'side' (scripted): the camera's cable is out" in failed[0]


def test_one_camera_at_two_positions_and_a_second_camera(tmp_path):
    """Views top and side share the station's camera (by tag), view back has its own."""
    own = [{"part": "a"}, {"part": "b", "image": BRIGHT}]
    shots = [{"part": "a", "view": "top"}, {"part": "a", "view": "side"}]
    shots += [{"part": "b", "view": "top"}, {"part": "b", "view": "side"}, {"part": "b", "view": "back"}]
    cfg = _station(shots, deadline_ms=1000)
    cfg["views"] = {"top": {}, "side": {}, "back": {"source": {"type": "scripted", "config": {"shots": own}}}}
    cfg["steps"].append({"detector": "bright", "name": "back_glare", "view": "back"})
    res = _run(tmp_path, cfg)
    parts = _parts(res.db_url)
    assert {p: r.verdict for p, r in parts.items()} == {"a": "PASS", "b": "FAIL"}
    views = _rows(
        res.db_url,
        "SELECT i.part_id, v.view, v.status FROM inspection_views v JOIN inspections i ON i.id = v.inspection_id "
        "ORDER BY i.part_id, v.id",
    )
    assert [(r.part_id, r.view, r.status) for r in views] == [
        (p, v, "ok") for p in "ab" for v in ("top", "side", "back")
    ]
    # The station camera's frame tagged 'back' is not the back view (that one has its own camera).
    unknown = [e.message for e in res.events() if e.kind == "view_unknown"]
    assert len(unknown) == 1 and "part 'b': a frame of no view of this station (view='back'" in unknown[0]


def test_validate_names_the_views(tmp_path):
    from inspector_core.cli import main

    for d in ("front", "back"):
        (tmp_path / d).mkdir()
    cfg = {
        "name": "two",
        "source": {"type": "folder", "config": {"path": "front"}},
        "views": {"front": {}, "back": {"source": {"type": "folder", "config": {"path": "back"}}}},
        "join": {"deadline_ms": 750},
        "steps": [{"detector": "scratch", "name": "f", "view": "front"}, {"detector": "scratch", "view": "back"}],
    }
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = CliRunner().invoke(main, ["validate", str(path)])
    assert out.exit_code == 0, out.output
    assert "  views: front (source folder), back (folder); joined by part id within 750 ms" in out.output
    # On a line both views are triggers of the station's source, in the order declared.
    cfg["views"] = {"front": {}, "back": {}}
    cfg["line"] = {"protocol": "modbus", "config": {"port": 0}}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = CliRunner().invoke(main, ["validate", str(path)])
    assert out.exit_code == 0, out.output
    assert (
        "  views: front (source folder), back (source folder); joined by part id within 750 ms; "
        "on the line one trigger per view, in this order"
    ) in out.output
