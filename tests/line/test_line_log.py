"""The writer of line_results: a row the database refuses is set aside, the others are written."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from inspector_core.store import Store
from inspector_core.store.line_records import LineLog, LineResultRecord


@pytest.mark.postgres
def test_a_refused_row_does_not_hold_up_the_others(pg_url):
    store = Store(pg_url)
    log = LineLog(store, "cell")
    now = datetime.now(UTC)
    good = [LineResultRecord("r1", i, i, now, 500.0, 1) for i in (1, 2, 3)]
    bad = LineResultRecord("r1", 9, 9, now, 500.0, 2, product="x" * 300)  # longer than the column
    log.write(good[0])
    log.write(bad)
    log.write(good[1])
    assert log.write(good[2], wait_s=20)
    good[0].ack_ms = 4.5
    assert log.write(good[0], wait_s=20)  # a later fact about a row: an update
    assert log.close()
    store.close()
    assert log.refused == 1
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as con:
        rows = con.execute("SELECT seq, ack_ms FROM line_results ORDER BY seq").fetchall()
    assert rows == [(1, 4.5), (2, None), (3, None)]
