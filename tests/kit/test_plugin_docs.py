"""The tutorial's detector (docs/plugins.md, "A detector, whole") is real code: it keeps the
contract by the kit's check and fails a part in a station, registered as a plugin module."""

from __future__ import annotations

import re
import types
from pathlib import Path

import numpy as np
import pytest

from inspector_core.testing import check_detector, run_station

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def tutorial_module() -> types.ModuleType:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    (code,) = [b for b in blocks if "class Glare(Detector):" in b]
    module = types.ModuleType("docs_glare")
    exec(compile(code, f"{DOC}:Glare", "exec"), module.__dict__)
    return module


def panel(spot: bool) -> np.ndarray:
    image = np.full((120, 160), 120, np.uint8)
    if spot:
        image[40:50, 60:72] = 255
    return image


def test_the_tutorial_detector_keeps_the_contract_and_fails_a_glare_part(tmp_path):
    module = tutorial_module()
    report = check_detector(module.Glare, {"threshold": 245}, images=[panel(False), panel(True)], tmp_path=tmp_path)
    assert report.kinds == {"glare": 8}
    dark = np.zeros((40, 40), np.uint8)
    result = run_station(
        {"steps": [{"detector": "glare"}]},
        tmp_path,
        images={"good": panel(False), "bad": panel(True), "dark": dark},
        plugins=[module],
    )
    rows = {i.part_id: i for i in result.inspections()}
    assert {p: r.verdict for p, r in rows.items()} == {"good": "PASS", "bad": "FAIL", "dark": "ERROR"}
    assert rows["dark"].step_results[0].status == "cannot_judge"
    (d,) = rows["bad"].failed_defects()
    assert d.box == (60, 40, 12, 10) and d.measurements == {"area_px": 120.0}


def test_the_tutorial_station_validates_and_its_error_example_is_the_real_message(tmp_path):
    import yaml

    from inspector_core.runtime.config import ConfigError, load_station
    from inspector_core.testing import host_registry

    text = DOC.read_text()
    (station,) = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "name: line3" in b]
    (tmp_path / "parts").mkdir()
    path = tmp_path / "line3.yaml"
    path.write_text(station)
    reg = host_registry([tutorial_module()], installed=True)  # the folder source is installed
    st = load_station(path, reg)
    assert [(s.name, s.report_floor, s.budget_ms) for s in st.steps] == [("glare_top", 0.2, 200.0)]

    data = yaml.safe_load(station)
    data["rules"] = {"glare_top": data["rules"]["glare"]}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_station(path, reg)
    (problem,) = info.value.problems
    (shown,) = re.findall(r"^```\n(stations/line3\.yaml: rules\.glare_top.*?)\n```", text, re.M | re.S)
    assert shown == f"stations/line3.yaml: {problem}"
