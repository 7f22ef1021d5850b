"""A station on a line for the tests: synthetic frames, one detector whose time and verdict the
test sets (part ids ending in F fail; ``delay_ms`` per part, or a slow part every N), a SQLite
store in tmp_path, the Modbus link on a free port, a PLC simulated with pymodbus's client."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from inspector_line.cli import run_station_in_thread
from pydantic import Field

from inspector_core import Detector, Finding, PluginConfig, View, hookimpl
from inspector_core.plugins import load
from inspector_core.runtime.config import load_station


class PacedConfig(PluginConfig):
    delay_ms: float = Field(0, ge=0)
    slow_every: int = Field(0, ge=0, description="every Nth part takes slow_ms instead")
    slow_ms: float = Field(0, ge=0)


class Paced(Detector):
    """Fails a part whose id ends in F; takes delay_ms (slow_ms for every slow_every-th part)."""

    name = "paced"
    kinds = ("flaw",)
    Config = PacedConfig

    def __init__(self, config: PluginConfig, *, station_dir: Path) -> None:
        super().__init__(config, station_dir=station_dir)
        self.n = 0

    def inspect(self, view: View) -> list[Finding]:
        cfg = self.config
        assert isinstance(cfg, PacedConfig)
        self.n += 1
        slow = cfg.slow_every and self.n % cfg.slow_every == 0
        time.sleep((cfg.slow_ms if slow else cfg.delay_ms) / 1000)
        if view.part_id.endswith("F"):
            return [Finding("flaw", 0.9, (1, 1, 4, 4), message="test flaw")]
        return []


class LineTestPlugin:
    @staticmethod
    @hookimpl
    def inspector_register_detectors(register: Any) -> None:
        register(Paced)


@pytest.fixture(scope="session")
def line_registry():
    return load(extra=[("linetest", LineTestPlugin)])


def write_station(tmp_path: Path, *, line: str, detector: str = "{}", count: int = 100000) -> Path:
    path = tmp_path / "line.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            name: linetest
            source:
              type: synthetic
              config: {{count: {count}, width: 320, height: 240, color: false}}
            steps:
              - detector: paced
                config: {detector}
            store:
              url: sqlite:///line.db
            """
        )
        + line
    )
    return path


def camera_station(tmp_path: Path, name: str, source: str, config: str) -> Path:
    """A station whose ``source`` (a camera) is triggered by the PLC over Modbus: the ``paced``
    detector (ids ending in F fail) and a SQLite store in tmp_path."""
    path = tmp_path / "line.yaml"
    path.write_text(
        f"""\
name: {name}
source:
  type: {source}
  config: {config}
steps:
  - detector: paced
store:
  url: sqlite:///line.db
line:
  protocol: modbus
  config: {{host: 127.0.0.1, port: 0}}
  deadline_ms: 1500
"""
    )
    return path


def trigger_each(plc: Any, part_ids: list[str], *, pause_s: float = 0.0, wait_s: float = 3.0) -> dict[int, str]:
    """Triggers one part per id, as a PLC does: waits up to ``wait_s`` for its result in the
    PLC's ring, acknowledges it, pauses ``pause_s``. Returns counter -> the part id sent."""
    sent = {}
    for pid in part_ids:
        c = plc.trigger(pid)
        sent[c] = pid
        end = time.monotonic() + wait_s
        while c not in plc.ring() and time.monotonic() < end:
            time.sleep(0.005)
        plc.acknowledge(c)
        time.sleep(pause_s)
    return sent


class RunningStation:
    def __init__(self, path: Path, registry: Any) -> None:
        self.station = load_station(path, registry)
        self.runtime, self.thread, self.failure = run_station_in_thread(self.station, registry, 0)
        assert not self.failure, self.failure
        assert self.runtime._line is not None
        self.port = self.runtime._line.link.port

    def stop(self) -> None:
        self.runtime.stop()
        self.thread.join(60)
        assert not self.thread.is_alive()
        assert not self.failure, self.failure


@pytest.fixture
def running(line_registry):
    started: list[RunningStation] = []

    def start(path: Path) -> RunningStation:
        rs = RunningStation(path, line_registry)
        started.append(rs)
        return rs

    yield start
    for rs in started:
        if rs.thread.is_alive():
            rs.runtime.stop()
            rs.thread.join(60)


def rows(db: Path, sql: str) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(db) as c:
        return c.execute(sql).fetchall()


__all__ = ["camera_station", "rows", "trigger_each", "write_station", "threading"]
