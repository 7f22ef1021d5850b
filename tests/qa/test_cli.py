"""The QA commands as a QA engineer types them, on a station's real run and on the known
history with hostile part ids."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
from click.testing import CliRunner

from inspector_core.cli import main
from inspector_core.testing import run_station
from tests.qa.conftest import HOSTILE_IDS


def inspector(*args: str) -> str:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def inspector_fails(*args: str) -> str:
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code != 0
    return res.output


def test_a_station_run_then_history_stats_whatif(tmp_path):
    cfg = {
        "source": {"type": "synthetic", "config": {"count": 16, "seed": 3, "defect_rate": 0.5}},
        "steps": [{"detector": "bright_spot", "config": {"threshold": 200, "min_area_px": 30}}],
        "store": {"crops": {"save": "all"}},
    }
    result = run_station(cfg, tmp_path)
    db = result.db_url
    rows = json.loads(inspector("history", "--db", db, "--format", "json", "--limit", "100"))["rows"]
    assert len(rows) == 16 and [r["part_id"] for r in rows] == [r.part_id for r in reversed(result.inspections())]
    fails = json.loads(inspector("history", "--db", db, "--format", "json", "--verdict", "fail"))["rows"]
    assert len(fails) == result.verdicts()["FAIL"]
    table = inspector("history", "--db", db, "--limit", "5")
    assert "newest first" in table and "more: --page 2" in table
    st = json.loads(inspector("stats", "--db", db, "--since", "1h", "--format", "json"))
    assert st["totals"][0]["parts"] == 16 and st["totals"][0]["latency_p50_ms"] > 0
    assert "Pareto" in inspector("stats", "--db", db, "--since", "1h")
    # Never failing a part for bright spots passes every part that failed.
    w = json.loads(inspector("whatif", "--db", db, "--set", "default.fail=false", "--format", "json"))
    assert len(w["fail_to_pass"]) == result.verdicts()["FAIL"] and w["rejects_after"] == 0
    assert "FAIL -> PASS" in inspector("whatif", "--db", db, "--set", "default.fail=false")
    assert json.loads(inspector("history", "--db", db, "--format", "json", "--verdict", "FAIL"))["rows"] == fails


def test_history_formats_and_bad_input(tmp_path, known):
    url, parts = known
    out = inspector("history", "--db", url, "--station", "line2", "--format", "csv", "--all")
    rows = list(csv.DictReader(out.splitlines()))
    assert len(rows) == sum(p.station == "line2" for p in parts)
    # formula-looking part ids are neutralised in CSV, the rest kept exactly
    got = {r["part_id"] for r in rows}
    assert '\'=HYPERLINK("http://x")' in got and "../../etc/passwd" in got and "a'; DROP TABLE inspections; --" in got
    assert "since" in inspector_fails("history", "--db", url, "--since", "yesterday")
    assert "min_score" in inspector_fails("history", "--db", url, "--min-score", "3")
    assert "no such database file" in inspector_fails("history", "--db", f"sqlite:///{tmp_path}/nope.db")
    assert "KIND.FIELD=VALUE" in inspector_fails("whatif", "--db", url, "--set", "scratch=0.7")
    assert "cursor" in inspector_fails("history", "--db", url, "--cursor", "garbage")


def test_export_crops_with_hostile_part_ids_stays_inside(tmp_path, known):
    url, parts = known
    out = tmp_path / "out" / "crops"
    inspector(
        "export",
        "crops",
        "--db",
        url,
        "--to",
        str(out),
        "--station",
        "line2",
        "--kind",
        "scratch",
        "--min-score",
        "0.85",
    )
    files = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    # Everything written is directly inside the folder: no ../, no absolute paths, no subfolders.
    assert all(p.parent == out for p in files)
    index = list(csv.DictReader((out / "index.csv").open(encoding="utf-8")))
    images = [p for p in files if p.name != "index.csv"]
    assert len(images) == len(index) >= len(HOSTILE_IDS)
    assert {r["file"] for r in index} == {p.name for p in images}
    exported = {r["part_id"].removeprefix("'") if r["part_id"].startswith("'=") else r["part_id"] for r in index}
    assert set(HOSTILE_IDS) <= exported
    for p in images:
        assert all(ch.isalnum() or ch in "._-" for ch in p.name) and not p.name.startswith(".")
        assert cv2.imdecode(np.frombuffer(p.read_bytes(), np.uint8), cv2.IMREAD_COLOR) is not None
    for r in index:
        assert float(r["score"]) >= 0.85 and r["kind"] == "scratch" and json.loads(r["measurements"])["length_px"] == 80
    assert not (tmp_path / "etc").exists() and not Path("/abs/path").exists()


def test_export_dataset_anomalib_folder_layout(tmp_path):
    # A folder source records each file's path, so PASS parts' originals can fill good/.
    src = tmp_path / "images"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        img = rng.normal(90, 5, (120, 160)).clip(0, 255).astype(np.uint8)
        if i % 2:
            cv2.circle(img, (80, 60), 12, 255, -1)
        cv2.imwrite(str(src / f"part-{i}.png"), img)
    cfg = {
        "source": {"type": "folder", "config": {"path": str(src), "pattern": "*.png"}},
        "steps": [{"detector": "bright_spot", "config": {"threshold": 200, "min_area_px": 30}}],
    }
    result = run_station(cfg, tmp_path)
    v = result.verdicts()
    assert v["PASS"] == 3 and v["FAIL"] == 3
    root = tmp_path / "dataset"
    inspector("export", "dataset", "--db", result.db_url, "--to", str(root))
    assert sorted(p.name for p in root.iterdir()) == ["defect", "good", "index.csv"]
    good = sorted(p.name for p in (root / "good").iterdir())
    assert len(good) == 3 and all(n.endswith(".png") for n in good)
    assert len(list((root / "defect").iterdir())) >= 3
    index = list(csv.DictReader((root / "index.csv").open()))
    assert {r["class"] for r in index} == {"good", "defect"}
    assert all((root / r["file"]).is_file() for r in index)


def test_serve_refuses_other_addresses_without_a_token(tmp_path, known, monkeypatch):
    url, _ = known
    monkeypatch.delenv("INSPECTOR_TOKEN", raising=False)
    out = inspector_fails("serve", "--db", url, "--host", "0.0.0.0")
    assert "refusing to serve on 0.0.0.0 without a token" in out and "--token" in out


HUGE = "99999999999999999999"


def test_out_of_range_numbers_and_dates_are_usage_errors(known):
    url, _ = known
    for args, option in (
        (["--since", "5000000d"], "--since"),
        (["--until", "9999-12-31T23:00-05:00"], "--until"),
        (["--run", HUGE], "--run"),
        (["--page", HUGE], "--page"),
        (["--min-size-mm", "inf"], "min_size_mm"),
        (["--min-score", "nan"], "min_score"),
        (["--cursor", "MjAyNi0xMS0yMFQwMDowMDowMHw5OTk5OTk5OTk5OTk5OTk5OTk5OTk5"], "cursor"),
    ):
        res = CliRunner().invoke(main, ["history", "--db", url, *args])
        assert res.exit_code == 2 and option in res.output, (args, res.output)  # click's usage error
        assert "Traceback" not in res.output and "OverflowError" not in res.output, args
    for cmd in (
        ["stats", "--since", "5000000d"],
        ["stats", "--utc-offset", HUGE],
        ["whatif", "--set", "default.min_score=0.5", "--run", HUGE],
        ["export", "crops", "--to", "/tmp/never", "--since", "5000000d"],
    ):
        res = CliRunner().invoke(main, [*cmd, "--db", url])
        assert res.exit_code == 2 and isinstance(res.exception, SystemExit), (cmd, res.output)


def test_every_csv_cell_is_spreadsheet_safe(tmp_path):
    # Every text a plugin or a part can put in a cell, starting with each formula character.
    import uuid
    from datetime import datetime

    from inspector_core.store import CropRecord, DefectRecord, InspectionRecord, Store
    from tests.qa.conftest import jpeg

    starts = ["=", "+", "-", "@", "\t", "\r", " =", "\uff1d"]
    url = f"sqlite:///{tmp_path / 'evil.db'}"
    store = Store(url)
    sid, rid = store.begin_run(
        "=line",
        hostname="h",
        software_version="0",
        plugins={},
        config_yaml="name: x\n",
        config_hash="0" * 64,
        models={},
    )
    at = datetime(2026, 11, 20, 8)
    recs = []
    for k, c in enumerate(starts):
        d = DefectRecord(
            f"{c}step",
            f"{c}plugin",
            f"{c}kind",
            0.9,
            True,
            (1, 2, 3, 4),
            5.0,
            1.0,
            {"k": 1},
            f"{c}msg",
            CropRecord("jpeg", 48, 32, 0, 0, 1.0, jpeg()),
        )
        recs.append(
            InspectionRecord(
                uuid.uuid4().hex, sid, rid, k, f"{c}SUM(A1)", at, at, "FAIL", 1.0, error=f"{c}HYPERLINK(x)", defects=[d]
            )
        )
    store.write(recs)
    store.close()
    files = [tmp_path / "history.csv"]
    files[0].write_text(inspector("history", "--db", url, "--format", "csv", "--all"), encoding="utf-8")
    inspector("export", "crops", "--db", url, "--to", str(tmp_path / "crops"))
    inspector("export", "dataset", "--db", url, "--to", str(tmp_path / "ds"))
    files += [tmp_path / "crops" / "index.csv", tmp_path / "ds" / "index.csv"]
    for f in files:
        rows = list(csv.reader(f.open(encoding="utf-8", newline="")))
        assert len(rows) == 1 + len(starts), f
        for row in rows[1:]:
            for cell in row:
                assert cell.lstrip(" ")[:1] not in ("=", "+", "-", "@", "\t", "\r", "\uff1d"), (f.name, cell)
        # nothing lost: the text follows the quote
        assert any(cell == "'=SUM(A1)" for row in rows for cell in row), f
