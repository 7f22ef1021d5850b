"""Properties of the runtime a line PC relies on."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as hs

from inspector_core import Detector, Finding, Frame, FrameSource, PluginConfig, hookimpl
from inspector_core.plugins import load
from inspector_core.runtime.config import Step
from inspector_core.runtime.steps import FindingError, check_findings
from inspector_core.testing import run_station

FRAME = np.zeros((480, 640), np.uint8)
SEEN: list[np.ndarray] = []


class OneFrame(FrameSource):
    name = "one_frame"
    Config = PluginConfig

    def frames(self):
        yield Frame("only", FRAME, datetime.now(UTC))


class Spy(Detector):
    name = "spy"
    kinds = ("spy",)

    def inspect(self, view):
        SEEN.append(view.image)
        return []


class P:
    @staticmethod
    @hookimpl
    def inspector_register_sources(register):
        register(OneFrame)

    @staticmethod
    @hookimpl
    def inspector_register_detectors(register):
        register(Spy)


def test_detectors_get_a_view_of_their_roi_not_a_copy(tmp_path):
    reg = load(entry_points=[], extra=[("p", P)])
    cfg = {
        "source": {"type": "one_frame"},
        "steps": [{"detector": "spy", "roi": {"x": 100, "y": 50, "width": 200, "height": 100}}],
    }
    run_station(cfg, tmp_path, registry=reg)
    (view,) = SEEN
    assert view.shape == (100, 200)
    assert np.shares_memory(view, FRAME)
    assert view.__array_interface__["data"][0] == FRAME[50:, 100:].__array_interface__["data"][0]


def test_station_runtime_never_imports_torch(tmp_path):
    station = tmp_path / "s.yaml"
    station.write_text(
        f"name: s\nsource: {{type: synthetic, config: {{count: 3}}}}\n"
        f"steps: [{{detector: bright_spot}}]\nstore: {{url: 'sqlite:///{tmp_path}/s.db'}}\n"
    )
    code = (
        "import sys\nfrom inspector_core.cli import main\n"
        "try:\n    main(['run', sys.argv[1], '--quiet'])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('TORCH' if 'torch' in sys.modules or 'anomalib' in sys.modules else 'NO-TORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(station)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NO-TORCH")


# ---------------------------------------------------------------------------- what a detector returns

_number = hs.one_of(
    hs.floats(allow_nan=True, allow_infinity=True), hs.integers(-(2**70), 2**70), hs.just("1"), hs.none(), hs.booleans()
)


@settings(max_examples=300, deadline=None)
@given(
    score=_number,
    box=hs.lists(_number, min_size=3, max_size=5),
    size=_number,
    measure=_number,
    view=hs.tuples(hs.integers(1, 500), hs.integers(1, 500)),
)
def test_checked_findings_are_always_storable_and_inside_the_view(score, box, size, measure, view):
    """Whatever a detector puts in a Finding, the host either refuses it (the part is ERROR) or
    keeps a finite score in [0, 1] and an integer box inside the view: never another exception,
    never a NaN that could pass a part."""
    f = Finding("spy", 0.5, (0, 0, 1, 1), "m")
    for name, value in (
        ("score", score),
        ("box", tuple(box)),
        ("size_px", size),
        ("measurements", {"length_px": measure}),
    ):
        object.__setattr__(f, name, value)
    step = Step(0, "spy", Spy, Spy.Config(), None, 100.0)
    try:
        kept = check_findings([f], step, view)
    except FindingError:
        return
    for g in kept:
        assert isinstance(g.score, float) and 0.0 <= g.score <= 1.0
        x, y, w, h = g.box
        assert all(type(v) is int for v in g.box)
        assert x >= 0 and y >= 0 and w >= 0 and h >= 0 and x + w <= view[1] and y + h <= view[0]
        assert g.size_px is None or (g.size_px == g.size_px and abs(g.size_px) != float("inf"))
        assert all(v == v and abs(v) != float("inf") for v in g.measurements.values())
