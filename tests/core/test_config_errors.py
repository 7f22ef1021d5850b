"""Broken station files are refused before anything starts, naming the file, the field's path
and the reason."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from inspector_core.plugins import load
from inspector_core.runtime.config import ConfigError, load_station

GOOD = {
    "name": "line3",
    "source": {"type": "synthetic", "config": {"count": 5}},
    "steps": [{"detector": "bright_spot", "config": {"threshold": 240}}],
}


def with_(path: str, value):
    """GOOD with the value at ``path`` (dots and [i]) set; ``...`` deletes it."""
    import copy
    import re

    cfg = copy.deepcopy(GOOD)
    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]
    node = cfg
    for p in parts[:-1]:
        if isinstance(p, str) and p not in node:
            node[p] = {}
        node = node[p]
    if value is ...:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return cfg


CASES = [
    (with_("name", ...), "name: Field required"),
    (with_("name", "line 3!"), "name: String should match pattern"),
    (with_("source", ...), "source: Field required"),
    (
        with_("source.type", "ftp"),
        "source: unknown frame source 'ftp' (installed: camera, folder, pylon, synthetic, triggered_camera, video)",
    ),
    (with_("source.config.count", 0), "source.config.count: Input should be greater than or equal to 1 (got 0)"),
    (with_("source.config.colour", True), "source.config.colour: unknown key"),
    (with_("source.kind", "x"), "source.kind: unknown key"),
    (with_("steps", []), "steps: List should have at least 1 item"),
    (with_("steps[0].detector", "scrach"), "steps[0]: unknown detector 'scrach' (installed:"),
    (
        with_("steps[0].config.threshold", 300),
        "steps[0].config.threshold: Input should be less than or equal to 255 (got 300)",
    ),
    (with_("steps[0].config.threshold", "high"), "steps[0].config.threshold: Input should be a valid integer"),
    (with_("steps[0].config.treshold", 3), "steps[0].config.treshold: unknown key"),
    (
        with_("steps[0].roi", {"x": 0, "y": 0, "width": 0, "height": 10}),
        "steps[0].roi.width: Input should be greater than 0 (got 0)",
    ),
    (
        with_("steps[0].roi", {"x": -1, "y": 0, "width": 5, "height": 10}),
        "steps[0].roi.x: Input should be greater than or equal to 0 (got -1)",
    ),
    (with_("steps[0].roi", {"x": 0, "y": 0, "width": 5}), "steps[0].roi.height: Field required"),
    (with_("steps[0].budget_ms", -5), "steps[0].budget_ms: Input should be greater than 0 (got -5)"),
    ({**GOOD, "steps": GOOD["steps"] * 2}, "steps[1] and steps[0] are both named 'bright_spot'"),
    (
        with_("rules", {"scratch": {"min_score": 1.7}}),
        "rules.scratch.min_score: Input should be less than or equal to 1 (got 1.7)",
    ),
    (with_("rules", {"scratch": {"min_lenght_mm": 2}}), "rules.scratch.min_lenght_mm: unknown key"),
    (with_("calibration", {"mm_per_px": 0}), "calibration.mm_per_px: Input should be greater than 0 (got 0)"),
    (
        with_("overload", {"policy": "drop-newest"}),
        "overload.policy: Input should be 'wait' or 'drop-oldest' (got 'drop-newest')",
    ),
    (with_("store", {"crops": {"format": "gif"}}), "store.crops.format: Input should be 'jpeg' or 'png' (got 'gif')"),
    (
        with_("store", {"crops": {"max_size_px": 4}}),
        "store.crops.max_size_px: Input should be greater than or equal to 16 (got 4)",
    ),
    (
        with_("sinks", [{"type": "mqtt", "config": {"port": 70000}}]),
        "sinks[0].config.port: Input should be less than or equal to 65535 (got 70000)",
    ),
    (with_("sinks", [{"type": "pager"}]), "sinks[0]: unknown sink 'pager' (installed: file, mqtt, webhook)"),
    (with_("budget_ms", 0), "budget_ms: Input should be greater than 0 (got 0)"),
    (with_("steps[0].name", "a b"), "steps[0].name: String should match pattern"),
]


@pytest.fixture(scope="module")
def registry():
    return load()


def test_good_config_loads(tmp_path, registry):
    path = tmp_path / "line3.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    st = load_station(path, registry)
    assert st.name == "line3" and st.steps[0].config.threshold == 240


@pytest.mark.parametrize(("cfg", "expected"), CASES, ids=[c[1].split(":")[0] for c in CASES])
def test_broken_config_is_refused_with_its_path(tmp_path, registry, cfg, expected):
    path = tmp_path / "line3.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as info:
        load_station(path, registry)
    message = str(info.value)
    assert f"{path}: {expected}" in message, message


def test_not_yaml_names_line_and_column(tmp_path, registry):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nsteps: [\n  - {detector: a\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+, column \d+: not valid YAML"):
        load_station(path, registry)


def test_missing_file(tmp_path, registry):
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_station(tmp_path / "nope.yaml", registry)


def test_every_problem_is_listed_at_once(tmp_path, registry):
    cfg = with_("steps[0].config.threshold", 999)
    cfg["sinks"] = [{"type": "pager"}]
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as info:
        load_station(path, registry)
    assert len(info.value.problems) == 2


def test_cli_validate_refuses_and_exits_2(tmp_path):
    path = tmp_path / "line3.yaml"
    path.write_text(yaml.safe_dump(with_("rules", {"scratch": {"min_score": 1.7}})))
    proc = subprocess.run(
        [sys.executable, "-m", "inspector_core.cli", "validate", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "rules.scratch.min_score: Input should be less than or equal to 1 (got 1.7)" in proc.stderr
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump(GOOD))
    proc = subprocess.run(
        [sys.executable, "-m", "inspector_core.cli", "validate", str(ok)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "ok (station 'line3'" in proc.stdout
