"""The plant database: the same end-to-end run on the real PostgreSQL, and an outage that
loses nothing (verdicts wait in the local spool)."""

from __future__ import annotations

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


def test_unreachable_database_loses_nothing(tmp_path, pg_url):
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.start()
    url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    sink = tmp_path / "reported.jsonl"
    cfg = {"source": {"type": "synthetic", "config": {"count": 60, "width": 640, "height": 480, "interval_ms": 40}},
           "steps": [{"detector": "bright_spot", "config": {"threshold": 200}}],
           "store": {"spool": str(tmp_path / "spool")},
           "sinks": [{"type": "file", "config": {"path": str(sink)}}]}

    def outage():
        while not sink.exists() or len(sink.read_text().splitlines()) < 10:
            time.sleep(0.02)
        proxy.cut()
        time.sleep(1.5)
        proxy.start()

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
    proxy.cut()


def test_unreachable_at_start_is_a_clear_error(tmp_path):
    from inspector_core.runtime.station import StationError

    proxy = TcpProxy(("127.0.0.1", 5432))  # never started: nothing listens on its port
    url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/nope"
    with pytest.raises(StationError, match=r"(?s)cannot reach the database .*check that the server runs"):
        run_station(station(SYNTH), tmp_path, db_url=url)
