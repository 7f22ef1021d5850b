"""``inspector propose thresholds``, ``inspector compare``, ``inspector near-misses``,
``inspector measurements`` and ``inspector export reviewed``: from reviews to decisions (issue 15).

All of them read the store (read-only, never migrated); ``propose thresholds --write NEW.yaml``
writes only a new station file, never the old one nor the store.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from inspector_core.console import console
from inspector_core.qa import compare as cmp
from inspector_core.qa import datasets, measurements, near_miss, proposals
from inspector_core.qa.cli import _fmt_t, db_options, export, open_engine, parse_time, resolve_store
from inspector_core.qa.filters import QueryError

out = console()
err = console(stderr=True)


def _station_file(station_file: str | None) -> tuple[Path, str]:
    if not station_file:
        raise click.UsageError("--station-file: the station whose rules (or spec limits) to use")
    path = Path(station_file)
    return path, path.read_text(encoding="utf-8")


def _f(x: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


# ---------------------------------------------------------------------------- propose


@click.group()
def propose() -> None:
    """Proposals from the reviewed outcomes (docs/qa.md)."""


@propose.command("thresholds")
@db_options
@click.option("--criterion", type=click.Choice(proposals.CRITERIA), default="keep-recall", show_default=True,
              help="keep-recall: fewest false alarms with recall >= the current recall; f1: largest F1")  # fmt: skip
@click.option("--since", help="reviewed parts captured from (a duration back or an ISO time)")
@click.option("--until", help="before (same forms)")
@click.option("--write", "write_to", type=click.Path(dir_okay=False), help="write the proposed rules to this NEW file")
@click.option(
    "--include-few",
    is_flag=True,
    help=f"--write also proposals with fewer than {proposals.MIN_REVIEWED} reviewed parts or no reviewed defect",
)
@click.option("--show", type=click.IntRange(0), default=10, show_default=True, help="changed part ids listed")
@click.option("--json", "as_json", is_flag=True)
def propose_thresholds(
    db: str | None, station_file: str | None, criterion: str, since: str | None, until: str | None,
    write_to: str | None, include_few: bool, show: int, as_json: bool,
) -> None:  # fmt: skip
    """For each rule (min_score per kind, and its size limit where it has one), the threshold
    that would have judged the reviewed parts best under --criterion, previewed with what-if
    over the station's stored parts. --write NEW.yaml writes a new station file with the
    changed values (comments kept) and shows the diff; the old file is not touched, the new
    one has a new config hash, recorded by the next run started with it."""
    path, text = _station_file(station_file)
    engine = open_engine(db, station_file)
    try:
        ps = proposals.propose(
            engine, text, criterion=criterion, since=parse_time(since), until=parse_time(until, name="--until")
        )
    except QueryError as exc:
        raise click.ClickException(f"--station-file {path}: {exc}") from exc
    if as_json and not write_to:
        click.echo(json.dumps([p.as_dict() for p in ps], indent=1))
        return
    if not ps:
        err.print("no reviewed parts at this station yet: review some (`inspector review list`) first")
    t = Table(title=f"threshold proposals ({criterion})")
    for col in ("kind", "field", "now", "proposed", "reviewed", "tp/fp/fn now", "tp/fp/fn then", "recall now -> then",
                "verdicts changed"):  # fmt: skip
        t.add_column(col)
    for p in ps:
        w = p.preview
        moved = "-" if w is None else f"{len(w.to_fail)} PASS->FAIL, {len(w.to_pass)} FAIL->PASS"
        t.add_row(
            p.kind, p.field, _f(p.current, "{:g}"), _f(p.proposed, "{:g}") + ("" if p.enough else " (too few reviews)"),
            str(p.reviewed), f"{p.now.tp}/{p.now.fp}/{p.now.fn}", f"{p.then.tp}/{p.then.fp}/{p.then.fn}",
            f"{_f(p.now.recall, '{:.2f}')} -> {_f(p.then.recall, '{:.2f}')}", moved,
        )  # fmt: skip
    out.print(t, highlight=False)
    for p in ps:
        if p.unreachable:
            out.print(f"{p.kind}: {p.unreachable} missed defect(s) have no stored finding: no threshold finds them")
        w = p.preview
        if w is not None and show:
            for title, ch in (("PASS->FAIL", w.to_fail), ("FAIL->PASS", w.to_pass)):
                if ch:
                    ids = ", ".join(c.part_id for c in ch[:show]) + (" ..." if len(ch) > show else "")
                    out.print(f"{p.kind}.{p.field}={p.proposed:g} {title}: {ids}", highlight=False)
    if write_to:
        changed = [p for p in ps if p.changed and (p.enough or include_few)]
        for p in ps:
            if p.changed and p not in changed:
                err.print(
                    f"{p.kind}.{p.field}: not written ({p.reviewed} reviewed parts, {p.now.tp + p.now.fn} defects "
                    f"among them; at least {proposals.MIN_REVIEWED} and one defect, or --include-few)"
                )
        if not changed:
            raise click.ClickException("no threshold changes to write: the current rules are already the proposal")
        new = proposals.rewrite(text, changed)
        new_path = Path(write_to)
        # The store must stay the same one: a relative SQLite URL resolves against the file's folder.
        if resolve_store(None, str(path))[0] != _url_of(new, new_path):
            raise click.ClickException(
                f"--write {new_path}: the store URL would resolve to another database from that folder; "
                f"write the new file beside {path}"
            )
        try:
            proposals.write_station(path, new_path, new)
        except QueryError as exc:
            raise click.ClickException(str(exc)) from exc
        import hashlib

        click.echo(proposals.diff(text, new, str(path), str(new_path)), nl=False)
        err.print(
            f"wrote {new_path}: config hash {hashlib.sha256(text.encode()).hexdigest()[:12]} -> "
            f"{hashlib.sha256(new.encode()).hexdigest()[:12]}; `inspector validate {new_path}` then run the "
            "station with it"
        )


def _url_of(text: str, path: Path) -> str:
    import yaml

    from inspector_core.runtime.config import _resolve_url

    data = yaml.safe_load(text) or {}
    return _resolve_url(((data.get("store") or {}).get("url")) or "sqlite:///inspector.db", path.resolve().parent)


# ---------------------------------------------------------------------------- compare


@click.command("compare")
@db_options
@click.option("--runs", nargs=2, type=click.IntRange(1), help="two run ids: before, after")
@click.option("--config-hashes", nargs=2, help="two config hashes (or unique prefixes of 6+): before, after")
@click.option("--station", help="only this station's runs (default: the --station-file's name)")
@click.option("--json", "as_json", is_flag=True)
def compare_cmd(
    db: str | None, station_file: str | None, runs: tuple[int, int] | None, config_hashes: tuple[str, str] | None,
    station: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Yield, reject rate and reviewed false-alarm rate of two runs or two config hashes, with a
    two-proportion z-test and Fisher's exact test (SciPy) of each difference."""
    if not runs and not config_hashes:
        raise click.UsageError("give --runs A B or --config-hashes X Y")
    if station is None and station_file:
        import yaml

        station = (yaml.safe_load(Path(station_file).read_text(encoding="utf-8")) or {}).get("name")
    engine = open_engine(db, station_file)
    try:
        c = cmp.compare(engine, station=station, runs=runs or None, config_hashes=config_hashes or None)
    except QueryError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(c.as_dict(), indent=1))
        return
    t = Table(title=f"{c.before.label} -> {c.after.label}")
    for col in ("", "before", "after", "z", "p (z-test)", "p (Fisher)"):
        t.add_column(col)
    for test, a, b in (
        (c.tests[0], c.before.yield_, c.after.yield_),
        (c.tests[1], c.before.reject_rate, c.after.reject_rate),
        (c.tests[2], c.before.false_alarm_rate, c.after.false_alarm_rate),
    ):
        t.add_row(
            test.name, f"{_f(a, '{:.2%}')} ({test.k1}/{test.n1})", f"{_f(b, '{:.2%}')} ({test.k2}/{test.n2})",
            _f(test.z, "{:.2f}"), _f(test.p_z, "{:.3g}"), _f(test.p_fisher, "{:.3g}"),
        )  # fmt: skip
    out.print(t, highlight=False)


# ---------------------------------------------------------------------------- near misses


@click.command("near-misses")
@db_options
@click.option("--station", "stations", multiple=True, help="station (repeatable; default the --station-file's)")
@click.option("--kind", "kinds", multiple=True, help="only this kind (repeatable)")
@click.option("--since", default="7d", show_default=True)
@click.option("--until")
@click.option("--within", type=click.FloatRange(0, 1, min_open=True), default=0.1, show_default=True,
              help="largest margin shown (score units, or a fraction of a size limit)")  # fmt: skip
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def near_misses_cmd(
    db: str | None, station_file: str | None, stations: tuple[str, ...], kinds: tuple[str, ...], since: str,
    until: str | None, within: float, limit: int, as_json: bool,
) -> None:  # fmt: skip
    """Stored findings that did not fail their part, closest to their rule first, across kinds."""
    if not stations and station_file:
        import yaml

        name = (yaml.safe_load(Path(station_file).read_text(encoding="utf-8")) or {}).get("name")
        stations = (name,) if name else ()
    engine = open_engine(db, station_file)
    ns = near_miss.near_misses(
        engine, stations=stations, kinds=kinds, since=parse_time(since), until=parse_time(until, name="--until"),
        within=within, limit=limit,
    )  # fmt: skip
    if as_json:
        click.echo(json.dumps([n.as_dict() for n in ns], indent=1))
        return
    t = Table(title=f"near misses (margin <= {within:g})")
    for col in ("margin", "rule", "kind", "score", "size mm", "verdict", "part", "captured (UTC)", "id"):
        t.add_column(col, overflow="fold")
    for n in ns:
        t.add_row(
            f"{n.margin:.3f}", f"{n.field} {n.limit:g}", n.kind, f"{n.score:.3f}", _f(n.size_mm, "{:.2f}"),
            n.verdict, n.part_id, _fmt_t(n.captured_at), str(n.inspection_id),
        )  # fmt: skip
    out.print(t, highlight=False)


# ---------------------------------------------------------------------------- measurements


@click.command("measurements")
@db_options
@click.option(
    "--series", "series", multiple=True, help="KIND.MEASUREMENT (repeatable; default: the file's measurements:)"
)
@click.option("--since")
@click.option("--until")
@click.option("--baseline-until", help="phase I: points captured before this; limits frozen, applied after it")
@click.option("--json", "as_json", is_flag=True)
@click.option("--alarm", is_flag=True, help="send each phase II rule violation not sent before to the station's sinks")
def measurements_cmd(
    db: str | None, station_file: str | None, series: tuple[str, ...], since: str | None, until: str | None,
    baseline_until: str | None, as_json: bool, alarm: bool,
) -> None:  # fmt: skip
    """SPC on what detectors measure: individuals / moving range or X-bar / R charts with
    Western Electric and Nelson rules, limits frozen from a baseline, Cpk / Ppk against the
    station file's measurements: spec limits. Exits 1 when a phase II point trips a rule."""
    from pydantic import ValidationError

    from inspector_core.runtime.config import StationSpec

    path, text = _station_file(station_file)
    import yaml

    try:
        spec = StationSpec.model_validate(yaml.safe_load(text))
    except ValidationError as exc:
        raise click.ClickException(f"{path}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from exc
    engine = open_engine(db, station_file)
    names = list(series) or list(spec.measurements) or measurements.series_names(engine, spec.name)
    charts = []
    for s in names:
        ms = spec.measurements.get(s)
        try:
            charts.append(
                measurements.store_chart(
                    engine,
                    spec.name,
                    s,
                    n=ms.subgroup if ms else 1,
                    baseline=ms.baseline if ms else None,
                    baseline_until=parse_time(baseline_until, name="--baseline-until"),
                    since=parse_time(since),
                    until=parse_time(until, name="--until"),
                    lsl=ms.lsl if ms else None,
                    usl=ms.usl if ms else None,
                )  # fmt: skip
            )
        except QueryError as exc:
            err.print(f"{s}: {exc}")
    if as_json:
        click.echo(json.dumps([c.as_dict() for c in charts], indent=1))
    for c in [] if as_json else charts:
        lim = c.limits
        kind = "individuals / MR" if lim.n == 1 else f"X-bar / R (n={lim.n})"
        out.print(
            f"[bold]{c.series}[/] {kind}: centre {lim.centre:.4g}, limits [{lim.lcl:.4g}, {lim.ucl:.4g}], "
            f"range UCL {lim.r_ucl:.4g}; baseline {lim.baseline_points} of {len(c.points)} points",
            highlight=False,
        )
        if c.capability:
            cap = c.capability
            out.print(f"  Cpk {_f(cap.cpk, '{:.2f}')} (R-bar/d2)  Ppk {_f(cap.ppk, '{:.2f}')} (sample sd)")
        n2 = sum(1 for p in c.alarms if p.phase == "II")
        if c.alarms:
            more = " (the last 10 below; --json for all)" if len(c.alarms) > 10 else ""
            out.print(f"  {len(c.alarms)} point(s) trip a rule, {n2} of them in phase II{more}")
        for p in c.alarms[-10:]:
            out.print(
                f"  point {p.index} ({p.phase}) {p.value:.4g} at {_fmt_t(p.at) if p.at else '-'}: {', '.join(p.rules)}"
            )
    if alarm:
        _send_alarms(db, station_file, path, charts)
    if any(p.phase == "II" for c in charts for p in c.alarms):
        raise SystemExit(1)


def _send_alarms(db: str | None, station_file: str | None, path: Path, charts: list[measurements.Chart]) -> None:
    """Each phase II violation not sent before, to every sink of the station file; what was
    sent is recorded in the store (an ``spc_alarm`` event), so the store is opened for writing."""
    from inspector_core.plugins import load
    from inspector_core.qa import alarms
    from inspector_core.qa.cli import resolve_store
    from inspector_core.qa.reader import ReaderError
    from inspector_core.qa.review import ReviewError, open_writer
    from inspector_core.runtime.config import ConfigError, load_station

    try:
        station = load_station(path, load())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    url, source = resolve_store(db, station_file)
    try:
        store = open_writer(url, source=source)
    except (ReaderError, ReviewError) as exc:
        raise click.ClickException(str(exc)) from exc
    engine = store.engine
    found = [a for c in charts for a in alarms.alarms(c)]
    sinks = []
    try:
        for cls, cfg in station.sinks:
            sinks.append(cls(cfg, station_dir=path.resolve().parent))
        sent, problems = alarms.deliver(engine, found, sinks)
    except ConnectionError as exc:
        raise click.ClickException(f"alarms not sent: {exc}") from exc
    finally:
        for s in sinks:
            s.close()
        store.close()
    for line in problems:
        err.print(line)
    err.print(f"{sent} new alarm(s) sent to {len(sinks)} sink(s); {len(found) - sent - len(problems)} sent before")
    if problems:
        raise SystemExit(2)


# ---------------------------------------------------------------------------- export reviewed


@export.command("reviewed")
@db_options
@click.option("--to", "to", required=True, type=click.Path(file_okay=False), help="dataset root to write into")
@click.option("--station", "stations", multiple=True)
@click.option("--since")
@click.option("--until")
def export_reviewed(
    db: str | None, station_file: str | None, to: str, stations: tuple[str, ...], since: str | None, until: str | None
) -> None:
    """Reviewed crops for retraining: anomalib Folder (good/, defect/ with masks), COCO and YOLO
    boxes. False alarms join good/, confirmed defects defect/ (docs/qa.md)."""
    engine = open_engine(db, station_file)
    items = datasets.reviewed_items(
        engine, stations=stations, since=parse_time(since), until=parse_time(until, name="--until")
    )
    ex = datasets.write(engine, items, Path(to))
    root = Path(to)
    err.print(
        f"wrote {ex.good} good ({ex.good_test} of them held out in good_test/) and {ex.defect} defect crops "
        f"({ex.masks} masks) to {to}; `inspector train anomaly {root / 'good'} --val-good {root / 'good_test'} "
        f"--val-bad {root / 'val_bad'} --out MODEL.onnx`"
    )


def commands() -> list[click.Command]:
    return [propose, compare_cmd, near_misses_cmd, measurements_cmd]
