"""SPC alarms to the sinks (issue 15): `inspector measurements --alarm` sends each phase II
rule violation once to the station's file and MQTT sinks (real Mosquitto), records it as an
events row, and a rerun sends nothing new; a sink that fails leaves the alarm to the next run."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import create_engine, func, select

from inspector_core.cli import main
from inspector_core.contract import Alarm, Sink
from inspector_core.qa import alarms, measurements
from inspector_core.store import DefectRecord, InspectionRecord, StepRecord, Store, schema
from tests.qa.conftest import T0

# 20 baseline lengths (centre 1.1, MR-bar 0.2, limits 1.1 +- 0.532), then phase II: 3.0 trips WE1
# (and its moving range 1.8 > UCL 3.267 * 0.2 the R rule), 1.1 only R (range 1.9 back down), 1.2
# nothing, 3.0 again WE1 and R.
VALUES = [1.0, 1.2] * 10 + [3.0, 1.1, 1.2, 3.0]
EXPECTED = [(20, "R"), (20, "WE1"), (21, "R"), (23, "R"), (23, "WE1")]


@pytest.fixture
def measured(db_url):
    """``db_url`` with line1's scratch lengths VALUES, one part each, in capture order."""
    from datetime import timedelta

    store = Store(db_url)
    sid, rid = store.begin_run(
        "line1", hostname="test", software_version="0.1.0", plugins={}, config_yaml="name: line1\n",
        config_hash="h", models={},
    )  # fmt: skip
    recs = []
    for i, v in enumerate(VALUES):
        d = DefectRecord("scratch", "scratch", "scratch", 0.9, True, (10, 10, 5, 5), 10.0, v, {"length_mm": v}, "s")
        recs.append(
            InspectionRecord(
                uuid.uuid4().hex,
                sid,
                rid,
                i,
                f"P{i:03d}",
                T0 + timedelta(minutes=i),
                T0 + timedelta(minutes=i, seconds=1),
                "FAIL",
                5.0,
                steps=[StepRecord(0, "scratch", "scratch", "ok", 0.9, 4.0, 1, None)],
                defects=[d],
            )  # fmt: skip
        )
    store.write(recs)
    store.close()
    return db_url


def _station(tmp_path, url, prefix, host, port):
    cfg = {
        "name": "line1",
        "source": {"type": "synthetic"},
        "steps": [{"detector": "scratch"}],
        "store": {"url": url},
        "sinks": [
            {"type": "file", "config": {"path": str(tmp_path / "out.jsonl"), "fsync": False}},
            {"type": "mqtt", "config": {"host": host, "port": port, "topic_prefix": prefix}},
        ],
        "measurements": {"scratch.length_mm": {"subgroup": 1, "baseline": 20}},
    }
    path = tmp_path / "line1.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def _subscribe(host, port, topic):
    import paho.mqtt.client as mqtt

    got: list[dict] = []
    ready = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.on_connect = lambda cl, *a: cl.subscribe(topic, qos=1)
    c.on_subscribe = lambda *a: ready.set()
    c.on_message = lambda cl, ud, msg: got.append(json.loads(msg.payload))
    c.connect(host, port)
    c.loop_start()
    assert ready.wait(5)
    return c, got


def test_alarms_reach_file_and_mqtt_once(measured, tmp_path, mqtt_broker):
    url = measured
    host, port = mqtt_broker
    prefix = f"test-alarm-{uuid.uuid4().hex[:8]}"
    station = _station(tmp_path, url, prefix, host, port)
    engine = create_engine(url)
    c = measurements.store_chart(engine, "line1", "scratch.length_mm", baseline=20)
    expected = sorted((p.index, r) for p in c.points if p.phase == "II" for r in p.rules)
    assert expected == EXPECTED  # worked out by hand above
    sub, got = _subscribe(host, port, f"{prefix}/line1/alarm")
    try:
        r = CliRunner().invoke(main, ["measurements", "--station-file", str(station), "--alarm"])
        assert r.exit_code == 1 and "5 new alarm(s)" in r.output, (
            r.output
        )  # phase II violations: the exit status stays as before
        lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
        assert sorted((a["point"], a["rule"]) for a in lines) == expected
        assert all(a["kind"] == "alarm" and a["series"] == "scratch.length_mm" for a in lines)
        assert len({a["uid"] for a in lines}) == len(lines)
        for _ in range(50):
            if len(got) >= len(lines):
                break
            threading.Event().wait(0.1)
        assert sorted(a["uid"] for a in got) == sorted(a["uid"] for a in lines)
        with engine.connect() as conn:
            n = conn.execute(select(func.count()).where(schema.Event.kind == alarms.KIND)).scalar()
        assert n == len(lines)
        # A rerun: nothing new to send, the file and the topic unchanged.
        r = CliRunner().invoke(main, ["measurements", "--station-file", str(station), "--alarm"])
        assert r.exit_code == 1 and "0 new alarm(s)" in r.output, r.output
        assert len((tmp_path / "out.jsonl").read_text().splitlines()) == len(lines)
        threading.Event().wait(0.3)
        assert len(got) == len(lines)
    finally:
        sub.loop_stop()
        sub.disconnect()
        engine.dispose()


class _Flaky(Sink):
    name = "flaky"

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.got: list[str] = []

    def send_alarm(self, alarm: Alarm) -> None:
        if self.fail:
            raise ConnectionError("receiver down")
        self.got.append(alarm.uid)


def test_a_failing_sink_leaves_the_alarm_for_the_next_run_and_the_default_hook_ignores_it(measured):
    url = measured
    engine = create_engine(url)
    try:
        found = alarms.alarms(measurements.store_chart(engine, "line1", "scratch.length_mm", baseline=20))
        assert [(a.point, a.rule) for a in found] == [(20, "WE1"), (20, "R"), (21, "R"), (23, "WE1"), (23, "R")]
        assert found[0].value == 3.0 and found[1].value == pytest.approx(1.8)
        quiet = Sink.__new__(Sink)  # the base class: send_alarm does nothing, raises nothing
        down = _Flaky(True)
        sent, problems = alarms.deliver(engine, found, [quiet, down])
        assert sent == 0 and len(problems) == len(found) and "receiver down" in problems[0]
        assert len(alarms.unsent(engine, found)) == len(found)
        up = _Flaky(False)
        sent, problems = alarms.deliver(engine, found, [up])
        assert (sent, problems) == (len(found), []) and up.got == [a.uid for a in found]
        assert alarms.unsent(engine, found) == []
    finally:
        engine.dispose()


def test_alarm_uid_is_stable_and_names_its_point():
    c = measurements.chart(VALUES, n=1, baseline=20, ids=list(range(1, 25)))
    a1, a2 = alarms.alarms(c), alarms.alarms(c)
    assert [a.uid for a in a1] == [a.uid for a in a2] and len({a.uid for a in a1}) == 5
    assert a1[0].inspection_ids == (21,) and a1[0].ucl == pytest.approx(1.1 + 3 * 0.2 / 1.128, abs=1e-9)
    more = measurements.chart([*VALUES, 1.1], n=1, baseline=20, ids=list(range(1, 26)))
    again = alarms.alarms(more)  # the new point (range 1.9) adds an R alarm, changes no old one
    assert [a.uid for a in again[:5]] == [a.uid for a in a1] and [(a.point, a.rule) for a in again[5:]] == [(24, "R")]


def test_alarms_reach_a_webhook_and_a_refusal_is_sent_again_next_run(measured, tmp_path):
    """A real HTTP server on loopback takes the alarms at ``alarm_url`` (the verdicts' ``url`` is
    elsewhere): the first run's POSTs are refused (503), so nothing is recorded and the CLI says
    so; the next run sends all five, each with its uid as the ``Idempotency-Key``."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    got: list[tuple[str, str | None, dict]] = []
    refuse = [True]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if refuse[0]:
                self.send_response(503)
            else:
                got.append((self.path, self.headers.get("Idempotency-Key"), body))
                self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    cfg = {
        "name": "line1",
        "source": {"type": "synthetic"},
        "steps": [{"detector": "scratch"}],
        "store": {"url": measured},
        "sinks": [{"type": "webhook", "config": {"url": f"{base}/verdicts", "alarm_url": f"{base}/alarms"}}],
        "measurements": {"scratch.length_mm": {"subgroup": 1, "baseline": 20}},
    }
    station = tmp_path / "line1.yaml"
    station.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    engine = create_engine(measured)
    try:
        r = CliRunner().invoke(main, ["measurements", "--station-file", str(station), "--alarm"])
        assert "0 new alarm(s)" in r.output and "503" in r.output, r.output
        assert got == []
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).where(schema.Event.kind == alarms.KIND)).scalar() == 0
        refuse[0] = False
        r = CliRunner().invoke(main, ["measurements", "--station-file", str(station), "--alarm"])
        assert "5 new alarm(s)" in r.output, r.output
        assert sorted((b["point"], b["rule"]) for _, _, b in got) == EXPECTED
        assert {p for p, _, _ in got} == {"/alarms"}
        assert all(key == b["uid"] and b["kind"] == "alarm" for _, key, b in got)
        r = CliRunner().invoke(main, ["measurements", "--station-file", str(station), "--alarm"])
        assert "0 new alarm(s)" in r.output and len(got) == 5, r.output
    finally:
        server.shutdown()
        engine.dispose()
