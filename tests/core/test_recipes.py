"""Recipes (issue 14): one station file, several products. The merge and its validation errors,
then real runs: a changeover mid-stream with parts in flight, a refused recipe, the control
channel ``inspector recipe`` talks to, and the new columns on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import Field

from inspector_core import Detector, Finding, PluginConfig, View, hookimpl
from inspector_core.plugins import load
from inspector_core.runtime.config import ConfigError, load_station
from inspector_core.runtime.line import RecipeRefused
from inspector_core.runtime.station import StationRuntime


class TagConfig(PluginConfig):
    tag: str = "base"
    delay_ms: float = Field(0, ge=0)
    fail: bool = False


class Tagger(Detector):
    """Says which config inspected the part: one finding whose message is ``tag``."""

    name = "tagger"
    kinds = ("tag",)
    Config = TagConfig
    started: list[str] = []

    def warm_up(self, example: Any = None) -> None:
        assert isinstance(self.config, TagConfig)
        time.sleep(0.05)  # a model being loaded: the changeover must wait for this, not a part
        Tagger.started.append(self.config.tag)

    def inspect(self, view: View) -> list[Finding]:
        cfg = self.config
        assert isinstance(cfg, TagConfig)
        time.sleep(cfg.delay_ms / 1000)
        return [Finding("tag", 0.9 if cfg.fail else 0.2, (0, 0, 4, 4), message=cfg.tag)]


class _Plugin:
    @staticmethod
    @hookimpl
    def inspector_register_detectors(register: Any) -> None:
        register(Tagger)


@pytest.fixture(scope="module")
def registry():
    return load(extra=[("recipetest", _Plugin)])


BASE = """\
name: recipes
source:
  type: synthetic
  config: {{count: {count}, width: 320, height: 240, color: false}}
steps:
  - detector: tagger
    name: look
    roi: {{x: 0, y: 0, width: 160, height: 120}}
    config: {{tag: a, delay_ms: {delay}}}
  - detector: tagger
    name: side
    config: {{tag: side}}
rules:
  tag: {{min_score: 0.5}}
workers: 2
store:
  url: sqlite:///recipes.db
"""

RECIPES = """\
recipes:
  a: {}
  b:
    products: ["2", B-100]
    steps:
      look: {config: {tag: b}, roi: {x: 160}}
      side: null
      extra: {detector: tagger, config: {tag: extra}, after: look}
    rules: {tag: {min_score: 0.95}}
"""


def _station(tmp_path: Path, recipes: str = RECIPES, *, count: int = 40, delay: float = 0, extra: str = "") -> Path:
    path = tmp_path / "recipes.yaml"
    path.write_text(BASE.format(count=count, delay=delay) + textwrap.dedent(recipes) + extra)
    return path


# ---------------------------------------------------------------------------- the merge


def test_each_recipe_resolves_into_a_whole_station_with_its_overrides_merged(tmp_path, registry):
    st = load_station(_station(tmp_path), registry)
    assert st.recipe == "a" and list(st.recipes) == ["a", "b"]
    a, b = st.recipes["a"], st.recipes["b"]
    assert [s.name for s in a.steps] == ["look", "side"]
    assert [s.name for s in b.steps] == ["look", "extra"]  # side removed, extra added after look
    look = b.steps[0]
    assert look.config.tag == "b" and look.config.delay_ms == 0  # config merged key by key
    assert (look.roi.x, look.roi.y, look.roi.width, look.roi.height) == (160, 0, 160, 120)  # roi too
    assert b.spec.rules["tag"].min_score == 0.95 and a.spec.rules["tag"].min_score == 0.5
    assert a.recipe_hash != b.recipe_hash and len(a.recipe_hash) == 64
    # The hash is of the recipe's resolved config: another recipe's edit does not change it.
    other = _station(tmp_path, RECIPES.replace("min_score: 0.95", "min_score: 0.9"))
    again = load_station(other, registry)
    assert again.recipes["a"].recipe_hash == a.recipe_hash
    assert again.recipes["b"].recipe_hash != b.recipe_hash
    # `recipe:` picks the active one at start.
    chosen = load_station(_station(tmp_path, extra="recipe: b\n"), registry)
    assert chosen.recipe == "b" and [s.name for s in chosen.steps] == ["look", "extra"]


@pytest.mark.parametrize(
    ("recipes", "extra", "wanted"),
    [
        (  # a recipe's own bad value is named by the recipe
            RECIPES.replace("min_score: 0.95", "min_score: 1.5"),
            "",
            ["recipe b: rules.tag.min_score: Input should be less than or equal to 1 (got 1.5)"],
        ),
        (  # a recipe's ROI checked against the frame like any station's
            RECIPES.replace("roi: {x: 160}", "roi: {x: 200}"),
            "",
            ["recipe b: steps[0].roi: x=200, y=0, width=160, height=120 is not inside the 320x240 px frame"],
        ),
        (
            RECIPES.replace("side: null", "sied: null"),
            "",
            ["recipes.b.steps.sied: null removes a step, but the chain has no step named 'sied' (look, side)"],
        ),
        (
            RECIPES.replace("look: {config", "lok: {config"),
            "",
            ["recipes.b.steps.lok: the chain has no step named 'lok' (steps: look, side); did you mean 'look'?"],
        ),
        (
            RECIPES.replace("after: look", "after: front"),
            "",
            ["recipes.b.steps.extra.after: no step named 'front' to put it after (steps: look)"],
        ),
        (RECIPES, "recipe: c\n", ["recipe: no recipe named 'c' (recipes: a, b)"]),
        (
            RECIPES.replace("a: {}", "a: {products: [B-100]}"),
            "",
            ["recipes.b.products: 'B-100' already selects recipe 'a'; give each code once"],
        ),
        (
            RECIPES.replace("a: {}", "a: {store: {url: 'sqlite:///x.db'}}"),
            "",
            ["recipes.a.store: unknown key (not allowed here; check its spelling)"],
        ),
    ],
)
def test_validation_checks_every_recipe_and_names_it(tmp_path, registry, recipes, extra, wanted):
    with pytest.raises(ConfigError) as err:
        load_station(_station(tmp_path, recipes, extra=extra), registry)
    text = str(err.value)
    for w in wanted:
        assert w in text, text


def test_a_problem_of_every_recipe_is_said_once_and_validate_lists_each_recipe(tmp_path, registry, monkeypatch):
    path = _station(tmp_path)
    bad = path.read_text().replace("tag: a, delay_ms", "tag: a, nosuch: 1, delay_ms")
    path.write_text(bad)
    with pytest.raises(ConfigError) as err:
        load_station(path, registry)
    assert err.value.problems == ["steps[0].config.nosuch: unknown key (not allowed here; check its spelling)"]

    from inspector_core import cli

    monkeypatch.setattr(cli, "_registry", registry)
    out = CliRunner().invoke(cli.main, ["validate", str(_station(tmp_path))])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[1].startswith("  recipe a: ok (2 steps (look, side); hash ")
    assert lines[1].endswith("; active at start)")
    assert lines[2].startswith("  recipe b: ok (2 steps (look, extra); hash ")


# ---------------------------------------------------------------------------- runs


def _run(st: Any, registry: Any) -> tuple[StationRuntime, threading.Thread, list[BaseException]]:
    rt = StationRuntime(st, registry)
    failure: list[BaseException] = []

    def target() -> None:
        try:
            rt.run()
        except BaseException as exc:  # noqa: BLE001
            failure.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    for _ in range(600):
        if hasattr(rt, "_control") or failure:  # recipes started (preloads too), control channel served
            break
        time.sleep(0.01)
    assert not failure, failure
    return rt, t, failure


def _rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute(sql).fetchall()


def test_a_changeover_mid_stream_keeps_the_parts_in_flight_on_their_recipe(tmp_path, registry):
    path = _station(tmp_path, count=40, delay=15)
    st = load_station(path, registry)
    Tagger.started.clear()
    rt, thread, failure = _run(st, registry)
    while rt._seq < 10:
        time.sleep(0.005)
    in_flight = rt._pipeline.in_flight() + rt._queue.qsize()
    asked = datetime.now(UTC).replace(tzinfo=None)
    seconds = rt.select_recipe("b", by="the test")
    switched = datetime.now(UTC).replace(tzinfo=None)
    assert rt.recipe == "b"
    with pytest.raises(RecipeRefused, match=r"no recipe 'c' \(recipes: a, b\)"):
        rt.select_recipe("c")
    assert rt.recipe == "b"  # a refused recipe changes nothing
    thread.join(60)
    assert not thread.is_alive() and not failure, failure
    assert in_flight > 0  # the switch was asked with parts captured and not yet decided
    # b's new detectors were started and warmed inside the request (look with tag b, extra), not by a part.
    assert sorted(Tagger.started) == ["a", "b", "extra", "side"]
    assert 0.05 <= seconds < 30

    db = tmp_path / "recipes.db"
    got = _rows(
        db,
        "SELECT i.seq, i.recipe, i.recipe_hash, i.verdict, i.decided_at, group_concat(d.message, ',') "
        "FROM inspections i LEFT JOIN defects d ON d.inspection_id = i.id GROUP BY i.id ORDER BY i.id",
    )
    assert [r[0] for r in got] == list(range(40))  # one inspection per frame, committed in capture order
    recipes = [r[1] for r in got]
    first_b = recipes.index("b")
    assert recipes == ["a"] * first_b + ["b"] * (40 - first_b)  # verdicts in order, one switch
    assert 10 <= first_b < 40
    for _seq, recipe, h, verdict, _decided, tags in got:
        assert h == st.recipes[recipe].recipe_hash
        assert sorted(tags.split(",")) == (["a", "side"] if recipe == "a" else ["b", "extra"])
        assert verdict == "PASS"
    # Parts captured before the switch finished under a after it was asked.
    assert any(r[1] == "a" and datetime.fromisoformat(r[4]) > asked for r in got)
    events = _rows(db, "SELECT kind, message FROM events WHERE kind LIKE 'recipe%' ORDER BY id")
    assert [k for k, _ in events] == ["recipe_changeover", "recipe_refused"]
    assert "recipe a -> b (asked by the test): active " in events[0][1] and "2 detector(s) started" in events[0][1]
    assert switched >= asked


def test_a_recipe_can_be_selected_by_its_product_code_and_shares_unchanged_steps(tmp_path, registry):
    recipes = RECIPES.replace("look: {config: {tag: b}, roi: {x: 160}}", "look: {roi: {x: 160}}")
    st = load_station(_station(tmp_path, recipes, count=30, delay=20), registry)
    Tagger.started.clear()
    rt, thread, _ = _run(st, registry)
    rt.select_recipe("B-100")  # a product code of b
    assert rt.recipe == "b"
    thread.join(60)
    # look is the same detector and config in both (only its ROI differs): one instance, shared.
    assert sorted(Tagger.started) == ["a", "extra", "side"]
    assert rt._changeover.changeovers[0]["started"] == 1


def test_the_cli_changes_the_recipe_of_a_running_station(tmp_path, registry, monkeypatch):
    from inspector_core import cli

    monkeypatch.setattr(cli, "_registry", registry)
    path = _station(tmp_path, count=100000, delay=5)
    st = load_station(path, registry)
    rt, thread, failure = _run(st, registry)
    try:
        runner = CliRunner()
        shown = runner.invoke(cli.main, ["recipe", str(path)])
        assert shown.exit_code == 0, shown.output
        assert shown.output == "station recipes: recipe a (recipes: a, b)\n"
        out = runner.invoke(cli.main, ["recipe", str(path), "b"])
        assert out.exit_code == 0, out.output
        assert out.output.startswith("station recipes: recipe b active (") and "ms after the request" in out.output
        assert rt.recipe == "b"
        bad = runner.invoke(cli.main, ["recipe", str(path), "nope"])
        assert bad.exit_code == 1 and "no recipe 'nope' (recipes: a, b)" in bad.output
    finally:
        rt.stop()
        thread.join(60)
    assert not failure, failure
    gone = CliRunner().invoke(cli.main, ["recipe", str(path), "a"])
    assert gone.exit_code == 1 and "station 'recipes' is not running" in gone.output
    events = _rows(tmp_path / "recipes.db", "SELECT message FROM events WHERE kind = 'recipe_changeover'")
    assert len(events) == 1 and "asked by the control channel" in events[0][0]


def test_a_station_without_recipes_refuses_one_and_records_none(tmp_path, registry):
    path = tmp_path / "plain.yaml"
    path.write_text(BASE.format(count=3, delay=0))
    st = load_station(path, registry)
    assert st.recipe is None and st.recipes == {} and st.recipe_hash is None
    rt, thread, _ = _run(st, registry)
    with pytest.raises(RecipeRefused, match="this station has no recipes"):
        rt.select_recipe("a")
    thread.join(60)
    assert _rows(tmp_path / "recipes.db", "SELECT DISTINCT recipe, recipe_hash FROM inspections") == [(None, None)]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_recipe_columns_round_trip(backend, tmp_path, request):
    from sqlalchemy import text

    from inspector_core.store import InspectionRecord, Store

    url = f"sqlite:///{tmp_path / 's.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    store = Store(url)
    station_id, run_id = store.begin_run(
        "st", hostname="h", software_version="0", plugins={}, config_yaml="", config_hash="x", models={}
    )
    now = datetime.now(UTC)
    records = [
        InspectionRecord(f"u{i}", station_id, run_id, i, f"p{i}", now, now, "PASS", 1.0, recipe=r, recipe_hash=h)
        for i, (r, h) in enumerate([("a", "1" * 64), ("b", "2" * 64), (None, None)])
    ]
    store.write(records)
    with store.engine.connect() as c:
        got = c.execute(text("SELECT uid, recipe, recipe_hash FROM inspections ORDER BY seq")).all()
    assert [tuple(r) for r in got] == [("u0", "a", "1" * 64), ("u1", "b", "2" * 64), ("u2", None, None)]
    store.close()


def test_qa_filters_and_splits_by_recipe(tmp_path, registry, monkeypatch):
    """A run with a changeover, then what QA sees: history and stats filtered by recipe, the stats
    split per recipe, the dashboard's API filter."""
    import json

    from fastapi.testclient import TestClient

    from inspector_core import cli
    from inspector_core.qa.web import create_app
    from inspector_core.store import Store

    recipes = RECIPES.replace("rules: {tag: {min_score: 0.95}}", "rules: {tag: {min_score: 0.1}}")  # b fails all
    st = load_station(_station(tmp_path, recipes, count=30, delay=20), registry)  # b starts before the end
    rt, thread, _ = _run(st, registry)
    while rt._seq < 4:
        time.sleep(0.005)
    rt.select_recipe("b")
    thread.join(60)
    db = tmp_path / "recipes.db"
    counts = dict(_rows(db, "SELECT recipe, count(*) FROM inspections GROUP BY recipe"))
    assert set(counts) == {"a", "b"} and sum(counts.values()) == 30
    url = f"sqlite:///{db}"
    monkeypatch.setattr(cli, "_registry", registry)
    runner = CliRunner()
    out = runner.invoke(cli.main, ["history", "--db", url, "--recipe", "b", "--format", "json", "--all"])
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)["rows"]
    assert len(got) == counts["b"] and {r["recipe"] for r in got} == {"b"} and {r["verdict"] for r in got} == {"FAIL"}
    out = runner.invoke(cli.main, ["stats", "--db", url, "--since", "1d", "--format", "json"])
    assert out.exit_code == 0, out.output
    split = {r["recipe"]: r for r in json.loads(out.output)["recipes"]}
    assert split["a"]["parts"] == split["a"]["passed"] == counts["a"] and split["a"]["yield_"] == 1.0
    assert split["b"]["parts"] == split["b"]["failed"] == counts["b"] and split["b"]["yield_"] == 0.0
    assert split["a"]["versions"] == split["b"]["versions"] == 1
    only_b = runner.invoke(cli.main, ["stats", "--db", url, "--since", "1d", "--recipe", "b", "--format", "json"])
    assert [t["parts"] for t in json.loads(only_b.output)["totals"]] == [counts["b"]]
    table = runner.invoke(cli.main, ["stats", "--db", url, "--since", "1d"], env={"COLUMNS": "200"})
    assert "per recipe" in table.output
    client = TestClient(create_app(Store(url, migrate=False).engine), base_url="http://127.0.0.1")
    api = client.get("/api/history", params={"recipe": "a", "limit": 100}).json()
    assert len(api["rows"]) == counts["a"] and {r["recipe"] for r in api["rows"]} == {"a"}
    page = client.get("/inspections", params={"recipe": "b"})
    assert page.status_code == 200 and 'name="recipe" value="b"' in page.text


def test_train_anomaly_takes_the_roi_of_a_recipes_anomaly_step(tmp_path):
    import click
    from inspector_anomaly.cli import _station_roi

    path = tmp_path / "an.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            name: an
            source: {type: synthetic}
            steps:
              - {detector: anomaly, name: look, roi: {x: 10, y: 20, width: 300, height: 200}, config: {model: a.onnx}}
            recipes:
              a: {}
              b: {steps: {look: {roi: {x: 40}, config: {model: b.onnx}}}}
            """
        )
    )
    assert _station_roi(str(path), "b", None, None) == "40,20,300,200"  # the model need not exist yet
    assert _station_roi(str(path), None, None, None) == "10,20,300,200"  # the recipe active at start
    with pytest.raises(click.ClickException, match="no recipe 'c' \\(recipes: a, b\\)"):
        _station_roi(str(path), "c", None, None)
    with pytest.raises(click.ClickException, match="recipe b: no anomaly step named 'side'"):
        _station_roi(str(path), "b", "side", None)


def test_a_preloaded_recipe_is_started_with_the_station(tmp_path, registry):
    st = load_station(_station(tmp_path, RECIPES.replace('products: ["2", B-100]', "preload: true"), count=4), registry)
    Tagger.started.clear()
    rt, thread, _ = _run(st, registry)
    assert sorted(Tagger.started) == ["a", "b", "extra", "side"]  # b's detectors before any request
    rt.select_recipe("b")
    thread.join(60)
    assert rt._changeover.changeovers[0]["started"] == 0  # nothing left to start at the switch
