"""Sinks get committed verdicts (real Mosquitto); the overload policy never skips silently."""

from __future__ import annotations

import json
import threading
import uuid

import paho.mqtt.client as mqtt
import pytest

from inspector_core.testing import run_station


@pytest.mark.mqtt
def test_mqtt_sink_publishes_every_committed_verdict(tmp_path, mqtt_broker):
    host, port = mqtt_broker
    prefix = f"inspector-test-{uuid.uuid4().hex[:8]}"
    got: list[dict] = []
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, *a: c.subscribe(f"{prefix}/#", qos=1)
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = lambda c, u, msg: got.append({"topic": msg.topic, **json.loads(msg.payload)})
    client.connect(host, port)
    client.loop_start()
    assert subscribed.wait(10)
    cfg = {
        "name": "mq1",
        "source": {"type": "synthetic", "config": {"count": 12, "width": 640, "height": 480}},
        "steps": [{"detector": "bright_spot", "config": {"threshold": 200}}],
        "sinks": [{"type": "mqtt", "config": {"host": host, "port": port, "topic_prefix": prefix, "qos": 1}}],
    }
    result = run_station(cfg, tmp_path)
    rows = result.inspections()
    deadline = __import__("time").monotonic() + 10
    while len(got) < 12 and __import__("time").monotonic() < deadline:
        __import__("time").sleep(0.05)
    client.loop_stop()
    client.disconnect()
    assert [m["inspection_uid"] for m in got] == [r.uid for r in rows]
    assert {m["topic"] for m in got} == {f"{prefix}/mq1/verdict"}
    fail = next(m for m in got if m["verdict"] == "FAIL")
    assert fail["defects"] and fail["defects"][0]["kind"] == "bright_spot" and fail["station"] == "mq1"


def test_mqtt_sink_unreachable_broker_refuses_to_start(tmp_path):
    from inspector_core.runtime.station import StationError

    cfg = {
        "source": {"type": "synthetic", "config": {"count": 1}},
        "steps": [{"detector": "bright_spot"}],
        "sinks": [{"type": "mqtt", "config": {"host": "127.0.0.1", "port": 1, "timeout_s": 1}}],
    }
    with pytest.raises(StationError, match=r"sinks\[0\] \(mqtt\) failed to start: .*127.0.0.1:1 unreachable"):
        run_station(cfg, tmp_path)


def test_drop_oldest_records_every_dropped_frame(tmp_path):
    cfg = {
        "source": {"type": "synthetic", "config": {"count": 40, "width": 320, "height": 240}},
        "steps": [{"detector": "sleeper", "config": {"sleep_ms": 60}}],
        "overload": {"policy": "drop-oldest", "queue_size": 2},
    }
    rows = run_station(cfg, tmp_path).inspections()
    assert [r.seq for r in rows] == list(range(40))
    dropped = [r for r in rows if r.verdict == "NOT_INSPECTED"]
    inspected = [r for r in rows if r.verdict == "PASS"]
    assert dropped and inspected and len(dropped) + len(inspected) == 40
    assert all("overload policy drop-oldest" in r.error for r in dropped)
    # The newest frame is never the one dropped.
    assert rows[-1].verdict == "PASS"


def test_wait_policy_inspects_every_part(tmp_path):
    cfg = {
        "source": {"type": "synthetic", "config": {"count": 15, "width": 320, "height": 240}},
        "steps": [{"detector": "sleeper", "config": {"sleep_ms": 20}}],
        "overload": {"policy": "wait", "queue_size": 1},
    }
    assert run_station(cfg, tmp_path).verdicts() == {"PASS": 15}


class FlakySinkError(Exception):
    pass


def test_failing_sink_is_retried_and_never_loses_a_verdict(tmp_path):
    """A sink that fails twice per verdict still gets each one, in commit order."""
    from inspector_core.contract import Report, Sink
    from inspector_core.plugins import load
    from inspector_core.testing import run_station as run

    sent: list[str] = []

    class Flaky(Sink):
        name = "flaky"
        attempts: dict[str, int] = {}

        def send(self, report: Report) -> None:
            n = self.attempts.get(report.inspection_uid, 0) + 1
            self.attempts[report.inspection_uid] = n
            if n < 3:
                raise FlakySinkError("PLC busy")
            sent.append(report.inspection_uid)

    class Plugin:
        @staticmethod
        def inspector_register_sinks(register):
            register(Flaky)

    from inspector_core import hookimpl

    Plugin.inspector_register_sinks = hookimpl(Plugin.inspector_register_sinks)
    reg = load(extra=[("flaky_plugin", Plugin)])
    cfg = {
        "source": {"type": "synthetic", "config": {"count": 5, "width": 320, "height": 240}},
        "steps": [{"detector": "bright_spot"}],
        "sinks": [{"type": "flaky"}],
    }
    result = run(cfg, tmp_path, registry=reg)
    assert sent == [r.uid for r in result.inspections()]


def test_webhook_sink_posts_committed_verdicts_and_retries_a_refusal(tmp_path):
    """A real HTTP server on loopback: the first two POSTs are answered 503, then 200. Every
    committed FAIL arrives exactly once, with the API key header; PASS parts are filtered out."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    got: list[dict] = []
    refused = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if refused[0] < 2:
                refused[0] += 1
                self.send_response(503)
            else:
                got.append({"key": self.headers.get("X-Api-Key"), **body})
                self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/verdicts"
        cfg = {
            "name": "wh1",
            "source": {"type": "synthetic", "config": {"count": 16, "width": 640, "height": 480}},
            "steps": [{"detector": "bright_spot", "config": {"threshold": 200}}],
            "sinks": [{"type": "webhook", "config": {"url": url, "headers": {"X-Api-Key": "k1"}, "only": ["FAIL"]}}],
        }
        result = run_station(cfg, tmp_path)
    finally:
        server.shutdown()
    fails = [r.uid for r in result.inspections() if r.verdict == "FAIL"]
    assert fails, "the synthetic stream should have failing parts"
    assert refused[0] == 2
    assert sorted(m["inspection_uid"] for m in got) == sorted(fails)  # each once, none lost
    assert {m["key"] for m in got} == {"k1"} and {m["verdict"] for m in got} == {"FAIL"}
