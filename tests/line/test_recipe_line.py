"""Recipes on a line (issue 14): the PLC selects the product. A real pymodbus client sends the
product code with each trigger and writes the recipe register; a real asyncua client calls
SelectRecipe / PrepareProduct; the test reads which recipe the store says each part ran under."""

from __future__ import annotations

import asyncio
import time

import pytest
from inspector_line import modbus as m
from inspector_line.simulate import ModbusPlc

from tests.line.conftest import rows, write_station

RECIPES = """\
recipes:
  small:
    products: ["1"]
  large:
    products: ["2", "LARGE-B"]
    steps:
      paced: {config: {delay_ms: 2}, roi: {x: 40, y: 30, width: 200, height: 150}}
"""


def _wait(what, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def _by_counter(db) -> dict[int, tuple]:
    got = rows(
        db,
        "SELECT l.counter, i.recipe, i.recipe_hash, i.verdict, i.error FROM line_results l "
        "JOIN inspections i ON i.uid = l.inspection_uid",
    )
    return {r[0]: r[1:] for r in got}


MODBUS = """\
line:
  protocol: modbus
  config: {host: 127.0.0.1, port: 0}
  deadline_ms: 3000
"""


def test_the_product_code_with_a_modbus_trigger_and_the_recipe_register_select_the_recipe(tmp_path, running):
    st = running(write_station(tmp_path, line=MODBUS + RECIPES, detector="{delay_ms: 1}"))
    _wait(lambda: hasattr(st.runtime, "_control"))  # recipes started, the PLC's requests taken
    plc = ModbusPlc("127.0.0.1", st.port)
    try:
        wanted: dict[int, str | None] = {}

        def part(product: int, expect: str | None) -> None:
            c = plc.trigger(f"P-{product}-{len(wanted)}", product=product)
            wanted[c] = expect
            _wait(lambda: c in plc.ring())
            plc.acknowledge(c)

        # From the start the PLC reads the start recipe's first product code, not 0 ("changing over").
        _wait(lambda: plc.read(m.RECIPE_STATE, 1)[0] == 1)
        part(0, "small")  # no product code: the active recipe (the first)
        part(2, "large")  # the product code sent with the trigger selects its recipe ...
        part(0, "large")  # ... which is then the active one
        part(1, "small")
        part(7, None)  # a code no recipe lists: the part is ERROR, never PASS
        # The recipe register: a changeover asked for on its own, acknowledged in RECIPE_STATE.
        plc.write(m.RECIPE, [2])
        _wait(lambda: plc.read(m.RECIPE_STATE, 1)[0] == 2)
        assert st.runtime.recipe == "large"
        part(0, "large")
        plc.write(m.RECIPE, [9])  # no recipe lists 9: refused, the active one stays
        _wait(lambda: plc.read(m.RECIPE_STATE, 1)[0] == m.RECIPE_REFUSED)
        assert st.runtime.recipe == "large"
        part(0, "large")
        st.runtime.select_recipe("small")  # not the PLC's request: RECIPE_STATE follows it too
        _wait(lambda: plc.read(m.RECIPE_STATE, 1)[0] == 1)
        part(0, "small")
    finally:
        plc.close()
    st.stop()
    got = _by_counter(tmp_path / "line.db")
    assert sorted(got) == sorted(wanted)
    for counter, expect in wanted.items():
        recipe, recipe_hash, verdict, error = got[counter]
        assert recipe == expect, (counter, got[counter])
        if expect is None:
            assert verdict == "ERROR" and "product code '7' selects no recipe" in error
        else:
            assert verdict == "PASS" and recipe_hash == st.station.recipes[expect].recipe_hash
    kinds = [k for (k,) in rows(tmp_path / "line.db", "SELECT kind FROM events WHERE kind LIKE '%recipe%'")]
    assert kinds.count("recipe_changeover") == 4 and "recipe_refused" in kinds, kinds


OPCUA = """\
line:
  protocol: opcua
  config: {host: 127.0.0.1, port: 0, namespace_uri: "urn:inspector:recipes"}
  deadline_ms: 5000
"""


def test_an_opcua_client_selects_recipes_and_the_parts_after_run_under_them(tmp_path, running):
    pytest.importorskip("asyncua", reason="the OPC UA link needs the plugins/line[opcua] extra")
    from asyncua import Client, ua
    from inspector_line.opcua_nodes import MV_URI

    st = running(write_station(tmp_path, line=OPCUA + RECIPES, detector="{delay_ms: 1}"))
    _wait(lambda: hasattr(st.runtime, "_control"))  # recipes started, the PLC's requests taken
    endpoint = st.runtime._line.link.endpoint
    answers: dict[str, object] = {}

    async def plc() -> None:
        client = Client(endpoint, timeout=30)
        await client.connect()
        try:
            mv = await client.get_namespace_index(MV_URI)
            ns = await client.get_namespace_index("urn:inspector:recipes")
            vs = await client.nodes.objects.get_child(f"{ns}:VisionSystem")
            recipes = await vs.get_child(f"{mv}:RecipeManagement")
            select = await recipes.get_child(f"{ns}:SelectRecipe")
            prepare = await recipes.get_child(f"{mv}:PrepareProduct")
            active = await recipes.get_child(f"{ns}:ActiveRecipe")
            trigger = await vs.get_child(f"{ns}:Trigger")

            async def part(counter: int, product: str = "") -> None:
                await vs.call_method(trigger, ua.Variant(counter, ua.VariantType.UInt32), f"P{counter}", product)

            end = time.monotonic() + 10  # the start recipe, shown from the line thread, not ""
            while (shown := await active.read_value()) == "" and time.monotonic() < end:
                await asyncio.sleep(0.02)
            answers["active_at_start"] = shown
            await part(1)
            answers["select"] = await recipes.call_method(select, "large")
            answers["active"] = await active.read_value()
            answers["runtime"] = st.runtime.recipe
            await part(2)
            answers["unknown"] = await recipes.call_method(select, "medium")
            answers["after_unknown"] = st.runtime.recipe
            await part(3)
            answers["prepare"] = await recipes.call_method(prepare, "1")  # a product code of small
            answers["active_after_prepare"] = await active.read_value()  # the recipe, not the code
            await part(4)
            await part(5, "LARGE-B")  # the product code with the trigger
            # A changeover the PLC did not ask for (the command line's) shows in ActiveRecipe too.
            await asyncio.get_running_loop().run_in_executor(None, st.runtime.select_recipe, "small")
            end = time.monotonic() + 10
            while await active.read_value() != "small":
                assert time.monotonic() < end, "ActiveRecipe did not follow the changeover"
                await asyncio.sleep(0.01)
        finally:
            await client.disconnect()

    asyncio.run(plc())
    _wait(lambda: len(rows(tmp_path / "line.db", "SELECT 1 FROM line_results WHERE inspection_uid IS NOT NULL")) == 5)
    st.stop()
    assert answers == {
        "active_at_start": "small",
        "select": 0,
        "active": "large",
        "runtime": "large",
        "unknown": -1,
        "after_unknown": "large",
        "prepare": ["1", 0],
        "active_after_prepare": "small",
    }
    got = _by_counter(tmp_path / "line.db")
    assert {c: r[0] for c, r in got.items()} == {1: "small", 2: "large", 3: "large", 4: "small", 5: "large"}
    assert all(r[2] == "PASS" for r in got.values())
    refused = rows(tmp_path / "line.db", "SELECT message FROM events WHERE kind = 'line_recipe_refused'")
    assert refused and "no recipe 'medium' (recipes: small, large)" in refused[0][0]
