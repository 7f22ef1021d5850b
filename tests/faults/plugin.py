"""The fault suite's plugin: a detector that misbehaves as the part id says, and sinks that fail,
hang and record every report they accept.

Registered in-process with ``inspector_core.plugins.load(extra=[("faults", plugin)])``, and
for ``inspector run`` subprocesses through a real entry point (see ``harness.entry_point_dir``),
exactly as a third-party plugin is found.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from inspector_core import Detector, Finding, PluginConfig, Report, Sink, View, hookimpl
from tests.faults.parts import FAIL_SCORE, HANGS, PASS_SCORE, marker, parse

_lock = threading.Lock()


class FaultyConfig(PluginConfig):
    role: str = Field(description="which tokens of the part id this step obeys (alpha, beta)")
    hang_ms: float = Field(2000, ge=0, description="how long a hanging step sleeps (longer than its budget)")
    state_dir: str = Field(
        description=(
            "folder of the schedule's state, shared by every instance and process: the parts step alpha has "
            "seen (seen/<part id>, so the harness can fire a database fault at that point of the stream) and "
            "how many starts of this role's detector must still fail (failing-starts-<role>)"
        )
    )


class FaultyDetector(Detector):
    """Finds one ``marker`` on every part it judges, scored 0.3 (seen) or 0.9 (defect), whose
    message and ``part_no`` measurement name that part; or misbehaves as the part id says."""

    name = "faulty"
    kinds = ("marker",)
    Config = FaultyConfig

    def __init__(self, config: FaultyConfig, *, station_dir: Path) -> None:
        self.cfg = config
        self.state = Path(config.state_dir)
        with _lock:
            if self._failing_starts() > 0:
                self._failing_starts(-1)
                raise RuntimeError(f"fault suite: the {config.role} detector refuses to start (scheduled)")
        super().__init__(config, station_dir=station_dir)

    def _failing_starts(self, add: int = 0) -> int:
        path = self.state / f"failing-starts-{self.cfg.role}"
        n = int(path.read_text()) if path.exists() else 0
        if add:
            n += add
            path.write_text(str(n))
        return n

    def inspect(self, view: View) -> list[Finding]:
        cfg = self.cfg
        pid = view.part_id
        if cfg.role == "alpha":
            seen = self.state / "seen"
            seen.mkdir(parents=True, exist_ok=True)
            (seen / pid).touch()
        plan = parse(pid)
        what = plan.step(cfg.role)
        n = float(plan.number + (1000 if plan.recovery else 0))

        def finding(score: float = PASS_SCORE) -> Finding:
            return Finding("marker", score, (1, 1, 4, 4), marker(pid), size_px=4.0, measurements={"part_no": n})

        if what == "ok":
            return [finding()]
        if what == "defect":
            return [finding(FAIL_SCORE)]
        if what in HANGS:
            if what != "hang":
                with _lock:
                    self._failing_starts(2 if what == "norepl2" else 1)
            time.sleep(cfg.hang_ms / 1000)
            return [finding(FAIL_SCORE)]  # late: must never be read as another part's result
        if what == "raise":
            raise RuntimeError(f"fault suite: scheduled failure on {pid}")
        if what == "sysexit":
            sys.exit(f"fault suite: scheduled sys.exit on {pid}")
        h, w = view.image.shape[:2]
        f = finding()
        # Contract-breaking values set past Finding's own checks, as a careless plugin could.
        broken = {
            "nan": ("score", math.nan),
            "inf": ("score", math.inf),
            "big": ("score", 1.7),
            "neg": ("score", -0.3),
            "boxout": ("box", (w + 100, h + 100, 4, 4)),
            "negbox": ("box", (1, 1, -5, 4)),
            "hugebox": ("box", (10**30, 1, 4, 4)),
            "nanbox": ("box", (math.nan, 1, 4, 4)),
            "badmask": ("mask", np.ones((3, 9), np.uint8)),
            "dictmsg": ("message", {"part": pid}),
            "bytesmsg": ("message", pid.encode() + b"\xff"),
            "nansize": ("size_px", math.nan),
            "badmeasure": ("measurements", {"part_no": "seventeen"}),
            "badkind": ("kind", "undeclared"),
        }
        if what == "notlist":
            return {"kind": "marker", "part": pid}  # type: ignore[return-value]
        field, value = broken[what]
        object.__setattr__(f, field, value)
        return [f]


class FaultySinkConfig(PluginConfig):
    record: str = Field(description="JSON-lines file: one line per report the sink accepted")
    state: str = Field(description="JSON file of the sink's attempts, kept across restarts")
    fail_first: int = Field(0, ge=0, description="refuse the first N sends of the schedule")
    down_ms: float = Field(0, ge=0, description="refuse every send for this long after the schedule's first one")
    hang_ms: float = Field(0, ge=0, description="the schedule's first send blocks this long, then succeeds")


class _FaultySink(Sink):
    """Fails, hangs, and records every report it accepts (uid, part, verdict, defect messages,
    time), fsynced, so the suite can compare what it got with the store."""

    Config = FaultySinkConfig

    def __init__(self, config: FaultySinkConfig, *, station_dir: Path) -> None:
        super().__init__(config, station_dir=station_dir)
        self.cfg = config
        self.state_path = Path(config.state)
        self.state: dict[str, Any] = (
            json.loads(self.state_path.read_text())
            if self.state_path.exists()
            else {"attempts": 0, "first_at": None, "hung": None}
        )
        Path(config.record).parent.mkdir(parents=True, exist_ok=True)
        self._out = open(config.record, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def _save(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.state_path)

    def send(self, report: Report) -> None:
        now = time.time()
        st = self.state
        st["attempts"] += 1
        st["first_at"] = st["first_at"] or now
        self._save()
        if st["attempts"] <= self.cfg.fail_first:
            raise ConnectionError(f"{self.name}: scheduled refusal {st['attempts']} of {self.cfg.fail_first}")
        if now < st["first_at"] + self.cfg.down_ms / 1000:
            raise ConnectionError(f"{self.name}: down (scheduled outage of {self.cfg.down_ms:g} ms)")
        if self.cfg.hang_ms and st["hung"] is None:
            hung: list[float | None] = [now, None]
            st["hung"] = hung
            self._save()
            time.sleep(self.cfg.hang_ms / 1000)
            hung[1] = time.time()
            self._save()
        line = {
            "uid": report.inspection_uid,
            "part_id": report.part_id,
            "verdict": report.verdict,
            "messages": [str(d.get("message")) for d in report.defects],
            "t": time.time(),
        }
        self._out.write(json.dumps(line) + "\n")
        self._out.flush()
        os.fsync(self._out.fileno())

    def close(self) -> None:
        self._out.close()


class FaultySinkA(_FaultySink):
    name = "faulty_a"


class FaultySinkB(_FaultySink):
    name = "faulty_b"


@hookimpl
def inspector_register_detectors(register) -> None:
    register(FaultyDetector)


@hookimpl
def inspector_register_sinks(register) -> None:
    register(FaultySinkA)
    register(FaultySinkB)
