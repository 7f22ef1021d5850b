"""`inspector line simulate` commissions a station without a PLC; `inspector line mismatches`
lists what the PLC was told otherwise than the verdict."""

from __future__ import annotations

import re
import textwrap

from click.testing import CliRunner
from inspector_line.cli import line


def test_simulate_drives_the_station_over_modbus_and_prints_what_the_plc_saw(tmp_path):
    station = tmp_path / "cell.yaml"
    station.write_text(
        textwrap.dedent(
            """\
            name: cell
            source: {type: synthetic, config: {count: 1000, width: 320, height: 240, color: false}}
            steps: [{detector: scratch}]
            store: {url: sqlite:///cell.db}
            line:
              protocol: modbus
              config: {host: 127.0.0.1, port: 5020}
              deadline_ms: 800
              default: recheck
            """
        )
    )
    out = CliRunner().invoke(line, ["simulate", str(station), "--rate", "20", "--count", "30", "--port", "0"])
    assert out.exit_code == 0, out.output
    text = out.output
    assert "triggers 30 in" in text and "load average" in text
    assert re.search(r"answered 30, lost 0, conflicting 0", text), text
    assert re.search(r"trigger -> result on the PLC: p50 [\d.]+ ms, p99 [\d.]+ ms", text), text
    assert "station: triggers 30, results 30" in text
    # Every result the PLC saw is in the store, one row per counter.
    import sqlite3

    with sqlite3.connect(tmp_path / "cell.db") as c:
        n, distinct, defaults = c.execute(
            "SELECT count(*), count(DISTINCT counter), coalesce(sum(is_default), 0) FROM line_results"
        ).fetchone()
    assert n == distinct == 30
    listed = CliRunner().invoke(line, ["mismatches", str(station)])
    assert listed.exit_code == 0, listed.output
    if defaults:
        assert "(default)" in listed.output
    else:
        assert "no part got a PLC result other than its verdict's" in listed.output
