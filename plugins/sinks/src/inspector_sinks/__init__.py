"""Inspector's built-in verdict sinks: file (JSON lines), MQTT, webhook. Each also takes SPC alarms
(``send_alarm``: a JSON object with ``"kind": "alarm"``).

The host delivers each committed verdict at least once (from its durable outbox, resumed after
a restart), so a receiver may see a report twice: ``inspection_uid`` is the idempotency key
(the webhook sink also sends it as the ``Idempotency-Key`` header). Every message is strict
JSON (:func:`report_json`): no ``NaN``/``Infinity``, nothing that is not JSON.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from inspector_core import Alarm, PluginConfig, Report, Sink, hookimpl


def json_safe(value: Any) -> Any:
    """``value`` with every part JSON can carry strictly: non-finite floats become ``None``,
    bytes become text (UTF-8, undecodable bytes replaced), times ISO 8601, tuples and sets
    lists, keys text, anything else its ``str()``."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(json_safe(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    try:  # numpy scalars and the like
        return json_safe(value.item())
    except (AttributeError, TypeError, ValueError):
        return str(value)


def report_json(report: Report) -> str:
    """The report as one line of strict JSON (``allow_nan=False``; see :func:`json_safe`)."""
    return json.dumps(json_safe(report.as_dict()), allow_nan=False)


class FileConfig(PluginConfig):
    path: str = Field(description="JSON-lines file to append to; relative to the station file")
    fsync: bool = Field(
        True,
        description="fsync before a verdict counts as delivered (a line in the file survives a power cut); "
        "the verdicts waiting for the sink share one fsync",
    )


class FileSink(Sink):
    """Appends each committed verdict as one JSON line.

    The verdicts waiting for the sink are written together and made durable with one fsync
    (:meth:`send_many`); a write or fsync that fails takes the group's lines out of the file again
    (the host sends the group again, whole), so a retry writes no line twice. A line cut short by a
    crash (never fsync'ed, so never reported delivered: it is sent again) is dropped when the file
    is next opened, so every line of the file is a whole JSON document."""

    name = "file"
    Config = FileConfig
    config: FileConfig

    def __init__(self, config: FileConfig, *, station_dir: Path) -> None:
        super().__init__(config, station_dir=station_dir)
        p = Path(config.path)
        self.path = p if p.is_absolute() else station_dir / p
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            self._drop_cut_line()
        except BaseException:
            os.close(self._fd)
            raise

    def _drop_cut_line(self) -> None:
        end = os.fstat(self._fd).st_size
        with self.path.open("rb") as f:
            if end == 0 or (f.seek(end - 1), f.read(1))[1] == b"\n":
                return
            keep = 0
            while end > 0:
                start = max(0, end - 65536)
                f.seek(start)
                nl = f.read(end - start).rfind(b"\n")
                if nl >= 0:
                    keep = start + nl + 1
                    break
                end = start
        os.ftruncate(self._fd, keep)

    def send(self, report: Report) -> None:
        self._append([report_json(report)])

    def send_many(self, reports: Sequence[Report]) -> None:
        """All of ``reports`` as lines, then one fsync."""
        self._append([report_json(r) for r in reports])

    def send_alarm(self, alarm: Alarm) -> None:
        """An SPC alarm as one more line of the same file, told apart by ``"kind": "alarm"``."""
        self._append([json.dumps(json_safe(alarm.as_dict()), allow_nan=False)])

    def _append(self, lines: list[str]) -> None:
        data = memoryview("".join(line + "\n" for line in lines).encode("utf-8"))
        start = os.fstat(self._fd).st_size  # the sink's own file, one writer: its end is where these go
        try:
            while data:
                data = data[os.write(self._fd, data) :]
            if self.config.fsync:
                os.fsync(self._fd)
        except BaseException:
            # Out again, so that the host's retry of the whole group writes each line once.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise

    def close(self) -> None:
        os.close(self._fd)


class MqttConfig(PluginConfig):
    host: str = Field("127.0.0.1", description="broker host")
    port: int = Field(1883, ge=1, le=65535, description="broker port")
    topic_prefix: str = Field("inspector", description="messages go to <prefix>/<station>/verdict")
    qos: Literal[0, 1, 2] = Field(1, description="MQTT quality of service; 1 = at least once")
    retain: bool = Field(False, description="retain the last verdict on the topic")
    username: str | None = Field(None, description="broker user")
    password: str | None = Field(None, description="broker password; prefer ${VAR} in a deployment")
    client_id: str = Field("", description="MQTT client id; empty: the broker assigns one")
    tls: bool = Field(False, description="connect with TLS")
    timeout_s: float = Field(5.0, gt=0, description="how long to wait for the broker's acknowledgement")


class MqttSink(Sink):
    """Publishes each committed verdict to MQTT and waits for the broker's acknowledgement
    (QoS 1/2), so a verdict counts as sent only once the broker has it."""

    name = "mqtt"
    Config = MqttConfig
    config: MqttConfig

    def __init__(self, config: MqttConfig, *, station_dir: Path) -> None:
        super().__init__(config, station_dir=station_dir)
        import paho.mqtt.client as mqtt

        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.client_id)
        if config.username:
            self._client.username_pw_set(config.username, config.password)
        if config.tls:
            self._client.tls_set()
        self._connected = threading.Event()
        self._client.on_connect = lambda *a, **k: self._connected.set()
        self._client.on_disconnect = lambda *a, **k: self._connected.clear()
        try:
            self._client.connect(config.host, config.port, keepalive=30)
        except OSError as exc:
            raise ConnectionError(
                f"MQTT broker {config.host}:{config.port} unreachable ({exc}); "
                "check sinks[].config.host/port and that the broker runs"
            ) from exc
        self._client.loop_start()
        if not self._connected.wait(config.timeout_s):
            raise ConnectionError(
                f"MQTT broker {config.host}:{config.port} did not accept the connection within {config.timeout_s} s"
            )

    def topic(self, station: str) -> str:
        return f"{self.config.topic_prefix}/{station}/verdict"

    def send(self, report: Report) -> None:
        self._publish(self.topic(report.station), report_json(report), self.config.retain)

    def send_alarm(self, alarm: Alarm) -> None:
        """An SPC alarm to ``<prefix>/<station>/alarm`` (never retained), acknowledged like a verdict."""
        payload = json.dumps(json_safe(alarm.as_dict()), allow_nan=False)
        self._publish(f"{self.config.topic_prefix}/{alarm.station}/alarm", payload, False)

    def _publish(self, topic: str, payload: str, retain: bool) -> None:
        info = self._client.publish(topic, payload, qos=self.config.qos, retain=retain)
        info.wait_for_publish(self.config.timeout_s)
        if not info.is_published():
            raise TimeoutError(
                f"MQTT broker {self.config.host}:{self.config.port} did not acknowledge "
                f"within {self.config.timeout_s} s"
            )

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


class WebhookConfig(PluginConfig):
    url: str = Field(description="HTTP(S) URL that receives a POST with the verdict as JSON")
    timeout_s: float = Field(5.0, gt=0, description="per request")
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers (e.g. an API key)")
    only: list[Literal["PASS", "FAIL", "ERROR", "NOT_INSPECTED"]] | None = Field(
        None, description="send only these verdicts; all when absent (SPC alarms are not verdicts: always sent)"
    )
    alarm_url: str | None = Field(
        None, description="where SPC alarms are POSTed (inspector measurements --alarm); the verdicts' url when absent"
    )


class WebhookSink(Sink):
    """POSTs each committed verdict as JSON; a non-2xx answer is a failure (retried)."""

    name = "webhook"
    Config = WebhookConfig
    config: WebhookConfig

    def __init__(self, config: WebhookConfig, *, station_dir: Path) -> None:
        super().__init__(config, station_dir=station_dir)
        import httpx

        self._http = httpx.Client(timeout=config.timeout_s, headers=config.headers)

    def send(self, report: Report) -> None:
        if self.config.only is not None and report.verdict not in self.config.only:
            return
        self._http.post(
            self.config.url,
            content=report_json(report),
            headers={"Content-Type": "application/json", "Idempotency-Key": report.inspection_uid},
        ).raise_for_status()

    def send_alarm(self, alarm: Alarm) -> None:
        """An SPC alarm POSTed as JSON (``"kind": "alarm"``) to ``alarm_url`` (else ``url``), with
        ``Idempotency-Key: <alarm uid>``; a non-2xx answer raises, so the alarm is sent again on the
        next ``--alarm`` run."""
        self._http.post(
            self.config.alarm_url or self.config.url,
            content=json.dumps(json_safe(alarm.as_dict()), allow_nan=False),
            headers={"Content-Type": "application/json", "Idempotency-Key": alarm.uid},
        ).raise_for_status()

    def close(self) -> None:
        self._http.close()


@hookimpl
def inspector_register_sinks(register) -> None:
    for cls in (FileSink, MqttSink, WebhookSink):
        register(cls)
