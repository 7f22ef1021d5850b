"""The ``inspector`` command line (click; rich for tables and live progress).

Built-in commands: ``run``, ``validate``, ``plugins``, ``plugin new``; the QA commands from
:mod:`inspector_core.qa.cli`; and whatever plugins register through
``inspector_register_commands`` (``train``, ``teach``, ...).
"""

from __future__ import annotations

import json
import logging
import sys

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from inspector_core import __version__
from inspector_core import template as _plugin_template
from inspector_core.console import console
from inspector_core.plugins import Registry, load
from inspector_core.runtime.config import ConfigError, load_station

err = console(stderr=True)

_registry: Registry | None = None


def registry() -> Registry:
    """The installed plugins, loaded once per process."""
    global _registry
    if _registry is None:
        _registry = load()
    return _registry


class _Group(click.Group):
    """Adds the QA commands and plugins' commands lazily, so ``--help`` lists them."""

    _loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            from inspector_core.qa import cli as qa_cli
        except ImportError as exc:  # the QA module is optional only while it is being built
            logging.getLogger(__name__).debug("QA commands unavailable: %s", exc)
        else:
            for cmd in qa_cli.commands():
                self.add_command(cmd)
        for name, cmd in registry().commands.items():
            if isinstance(cmd, click.Command) and (cmd.name or name) not in self.commands:
                self.add_command(cmd)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        self._load()
        return super().get_command(ctx, name)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="inspector")
@click.option("-v", "--verbose", count=True, help="more log output (-vv for debug)")
def main(verbose: int) -> None:
    """Inspector: quality inspection for manufacturing lines."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")


def _load_or_exit(path: str):
    try:
        return load_station(path, registry())
    except ConfigError as exc:
        # Plain text, never wrapped: editors and CI logs match on "file: path: reason".
        click.echo(click.style(str(exc), fg="red"), err=True)
        click.echo(f"{len(exc.problems)} problem(s); the station was not started.", err=True)
        sys.exit(2)


def _steps(st) -> str:
    """``3 steps (align, scratch, dent)``."""
    n = len(st.steps)
    return f"{n} step{'' if n == 1 else 's'} ({', '.join(s.name for s in st.steps)})"


# `inspector plugin new NAME`: the plugin template (inspector_core/template; copier from the kit extra).
main.add_command(_plugin_template.plugin)


@main.command()
@click.argument("station_file", type=click.Path(dir_okay=False))
@click.argument("name", required=False)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=120.0, show_default=True, help="seconds to wait")
def recipe(station_file: str, name: str | None, timeout: float) -> None:
    """Change the product of a running station to recipe NAME (or a product code of it), or,
    without NAME, show its active recipe. Returns once the recipe is active: its detectors are
    started and warmed first; the parts captured before finish under their recipe (docs/recipes.md).

    Exit status: 0 switched (or shown); 1 the station is not running or refused the recipe; 2 the
    station file is invalid."""
    from inspector_core.runtime.control import ControlError, request

    st = _load_or_exit(station_file)
    try:
        answer = request(st, {"op": "status"} if name is None else {"op": "recipe", "name": name}, timeout=timeout)
    except ControlError as exc:
        click.echo(click.style(str(exc), fg="red"), err=True)
        sys.exit(1)
    if not answer.get("ok"):
        click.echo(click.style(f"station {st.name}: {answer.get('error')}", fg="red"), err=True)
        sys.exit(1)
    if name is None:
        listed = ", ".join(answer.get("recipes") or []) or "none"
        click.echo(f"station {st.name}: recipe {answer.get('recipe')} (recipes: {listed})")
    else:
        click.echo(f"station {st.name}: recipe {answer['recipe']} active ({answer['ms']:g} ms after the request)")


@main.command()
@click.argument("station_file", type=click.Path(dir_okay=False))
def validate(station_file: str) -> None:
    """Check a station file: its shape, every plugin's config, the verdict rules against what
    the steps emit, the ROIs against the frame size, and the store URL."""
    from sqlalchemy.engine import make_url

    st = _load_or_exit(station_file)
    # The URL may hold a password expanded from ${VAR}: never print it.
    store = make_url(st.store_url).render_as_string(hide_password=True)
    click.echo(
        f"{station_file}: ok (station {st.name!r}, source {st.source.name}, "
        f"{_steps(st)}; store {store}; "
        f"config hash {st.config_hash[:12]})"
    )
    if st.views is not None:  # issue 14: the views of a part and where each comes from (docs/views.md)
        spec_views = st.spec.views or {}
        where = {
            v: spec_views[v].source.type if spec_views[v].source else f"source {st.spec.source.type}"
            for v in st.views.names
        }
        shown = ", ".join(f"{v} ({w})" for v, w in where.items())
        on_line = "; on the line one trigger per view, in this order" if st.spec.line is not None else ""
        click.echo(f"  views: {shown}; joined by part id within {st.views.deadline_ms:g} ms{on_line}")
    for name, r in st.recipes.items():  # each one validated as a whole station (docs/recipes.md)
        start = "; active at start" if name == st.recipe else ""
        click.echo(f"  recipe {name}: ok ({_steps(r)}; hash {(r.recipe_hash or '')[:12]}{start})")


@main.command()
@click.argument("station_file", type=click.Path(dir_okay=False))
@click.option("--limit", type=click.IntRange(min=1), help="stop after this many parts")
@click.option("--quiet", is_flag=True, help="no live progress; only the summary")
def run(station_file: str, limit: int | None, quiet: bool) -> None:
    """Run a station: inspect every part from its source and record every verdict.

    Ctrl-C (or SIGTERM) stops capturing, finishes the parts already captured and commits them.
    A second Ctrl-C stops waiting for the steps: the parts not yet inspected are recorded
    NOT_INSPECTED (the one being inspected ERROR) and committed; a third exits at once.

    Exit status: 0 every captured part recorded; 1 the station could not start or failed
    (the message says why); 2 the station file is invalid; 3 the source gave no parts.
    """
    from inspector_core.runtime.station import StationError, StationRuntime

    st = _load_or_exit(station_file)
    err.print(f"station [bold]{st.name}[/] from {station_file}: {_steps(st)}, store {st.store_url}")
    live_console = Console(stderr=True)
    live = None if quiet or not live_console.is_terminal else Live(console=live_console, refresh_per_second=4)
    last_line = [0.0]

    def progress(tally) -> None:
        import time

        if live is not None:
            live.update(Text(tally.line()))
        elif not quiet and time.monotonic() - last_line[0] > 5:
            last_line[0] = time.monotonic()
            err.print(tally.line())

    runtime = StationRuntime(st, registry(), limit=limit, on_progress=progress)
    try:
        if live is not None:
            with live:
                tally = runtime.run()
        else:
            tally = runtime.run()
    except StationError as exc:
        click.echo(click.style(str(exc), fg="red"), err=True)
        sys.exit(1)
    # A run wholly in an outage has no id yet: the spool and, once written, runs.uid know it by its uid.
    which = (
        f"run {runtime.run_id}"
        if runtime.run_id is not None
        else f"run {getattr(runtime, 'run_uid', '?')} (not yet in the store)"
    )
    table = Table(title=f"{which} of station {st.name}", show_header=True)
    for col in ("parts", "PASS", "FAIL", "ERROR", "NOT_INSPECTED", "parts/s", "latency p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    elapsed = max(1e-9, __import__("time").monotonic() - tally.started)
    p50, p99 = tally.percentile(50), tally.percentile(99)
    v = tally.counts()
    table.add_row(
        str(tally.total),
        str(v["PASS"]),
        str(v["FAIL"]),
        str(v["ERROR"]),
        str(v["NOT_INSPECTED"]),
        f"{tally.total / elapsed:.1f}",
        "-" if p50 is None else f"{p50:.1f}",
        "-" if p99 is None else f"{p99:.1f}",
    )
    console().print(table)
    if runtime.failure:
        err.print(Text(runtime.failure, style="red"))
        sys.exit(1)
    if tally.total == 0:
        config = st.source_config.model_dump(mode="json")
        err.print(
            Text(
                f"station {st.name}: the source {st.source.name} gave no parts (config {config}); "
                "nothing was inspected. Check the source's config (a path, a pattern, a camera).",
                style="yellow",
            )
        )
        sys.exit(3)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def plugins(as_json: bool) -> None:
    """List installed plugins: distribution, version, what each registers, load errors."""
    reg = registry()
    infos = sorted(reg.plugins.values(), key=lambda p: p.name)
    if as_json:
        click.echo(json.dumps([p.as_dict() for p in infos], indent=2))
        return
    table = Table(show_header=True)
    columns = ("plugin", "distribution", "version", "detectors", "sources", "sinks", "plc links", "commands", "status")
    for col in columns:
        table.add_column(col)
    for p in infos:
        status = (
            Text("disabled", style="yellow")
            if p.disabled
            else (Text(p.error, style="red") if p.error else Text("ok", style="green"))
        )
        table.add_row(
            p.name,
            p.distribution or "-",
            p.version or "-",
            ", ".join(p.detectors),
            ", ".join(p.sources),
            ", ".join(p.sinks),
            ", ".join(p.plc_links),
            ", ".join(p.commands),
            status,
        )
    Console(width=200).print(table)
    if reg.broken():
        err.print(f"{len(reg.broken())} plugin(s) failed to load; a station stops only if it uses one of them.")


@main.command()
@click.argument("station_file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status(station_file: str, as_json: bool) -> None:
    """Show what a station still owes its sinks: per sink its cursor, its backlog (verdicts
    committed but not yet delivered), whether it is failing and its last error; the latest sink
    events. Reads the store only (never migrates or writes)."""
    from inspector_core.qa.reader import ReaderError, open_reader
    from inspector_core.runtime.delivery import sink_keys
    from inspector_core.store import StoreError
    from inspector_core.store.outbox import sink_events, sink_states

    st = _load_or_exit(station_file)
    try:
        keys = sink_keys(st.spec.sinks)
    except ValueError as exc:
        click.echo(click.style(f"{station_file}: {exc}", fg="red"), err=True)
        sys.exit(2)
    spool = _spool_status(st)
    try:
        store = open_reader(st.store_url, source=f"--station-file {station_file}")
    except ReaderError as exc:
        click.echo(click.style(str(exc), fg="red"), err=True)
        _echo_spool(spool)  # what waits locally is the interesting part while the database is away
        sys.exit(1)
    try:
        states = {s.sink: s for s in sink_states(store.engine, st.name)}
        events = sink_events(store.engine, st.name)
    except StoreError as exc:
        click.echo(click.style(str(exc), fg="red"), err=True)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - the database's own words, with the store named
        click.echo(click.style(f"store {store.display_url}: cannot read the delivery state: {exc}", fg="red"), err=True)
        sys.exit(1)
    finally:
        store.close()
    types = {(s.name or s.type): s.type for s in st.spec.sinks}
    if as_json:
        click.echo(
            json.dumps(
                {
                    "station": st.name,
                    "store": store.display_url,
                    "spool": spool,
                    "sinks": [
                        {
                            "sink": k,
                            "type": types[k],
                            "cursor": s.inspection_id if s else None,
                            "backlog": s.backlog if s else None,
                            "failing_since": s.failing_since.isoformat() if s and s.failing_since else None,
                            "last_error": s.last_error if s else None,
                            "last_error_at": s.last_error_at.isoformat() if s and s.last_error_at else None,
                        }
                        for k in keys
                        for s in [states.get(k)]
                    ],
                    "events": [{"at": at.isoformat(), "kind": kind, "message": msg} for at, kind, msg in events],
                },
                indent=2,
            )
        )
        return
    click.echo(f"station {st.name}: store {store.display_url}")
    if not keys:
        click.echo("no sinks configured")
    for k in keys:
        s = states.get(k)
        if s is None:
            click.echo(f"  sink {k} ({types[k]}): no cursor yet (the station has not run with this sink)")
            continue
        line = f"  sink {k} ({types[k]}): cursor at inspection {s.inspection_id}, "
        line += "up to date" if s.backlog == 0 else f"{s.backlog} not delivered"
        if s.failing_since is not None:
            line += f"; FAILING since {s.failing_since:%Y-%m-%d %H:%M:%S} UTC"
        if s.last_error:
            line += (
                f"; last error ({s.last_error_at:%Y-%m-%d %H:%M:%S} UTC): {s.last_error}"
                if s.last_error_at
                else f"; last error: {s.last_error}"
            )
        click.echo(line)
    gone = sorted(set(states) - set(keys))
    for k in gone:
        click.echo(
            f"  sink {k}: no longer in the station file; {states[k].backlog} not delivered "
            "(its cursor is dropped when the station next starts)"
        )
    _echo_spool(spool)
    if events:
        click.echo("latest sink events:")
        for at, kind, msg in events:
            click.echo(f"  {at:%Y-%m-%d %H:%M:%S} {kind}: {msg}")


def _echo_spool(spool: dict[str, object] | None) -> None:
    if spool is None:
        return
    if "error" in spool:
        click.echo(f"spool {spool['path']}: cannot read it: {spool['error']}")
    elif not (spool["verdicts"] or spool["events"] or spool["refused"]):
        click.echo(f"spool {spool['path']}: empty (nothing waits for the database)")
    else:
        click.echo(
            f"spool {spool['path']}: {spool['verdicts']} verdicts and {spool['events']} events wait for "
            f"the database (the sinks get them once written); {spool['refused']} records set aside "
            "(refused by the database)"
        )


def _spool_status(st) -> dict[str, object] | None:
    """What waits in the station's spool (verdicts not yet in the database), read without
    writing; ``None`` when there is no spool file."""
    import sqlite3
    from pathlib import Path
    from urllib.parse import quote

    from sqlalchemy.engine import make_url

    from inspector_core.store.spool import spool_file

    folder = Path(st.spec.store.spool) if st.spec.store.spool else Path(".spool")
    folder = folder if folder.is_absolute() else st.directory / folder
    path = spool_file(folder, st.name, make_url(st.store_url).render_as_string(hide_password=True))
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
        try:
            kinds = dict(db.execute("SELECT kind, count(*) FROM items GROUP BY kind").fetchall())
            refused = db.execute("SELECT count(*) FROM refused").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error as exc:
        return {"path": str(path), "error": str(exc)}
    return {
        "path": str(path),
        "verdicts": kinds.get("inspection", 0),
        "events": kinds.get("event", 0),
        "refused": refused,
    }


if __name__ == "__main__":
    main()
