"""Station files that used to validate but could not run as written are refused by
``load_station`` (so by ``inspector validate`` and ``inspector run`` alike), each naming the file,
the field's path and the remedy; good stations, the shipped demo among them, still load.

A table of mutated stations: each row changes one thing of a good station."""

from __future__ import annotations

import copy
import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from pydantic import ConfigDict, Field, ValidationError

from inspector_core import PluginConfig
from inspector_core.cli import main
from inspector_core.plugins import load
from inspector_core.runtime.config import MAX_DEPTH, ConfigError, load_station
from inspector_core.runtime.rules import Rule, failing

STATIONS = Path(__file__).resolve().parents[2] / "stations"
UNSET = "INSPECTOR_TEST_UNSET_PASSWORD"


def good() -> dict[str, Any]:
    """A station that loads: three built-in detectors on a 1024x768 synthetic stream."""
    return {
        "name": "line7",
        "source": {"type": "synthetic", "config": {"count": 3, "seed": 4}},
        "steps": [
            {"detector": "misalignment", "name": "align", "config": {"reference": "ref/align.png"}},
            {"detector": "scratch", "roi": {"x": 200, "y": 172, "width": 624, "height": 424}},
            {"detector": "dent", "config": {"min_diameter_px": 24, "max_diameter_px": 160}},
        ],
        "rules": {"scratch": {"min_score": 0.5}, "dent": {"min_score": 0.6}},
        "store": {"url": "sqlite:///line7.db"},
    }


def mutate(cfg: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``cfg`` with the value at ``path`` (dots and [i]) set; ``...`` deletes it."""
    cfg = copy.deepcopy(cfg)
    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]
    node: Any = cfg
    for p in parts[:-1]:
        if isinstance(p, str) and p not in node:
            node[p] = {}
        node = node[p]
    if value is ...:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return cfg


@pytest.fixture(scope="module")
def registry():
    return load()


@pytest.fixture
def station_dir(tmp_path: Path) -> Path:
    """A folder with a good station's files: the misalignment reference, a folder, a non-image."""
    (tmp_path / "ref").mkdir()
    image = np.random.default_rng(0).integers(0, 255, (64, 80), dtype=np.uint8)
    assert cv2.imwrite(str(tmp_path / "ref" / "align.png"), image)
    (tmp_path / "ref" / "folder.png").mkdir()
    (tmp_path / "ref" / "notes.png").write_text("not an image")
    (tmp_path / "store_is_a_file").write_text("x")
    return tmp_path


def write(folder: Path, cfg: dict[str, Any] | str | bytes, name: str = "line7.yaml") -> Path:
    path = folder / name
    if isinstance(cfg, bytes):
        path.write_bytes(cfg)
    else:
        path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def refusal(path: Path, registry) -> str:
    with pytest.raises(ConfigError) as info:
        load_station(path, registry)
    return str(info.value)


# (case id, [(path, value), ...], what the message says after "<file>: ")
REFUSED: list[tuple[str, list[tuple[str, Any]], str]] = [
    # item 1: a rule that cannot be judged fails closed at validation
    (
        "mm-rule-without-calibration",
        [("rules.scratch.min_size_mm", 1.0)],
        "rules.scratch.min_size_mm: cannot be judged: the station has no calibration",
    ),
    (
        "mm-default-rule-without-calibration",
        [("default_rule", {"min_size_mm": 0.5})],
        "default_rule.min_size_mm: cannot be judged: the station has no calibration, so no finding has a size in mm "
        "(every part would pass this rule); set calibration.mm_per_px, or use min_size_px",
    ),
    # item 9: rule keys against the kinds the steps emit
    (
        "rule-key-typo",
        [("rules.scrach", {"min_score": 0.4})],
        "rules.scrach: no step emits findings of kind 'scrach' (the steps emit: dent, misalignment, scratch), "
        "so this rule would never apply; did you mean 'scratch'?",
    ),
    (
        "rule-key-of-no-step",
        [("rules.bolt", {"min_score": 0.4})],
        "rules.bolt: no step emits findings of kind 'bolt' (the steps emit: dent, misalignment, scratch), so this "
        "rule would never apply; remove it, or add a step that emits it",
    ),
    (
        "rule-for-a-removed-step",
        [("steps", [{"detector": "scratch"}])],
        "rules.dent: no step emits findings of kind 'dent' (the steps emit: scratch)",
    ),
    # item 9/16: the misalignment reference
    (
        "reference-missing",
        [("steps[0].config.reference", ...)],
        "steps[0].config.reference: required: the golden reference image of this step; teach it with "
        "`inspector teach STATION_FILE --from GOOD_IMAGES_DIR`",
    ),
    (
        "reference-not-there",
        [("steps[0].config.reference", "ref/nope.png")],
        "steps[0].config.reference: reference {dir}/ref/nope.png does not exist; teach it with",
    ),
    (
        "reference-a-folder",
        [("steps[0].config.reference", "ref/folder.png")],
        "steps[0].config.reference: reference {dir}/ref/folder.png is a folder, not an image file",
    ),
    (
        "reference-not-an-image",
        [("steps[0].config.reference", "ref/notes.png")],
        "steps[0].config.reference: reference {dir}/ref/notes.png is not an image OpenCV can read",
    ),
    (
        "reference-replaced",
        [("steps[0].config.reference_sha256", "0" * 64)],
        "steps[0].config.reference_sha256: the reference {dir}/ref/align.png has SHA-256",
    ),
    (
        "reference-sha-not-a-sha",
        [("steps[0].config.reference_sha256", "abc")],
        "steps[0].config.reference_sha256: String should match pattern",
    ),
    (
        "weight-not-there",
        [("steps[0].config.weight", "ref/align.weight.png")],
        "steps[0].config.weight: weight mask {dir}/ref/align.weight.png does not exist",
    ),
    # item 9: dent diameters
    (
        "dent-min-above-max",
        [("steps[2].config.min_diameter_px", 200)],
        "steps[2].config: min_diameter_px (200) is larger than max_diameter_px (160): no dent could be found",
    ),
    (
        "dent-mm-min-above-max",
        [("steps[2].config.min_diameter_mm", 9), ("steps[2].config.max_diameter_mm", 3)],
        "steps[2].config: min_diameter_mm (9) is larger than max_diameter_mm (3)",
    ),
    # item 16: ROI against the frame the source declares
    (
        "roi-right-of-frame",
        [("steps[1].roi", {"x": 1100, "y": 0, "width": 10, "height": 10})],
        "steps[1].roi: x=1100, y=0, width=10, height=10 is not inside the 1024x768 px frame of the synthetic "
        "source (x + width = 1110, y + height = 10); move or shrink it",
    ),
    (
        "roi-partly-below-frame",
        [("steps[1].roi.y", 400)],
        "steps[1].roi: x=200, y=400, width=624, height=424 is not inside the 1024x768 px frame",
    ),
    (
        "roi-outside-a-smaller-frame",
        [("source.config.width", 640)],
        "steps[1].roi: x=200, y=172, width=624, height=424 is not inside the 640x768 px frame",
    ),
    # item 16: non-finite and absurd numbers
    ("budget-inf", [("budget_ms", float("inf"))], "budget_ms: Input should be a finite number (got inf)"),
    (
        "step-budget-nan",
        [("steps[1].budget_ms", float("nan"))],
        "steps[1].budget_ms: Input should be a finite number (got nan)",
    ),
    ("budget-1e300", [("budget_ms", 1e300)], "budget_ms: Input should be less than or equal to 3600000"),
    (
        "rule-score-nan",
        [("rules.scratch.min_score", float("nan"))],
        "rules.scratch.min_score: Input should be a finite number",
    ),
    (
        "calibration-inf",
        [("calibration", {"mm_per_px": float("inf")})],
        "calibration.mm_per_px: Input should be a finite number (got inf)",
    ),
    (
        "plugin-field-inf",
        [("steps[2].config.min_contrast_sigma", float("inf"))],
        "steps[2].config.min_contrast_sigma: Input should be a finite number (got inf)",
    ),
    (
        "synthetic-interval-inf",
        [("source.config.interval_ms", float("inf"))],
        "source.config.interval_ms: Input should be a finite number",
    ),
    # item 16: store URLs
    (
        "store-garbage",
        [("store.url", "not a url")],
        "store.url: not a database URL; give e.g. sqlite:///inspector.db or postgresql://user@host/plant",
    ),
    ("store-empty", [("store.url", "")], "store.url: empty; give a database URL"),
    (
        "store-other-scheme",
        [("store.url", "mysql://qa@db/plant")],
        "store.url: mysql://qa@db/plant: database 'mysql' is not supported (supported: sqlite, postgresql)",
    ),
    (
        "store-uninstalled-driver",
        [("store.url", "postgresql+pg8000://qa@db/plant")],
        "store.url: postgresql+pg8000://qa@db/plant: driver 'pg8000' is not installed or not known",
    ),
    (
        "store-unknown-driver",
        [("store.url", "postgresql+nosuch://qa@db/plant")],
        "store.url: postgresql+nosuch://qa@db/plant: driver 'nosuch' is not installed or not known",
    ),
    (
        "store-unset-variable",
        [("store.url", "postgresql://qa:${" + UNSET + "}@db/plant")],
        "store.url: ${{" + UNSET + "}} not set in the environment; export it before starting the station",
    ),
    (
        "store-sqlite-folder",
        [("store.url", "sqlite:///ref")],
        "store.url: {dir}/ref is a folder; name a database file in it",
    ),
    (
        "store-sqlite-under-a-file",
        [("store.url", "sqlite:///store_is_a_file/line7.db")],
        "store.url: {dir}/store_is_a_file/line7.db cannot be created: {dir}/store_is_a_file is a file",
    ),
    (
        "store-in-memory",
        [("store.url", "sqlite://")],
        "store.url: an in-memory SQLite database loses every verdict when the station stops",
    ),
    (
        "store-bad-port",
        [("store.url", "postgresql://qa:secret@db:99999/plant")],
        "store.url: postgresql://qa:***@db:99999/plant: port 99999 is not a TCP port",
    ),
    # item 16: synthetic source
    (
        "synthetic-negative-seed",
        [("source.config.seed", -1)],
        "source.config.seed: Input should be greater than or equal to 0 (got -1)",
    ),
    (
        "synthetic-huge-seed",
        [("source.config.seed", 2**64)],
        "source.config.seed: Input should be less than or equal to 4294967295",
    ),
    (
        "synthetic-absurd-width",
        [("source.config.width", 100_000)],
        "source.config.width: Input should be less than or equal to 4096 (got 100000)",
    ),
    (
        "synthetic-absurd-height",
        [("source.config.height", 10**9)],
        "source.config.height: Input should be less than or equal to 4096",
    ),
    # item 16: a boolean where a number is meant
    ("bool-count", [("source.config.count", True)], "source.config.count: must be a number, not true/false (got True)"),
    (
        "bool-queue-size",
        [("overload", {"queue_size": True})],
        "overload.queue_size: must be a number, not true/false (got True)",
    ),
    ("bool-roi", [("steps[1].roi.x", False)], "steps[1].roi.x: must be a number, not true/false (got False)"),
    ("bool-padding", [("store.crops", {"padding_px": True})], "store.crops.padding_px: must be a number"),
    ("bool-rule-score", [("rules.dent.min_score", True)], "rules.dent.min_score: must be a number"),
    ("bool-budget", [("budget_ms", True)], "budget_ms: must be a number"),
    (
        "bool-plugin-count",
        [("steps[2].config.max_findings", True)],
        "steps[2].config.max_findings: must be a number, not true/false (got True)",
    ),
    ("bool-plugin-float", [("steps[0].config.max_shift_px", False)], "steps[0].config.max_shift_px: must be a number"),
    (
        "bool-sink-port",
        [("sinks", [{"type": "mqtt", "config": {"port": True}}])],
        "sinks[0].config.port: must be a number, not true/false",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_a_wrong_station_is_refused_naming_the_field(station_dir, registry, monkeypatch, changes, expected):
    monkeypatch.delenv(UNSET, raising=False)
    cfg = good()
    for where, value in changes:
        cfg = mutate(cfg, where, value)
    path = write(station_dir, cfg)
    message = refusal(path, registry)
    assert f"{path}: {expected.format(dir=station_dir.resolve())}" in message, message
    assert "secret" not in message


ACCEPTED: list[tuple[str, list[tuple[str, Any]]]] = [
    ("as-is", []),
    ("mm-rule-with-calibration", [("calibration", {"mm_per_px": 0.1}), ("rules.scratch.min_size_mm", 1.0)]),
    ("px-rule-without-calibration", [("rules.scratch.min_size_px", 12)]),
    ("mm-rule-that-never-fails", [("rules.dent", {"min_size_mm": 2, "fail": False})]),
    ("default-rule-plain", [("default_rule", {"min_score": 0.7})]),
    ("rule-for-every-kind", [("rules.misalignment", {"min_score": 0.5})]),
    ("roi-to-the-frame-edge", [("steps[1].roi", {"x": 0, "y": 0, "width": 1024, "height": 768})]),
    ("roi-in-a-larger-frame", [("source.config.width", 2048), ("steps[1].roi.x", 1400)]),
    ("dent-min-equals-max", [("steps[2].config.min_diameter_px", 160)]),
    ("reference-with-its-hash", [("steps[0].config.reference_sha256", "HASH")]),
    ("store-postgresql", [("store.url", "postgresql://qa@127.0.0.1:5432/plant")]),
    ("store-postgresql-psycopg", [("store.url", "postgresql+psycopg://qa@127.0.0.1/plant")]),
    ("store-sqlite-in-a-new-folder", [("store.url", "sqlite:///var/new/line7.db")]),
    ("store-sqlite-absolute", [("store.url", "sqlite:////tmp/inspector-test-line7.db")]),
    ("store-variable-set", [("store.url", "postgresql://qa:${INSPECTOR_TEST_SET_PASSWORD}@db/plant")]),
    ("bool-where-a-bool-is-meant", [("source.config.color", False), ("sinks", [{"type": "mqtt", "config": {}}])]),
    ("int-for-a-float", [("budget_ms", 1500), ("steps[0].config.max_shift_px", 3)]),
    ("synthetic-limits", [("source.config.seed", 0), ("source.config.width", 4096), ("source.config.height", 4096)]),
    (
        "folder-source-frame-unknown",
        [("source", {"type": "folder", "config": {"path": "ref"}}), ("steps[1].roi.x", 5000)],
    ),
]


@pytest.mark.parametrize("changes", [c[1] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_a_good_station_still_loads(station_dir, registry, monkeypatch, changes):
    monkeypatch.setenv("INSPECTOR_TEST_SET_PASSWORD", "pw")
    digest = hashlib.sha256((station_dir / "ref" / "align.png").read_bytes()).hexdigest()
    cfg = good()
    for where, value in changes:
        cfg = mutate(cfg, where, digest if value == "HASH" else value)
    station = load_station(write(station_dir, cfg), registry)
    assert [s.name for s in station.steps] == ["align", "scratch", "dent"]


def test_the_shipped_stations_still_validate(registry, monkeypatch):
    from tests.conftest import DATA

    monkeypatch.setenv("INSPECTOR_DATA", str(DATA))  # stations on the shared photographs name them by it
    files = sorted(STATIONS.glob("*.yaml"))
    assert files
    for f in files:
        load_station(f, registry)


# ------------------------------------------------------------------ the file itself (item 21)

BASE = "name: line7\nsource: {type: synthetic, config: {count: 3}}\nsteps:\n  - detector: scratch\n  - detector: dent\n"


def _alias_bomb() -> str:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 7):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def _alias_chain(n: int) -> str:
    return "a0: &a0 [1]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, n))


FILES: list[tuple[str, str | bytes, str]] = [
    (
        "duplicate-top-level-key",
        BASE + "steps:\n  - detector: misalignment\n",
        "line 6, column 1: not valid YAML (duplicate key 'steps' (first at line 3, column 1); give each key once)",
    ),
    (
        "duplicate-nested-key",
        BASE + "rules:\n  dent: {min_score: 0.5, min_score: 0.9}\n",
        "line 7, column 26: not valid YAML (duplicate key 'min_score' (first at line 7, column 10)",
    ),
    (
        "duplicate-step-config-key",
        BASE.replace("dent\n", "dent\n    config:\n      max_findings: 3\n      max_findings: 4\n"),
        "line 8, column 7: not valid YAML (duplicate key 'max_findings'",
    ),
    (
        "latin-1",
        ("# Prüfstation\n" + BASE).encode("latin-1"),
        "line 1: not UTF-8 text (byte 0xfc at offset 4; Latin-1 or another encoding?); save the file as UTF-8",
    ),
    ("utf-16", BASE.encode("utf-16"), "the file is UTF-16 text; save it as UTF-8"),
    ("utf-16-be", b"\xfe\xff" + BASE.encode("utf-16-be"), "the file is UTF-16 text; save it as UTF-8"),
    (
        "binary-png",
        cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes(),
        "line 3: a binary file (a NUL byte at offset 8), not a YAML text",
    ),
    ("control-character", BASE + 'description: "bell \x07"\n', "line 6: not valid YAML (unacceptable character #x0007"),
    (
        "deep-flow-nesting",
        "name: x\nsteps: " + "[" * 5000 + "]" * 5000 + "\n",
        f"line 2, column 71: not valid YAML (nested more than {MAX_DEPTH} levels deep)",
    ),
    (
        "deep-block-nesting",
        BASE + "x:\n" + "".join("  " * i + "y:\n" for i in range(1, 300)),
        f"line 69, column 127: not valid YAML (nested more than {MAX_DEPTH} levels deep)",
    ),
    (
        "deep-alias-chain",
        _alias_chain(3000),
        f"(top level): nested more than {MAX_DEPTH} levels deep (through YAML aliases)",
    ),
    ("alias-bomb", _alias_bomb(), "(top level): more than 100000 values once its YAML aliases are expanded"),
    ("self-containing-alias", "a: &a [1, *a]\n", "(top level): not a station file: it contains itself"),
    ("impossible-date", BASE + "description: 2026-13-45\n", "(top level): not valid YAML (month must be in 1..12)"),
    ("too-large", BASE + "description: " + "x" * (1 << 20) + "\n", "larger than 1 MiB: not a station file"),
    ("not-a-mapping", "- just\n- a list\n", "(top level): must be a mapping"),
]


@pytest.mark.parametrize(("content", "expected"), [c[1:] for c in FILES], ids=[c[0] for c in FILES])
def test_a_file_that_is_not_plain_yaml_is_refused_naming_it(tmp_path, registry, content, expected):
    path = write(tmp_path, content)
    message = refusal(path, registry)
    assert f"{path}: {expected}" in message, message


def test_merge_keys_override_without_being_duplicates(tmp_path, registry):
    """``<<: *anchor`` then a key of the anchor's own is an override YAML allows, not a duplicate."""
    station_text = (
        "name: line7\nsource: {type: synthetic}\n"
        "steps:\n  - detector: scratch\n    roi: &plate {x: 200, y: 172, width: 624, height: 424}\n"
        "  - detector: dent\n    roi: {<<: *plate, width: 600, x: 210}\n"
    )
    st = load_station(write(tmp_path, station_text), registry)
    assert st.steps[1].roi is not None and (st.steps[1].roi.x, st.steps[1].roi.width) == (210, 600)


def test_cli_validate_of_a_binary_or_latin_1_file_names_it_without_a_traceback(tmp_path):
    binary = write(tmp_path, bytes(range(256)) * 4, "image.yaml")
    latin = write(tmp_path, ("# Prüfstation\n" + BASE).encode("latin-1"), "latin.yaml")
    for path, reason in ((binary, "a binary file"), (latin, "not UTF-8 text")):
        proc = subprocess.run(
            [sys.executable, "-m", "inspector_core.cli", "validate", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        assert f"{path}: " in proc.stderr and reason in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout


def test_cli_validate_does_not_print_the_store_password(tmp_path, monkeypatch):
    monkeypatch.setenv("INSPECTOR_TEST_SET_PASSWORD", "hunter2")
    cfg = {
        "name": "line7",
        "source": {"type": "synthetic"},
        "steps": [{"detector": "scratch"}],
        "store": {"url": "postgresql://qa:${INSPECTOR_TEST_SET_PASSWORD}@127.0.0.1/plant"},
    }
    result = CliRunner().invoke(main, ["validate", str(write(tmp_path, cfg))])
    assert result.exit_code == 0, result.output
    assert "store postgresql://qa:***@127.0.0.1/plant" in result.output and "hunter2" not in result.output


def test_run_refuses_a_fail_open_rule_before_starting(tmp_path):
    """Item 1: 6 of 6 failing parts became PASS under a min_size_mm rule without calibration."""
    cfg = {
        "name": "line7",
        "source": {"type": "synthetic", "config": {"count": 6}},
        "steps": [{"detector": "scratch"}],
        "rules": {"scratch": {"min_size_mm": 0.5}},
        "store": {"url": "sqlite:///line7.db"},
    }
    path = write(tmp_path, cfg)
    for command in ("validate", "run"):
        result = CliRunner().invoke(main, [command, str(path)])
        assert result.exit_code == 2, result.output
        assert f"{path}: rules.scratch.min_size_mm: cannot be judged" in result.output
    assert not (tmp_path / "line7.db").exists(), "the station must not start"


def test_teach_loads_a_station_whose_reference_is_not_taught_yet(tmp_path, registry):
    path = write(
        tmp_path,
        {"name": "line7", "source": {"type": "synthetic"}, "steps": [{"detector": "misalignment", "name": "align"}]},
    )
    assert "steps[0].config.reference: required" in refusal(path, registry)
    station = load_station(path, registry, check_files=False)
    assert station.steps[0].config.reference is None


# ------------------------------------------------------------------ rules fail closed at run time


def test_a_size_rule_counts_a_finding_whose_size_is_unknown():
    """A detector that gives no size_px cannot be judged "too small": its finding fails the part."""
    rule = Rule(min_score=0.5, min_size_px=10)
    assert rule.counts(0.9, None, None)
    assert not rule.counts(0.9, 5.0, None)
    assert rule.counts(0.9, 15.0, None)
    assert not rule.counts(0.4, None, None)
    mm = Rule(min_size_mm=1.0)
    assert mm.counts(0.9, 20.0, None)
    assert not mm.counts(0.9, 20.0, 0.5)

    class F:
        def __init__(self, kind: str, size_px: float | None) -> None:
            self.kind, self.score, self.size_px, self.size_mm = kind, 0.8, size_px, None

    assert failing([F("a", None), F("a", 3.0), F("b", None)], {"a": rule}, Rule()) == [True, False, True]


# ------------------------------------------------------------------ the plugin config rules


def test_plugin_configs_refuse_booleans_for_numbers_and_non_finite_values():
    class Settings(PluginConfig):
        count: int = Field(1, description="a count")
        ratio: float | None = Field(None, description="a ratio")
        sizes: list[int] = Field(default_factory=list, description="sizes")
        weights: dict[str, float] = Field(default_factory=dict, description="weights")
        flag_or_level: int | bool = Field(0, description="either")
        enabled: bool = Field(True, description="a switch")

    for bad in (
        {"count": True},
        {"ratio": False},
        {"sizes": [1, True]},
        {"weights": {"a": False}},
        {"ratio": float("inf")},
        {"ratio": float("nan")},
    ):
        with pytest.raises(ValidationError):
            Settings.model_validate(bad)
    ok = Settings.model_validate(
        {"count": 3, "ratio": 2, "sizes": [1, 2], "weights": {"a": 0.5}, "flag_or_level": True, "enabled": False}
    )
    assert ok.count == 3 and ok.flag_or_level is True and ok.enabled is False

    class Unbounded(PluginConfig):
        model_config = ConfigDict(allow_inf_nan=True)
        limit: float = Field(0.0, description="may be .inf")

    assert Unbounded.model_validate({"limit": float("inf")}).limit == float("inf")
