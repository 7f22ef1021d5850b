"""The file sink's grouped fsync against one fsync per verdict: CPU of the sink's worker thread per
verdict delivered, and fsyncs per verdict, in the same run, alternated.

What it measures, and how: a real SQLite store (synchronous FULL, under ``var/bench/sink_fsync``)
with committed inspections, the station's own delivery worker (``runtime/delivery.py``) and the
file sink (fsync on), once with the sink's ``send_many`` (the verdicts waiting in the store
written, one fsync, then the cursor moved) and once forced to ``send`` one by one (an fsync per
verdict, as before). CPU is ``time.thread_time`` of the worker thread, read when it closes the
sink (its reads of the store, the sends, the cursor writes; the thread's start-up included),
divided by the verdicts delivered. Two cases:

- ``backlog``: ``--count`` verdicts committed before delivery starts (a sink catching up after an
  outage or a restart, or behind a burst): batches of up to 100;
- ``trickle``: verdicts committed one at a time at ``--rate`` per second, the worker woken after
  each commit as the recorder does: at this rate the worker is idle between commits, so its
  batches are of one verdict and grouping cannot help (the line's steady state).

    python bench/sink_fsync.py [--count 500] [--rate 15] [--trickle 90] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from inspector_sinks import FileConfig, FileSink

from inspector_core.contract import Report
from inspector_core.runtime.delivery import Delivery
from inspector_core.store import InspectionRecord, Store
from inspector_core.store.outbox import Outbox

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "var" / "bench" / "sink_fsync"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class TimedFileSink(FileSink):
    """The file sink, counting its calls and reading its thread's CPU when the worker closes it."""

    calls = 0
    cpu_s = 0.0

    def send(self, report: Report) -> None:
        self.calls += 1
        super().send(report)

    def send_many(self, reports: Sequence[Report]) -> None:
        self.calls += 1
        super().send_many(reports)

    def close(self) -> None:
        self.cpu_s = time.thread_time()
        super().close()


def records(sid: int, rid: int, start: int, count: int) -> list[InspectionRecord]:
    now = datetime.now(UTC)
    return [
        InspectionRecord(
            uid=f"{i:032x}",
            station_id=sid,
            run_id=rid,
            seq=i,
            part_id=f"p{i}",
            captured_at=now,
            decided_at=now,
            verdict="PASS",
            latency_ms=1.0,
        )
        for i in range(start, start + count)
    ]


def one(case: str, grouped: bool, count: int, rate: float) -> tuple[float, float, float]:
    """(sink thread CPU ms per verdict, fsyncs per verdict, lines in the file / verdicts)."""
    d = WORK / f"{case}-{'grouped' if grouped else 'single'}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    store = Store(f"sqlite:///{d / 'x.db'}")
    sid, rid = store.begin_run(
        "sink-fsync", hostname="h", software_version="0", plugins={}, config_yaml="", config_hash="0", models={}
    )
    outbox = Outbox(store, "sink-fsync")
    outbox.open(["file"], run_id=rid)
    sink = TimedFileSink(FileConfig(path="out.jsonl"), station_dir=d)
    delivery = Delivery([("file", sink)], outbox, on_event=lambda k, m: None, run_id=lambda: rid)
    delivery.workers[0].grouped = grouped
    if case == "backlog":
        store.write(records(sid, rid, 0, count))
        delivery.start()
    else:
        delivery.start()
        t0 = time.perf_counter()
        for i in range(count):
            time.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
            store.write(records(sid, rid, i, 1))
            delivery.wake()
    backlog = delivery.close(drain_s=60)
    assert backlog == {"file": 0}, backlog
    lines = (d / "out.jsonl").read_text().count("\n")
    store.close()
    return sink.cpu_s * 1000 / count, sink.calls / count, lines / count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=500, help="verdicts of the backlog case")
    ap.add_argument("--trickle", type=int, default=90, help="verdicts of the trickle case")
    ap.add_argument("--rate", type=float, default=15.0, help="verdicts/s of the trickle case")
    ap.add_argument("--rounds", type=int, default=3, help="alternated pairs per case")
    a = ap.parse_args()
    print(f"# file sink, fsync on, SQLite store; load average before: {load()}")
    for case, count in (("backlog", a.count), ("trickle", a.trickle)):
        got: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
        for r in range(a.rounds):
            for grouped in (True, False) if r % 2 == 0 else (False, True):
                got[grouped].append(one(case, grouped, count, a.rate))
        print(f"\n## {case} (n = {count} verdicts per run, {a.rounds} runs each, alternated), load {load()}")
        print("| sink | CPU ms per verdict (median, runs) | fsyncs per verdict | lines per verdict |")
        print("|---|---|---|---|")
        for grouped in (True, False):
            cpu = [x[0] for x in got[grouped]]
            print(
                f"| {'send_many (one fsync per group)' if grouped else 'send (one fsync per verdict)'} "
                f"| {statistics.median(cpu):.2f} ({', '.join(f'{c:.2f}' for c in cpu)}) "
                f"| {statistics.median(x[1] for x in got[grouped]):.3f} "
                f"| {statistics.median(x[2] for x in got[grouped]):.2f} |"
            )
    print(f"\nload average after: {load()}")


if __name__ == "__main__":
    main()
