"""The pytest kit for plugin authors (and for Inspector's own tests).

Installed as a pytest plugin (entry point ``pytest11``), so in a plugin's own test suite::

    from inspector_core.testing import check_detector, run_station

    def test_conforms():
        check_detector(MyDetector)                      # the contract, asserted

    def test_in_a_station(tmp_path):
        result = run_station({"source": {"type": "synthetic", "config": {"count": 20}},
                              "steps": [{"detector": "my_detector"}]}, tmp_path)
        assert result.verdicts()["FAIL"] > 0

``run_station`` runs a real station (the same runtime as ``inspector run``) on a SQLite store
in ``tmp_path`` and reads back what it recorded.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from inspector_core.contract import Calibration, Detector, Finding, PluginConfig, View
from inspector_core.plugins import Registry, load
from inspector_core.runtime.config import load_station
from inspector_core.runtime.station import StationRuntime, Tally
from inspector_core.store import Store, schema

__all__ = ["StationResult", "check_detector", "run_station"]


@dataclasses.dataclass
class StationResult:
    """What a station run recorded."""

    station_file: Path
    db_url: str
    tally: Tally
    run_id: int

    def session(self) -> Session:
        return Session(Store(self.db_url).engine)

    def inspections(self) -> list[schema.Inspection]:
        """Every inspection of this run, in capture order, with steps, defects and crops loaded."""
        with self.session() as s:
            rows = s.scalars(
                select(schema.Inspection)
                .where(schema.Inspection.run_id == self.run_id)
                .order_by(schema.Inspection.seq)
                .options(
                    selectinload(schema.Inspection.steps),
                    selectinload(schema.Inspection.defects).selectinload(schema.Defect.crop),
                )
            ).all()
            s.expunge_all()
            return list(rows)

    def verdicts(self) -> Counter[str]:
        return Counter(i.verdict for i in self.inspections())


def run_station(
    config: dict[str, Any] | str | Path,
    tmp_path: Path,
    *,
    limit: int | None = None,
    registry: Registry | None = None,
    db_url: str | None = None,
) -> StationResult:
    """Run a station from a config dict (written to ``tmp_path/station.yaml``) or a file.

    A dict may leave out ``name`` and ``store``: they default to ``test`` and a SQLite file in
    ``tmp_path``."""
    if isinstance(config, dict):
        config = dict(config)
        config.setdefault("name", "test")
        config.setdefault("store", {})
        config["store"] = {
            **config["store"],
            "url": db_url or config["store"].get("url") or f"sqlite:///{tmp_path / 'inspector.db'}",
        }
        path = tmp_path / "station.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    else:
        path = Path(config)
    reg = registry or load()
    station = load_station(path, reg)
    runtime = StationRuntime(station, reg, limit=limit)
    tally = runtime.run()
    assert runtime.run_id is not None
    return StationResult(path, station.store_url, tally, runtime.run_id)


def _example_images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    gray = (rng.normal(128, 10, (240, 320))).clip(0, 255).astype(np.uint8)
    color = np.dstack([gray, gray, gray]).copy()
    tall = (rng.normal(90, 20, (301, 97))).clip(0, 255).astype(np.uint8)
    flat = np.full((64, 64), 200, np.uint8)
    return [gray, color, tall, flat]


def check_detector(
    cls: type[Detector],
    config: PluginConfig | dict[str, Any] | None = None,
    images: list[np.ndarray] | None = None,
    tmp_path: Path | None = None,
) -> None:
    """Assert that ``cls`` keeps the detector contract: class attributes, a typed config whose
    fields are documented, findings inside the view with scores in [0, 1] and declared kinds,
    deterministic results, gray and colour frames of odd sizes, no writes into the view."""
    assert isinstance(getattr(cls, "name", None), str) and cls.name, "Detector.name must be a non-empty string"
    assert cls.kinds and all(isinstance(k, str) for k in cls.kinds), "Detector.kinds must list the kinds it emits"
    assert issubclass(cls.Config, PluginConfig), "Detector.Config must subclass inspector_core.PluginConfig"
    undocumented = [n for n, f in cls.Config.model_fields.items() if not f.description]
    assert not undocumented, f"{cls.name}: Config fields without a description: {undocumented}"
    if config is None:
        cfg = cls.Config()
    elif isinstance(config, BaseModel):
        cfg = config
    else:
        cfg = cls.Config.model_validate(config)
    with pytest.raises(Exception):  # noqa: B017,PT011 - unknown keys must be refused, whatever the error type
        cls.Config.model_validate({"surely_not_a_field": 1})
    det = cls(cfg, station_dir=tmp_path or Path.cwd())
    det.warm_up(None)
    for image in images or _example_images():
        for cal in (Calibration(None), Calibration(0.1)):
            before = image.copy()
            view = View(image, "check", (0, 0), cal)
            first = det.inspect(view)
            second = det.inspect(view)
            assert np.array_equal(before, image), f"{cls.name}: inspect() wrote into the view"
            assert isinstance(first, list), f"{cls.name}: inspect() must return a list"
            assert [(f.kind, f.box, round(f.score, 6)) for f in first] == [
                (f.kind, f.box, round(f.score, 6)) for f in second
            ], f"{cls.name}: not deterministic"
            h, w = image.shape[:2]
            for f in first:
                assert isinstance(f, Finding)
                assert f.kind in cls.kinds, f"{cls.name}: kind {f.kind!r} not declared in kinds"
                assert 0.0 <= f.score <= 1.0
                x, y, bw, bh = f.box
                assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h, (
                    f"{cls.name}: box {f.box} outside the {w}x{h} view"
                )
                assert f.message, f"{cls.name}: findings need a message for the operator"
                if cal.mm_per_px is None:
                    assert not any(k.endswith("_mm") for k in f.measurements), (
                        f"{cls.name}: mm measurements without a calibration"
                    )
    det.close()


@pytest.fixture
def inspector_station(tmp_path: Path):
    """``inspector_station(config_dict, limit=None)`` runs a station in ``tmp_path``."""

    def run(config: dict[str, Any], limit: int | None = None) -> StationResult:
        return run_station(config, tmp_path, limit=limit)

    return run
