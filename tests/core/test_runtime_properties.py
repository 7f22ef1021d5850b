"""Properties of the runtime a line PC relies on."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import numpy as np

from inspector_core import Detector, Frame, FrameSource, PluginConfig, hookimpl
from inspector_core.plugins import load
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
    cfg = {"source": {"type": "one_frame"},
           "steps": [{"detector": "spy", "roi": {"x": 100, "y": 50, "width": 200, "height": 100}}]}
    run_station(cfg, tmp_path, registry=reg)
    (view,) = SEEN
    assert view.shape == (100, 200)
    assert np.shares_memory(view, FRAME)
    assert view.__array_interface__["data"][0] == FRAME[50:, 100:].__array_interface__["data"][0]


def test_station_runtime_never_imports_torch(tmp_path):
    station = tmp_path / "s.yaml"
    station.write_text(f"name: s\nsource: {{type: synthetic, config: {{count: 3}}}}\n"
                       f"steps: [{{detector: bright_spot}}]\nstore: {{url: 'sqlite:///{tmp_path}/s.db'}}\n")
    code = ("import sys\nfrom inspector_core.cli import main\n"
            "try:\n    main(['run', sys.argv[1], '--quiet'])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('TORCH' if 'torch' in sys.modules or 'anomalib' in sys.modules else 'NO-TORCH')\n")
    out = subprocess.run([sys.executable, "-c", code, str(station)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NO-TORCH")
