"""QA commands: ``history``, ``stats``, ``whatif``, ``export crops|dataset``, ``serve``; and
``upgrade``, the one that changes a store (its schema).

Every other command reads through :mod:`inspector_core.qa` and never writes to the store: it
opens it read-only and without migrating (:mod:`inspector_core.qa.reader`); a store at an older
schema revision is refused with a message naming ``inspector upgrade``.
The database is ``--db URL`` or the ``store.url`` of ``--station-file``. Times are UTC:
``--since``/``--until`` take a duration back from now (``8h``, ``30m``, ``2d``, ``1w``) or
an ISO date/time (``2026-11-20``, ``2026-11-20T06:00``, ``2026-11-20T06:00+01:00``).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from inspector_core.console import console
from inspector_core.qa import query as q

out = console()
err = console(stderr=True)


def parse_time(value: str | None, *, now: datetime | None = None, name: str = "--since") -> datetime | None:
    """:func:`inspector_core.qa.filters.parse_when`, its refusal a usage error naming the option."""
    try:
        return q.parse_when(value, now=now)
    except q.QueryError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


# ---------------------------------------------------------------------------- opening the store


def resolve_store(db: str | None, station_file: str | None) -> tuple[str, str]:
    """``(url, source)``: the store's URL from ``--db``, ``--station-file`` or ``INSPECTOR_DB``,
    and how the user named it (for remedies in messages)."""
    if not db and station_file:
        import yaml

        from inspector_core.runtime.config import _resolve_url

        path = Path(station_file)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise click.UsageError(f"--station-file {station_file}: cannot read it ({exc})") from exc
        url = ((data.get("store") or {}).get("url")) if isinstance(data, dict) else None
        return _resolve_url(url or "sqlite:///inspector.db", path.resolve().parent), f"--station-file {station_file}"
    if db:
        return db, f"--db {db}"
    env = os.environ.get("INSPECTOR_DB")
    if env:
        return env, f"--db {env}"
    raise click.UsageError(
        "say which store to read: --db URL (e.g. sqlite:///var/demo/inspector.db or "
        "postgresql://user@host/plant), --station-file stations/x.yaml, or INSPECTOR_DB"
    )


def open_engine(db: str | None, station_file: str | None) -> Engine:
    """The store's engine for reading: read-only, never migrated, at this release's schema
    revision (else a message naming ``inspector upgrade``). A SQLite file that does not exist
    is an error (a typo would otherwise create an empty database and show an empty history)."""
    from inspector_core.qa.reader import open_reader
    from inspector_core.store import StoreError

    url, source = resolve_store(db, station_file)
    try:
        return open_reader(url, source=source).engine
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc


def db_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--station-file", type=click.Path(dir_okay=False, exists=True), help="read the store URL from this station file"
    )(fn)
    return click.option("--db", "db", metavar="URL", help="the store's database URL (or env INSPECTOR_DB)")(fn)


def filter_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--station", "stations", multiple=True, help="station name (repeatable)"),
        click.option("--since", help="from: 8h, 2d, or ISO date/time (UTC unless an offset is given)"),
        click.option("--until", help="before: same forms as --since"),
        click.option(
            "--verdict",
            "verdicts",
            multiple=True,
            type=click.Choice(q.VERDICTS, case_sensitive=False),
            help="PASS, FAIL, ERROR, NOT_INSPECTED (repeatable)",
        ),
        click.option("--kind", "kinds", multiple=True, help="has a defect of this kind (repeatable)"),
        click.option("--part", "part_id", help="part id glob: * any run, ? one character"),
        click.option("--min-score", type=float, help="has a defect scoring at least this"),
        click.option("--min-size-mm", type=float, help="has a defect at least this large, mm"),
        click.option(
            "--detector", "--plugin", "detector", help="has a defect found by this detector (--plugin: the old name)"
        ),
        click.option("--run", "run_id", type=click.IntRange(1, q.MAX_ID), help="one run of a station"),
        click.option("--recipe", "recipes", multiple=True, help="inspected under this station recipe (repeatable)"),
        click.option(
            "--candidates",
            "include_candidates",
            is_flag=True,
            help="defect filters also match findings below the verdict rules",
        ),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


FILTER_KEYS = (
    "stations",
    "since",
    "until",
    "verdicts",
    "kinds",
    "part_id",
    "min_score",
    "min_size_mm",
    "detector",
    "run_id",
    "include_candidates",
    "recipes",
)


def build_filter(kw: dict[str, Any]) -> q.HistoryFilter:
    fields = {k: kw.pop(k, None) for k in FILTER_KEYS}
    fields["since"] = parse_time(fields["since"], name="--since")
    fields["until"] = parse_time(fields["until"], name="--until")
    if fields["verdicts"]:
        fields["verdicts"] = tuple(v.upper() for v in fields["verdicts"])
    if not fields["include_candidates"]:
        fields["include_candidates"] = None
    try:
        return q.make_filter(**fields)
    except q.QueryError as exc:
        raise click.UsageError(f"filter: {exc}") from exc


def _fmt_t(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")
"""What makes a spreadsheet read a text cell as a formula (OWASP's list, plus a line break and
the full-width forms some spreadsheets normalise)."""


def safe_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run as a formula (OWASP: prefix text with ``'``).
    Numbers are left as they are (a negative number is not text)."""
    if isinstance(value, str) and value.lstrip(" ")[:1] in FORMULA_STARTS:
        return "'" + value
    return value


class SpreadsheetCsv:
    """A CSV writer whose every cell is :func:`safe_cell`: every CSV this package writes goes
    through it, so no column can be forgotten."""

    def __init__(self, fh: Any) -> None:
        self._w = csv.writer(fh)

    def writerow(self, row: list[Any]) -> None:
        self._w.writerow([safe_cell(x) for x in row])


VERDICT_STYLE = {"PASS": "green", "FAIL": "red", "ERROR": "magenta", "NOT_INSPECTED": "yellow"}


# ---------------------------------------------------------------------------- history


@click.command()
@db_options
@filter_options
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--limit", type=click.IntRange(1, q.MAX_PAGE), default=50, show_default=True, help="rows per page")
@click.option(
    "--page",
    type=click.IntRange(1, q.MAX_ID // q.MAX_PAGE),
    default=1,
    show_default=True,
    help="page number (offset paging)",
)
@click.option("--cursor", help="continue after a previous page (printed at its end; keyset paging)")
@click.option("--all", "all_rows", is_flag=True, help="every matching row (csv/json), read page by page")
def history(
    db: str | None,
    station_file: str | None,
    fmt: str,
    limit: int,
    page: int,
    cursor: str | None,
    all_rows: bool,
    **kw: Any,
) -> None:
    """Inspections, newest first, filtered. Example: what failed on line3 last night::

        inspector history --db sqlite:///line3.db --station line3 \\
            --since 2026-11-20T18:00 --until 2026-11-21T06:00 --verdict FAIL
    """
    f = build_filter(kw)
    engine = open_engine(db, station_file)
    try:
        # JSON carries each row's steps and findings with their scores (normalised and raw) and boxes.
        evidence = fmt == "json"
        if all_rows:
            rows, nxt = list(q.iter_history(engine, f, evidence=evidence)), None
        else:
            res = q.history(
                engine, f, limit=limit, cursor=cursor, offset=0 if cursor else (page - 1) * limit, evidence=evidence
            )
            rows, nxt = res.rows, res.next_cursor
    except q.QueryError as exc:
        raise click.UsageError(str(exc)) from exc
    if fmt == "json":
        click.echo(json.dumps({"rows": [r.as_dict() for r in rows], "next_cursor": nxt}, indent=1))
        return
    if fmt == "csv":
        w = SpreadsheetCsv(sys.stdout)
        w.writerow(
            [
                "id",
                "station",
                "run_id",
                "part_id",
                "captured_at_utc",
                "verdict",
                "latency_ms",
                "n_defects",
                "kinds",
                "max_score",
                "error",
                "recipe",
                "views",
            ]
        )
        for r in rows:
            w.writerow(
                [
                    r.id,
                    r.station,
                    r.run_id,
                    r.part_id,
                    r.captured_at.isoformat(),
                    r.verdict,
                    r.latency_ms,
                    r.n_defects,
                    " ".join(r.kinds),
                    r.max_score,
                    r.error or "",
                    r.recipe or "",
                    # issue 14: each view as view:status[:kinds], e.g. "top:ok:scratch; side:missing"
                    "; ".join(f"{v.view}:{v.status}" + (f":{' '.join(v.kinds)}" if v.kinds else "") for v in r.views),
                ]
            )
        return
    table = Table(title="inspections, newest first (times UTC)", show_lines=False)
    right = {"id", "ms", "score"}
    with_views = any(r.views for r in rows)  # issue 14: a multi-view part's views, one line each
    with_recipe = any(r.recipe for r in rows)  # issue 14: the recipe each part ran under
    cols: tuple[str, ...] = ("id", "station", "part", "captured (UTC)", "verdict", "ms", "defects", "score", "error")
    cols += ("recipe",) if with_recipe else ()
    for col in cols + (("views",) if with_views else ()):
        table.add_column(
            col,
            justify="right" if col in right else "left",
            overflow="fold",
            no_wrap=col in ("id", "captured (UTC)", "verdict"),
        )
    for r in rows:
        cells = [
            str(r.id),
            r.station,
            r.part_id,
            _fmt_t(r.captured_at),
            f"[{VERDICT_STYLE.get(r.verdict, 'white')}]{r.verdict}[/]",
            _ms(r.latency_ms),
            ", ".join(r.kinds),
            "-" if r.max_score is None else f"{r.max_score:.2f}",
            r.error or "",
        ]
        if with_recipe:
            cells.append(r.recipe or "-")
        if with_views:
            cells.append(_views_cell(r.views))
        table.add_row(*cells)
    out.print(table, markup=True, highlight=False)
    if nxt:
        err.print(f"more: --page {page + 1}  or  --cursor {nxt}")
    elif not rows:
        err.print("no inspections match")


def _views_cell(views: Any) -> str:
    """``side: missing`` / ``top: scratch x2 (crops 4, 5)``: each view of a part on a line."""
    lines = []
    for v in views:
        if v.status != "ok":
            lines.append(f"{v.view}: {v.status}")
        elif v.n_defects:
            crops = f" (crops {', '.join(map(str, v.crop_ids))})" if v.crop_ids else ""
            lines.append(f"{v.view}: {', '.join(v.kinds)} x{v.n_defects}{crops}")
        else:
            lines.append(f"{v.view}: ok")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- stats


@click.command()
@db_options
@filter_options
@click.option("--period", type=click.Choice(["hour", "shift", "day"]), default="day", show_default=True)
@click.option(
    "--utc-offset",
    type=click.IntRange(-12, 14),
    default=0,
    show_default=True,
    help="plant time = UTC + this many hours (where days and shifts start)",
)
@click.option("--shift-start", type=click.IntRange(0, 23), default=6, show_default=True, help="first shift starts, h")
@click.option("--shift-hours", type=click.Choice(["6", "8", "12"]), default="8", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def stats(
    db: str | None,
    station_file: str | None,
    period: str,
    utc_offset: int,
    shift_start: int,
    shift_hours: str,
    fmt: str,
    **kw: Any,
) -> None:
    """Per station and period: parts, yield, first-pass yield, NOT_INSPECTED and ERROR counts,
    latency p50/p99 (capture to verdict, and capture to committed); capture to delivered per sink;
    the Pareto of defect kinds; the p-chart of the reject rate (FAIL + ERROR)
    with 3-sigma limits, points outside flagged."""
    f = build_filter(kw)
    if f.since is None and f.until is None:
        f = f.model_copy(update={"since": datetime.now(UTC).replace(tzinfo=None) - timedelta(days=30)})
        err.print("no --since/--until: the last 30 days")
    engine = open_engine(db, station_file)
    st = q.stats(engine, f, buckets=q.Buckets(period, utc_offset, shift_start, int(shift_hours)))  # type: ignore[arg-type]
    by_recipe = q.recipe_split(engine, f)
    if fmt == "json":
        click.echo(json.dumps({**st.as_dict(), "recipes": [r.as_dict() for r in by_recipe]}, indent=1))
        return
    flagged = {(p.station, p.label) for p in st.pchart if p.out_of_control}
    limits = {(p.station, p.label): p for p in st.pchart}
    t = Table(title=f"per {period} (plant time = UTC{utc_offset:+d})")
    for col in (
        "station",
        period,
        "parts",
        "PASS",
        "FAIL",
        "ERROR",
        "NOT_INSP.",
        "yield",
        "first-pass",
        "p50 ms",
        "p99 ms",
        "commit p50",
        "commit p99",
        "reject rate [LCL, UCL]",
    ):
        t.add_column(col, justify="left" if col in ("station", period) else "right")
    for rows in (st.periods, st.totals):
        for p in rows:
            pc = limits.get((p.station, p.label))
            rate = "-" if pc is None else f"{100 * pc.p:.1f}% [{100 * pc.lcl:.1f}, {100 * pc.ucl:.1f}]"
            if (p.station, p.label) in flagged:
                rate = f"[bold red]{rate} OUT[/]"
            style = "bold" if p.bucket == -1 else None
            t.add_row(
                p.station,
                p.label,
                str(p.parts),
                str(p.passed),
                str(p.failed),
                str(p.errors),
                str(p.not_inspected),
                _pct(p.yield_),
                _pct(p.first_pass_yield),
                _ms(p.latency_p50_ms),
                _ms(p.latency_p99_ms),
                _ms(p.commit_latency_p50_ms),
                _ms(p.commit_latency_p99_ms),
                rate,
                style=style,
            )
        t.add_section()
    out.print(t, highlight=False)
    pt = Table(title="Pareto of defect kinds (defects that failed parts)")
    for col in ("kind", "defects", "parts", "share", "cumulative"):
        pt.add_column(col, justify="left" if col == "kind" else "right")
    for r in st.pareto:
        pt.add_row(r.kind, str(r.defects), str(r.parts), _pct(r.share), _pct(r.cumulative))
    out.print(pt, highlight=False)
    if st.delivery:
        dt = Table(title="capture to delivered, per sink (ms)")
        for col in ("station", "sink", "delivered", "not yet", "p50 ms", "p99 ms"):
            dt.add_column(col, justify="left" if col in ("station", "sink") else "right")
        for d in st.delivery:
            dt.add_row(d.station, d.sink, str(d.delivered), str(d.undelivered), _ms(d.p50_ms), _ms(d.p99_ms))
        out.print(dt, highlight=False)
    if any(r.recipe is not None for r in by_recipe):  # issue 14: the window split by recipe
        rt = Table(title="per recipe")
        for col in ("station", "recipe", "parts", "PASS", "FAIL", "ERROR", "NOT_INSP.", "yield", "versions"):
            rt.add_column(col, justify="left" if col in ("station", "recipe") else "right")
        for rs in by_recipe:
            rt.add_row(
                rs.station,
                rs.recipe or "-",
                str(rs.parts),
                str(rs.passed),
                str(rs.failed),
                str(rs.errors),
                str(rs.not_inspected),
                _pct(rs.yield_),
                str(rs.versions),
            )
        out.print(rt, highlight=False)
    for station, p_bar in st.p_bar.items():
        n_out = sum(1 for p in st.pchart if p.station == station and p.out_of_control)
        out.print(f"p-chart {station}: mean reject rate {_pct(p_bar)}; {n_out} {period}(s) outside 3-sigma limits")


# ---------------------------------------------------------------------------- whatif


@click.command()
@db_options
@filter_options
@click.option(
    "--set",
    "sets",
    multiple=True,
    required=True,
    metavar="KIND.FIELD=VALUE",
    help="a rule change, e.g. scratch.min_score=0.7, dent.min_size_mm=2, default.min_score=0.6 (repeatable)",
)
@click.option("--show", type=click.IntRange(0), default=20, show_default=True, help="part ids listed per direction")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def whatif(db: str | None, station_file: str | None, sets: tuple[str, ...], show: int, fmt: str, **kw: Any) -> None:
    """Re-decide stored parts under other verdict rules; report which verdicts would change.

    Each part is re-judged from its stored findings under the rules of the run that recorded
    it, with the --set changes applied, by the same code the station uses. Nothing is written.
    Findings below a detector's report floor were never stored, so lowering a threshold below
    it cannot reveal them.
    """
    try:
        overrides = q.parse_overrides(sets)
    except q.QueryError as exc:
        raise click.UsageError(str(exc)) from exc
    f = build_filter(kw)
    engine = open_engine(db, station_file)
    w = q.whatif(engine, f, overrides)
    if fmt == "json":
        click.echo(json.dumps(w.as_dict(), indent=1))
        return
    out.print(f"parts judged: {w.parts}  (ERROR stays ERROR: {w.errors})")
    out.print(f"rejects now: {w.rejects_before}  ->  under the new rules: {w.rejects_after}")
    out.print(f"[red]PASS -> FAIL: {len(w.to_fail)}[/] (good parts that would have been scrapped)")
    out.print(f"[green]FAIL -> PASS: {len(w.to_pass)}[/] (rejected parts that would have shipped)")
    out.print(f"unchanged: {w.unchanged}")
    for title, changes in (("PASS -> FAIL", w.to_fail), ("FAIL -> PASS", w.to_pass)):
        if not changes or not show:
            continue
        more = f" (first {show} of {len(changes)}; --format json for all)" if len(changes) > show else ""
        t = Table(title=title + more)
        for col in ("id", "station", "part", "captured (UTC)", "kinds"):
            t.add_column(col, overflow="fold")
        for c in changes[:show]:
            t.add_row(str(c.inspection_id), c.station, c.part_id, _fmt_t(c.captured_at), ", ".join(c.kinds))
        out.print(t, highlight=False)


# ---------------------------------------------------------------------------- export


SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, max_len: int = 60) -> str:
    """A file-name fragment from any string: only [A-Za-z0-9._-], no leading dots, bounded."""
    s = SAFE.sub("_", text).strip("._-")[:max_len]
    return s or "part"


def _inside(folder: Path, name: str) -> Path:
    path = (folder / name).resolve()
    if path.parent != folder.resolve():  # cannot happen with safe_name; kept as the last guard
        raise click.ClickException(f"refusing to write outside {folder}: {name!r}")
    return path


@click.group()
def export() -> None:
    """Write crops or a retraining dataset out of the store."""


@export.command("crops")
@db_options
@filter_options
@click.option("--to", "to", required=True, type=click.Path(file_okay=False), help="folder to write into")
@click.option("--limit", type=click.IntRange(1), help="at most this many crops")
def export_crops(db: str | None, station_file: str | None, to: str, limit: int | None, **kw: Any) -> None:
    """Crops as image files plus index.csv (part, time, kind, score, box, measurements).

    File names are <crop id>_<kind>_<part id made safe>.<ext>: part ids may contain anything
    (slashes, quotes, ..); the file name keeps only letters, digits, '.', '_' and '-', and the
    crop id keeps it unique. The exact part id is in index.csv.
    """
    f = build_filter(kw)
    engine = open_engine(db, station_file)
    folder = Path(to)
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(folder / "index.csv", "w", newline="", encoding="utf-8") as fh:
        w = SpreadsheetCsv(fh)
        w.writerow(
            [
                "file",
                "crop_id",
                "inspection_id",
                "station",
                "part_id",
                "captured_at_utc",
                "verdict",
                "kind",
                "score",
                "failed",
                "x",
                "y",
                "w",
                "h",
                "size_px",
                "size_mm",
                "detector",
                "step",
                "measurements",
            ]
        )
        for c in q.iter_crops(engine, f):
            if limit is not None and n >= limit:
                break
            got = q.crop_image(engine, c.crop_id)
            if got is None:
                continue
            ext = "png" if c.format == "png" else "jpg"
            name = f"{c.crop_id:08d}_{safe_name(c.kind, 30)}_{safe_name(c.part_id)}.{ext}"
            _inside(folder, name).write_bytes(got[1])
            w.writerow(
                [
                    name,
                    c.crop_id,
                    c.inspection_id,
                    c.station,
                    c.part_id,
                    c.captured_at.isoformat(),
                    c.verdict,
                    c.kind,
                    c.score,
                    c.failed,
                    *c.box,
                    c.size_px,
                    c.size_mm,
                    c.detector,
                    c.step,
                    json.dumps(c.measurements, sort_keys=True),
                ]
            )
            n += 1
    err.print(f"wrote {n} crops and index.csv to {folder}")


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


@export.command("dataset")
@db_options
@filter_options
@click.option("--to", "to", required=True, type=click.Path(file_okay=False), help="dataset root to write into")
@click.option(
    "--good-from-source/--no-good-from-source",
    default=True,
    show_default=True,
    help="copy the original image of PASS parts into good/ when the source recorded a readable path",
)
@click.option("--limit", type=click.IntRange(1), help="at most this many images per class")
def export_dataset(
    db: str | None, station_file: str | None, to: str, good_from_source: bool, limit: int | None, **kw: Any
) -> None:
    """A dataset in anomalib's Folder layout for retraining: ROOT/good and ROOT/defect.

    defect/: the crops of defects that failed parts (the filters apply). good/: the store
    keeps no image of a PASS part, only crops of defects; so good/ is filled only from the
    original files of PASS parts whose frame source recorded a path (folder source) that
    still exists. Use with anomalib's ``Folder(root=ROOT, normal_dir="good",
    abnormal_dir="defect")``. index.csv lists every file with its part and origin.
    """
    import cv2

    f = build_filter(kw)
    engine = open_engine(db, station_file)
    root = Path(to)
    good, defect = root / "good", root / "defect"
    good.mkdir(parents=True, exist_ok=True)
    defect.mkdir(parents=True, exist_ok=True)
    n_good = n_defect = 0
    with open(root / "index.csv", "w", newline="", encoding="utf-8") as fh:
        w = SpreadsheetCsv(fh)
        w.writerow(
            ["file", "class", "inspection_id", "station", "part_id", "captured_at_utc", "kind", "score", "origin"]
        )
        for c in q.iter_crops(engine, f.model_copy(update={"include_candidates": False})):
            if limit is not None and n_defect >= limit:
                break
            got = q.crop_image(engine, c.crop_id)
            if got is None:
                continue
            ext = "png" if c.format == "png" else "jpg"
            name = f"{c.crop_id:08d}_{safe_name(c.kind, 30)}_{safe_name(c.part_id)}.{ext}"
            _inside(defect, name).write_bytes(got[1])
            w.writerow(
                [
                    f"defect/{name}",
                    "defect",
                    c.inspection_id,
                    c.station,
                    c.part_id,
                    c.captured_at.isoformat(),
                    c.kind,
                    c.score,
                    f"crop {c.crop_id}",
                ]
            )
            n_defect += 1
        if good_from_source:
            gf = f.model_copy(
                update={"verdicts": ("PASS",), "kinds": (), "min_score": None, "min_size_mm": None, "detector": None}
            )
            for r in q.iter_history(engine, gf):
                if limit is not None and n_good >= limit:
                    break
                d = q.inspection(engine, r.id)
                src = (d.source_meta or {}).get("path") if d else None
                if not isinstance(src, str):
                    continue
                p = Path(src)
                # Only image files that decode: a stored path is data, not a licence to copy anything.
                if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file() or cv2.imread(str(p)) is None:
                    continue
                name = f"{r.id:08d}_{safe_name(r.part_id)}{p.suffix.lower()}"
                shutil.copyfile(p, _inside(good, name))
                w.writerow(
                    [
                        f"good/{name}",
                        "good",
                        r.id,
                        r.station,
                        r.part_id,
                        r.captured_at.isoformat(),
                        "",
                        "",
                        "source file",
                    ]
                )
                n_good += 1
    err.print(f"wrote {n_defect} defect crops and {n_good} good images to {root} (anomalib Folder layout)")
    if n_good == 0:
        err.print(
            "good/ is empty: the store holds no images of PASS parts, and no PASS part's source file was "
            "found; add good images from the line (e.g. the folder the station read) before training"
        )


# ---------------------------------------------------------------------------- serve


@click.command()
@db_options
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--token", envvar="INSPECTOR_TOKEN", help="required when not bound to 127.0.0.1 (env INSPECTOR_TOKEN)")
@click.option("--read-only", is_flag=True, help="no sign-in and no review pages (a kiosk): nothing is written")
@click.option(
    "--evidence-dir",
    "evidence_dirs",
    multiple=True,
    type=click.Path(file_okay=False),
    help="folder of the stations' evidence frames (default: beside a SQLite file, or the station file's)",
)
def serve(
    db: str | None,
    station_file: str | None,
    host: str,
    port: int,
    token: str | None,
    read_only: bool,
    evidence_dirs: tuple[str, ...] = (),
) -> None:
    """The QA dashboard and JSON API. Open http://HOST:PORT/ ; API under /api, its OpenAPI
    schema at /openapi.json. Verdicts are read-only; signed-in reviewers append reviews beside
    them at /review (accounts: `inspector users add`), unless --read-only."""
    from inspector_core.qa.web import check_bind, create_app

    problem = check_bind(host, token)
    if problem:
        raise click.UsageError(problem)
    engine = open_engine(db, station_file)
    import uvicorn

    writer = None
    if not read_only:
        from inspector_core.qa.review_cli import open_review_store

        writer = open_review_store(db, station_file)
    dirs = [Path(d) for d in evidence_dirs]
    if not dirs and station_file and not db:
        from inspector_core.qa.retention_cli import _station

        dirs = [_station(station_file).root]
    app = create_app(engine, token=token, host=host, writer=writer, evidence_dirs=dirs or None)
    where = f"http://{host}:{port}"
    err.print(
        f"dashboard on {where}/ "
        + ("(read-only)" if read_only else f"(reviews: sign in at {where}/signin)")
        + (f"; token required: sign in at {where}/login, or send Authorization: Bearer <token>" if token else "")
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")


# ---------------------------------------------------------------------------- upgrade (the one that writes)


@click.command()
@db_options
@click.option("--create", is_flag=True, help="also create the schema in a database that has none (an empty file)")
def upgrade(db: str | None, station_file: str | None, create: bool) -> None:
    """Upgrade a store's schema to this release's revision (the readers never do).

    Run it as a user allowed to change the schema. A store already current is left as it is;
    a store written by a newer release is refused; a database without an Inspector schema is
    only given one with --create. A station upgrades its own store when it starts, too.
    """
    from inspector_core.store import Store, StoreError

    url, source = resolve_store(db, station_file)
    try:
        u = make_url(url)
    except Exception as exc:
        raise click.UsageError(f"{source}: not a database URL ({exc})") from exc
    if (
        u.get_backend_name() == "sqlite"
        and u.database not in (None, "", ":memory:")
        and not Path(u.database).exists()
        and not create
    ):
        raise click.UsageError(
            f"{source}: no such database file {u.database!r} (pass --create to create a store there)"
        )
    try:
        store = Store(url, migrate=False)
        try:
            before = (
                None
                if not Path(u.database or "").is_file() and u.get_backend_name() == "sqlite"
                else store.current_revision()
            )
            head = store.head_revision()
            if before == head:
                err.print(f"store {store.display_url}: already at schema revision {head}; nothing to do")
                return
            if before is None and not create:
                raise click.ClickException(
                    f"store {store.display_url} holds no Inspector schema; check the URL, or pass --create to "
                    f"create one (revision {head})"
                )
            store.migrate()
            after = store.current_revision()
        finally:
            store.close()
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    err.print(
        f"store {store.display_url}: "
        + (
            f"created schema revision {after}"
            if before is None
            else f"upgraded from schema revision {before} to {after}"
        )
    )


def commands() -> list[click.Command]:
    from inspector_core.qa import decisions_cli, retention_cli, review_cli  # import this module's options

    return [
        history, stats, whatif, export, serve, upgrade,
        *review_cli.commands(), *retention_cli.commands(), *decisions_cli.commands(),
    ]  # fmt: skip
