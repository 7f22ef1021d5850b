"""Bad input costs at most the parts involved, each recorded as ERROR with the reason; the
station goes on."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import cv2
import numpy as np
from inspector_sources.synthetic import render_part

from inspector_core.testing import run_station


def write_parts(folder, n=6):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"part{i:02d}.png"), render_part(1, i, "good").image)


def test_corrupt_and_truncated_images_are_errors(tmp_path):
    folder = tmp_path / "parts"
    write_parts(folder, 6)
    (folder / "part02.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    (folder / "part03.png").write_bytes(b"")
    (folder / "part04.png").unlink()
    ok, jpeg = cv2.imencode(".jpg", render_part(1, 9, "good").image)
    (folder / "part04.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])  # truncated
    (folder / "part05.png").write_bytes((folder / "part05.png").read_bytes()[:3000])  # truncated PNG
    cfg = {"source": {"type": "folder", "config": {"path": str(folder)}}, "steps": [{"detector": "bright_spot"}]}
    rows = {r.part_id: r for r in run_station(cfg, tmp_path).inspections()}
    assert set(rows) == {"part00", "part01", "part02", "part03", "part04", "part05"}
    assert rows["part00"].verdict != "ERROR" and rows["part01"].verdict != "ERROR"
    for pid, why in (
        ("part02", "not a decodable image"),
        ("part03", "is empty"),
        ("part04", "truncated"),
        ("part05", "not a decodable image"),
    ):
        assert rows[pid].verdict == "ERROR", pid
        assert why in rows[pid].error and rows[pid].error_step == "source", rows[pid].error


def test_detector_that_raises_costs_only_its_parts(tmp_path):
    cfg = {
        "source": {"type": "synthetic", "config": {"count": 9}},
        "steps": [
            {"detector": "raiser", "config": {"every_nth": 3}},
            {"detector": "bright_spot", "config": {"threshold": 200}},
        ],
    }
    rows = run_station(cfg, tmp_path).inspections()
    errors = [r for r in rows if r.verdict == "ERROR"]
    assert [r.seq for r in errors] == [2, 5, 8]
    for r in errors:
        assert r.error_step == "raiser"
        assert "RuntimeError: simulated failure on part" in r.error
        statuses = {s.step: s.status for s in r.steps}
        # The other step still ran and its score is kept.
        assert statuses == {"raiser": "error", "bright_spot": "ok"}
    assert all(r.verdict == "FAIL" for r in rows if r.seq not in (2, 5, 8))


def test_detector_that_hangs_past_its_budget(tmp_path):
    cfg = {
        "source": {"type": "synthetic", "config": {"count": 5}},
        "steps": [{"detector": "sleeper", "budget_ms": 300, "config": {"sleep_ms": 30000, "part_suffix": "00001"}}],
    }
    rows = run_station(cfg, tmp_path).inspections()
    assert [r.verdict for r in rows] == ["PASS", "ERROR", "PASS", "PASS", "PASS"]
    assert rows[1].error == "step sleeper: overran its time budget of 300 ms"
    assert rows[1].steps[0].status == "timeout" and rows[1].steps[0].latency_ms >= 300
    # The station went on with a fresh instance: later parts were judged in time.
    assert all(r.latency_ms < 5000 for r in rows[2:])


def test_roi_outside_the_frame_is_an_error_per_part(tmp_path):
    # A folder does not declare its frame size, so only the part tells (a source that declares
    # it, like synthetic, has such a station refused at validation: tests/core/test_config_validation.py).
    folder = tmp_path / "parts"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"part{i}.png"), np.full((480, 640), 128, np.uint8))
    cfg = {
        "source": {"type": "folder", "config": {"path": str(folder)}},
        "steps": [{"detector": "bright_spot", "roi": {"x": 600, "y": 0, "width": 100, "height": 100}}],
    }
    rows = run_station(cfg, tmp_path).inspections()
    assert all(r.verdict == "ERROR" and "outside the 640x480 frame" in r.error for r in rows)


BROKEN_PLUGIN = textwrap.dedent("""
    import definitely_not_an_installed_module  # noqa
""")


def _broken_plugin_env(tmp_path):
    """A real entry point for a plugin that fails to import: a module and its dist-info on
    PYTHONPATH, found by importlib.metadata exactly as an installed distribution is."""
    site = tmp_path / "site"
    (site / "inspector_broken-1.0.dist-info").mkdir(parents=True)
    (site / "inspector_broken.py").write_text(BROKEN_PLUGIN)
    info = site / "inspector_broken-1.0.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: inspector-broken\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[inspector.plugins]\nbroken = inspector_broken\n")
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(site) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_plugin_that_fails_to_import_is_listed_and_stops_only_its_users(tmp_path):
    env = _broken_plugin_env(tmp_path)
    cli = [sys.executable, "-m", "inspector_core.cli"]
    out = subprocess.run(cli + ["plugins", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    plugins = {p["name"]: p for p in json.loads(out.stdout)}
    assert plugins["broken"]["distribution"] == "inspector-broken"
    assert "ModuleNotFoundError" in plugins["broken"]["error"]
    assert "definitely_not_an_installed_module" in plugins["broken"]["error"]
    assert plugins["sources"]["error"] is None and "synthetic" in plugins["sources"]["sources"]

    # A station that does not use it runs.
    good = tmp_path / "good.yaml"
    good.write_text(
        f"name: s\nsource: {{type: synthetic, config: {{count: 3}}}}\n"
        f"steps: [{{detector: bright_spot}}]\nstore: {{url: 'sqlite:///{tmp_path}/s.db'}}\n"
    )
    run = subprocess.run(cli + ["run", str(good), "--quiet"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    # A station that uses a detector it would have provided is refused, naming the plugin.
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: s\nsource: {type: synthetic}\nsteps: [{detector: broken_detector}]\n")
    run = subprocess.run(cli + ["validate", str(bad)], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "steps[0]: unknown detector 'broken_detector'" in run.stderr
    assert "plugins that failed to load: broken (failed to import inspector_broken" in run.stderr.replace("\n", "")


def test_allow_and_block_lists(tmp_path):
    import os

    cli = [sys.executable, "-m", "inspector_core.cli", "plugins", "--json"]
    env = dict(os.environ, INSPECTOR_DISABLE_PLUGINS="example_thirdparty")
    plugins = {
        p["name"]: p
        for p in json.loads(subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60).stdout)
    }
    assert plugins["example_thirdparty"]["disabled"] and plugins["example_thirdparty"]["detectors"] == []
    env = dict(os.environ, INSPECTOR_PLUGINS="sources,sinks")
    plugins = {
        p["name"]: p
        for p in json.loads(subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60).stdout)
    }
    assert not plugins["sources"]["disabled"] and plugins["example_thirdparty"]["disabled"]


def test_image_of_wrong_type_from_a_source_is_an_error():
    from inspector_core.runtime.station import _check_image

    assert "dtype float32" in _check_image(np.zeros((4, 4), np.float32))
    assert "shape (4, 4, 4)" in _check_image(np.zeros((4, 4, 4), np.uint8))
    assert _check_image(np.zeros((4, 4, 3), np.uint8)) is None
