"""The plant database: the same end-to-end run on the real PostgreSQL, and an outage that
loses nothing (verdicts wait in the local spool)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import create_engine, func, select, text

from inspector_core.store import schema
from inspector_core.testing import run_station
from tests.core.test_station_end_to_end import SYNTH, check_run, station
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres


def test_end_to_end_on_postgres(tmp_path, pg_url):
    result = run_station(station(SYNTH), tmp_path, db_url=pg_url)
    rows = check_run(result, 24)
    assert sum(r.verdict == "FAIL" for r in rows) == 24
    eng = create_engine(pg_url)
    with eng.connect() as c:
        assert c.scalar(text("SELECT version_num FROM alembic_version")) is not None
        assert c.scalar(select(func.count()).select_from(schema.Crop)) >= 24
    eng.dispose()


@pytest.mark.parametrize("fault", ["cut", "stall"])
def test_unreachable_database_loses_nothing(tmp_path, pg_url, fault):
    """Refused (cut) or silent (stall: packets held, item 4): within seconds the verdicts go to
    the spool, and when the database is back every one is written once and reported."""
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.start()
    url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    sink = tmp_path / "reported.jsonl"
    # The outage ends before the source does: every verdict is reported in this run.
    interval = 40 if fault == "cut" else 120
    cfg = {
        "source": {"type": "synthetic", "config": {"count": 60, "width": 640, "height": 480, "interval_ms": interval}},
        "steps": [{"detector": "bright_spot", "config": {"threshold": 200}}],
        "store": {"spool": str(tmp_path / "spool")},
        "sinks": [{"type": "file", "config": {"path": str(sink)}}],
    }

    def outage():
        while not sink.exists() or len(sink.read_text().splitlines()) < 10:
            time.sleep(0.02)
        if fault == "cut":
            proxy.cut()
            time.sleep(1.5)
            proxy.start()
        else:
            proxy.stall()
            time.sleep(5.5)  # past the writer's 5 s bound: the spool engages
            proxy.resume()

    t = threading.Thread(target=outage, daemon=True)
    t.start()
    result = run_station(cfg, tmp_path, db_url=url)
    t.join(10)
    # All 60 parts are in the plant database, each once, and every reported one among them.
    eng = create_engine(pg_url)
    with eng.connect() as c:
        uids = [u for (u,) in c.execute(select(schema.Inspection.uid).where(schema.Inspection.run_id == result.run_id))]
        kinds = [k for (k,) in c.execute(select(schema.Event.kind).order_by(schema.Event.id))]
    eng.dispose()
    assert len(uids) == 60 and len(set(uids)) == 60
    import json

    reported = [json.loads(line)["inspection_uid"] for line in sink.read_text().splitlines()]
    assert len(reported) == 60 and set(reported) == set(uids)
    assert "store_unreachable" in kinds and "store_recovered" in kinds
    proxy.stop()


def test_a_station_starts_while_its_database_is_down(tmp_path, pg_url):
    """Item 21: a station could not start while its plant database was down, and a run that
    ended during an outage exited 0 with its verdicts only in the spool, its events lost. Now it
    runs on the spool, ends with exit 1 and a line naming the spool and how many verdicts wait,
    and the next run writes them, with the first run's record and its outage events."""
    proxy = TcpProxy(("127.0.0.1", 5432))  # not started yet: connections are refused
    url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    path = tmp_path / "line.yaml"
    path.write_text(
        "name: line\n"
        "source: {type: synthetic, config: {count: 10, width: 320, height: 240}}\n"
        "steps: [{detector: bright_spot, config: {threshold: 200}}]\n"
        f"store: {{url: '{url}', spool: '{tmp_path / 'spool'}'}}\n"
    )
    first = subprocess.run(
        [sys.executable, "-m", "inspector_core.cli", "run", str(path), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 1, first.stderr
    spool = next((tmp_path / "spool").glob("line-*.spool.db"))
    assert re.search(rf"unreachable: 10 verdicts wait in the spool {re.escape(str(spool))}", first.stderr), first.stderr
    proxy.start()
    try:
        result = run_station(path, tmp_path)
    finally:
        proxy.stop()
    assert result.tally.total == 10
    eng = create_engine(pg_url)
    with eng.connect() as c:
        runs = c.execute(select(schema.Run.id, schema.Run.parts_seen).order_by(schema.Run.started_at)).all()
        per_run = dict(
            c.execute(select(schema.Inspection.run_id, func.count()).group_by(schema.Inspection.run_id)).tuples().all()
        )
        kinds = [
            k
            for (k,) in c.execute(
                select(schema.Event.kind).where(schema.Event.run_id == runs[0][0]).order_by(schema.Event.id)
            )
        ]
    eng.dispose()
    assert len(runs) == 2 and [p for _, p in runs] == [10, 10]
    assert per_run == {runs[0][0]: 10, runs[1][0]: 10}
    assert kinds[0] == "store_unreachable" and kinds[-1] == "run_ended_in_outage"


def test_a_database_that_refuses_the_station_is_a_clear_error_at_start(tmp_path, pg_url):
    from inspector_core.runtime.station import StationError

    url = pg_url.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(
        StationError,
        match=r"(?s)cannot record the run: .*refused the connection .*does not exist"
        r".*check the user, password, database name",
    ):
        run_station(station(SYNTH), tmp_path, db_url=url)
