"""Recipes reviewed as a line engineer uses them (issue 14): every problem of a station file is
said in one `inspector validate`, also when a recipe's override itself is wrong; QA sees on one
inspection's page (and its API) which recipe the part was inspected under."""

from __future__ import annotations

import pytest

from inspector_core.runtime.config import ConfigError, load_station
from tests.core.test_recipes import RECIPES, _rows, _run, _station, registry  # noqa: F401 - the fixture


def test_a_bad_override_does_not_hide_the_other_problems_of_its_recipe(tmp_path, registry):  # noqa: F811
    # Recipe b names a step that is not there (lok) and adds a step with a bad config key: both
    # are said at once (the added step is steps[1] of the recipe as merged: side removed). Before,
    # the merge problem made validation skip recipe b entirely.
    recipes = RECIPES.replace("look: {config", "lok: {config").replace("tag: extra}", "tag: extra, nosuch: 1}")
    with pytest.raises(ConfigError) as err:
        load_station(_station(tmp_path, recipes), registry)
    assert err.value.problems == [
        "recipes.b.steps.lok: the chain has no step named 'lok' (steps: look, side); did you mean 'look'? "
        "to add a step here give its detector",
        "recipe b: steps[1].config.nosuch: unknown key (not allowed here; check its spelling)",
    ]


def test_a_base_problem_every_recipe_has_is_said_once_beside_a_bad_override(tmp_path, registry):  # noqa: F811
    path = _station(tmp_path, RECIPES.replace("side: null", "sied: null"))
    path.write_text(path.read_text().replace("tag: a, delay_ms", "tag: a, nosuch: 1, delay_ms"))
    with pytest.raises(ConfigError) as err:
        load_station(path, registry)
    assert err.value.problems == [
        "recipes.b.steps.sied: null removes a step, but the chain has no step named 'sied' (look, side)",
        "steps[0].config.nosuch: unknown key (not allowed here; check its spelling)",
    ]


def test_one_inspection_says_its_recipe_on_its_page_and_in_its_api(tmp_path, registry):  # noqa: F811
    from fastapi.testclient import TestClient

    from inspector_core.qa.web import create_app
    from inspector_core.store import Store

    st = load_station(_station(tmp_path, count=6, extra="recipe: b\n"), registry)
    _rt, thread, failure = _run(st, registry)
    thread.join(60)
    assert not failure
    db = tmp_path / "recipes.db"
    [(iid, recipe, rhash)] = _rows(db, "SELECT id, recipe, recipe_hash FROM inspections ORDER BY id LIMIT 1")
    assert recipe == "b" and rhash == st.recipes["b"].recipe_hash
    client = TestClient(create_app(Store(f"sqlite:///{db}", migrate=False).engine), base_url="http://127.0.0.1")
    api = client.get(f"/api/inspections/{iid}").json()
    assert (api["recipe"], api["recipe_hash"]) == ("b", rhash)
    page = client.get(f"/inspections/{iid}")
    assert page.status_code == 200
    assert f'<dd id="recipe">b <code title="{rhash}">{rhash[:12]}</code></dd>' in page.text
    # ... and `inspector history`'s table has a recipe column when a listed part has one.
    from click.testing import CliRunner

    from inspector_core import cli

    out = CliRunner().invoke(cli.main, ["history", "--db", f"sqlite:///{db}"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    header = next(line for line in out.output.splitlines() if "verdict" in line)
    assert header.split("┃")[-2].strip() == "recipe", header
    assert sum(line.split("│")[-2].strip() == "b" for line in out.output.splitlines() if "PASS" in line) == 6


def test_a_station_not_running_is_named_with_the_file_to_run(tmp_path, registry, monkeypatch):  # noqa: F811
    # `inspector recipe` from another folder than the station file's: the remedy names the file
    # as it can be run from anywhere, not only its bare name.
    from click.testing import CliRunner

    from inspector_core import cli

    path = _station(tmp_path)
    monkeypatch.setattr(cli, "_registry", registry)
    out = CliRunner().invoke(cli.main, ["recipe", str(path), "b"])
    assert out.exit_code == 1
    assert f"start it with `inspector run {load_station(path, registry).path}`" in out.output


VIEWS = """\
name: views
source: {type: synthetic, config: {count: 2, width: 320, height: 240, color: false}}
views:
  top: {}
  side: {source: {type: synthetic, config: {count: 2, width: 320, height: 240, color: false}}}
steps:
  - {detector: tagger, name: locate_top, view: top}
  - {detector: tagger, name: look_top, view: top, fixture: locate_top, roi: {x: 0, y: 0, width: 80, height: 60}}
  - {detector: tagger, name: locate_side, view: side}
  - {detector: tagger, name: look_side, view: side, fixture: locate_side, roi: {x: 0, y: 0, width: 80, height: 60}}
rules:
  tag: {min_score: 0.5}
store:
  url: sqlite:///views.db
"""


@pytest.mark.parametrize(
    ("old", "new", "wanted"),
    [
        (  # a misspelt view of a fixtured step is named as such, not as a fixture across views
            "view: side, fixture",
            "view: sied, fixture",
            [
                "steps[3].view: 'sied' is not a view of this station (views: top, side); did you mean 'side'?",
            ],
        ),
        (  # a fixture step without its view: the missing view is said, not 'looks at view None'
            "name: locate_side, view: side}",
            "name: locate_side}",
            ["steps[2].view: missing: this station has views (top, side); say which one step 'locate_side' looks at"],
        ),
        (  # a real fixture across views is still refused
            "fixture: locate_side",
            "fixture: locate_top",
            [
                "steps[3].fixture: 'locate_top' looks at view 'top', this step at 'side'; "
                "a pose places a roi only in the image it was found in"
            ],
        ),
    ],
)
def test_a_fixtured_steps_view_mistake_is_named_for_what_it_is(tmp_path, registry, old, new, wanted):  # noqa: F811
    path = tmp_path / "views.yaml"
    assert old in VIEWS
    path.write_text(VIEWS.replace(old, new))
    with pytest.raises(ConfigError) as err:
        load_station(path, registry)
    assert err.value.problems == wanted


def test_a_fixture_naming_no_step_is_said_under_its_own_path(tmp_path, registry):  # noqa: F811
    path = tmp_path / "views.yaml"
    path.write_text(VIEWS.replace("fixture: locate_top", "fixture: locate_tpo"))
    with pytest.raises(ConfigError) as err:
        load_station(path, registry)
    assert err.value.problems == [  # was "steps: steps[1].fixture: ..."
        "steps[1].fixture: 'locate_tpo' is not a step; name an earlier step that publishes the part's pose "
        "(earlier steps: 'locate_top')"
    ]
