"""The kit's host: plugins registered without installing them, a station run on given images,
and what the store recorded, read back under the names of docs/schema.md. Also the contract
additions a station sees through it: CannotJudge, report_floor per step, rules vs kinds."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from pydantic import Field

from inspector_core import CannotJudge, Detector, Finding, PluginConfig, View, hookimpl
from inspector_core.runtime.config import ConfigError
from inspector_core.store import schema
from inspector_core.store.view_records import InspectionView
from inspector_core.testing import (
    Host,
    StoredCrop,
    StoredDefect,
    StoredInspection,
    StoredStepResult,
    StoredView,
    run_station,
)

ROOT = Path(__file__).resolve().parents[2]


class SpotConfig(PluginConfig):
    score: float = Field(0.9, ge=0, le=1, description="score given to every spot found")


class Spot(Detector):
    """Saturated pixels -> one finding at their bounding box; a black view cannot be judged;
    a view whose first pixel is 13 crashes (a bug)."""

    name = "spot"
    kinds = ("spot",)
    Config = SpotConfig

    def inspect(self, view: View) -> list[Finding]:
        gray = view.gray
        if gray.max() == 0:
            raise CannotJudge("the view is black: is the light on?")
        if gray[0, 0] == 13:
            raise RuntimeError("a bug")
        ys, xs = np.nonzero(gray >= 250)
        if not len(xs):
            return []
        box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
        assert isinstance(self.config, SpotConfig)
        return [Finding("spot", self.config.score, box, "saturated spot", size_px=float(max(box[2:])))]


class SpotPlugin:
    """A plugin that is not installed: an object with hook implementations."""

    @staticmethod
    @hookimpl
    def inspector_register_detectors(register):
        register(Spot)


def part(spot: tuple[int, int] | None = None, fill: int = 100) -> np.ndarray:
    image = np.full((60, 80), fill, np.uint8)
    if spot is not None:
        x, y = spot
        image[y : y + 5, x : x + 4] = 255
    return image


def test_a_plugin_not_installed_runs_in_a_station_and_the_results_read_as_the_schema(inspector_host: Host):
    inspector_host.register(SpotPlugin)
    assert "spot" in inspector_host.registry.detectors
    result = inspector_host.run(
        {"steps": [{"detector": "spot", "roi": {"x": 10, "y": 0, "width": 70, "height": 60}}]},
        images={"good": part(), "bad": part((50, 20)), "colour": np.dstack([part((30, 40))] * 3)},
    )
    rows = result.inspections()
    assert [(r.part_id, r.verdict) for r in rows] == [("good", "PASS"), ("bad", "FAIL"), ("colour", "FAIL")]
    bad = rows[1]
    assert isinstance(bad, StoredInspection) and bad.n_defects == 1 and bad.error is None
    (step,) = bad.step_results
    assert (step.step, step.detector, step.status, step.n_findings, step.score) == ("spot", "spot", "ok", 1, 0.9)
    (d,) = bad.defects
    assert (d.kind, d.failed, d.box, d.size_px) == ("spot", True, (50, 20, 4, 5), 5.0)  # frame pixels, ROI shifted
    assert d.crop is not None and d.crop.image().shape[:2] == (d.crop.height, d.crop.width)
    assert result.verdicts() == {"PASS": 1, "FAIL": 2}
    # The host had only this plugin and the kit's source: nothing installed was loaded.
    assert result.registry is not None and set(result.registry.detectors) == {"spot"}


def test_the_stored_objects_have_the_columns_of_docs_schema_md():
    doc = (ROOT / "docs" / "schema.md").read_text()
    tables = {
        StoredInspection: (schema.Inspection, "inspections", {"step_results", "defects", "views"}),
        StoredStepResult: (schema.StepResult, "step_results", set()),
        StoredDefect: (schema.Defect, "defects", {"crop"}),
        StoredCrop: (schema.Crop, "crops", set()),
        StoredView: (InspectionView, "inspection_views", set()),
    }
    for cls, (orm, table, children) in tables.items():
        section = doc.split(f"### `{table}`", 1)[1].split("\n### ", 1)[0]
        documented = {n.strip() for row in re.findall(r"^\| ([^|]+) \|", section, re.M) for n in row.split(",")}
        fields = {f.name for f in dataclasses.fields(cls)} - children
        assert fields <= set(orm.__table__.columns.keys()), (cls.__name__, fields - set(orm.__table__.columns.keys()))
        assert fields <= documented, f"{cls.__name__}: {sorted(fields - documented)} not in docs/schema.md `{table}`"


def test_cannot_judge_is_an_error_of_its_own_and_a_crash_another_never_pass(inspector_host: Host):
    inspector_host.register(SpotPlugin)
    crash = part()
    crash[0, 0] = 13
    result = inspector_host.run(
        {"steps": [{"detector": "spot"}]}, images={"black": part(fill=0), "crash": crash, "good": part()}
    )
    black, crashed, good = result.inspections()
    assert (black.verdict, black.step_results[0].status, black.error_step) == ("ERROR", "cannot_judge", "spot")
    assert black.error == "step spot: cannot judge: the view is black: is the light on?"
    assert (crashed.verdict, crashed.step_results[0].status) == ("ERROR", "error")
    assert crashed.error == "step spot: RuntimeError: a bug"
    assert good.verdict == "PASS"


def test_report_floor_is_set_per_step_in_the_station_file(inspector_host: Host):
    inspector_host.register(SpotPlugin)
    images = {"faint": part((10, 10))}
    low = {"detector": "spot", "config": {"score": 0.2}}
    # The detector's own floor (0.1): a 0.2 candidate is stored, not failed.
    (row,) = inspector_host.run({"steps": [low]}, images=images).inspections()
    assert row.verdict == "PASS" and [(d.score, d.failed) for d in row.defects] == [(0.2, False)]
    # The station's floor for this step (0.3): not stored.
    (row,) = inspector_host.run({"steps": [{**low, "report_floor": 0.3}]}, images=images).inspections()
    assert row.verdict == "PASS" and row.defects == [] and row.step_results[0].n_findings == 0


def test_a_floor_above_the_rule_would_pass_failing_parts_and_is_refused(inspector_host: Host):
    inspector_host.register(SpotPlugin)
    with pytest.raises(ConfigError) as info:
        inspector_host.run({"steps": [{"detector": "spot", "report_floor": 0.6}]}, images=[part()])
    assert info.value.problems == [
        "steps[0].report_floor: 0.6 is above default_rule.min_score 0.5: findings of kind 'spot' scoring between "
        "them would be dropped instead of failing the part; set steps[0].report_floor to at most min_score"
    ]

    class HighFloor(Spot):
        name = "high_floor"
        report_floor = 0.7

    inspector_host.register(
        (
            "high",
            type(
                "P", (), {"inspector_register_detectors": staticmethod(hookimpl(lambda register: register(HighFloor)))}
            ),
        )
    )
    with pytest.raises(ConfigError) as info:
        inspector_host.run(
            {"steps": [{"detector": "high_floor"}], "rules": {"spot": {"min_score": 0.6}}}, images=[part()]
        )
    assert info.value.problems == [
        "steps[0]: report_floor 0.7 of detector 'high_floor' is above rules.spot.min_score 0.6: findings of kind "
        "'spot' scoring between them would be dropped instead of failing the part; set steps[0].report_floor to at "
        "most min_score"
    ]
    # The station lowers it: accepted.
    result = inspector_host.run(
        {"steps": [{"detector": "high_floor", "report_floor": 0.5}], "rules": {"spot": {"min_score": 0.6}}},
        images=[part((5, 5))],
    )
    assert result.verdicts() == {"FAIL": 1}
    with pytest.raises(ConfigError, match=r"steps\[0\].report_floor: Input should be less than or equal to 1"):
        inspector_host.run({"steps": [{"detector": "spot", "report_floor": 1.5}]}, images=[part()])


def test_rules_are_keyed_by_kind_and_a_key_no_step_emits_is_refused(inspector_host: Host):
    class Glare(Spot):
        name = "glare_check"
        kinds = ("glare",)

    class P:
        @staticmethod
        @hookimpl
        def inspector_register_detectors(register):
            register(Glare)

    inspector_host.register(P)
    with pytest.raises(ConfigError) as info:
        inspector_host.run({"steps": [{"detector": "glare_check"}], "rules": {"glare_check": {}}}, images=[part()])
    assert info.value.problems == [
        "rules.glare_check: no step emits findings of kind 'glare_check' (the steps emit: glare), so this rule "
        "would never apply; 'glare_check' is a step's name: rules are keyed by finding kind, and step "
        "'glare_check' emits glare"
    ]


def test_a_given_plugin_that_fails_to_register_is_named(tmp_path):
    class Typo:
        @staticmethod
        @hookimpl
        def inspector_register_detector(register):  # missing 's'
            register(Spot)

    with pytest.raises(AssertionError, match="plugins that did not register: Typo: .*inspector_register_detector"):
        run_station({"steps": [{"detector": "spot"}]}, tmp_path, images=[part()], plugins=[Typo])


def test_an_installed_plugin_given_again_is_not_a_duplicate(tmp_path):
    import inspector_example_thirdparty as thirdparty  # installed in the test venv (tests/thirdparty_plugin)

    host = Host(tmp_path, [thirdparty], installed=True)
    assert host.registry.plugins["inspector_example_thirdparty"].error is None
    result = host.run({"steps": [{"detector": "bright_spot"}]}, images=[part((20, 20))])
    assert result.verdicts() == {"FAIL": 1}


def test_images_and_a_source_are_not_both_given(tmp_path):
    with pytest.raises(TypeError, match="images= or a source"):
        run_station({"source": {"type": "synthetic"}, "steps": [{"detector": "spot"}]}, tmp_path, images=[part()])
