"""``inspector line``: commission a station without a PLC (``simulate``), and list the parts
whose PLC result differed from their real verdict (``mismatches``)."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import click


@click.group()
def line() -> None:
    """The station on a line: a PLC simulator and the line's results (docs/line.md)."""


def run_station_in_thread(
    st: Any, registry: Any, port: int | None
) -> tuple[Any, threading.Thread, list[BaseException]]:
    """Start ``st`` in a thread (its link on ``port`` when given); return once the link serves."""
    from inspector_core.runtime.station import StationRuntime

    if port is not None and st.line is not None:
        cls, cfg = st.line
        st = dataclasses.replace(st, line=(cls, cfg.model_copy(update={"port": port})))
    runtime = StationRuntime(st, registry)
    failure: list[BaseException] = []

    def target() -> None:
        try:
            runtime.run()
        except BaseException as exc:  # noqa: BLE001 - shown by the caller
            failure.append(exc)

    thread = threading.Thread(target=target, name="inspector-station", daemon=True)
    thread.start()
    for _ in range(600):
        hs = getattr(runtime, "_line", None)
        if hs is not None or failure or not thread.is_alive():
            break
        time.sleep(0.05)
    return runtime, thread, failure


@line.command()
@click.argument("station_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--rate", type=float, default=10.0, show_default=True, help="triggers per second")
@click.option("--count", type=int, default=100, show_default=True, help="triggers to send")
@click.option(
    "--connect",
    default=None,
    help="a station already running: HOST:PORT (modbus) or its opc.tcp:// endpoint (opcua); default: run it here",
)
@click.option("--port", type=int, default=None, help="serve the station's link on this port (0: a free one)")
@click.option("--reconnect-every", type=int, default=0, help="the PLC disconnects and reconnects every N triggers")
@click.option("--no-ack", is_flag=True, help="the PLC never acknowledges (to see the ack timeouts)")
def simulate(
    station_file: str,
    rate: float,
    count: int,
    connect: str | None,
    port: int | None,
    reconnect_every: int,
    no_ack: bool,
) -> None:
    """Drive STATION_FILE as a PLC would, over its real protocol, and print what the PLC saw:
    trigger -> result latency (p50 / p99), results by code, deadline misses and defaults."""
    from inspector_core.cli import _load_or_exit, registry
    from inspector_line.modbus import ModbusConfig
    from inspector_line.simulate import drive_elsewhere

    st = _load_or_exit(station_file)
    if st.line is None or st.spec.line is None:
        raise click.ClickException(f"{station_file}: no `line:` section; add one (docs/line.md)")
    spec = st.spec.line
    cls, cfg = st.line
    if not isinstance(cfg, ModbusConfig) and cls.name != "opcua":
        raise click.ClickException(
            f"{station_file}: line.protocol {cls.name!r}: the simulator speaks modbus and opcua only"
        )
    runtime = thread = None
    failure: list[BaseException] = []
    if not connect:
        runtime, thread, failure = run_station_in_thread(st, registry(), port)
        if failure or runtime._line is None:
            raise click.ClickException(f"the station did not start: {failure[0] if failure else 'no line'}")
    opcua = None
    target_host, target_port = "127.0.0.1", 0
    if isinstance(cfg, ModbusConfig):
        if connect:
            host, _, p = connect.rpartition(":")
            target_host, target_port = host or "127.0.0.1", int(p)
        elif runtime is not None:
            target_port = runtime._line.link.port
        where = f"{target_host}:{target_port}"
    else:
        endpoint = connect or (runtime._line.link.endpoint if runtime is not None else None)
        opcua = {"endpoint": endpoint, "namespace_uri": cfg.namespace_uri, "object_name": cfg.object_name}
        where = str(endpoint)
    click.echo(f"PLC -> {where}, {count} triggers at {rate:g}/s, deadline {spec.deadline_ms:g} ms")
    try:
        # The PLC in a process of its own, as a real one: it does not share the station's CPU time.
        seen = drive_elsewhere(
            target_host,
            target_port,
            rate=rate,
            count=count,
            deadline_ms=spec.deadline_ms,
            base=getattr(cfg, "base", 0),
            reconnect_every=reconnect_every,
            ack=not no_ack,
            opcua=opcua,
        )
    finally:
        if runtime is not None and thread is not None:
            runtime.stop()
            thread.join(60)
    names = {spec.codes.ok: "OK", spec.codes.nok: "NOK", spec.codes.recheck: "RECHECK"}
    click.echo(seen.summary(names))
    if runtime is not None and runtime._line is not None:
        s = runtime._line.stats
        click.echo(
            "station: "
            + ", ".join(
                f"{k} {s[k]}"
                for k in ("triggers", "results", "defaults", "late", "not_captured", "overruns", "missed", "acks")
            )
            + f", ack timeouts {s['ack_timeouts']}"
        )
    if failure:
        raise click.ClickException(f"the station failed: {failure[0]}")


@line.command()
@click.argument("station_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--limit", type=int, default=50, show_default=True)
def mismatches(station_file: str, limit: int) -> None:
    """Parts whose result on the PLC differed from their real verdict (a deadline default,
    then the real verdict): what the line did with a part the station judged otherwise."""
    from inspector_core.cli import _load_or_exit
    from inspector_core.qa.line import plc_mismatches

    st = _load_or_exit(station_file)
    rows = plc_mismatches(st.store_url, st.name, limit=limit)
    if not rows:
        click.echo("no part got a PLC result other than its verdict's")
        return
    click.echo("triggered_at\tcounter\tpart_id\tcode sent\tverdict\tverdict code\tinspection")
    for r in rows:
        click.echo(
            f"{r.triggered_at:%Y-%m-%d %H:%M:%S}\t{r.counter}\t{r.part_id or ''}\t{r.code}"
            f"{' (default)' if r.is_default else ''}\t{r.verdict or '(none)'}\t"
            f"{'' if r.verdict_code is None else r.verdict_code}\t{r.inspection_uid or ''}"
        )
