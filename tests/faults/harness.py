"""Runs a schedule on real stations and checks the invariants on what they left.

In-process schedules run ``StationRuntime`` (SQLite, or PostgreSQL through a proxy that
refuses, restarts or stalls at a scheduled part); schedules with kills run ``inspector run``
subprocesses that find the fault plugin through an entry point, signalled at seeded moments,
then one last run to the end. When a run leaves work undone (a verdict not delivered, one
spooled but not yet in the plant database) the harness starts the station again over one
extra good part (``r000``, then ``r001``): the recovery the promises allow. Each such run is
listed with the reason it was needed.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from inspector_core.plugins import Registry, load
from inspector_core.runtime.config import load_station
from inspector_core.runtime.station import StationRuntime
from tests.faults import plugin
from tests.faults.invariants import RunInfo, Verdict, check
from tests.faults.observe import observe, read_jsonl, sink_paths
from tests.faults.parts import ROLES, PartPlan
from tests.faults.proxy import FaultProxy
from tests.faults.schedule import SINKS, DbFault, Schedule, write_images

ROOT = Path(__file__).resolve().parents[2]
STATION = "faults"
RECOVERY_RUNS = 2
RECOVERY_TAKT_MS = 1500
"""A recovery run inspects one good part and keeps its source open this long after it, so
that its outbox has time to deliver what the run before left (a restart may need a moment)."""
RUN_TIMEOUT_S = 90.0
"""A run that has not ended by then is reported (``station_keeps_running``) and stopped."""

_registry: Registry | None = None


def registry() -> Registry:
    """The installed plugins plus the fault plugin, loaded once."""
    global _registry
    if _registry is None:
        _registry = load(extra=[("faults", plugin)])
    return _registry


@dataclasses.dataclass
class Outcome:
    schedule: Schedule
    verdict: Verdict
    runs: list[RunInfo]
    parts: int
    seconds: float

    def report(self) -> str:
        lines = [
            self.schedule.describe(),
            f"  runs: {', '.join(r.label + (f' [{r.error}]' if r.error else '') for r in self.runs)}",
            f"  {self.parts} parts, {sum(self.verdict.checked.values())} checks in {self.seconds:.1f} s",
        ]
        lines += [f"  note: {n}" for n in self.verdict.notes]
        for name, msgs in self.verdict.violations.items():
            lines.append(f"  VIOLATED {name} ({len(msgs)}):")
            lines += [f"    - {m}" for m in msgs[:12]]
            if len(msgs) > 12:
                lines.append(f"    ... and {len(msgs) - 12} more")
        return "\n".join(lines)


def station_config(
    schedule: Schedule, workdir: Path, source: Path, store_url: str, interval_ms: float | None = None
) -> dict[str, Any]:
    store: dict[str, Any] = {"url": store_url}
    if schedule.store == "postgres":
        store["spool"] = str(workdir / "spool")
    sinks: list[dict[str, Any]] = [{"type": "file", "config": {"path": str(sink_paths(workdir, "file")[0])}}]
    for name in SINKS[1:]:
        record, state = sink_paths(workdir, name)
        f = schedule.sink_fault(name)
        sinks.append(
            {
                "type": name,
                "config": {
                    "record": str(record),
                    "state": str(state),
                    "fail_first": f.fail_first,
                    "down_ms": f.down_ms,
                    "hang_ms": f.hang_ms,
                },
            }
        )
    return {
        "name": STATION,
        "source": {
            "type": "folder",
            "config": {
                "path": str(source),
                "interval_ms": schedule.interval_ms if interval_ms is None else interval_ms,
            },
        },
        "steps": [
            {
                "detector": "faulty",
                "name": role,
                "budget_ms": schedule.budget_ms,
                "config": {"role": role, "hang_ms": schedule.hang_ms, "state_dir": str(workdir / "state")},
            }
            for role in ROLES
        ],
        "store": store,
        "sinks": sinks,
    }


def _write_station(workdir: Path, name: str, cfg: dict[str, Any]) -> Path:
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _needs_recovery(schedule: Schedule, db_url: str, workdir: Path) -> str | None:
    obs = observe(db_url, workdir)
    stored = obs.by_uid()
    reported = {r["uid"] for rows in obs.delivered.values() for r in rows}
    parts = {i["part_id"] for i in obs.inspections}
    reasons = []
    if any(p.part_id not in parts for p in schedule.parts):
        reasons.append("parts missing from the store")
    if reported - set(stored):
        reasons.append("reported verdicts missing from the store")
    for sink, rows in obs.delivered.items():
        if set(stored) - {r["uid"] for r in rows}:
            reasons.append(f"committed verdicts not delivered to {sink}")
    return "; ".join(reasons) or None


# ---------------------------------------------------------------------------- in process


def _run_runtime(path: Path, label: str) -> RunInfo:
    reg = registry()
    info = RunInfo(label, started=time.time())
    station = load_station(path, reg)
    runtime = StationRuntime(station, reg)
    box: dict[str, str] = {}

    def target() -> None:
        try:
            runtime.run()
        except BaseException as exc:  # noqa: BLE001 - reported as a violation, not raised
            box["error"] = f"{type(exc).__name__}: {exc}"

    t = threading.Thread(target=target, name=f"fault-station-{label}", daemon=True)
    t.start()
    t.join(RUN_TIMEOUT_S)
    if t.is_alive():
        runtime.stop()
        t.join(30)
        box.setdefault(
            "error",
            f"did not end within {RUN_TIMEOUT_S:g} s" + (" (and not within 30 s of stop())" if t.is_alive() else ""),
        )
    info.ended = time.time()
    info.run_id = runtime.run_id
    info.error = box.get("error") or (f"failure: {runtime.failure}" if runtime.failure else None)
    return info


class _DbFaults:
    """Fires the schedule's database faults through the proxy: when step alpha first sees the
    trigger part (``state/seen/<part id>``), or before the start (``down_at_start``). Each
    lasts its ``seconds``, or until ``finish()`` (the run ended during the outage)."""

    def __init__(self, schedule: Schedule, proxy: FaultProxy | None, state: Path) -> None:
        self.schedule, self.proxy, self.state = schedule, proxy, state
        self.windows: list[tuple[str, float, float]] = []
        """``(kind, start, end)`` of each fault that happened, epoch seconds."""
        self._active: dict[DbFault, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def _trigger_part(self, at: int) -> str:
        judged = [p for p in self.schedule.parts if not p.image_fault]
        return next((p for p in judged if p.number >= at), judged[-1]).part_id

    def start(self) -> None:
        if self.proxy is None:
            return
        for f in self.schedule.db_faults:
            if f.kind == "down_at_start":
                self._fire(f)
            else:
                self._later(functools.partial(self._fire, f), wait_for=self._trigger_part(f.at_part))

    def _later(self, fn: Callable[[], None], *, delay: float = 0.0, wait_for: str | None = None) -> None:
        def body() -> None:
            if wait_for is not None:
                seen = self.state / "seen" / wait_for
                while not seen.exists():
                    if self._stop.wait(0.005):
                        return
            if not self._stop.wait(delay):
                fn()

        threading.Thread(target=body, daemon=True).start()

    def _fire(self, f: DbFault) -> None:
        assert self.proxy is not None
        t0 = time.time()
        if f.kind == "restart":
            self.proxy.restart()
            self.windows.append((f.kind, t0, time.time()))
            return
        with self._lock:
            self.proxy.stall() if f.kind == "stall" else self.proxy.refuse()
            self._active[f] = t0
        self._later(lambda: self._restore(f), delay=f.seconds)

    def _restore(self, f: DbFault) -> None:
        assert self.proxy is not None
        with self._lock:
            t0 = self._active.pop(f, None)
            if t0 is not None:
                self.proxy.restore()
                self.windows.append((f.kind, t0, time.time()))

    def finish(self) -> None:
        """End every fault now (pending ones never fire): the database is back."""
        self._stop.set()
        for f in list(self._active):
            self._restore(f)
        if self.proxy is not None:
            self.proxy.restore()


def run_in_process(schedule: Schedule, workdir: Path, pg_url: str | None = None) -> Outcome:
    t_start = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "state").mkdir(exist_ok=True)
    write_images(workdir / "parts", schedule.parts)
    proxy = None
    if schedule.store == "postgres":
        assert pg_url, "a PostgreSQL schedule needs pg_url"
        proxy = FaultProxy(("127.0.0.1", 5432))
        proxy.start()
        store_url, direct = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"), pg_url
    else:
        store_url = direct = f"sqlite:///{workdir / 'station.db'}"
    main = _write_station(workdir, "station", station_config(schedule, workdir, workdir / "parts", store_url))
    faults = _DbFaults(schedule, proxy, workdir / "state")
    runs: list[RunInfo] = []
    extra: list[PartPlan] = []
    try:
        faults.start()
        runs.append(_run_runtime(main, "main"))
        faults.finish()
        # Replacements still scheduled to fail belong to the main run's hung steps.
        for pending in (workdir / "state").glob("failing-starts-*"):
            pending.unlink()
        for attempt in range(RECOVERY_RUNS):
            why = _needs_recovery(schedule, direct, workdir)
            if not why:
                break
            part = PartPlan(attempt, recovery=True)
            extra.append(part)
            folder = workdir / f"recovery-{attempt}"
            write_images(folder, [part])
            cfg = station_config(schedule, workdir, folder, store_url, interval_ms=RECOVERY_TAKT_MS)
            rec = _write_station(workdir, f"recovery-{attempt}", cfg)
            after = "the main run" if attempt == 0 else f"recovery {attempt}"
            runs.append(_run_runtime(rec, f"recovery {attempt + 1} (after {after}: {why})"))
        verdict = check(schedule, observe(direct, workdir), runs, extra, faults.windows)
    finally:
        faults.finish()
        if proxy is not None:
            proxy.refuse()
    return Outcome(schedule, verdict, runs, len(schedule.parts) + len(extra), time.monotonic() - t_start)


# ---------------------------------------------------------------------------- subprocesses


def entry_point_dir(where: Path) -> Path:
    """A distribution's metadata declaring the fault plugin in ``inspector.plugins``: on
    ``PYTHONPATH``, ``inspector run`` finds it as it finds any installed plugin."""
    dist = where / "inspector_faults-0.1.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: inspector-faults\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[inspector.plugins]\nfaults = tests.faults.plugin\n")
    return where


def _inspector() -> list[str]:
    script = Path(sys.executable).with_name("inspector")
    return [str(script)] if script.exists() else [sys.executable, "-m", "inspector_core.cli"]


def _reports(workdir: Path) -> int:
    return len(read_jsonl(sink_paths(workdir, "file")[0]))


def run_subprocess(schedule: Schedule, workdir: Path) -> Outcome:
    assert schedule.store == "sqlite", "kill schedules run on SQLite"
    t_start = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "state").mkdir(exist_ok=True)
    write_images(workdir / "parts", schedule.parts)
    db_url = f"sqlite:///{workdir / 'station.db'}"
    path = _write_station(workdir, "station", station_config(schedule, workdir, workdir / "parts", db_url))
    env = dict(os.environ)
    paths = [str(ROOT), str(entry_point_dir(workdir / "entry-points"))]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    cmd = [*_inspector(), "run", str(path), "--quiet"]
    runs: list[RunInfo] = []

    def spawn() -> subprocess.Popen[bytes]:
        log = (workdir / f"run-{len(runs)}.log").open("wb")
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)

    for k, kill in enumerate(schedule.kills, 1):
        label = f"kill {k} ({kill.describe()})"
        info = RunInfo(label, killed=kill.signal, started=time.time())
        before = _reports(workdir)
        runs_before = _run_ids(db_url, workdir)
        proc = spawn()
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if kill.on == "start" or (kill.on == "store" and (workdir / "station.db").exists()):
                break
            if kill.on == "reports" and _reports(workdir) >= before + kill.reports:
                break
            time.sleep(0.005 if kill.on == "store" else 0.02)
        time.sleep(kill.after_s)
        ended_by_itself = proc.poll() is not None
        if not ended_by_itself:
            proc.send_signal(signal.SIGKILL if kill.signal == "KILL" else signal.SIGTERM)
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait(10)
            info.error = f"did not exit within 60 s of SIGTERM (killed); {_tail(workdir, len(runs))}"
        info.ended = time.time()
        info.run_id = next(iter(sorted(set(_run_ids(db_url, workdir)) - set(runs_before))), None)
        if ended_by_itself:
            info.killed = None
            if rc == 0:
                info.note = f"{label}: the run ended by itself before the signal (exit 0)"
            else:
                info.error = (
                    f"ended by itself (exit {rc}) before the scheduled {kill.signal}; {_tail(workdir, len(runs))}"
                )
        elif kill.signal == "TERM" and rc != 0 and info.error is None:
            if info.run_id is None and rc == -signal.SIGTERM:
                info.note = f"{label}: SIGTERM came before the station had started (no run recorded): nothing to drain"
            else:
                info.error = f"exit {rc} after SIGTERM (expected 0: drain and commit); {_tail(workdir, len(runs))}"
        runs.append(info)
    final = RunInfo("final", started=time.time())
    runs_before = _run_ids(db_url, workdir)
    proc = spawn()
    try:
        rc = proc.wait(RUN_TIMEOUT_S * 2)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait(10)
        final.error = f"did not end within {RUN_TIMEOUT_S * 2:g} s"
    if rc != 0 and final.error is None:
        final.error = f"exit {rc}; {_tail(workdir, len(runs))}"
    final.ended = time.time()
    final.run_id = next(iter(sorted(set(_run_ids(db_url, workdir)) - set(runs_before))), None)
    runs.append(final)
    verdict = check(schedule, observe(db_url, workdir), runs, [], [])
    return Outcome(schedule, verdict, runs, len(schedule.parts), time.monotonic() - t_start)


def _run_ids(db_url: str, workdir: Path) -> list[int]:
    if not (workdir / "station.db").exists():
        return []
    try:
        return [r["id"] for r in observe(db_url, workdir).runs]
    except Exception:  # noqa: BLE001 - a store a kill left unreadable shows in the final checks
        return []


def _tail(workdir: Path, n: int) -> str:
    log = workdir / f"run-{n}.log"
    text = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return f"output: {' | '.join(text[-2:])[-400:]}" if text else "no output"


__all__ = ["Outcome", "registry", "run_in_process", "run_subprocess"]
