"""``inspector review list|set|log|stats`` and ``inspector users add|list|set``: the review log and
its accounts from the command line.

These write only review and account rows, through a store opened without migrating
(:func:`inspector_core.qa.review.open_writer`); a store without the review tables is refused
with a message naming ``inspector upgrade``. ``review set`` names its author with ``--as NAME``
(or ``INSPECTOR_USER``): an account with role reviewer or admin. Whoever can reach the database
URL can write to it anyway, so the command checks the role, not a password; the dashboard asks
for the password. A password is read from a hidden prompt or from standard input
(``--password-stdin``), never from the command line.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.table import Table

from inspector_core.console import console
from inspector_core.qa import accounts, review
from inspector_core.qa.cli import db_options, parse_time, resolve_store
from inspector_core.store import Store, StoreError
from inspector_core.store.review_records import LABELS, ROLES

out = console()
err = console(stderr=True)


def open_review_store(db: str | None, station_file: str | None) -> Store:
    url, source = resolve_store(db, station_file)
    try:
        return review.open_writer(url, source=source)
    except (StoreError, review.ReviewError) as exc:
        raise click.ClickException(str(exc)) from exc


def _window(kw: dict[str, Any]) -> dict[str, Any]:
    return {
        "stations": tuple(kw.get("station") or ()),
        "since": parse_time(kw.get("since")),
        "until": parse_time(kw.get("until"), name="--until"),
    }


def window_options(since: str) -> Any:
    def wrap(fn: Any) -> Any:
        fn = click.option("--until", help="to (a duration back or an ISO time, UTC)")(fn)
        fn = click.option("--since", default=since, show_default=True, help="from (a duration back or an ISO time)")(fn)
        return click.option("--station", multiple=True, help="only this station (repeatable)")(fn)

    return wrap


def _ci(v: float | None, ci: tuple[float, float] | None, fmt: str = "{:.2f}") -> str:
    if v is None or ci is None:
        return "-"
    return f"{fmt.format(v)} [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


# ---------------------------------------------------------------------------- review


@click.group("review")
def review_group() -> None:
    """The review log: what people said about the machine's verdicts (appended beside them,
    never over them). See docs/qa.md."""


@review_group.command("list")
@db_options
@window_options("7d")
@click.option("--near", default=review.NEAR, show_default=True, type=click.FloatRange(0, 1, min_open=True))
@click.option("--limit", default=30, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="one JSON object: items and counts")
def review_list(db: str | None, station_file: str | None, near: float, limit: int, as_json: bool, **kw: Any) -> None:
    """What is left to review, in the dashboard's order: failed findings of FAIL parts newest
    first, with PASS parts whose candidate scores lie within --near below their rule's
    min_score; and the counts."""
    store = open_review_store(db, station_file)
    try:
        w = _window(kw)
        items = review.queue(store.engine, near=near, limit=limit, **w)
        c = review.counts(store.engine, near=near, **w)
    except review.QueryError as exc:
        raise click.UsageError(str(exc)) from exc
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"items": [i.as_dict() for i in items], "counts": c.as_dict()}))
        return
    t = Table("inspection", "defect", "station", "part", "captured (UTC)", "verdict", "step", "kind", "score", "rule")
    for i in items:
        t.add_row(
            str(i.inspection_id),
            str(i.defect_id) if i.defect_id is not None else "(part)",
            i.station,
            i.part_id,
            i.captured_at.strftime("%Y-%m-%d %H:%M:%S"),
            i.verdict,
            i.step,
            i.kind,
            f"{i.score:.3f}",
            f"{i.min_score:g}" if i.min_score is not None else "-",
        )
    out.print(t)
    out.print(
        f"to review: {c.findings_left} findings of FAIL parts, {c.near_pass_left} PASS parts near the threshold; "
        f"reviewed: " + ", ".join(f"{k} {v}" for k, v in c.labels.items()) + f"; {c.reviews} rows in the log"
    )


@review_group.command("set")
@db_options
@click.argument("inspection_id", type=click.IntRange(1))
@click.argument("label", type=click.Choice(LABELS))
@click.option("--as", "who", envvar="INSPECTOR_USER", required=True, help="your account (env INSPECTOR_USER)")
@click.option("--defect", "defect_id", type=click.IntRange(1), help="the finding reviewed (omit: the whole part)")
@click.option("--reason", default="", help="why (kept with the review)")
@click.option("--box", help="missed: the defect's box in frame pixels, X,Y,W,H")
@click.option("--kind", help="missed: the kind of defect (e.g. scratch)")
@click.option("--step", help="missed: the step that should have found it (default: found from the part)")
def review_set(
    db: str | None,
    station_file: str | None,
    inspection_id: int,
    label: str,
    who: str,
    defect_id: int | None,
    reason: str,
    box: str | None,
    kind: str | None,
    step: str | None,
) -> None:
    """Append a review of inspection INSPECTION_ID (or of one finding, --defect) with LABEL:
    confirmed, false_alarm, missed (with --kind and --box) or unsure."""
    parsed: list[int] | None = None
    if box is not None:
        try:
            parsed = [int(v) for v in box.split(",")]
        except ValueError:
            raise click.BadParameter(f"{box!r}: four whole numbers X,Y,W,H", param_hint="--box") from None
    store = open_review_store(db, station_file)
    try:
        user = accounts.user(store, who)
        row = review.add_review(
            store,
            inspection_id=inspection_id,
            defect_id=defect_id,
            label=label,
            user=user,
            reason=reason,
            box=parsed,
            kind=kind,
            step=step,
            via="cli",
        )
    except (review.ReviewError, accounts.AccountError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    subject = (
        f"finding {row.defect_id} of inspection {row.inspection_id}"
        if row.defect_id
        else f"inspection {row.inspection_id}"
    )
    extra = f" ({row.kind} at {list(row.box)} px)" if row.box else (f" ({row.kind})" if row.kind else "")
    err.print(f"review {row.id}: {subject} {row.label}{extra} by {row.user}")


@review_group.command("log")
@db_options
@click.argument("inspection_id", type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True)
def review_log(db: str | None, station_file: str | None, inspection_id: int, as_json: bool) -> None:
    """Every review of an inspection and its findings, oldest first (the latest of each subject
    is its current state)."""
    store = open_review_store(db, station_file)
    try:
        rows = review.log(store.engine, inspection_id)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows]))
        return
    t = Table("review", "at (UTC)", "subject", "label", "by", "via", "box", "reason")
    for r in rows:
        t.add_row(
            str(r.id),
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"finding {r.defect_id}" if r.defect_id else "part",
            r.label + (f" {r.kind}" if r.kind else ""),
            r.user,
            r.via,
            ",".join(map(str, r.box)) if r.box else "",
            r.reason,
        )
    out.print(t)


@review_group.command("stats")
@db_options
@window_options("30d")
@click.option("--json", "as_json", is_flag=True)
def review_stats_cmd(db: str | None, station_file: str | None, as_json: bool, **kw: Any) -> None:
    """Per station, step and kind, over the reviewed parts: precision, recall and false alarms
    per 1,000 parts, with Wilson 95 % intervals and the counts behind them."""
    store = open_review_store(db, station_file)
    try:
        rows = review.review_stats(store.engine, **_window(kw))
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows]))
        return
    t = Table("station", "step", "kind", "reviewed", "tp", "fp", "fn", "tn", "precision", "recall", "FA / 1,000")
    for r in rows:
        t.add_row(
            r.station,
            r.step,
            r.kind,
            str(r.reviewed),
            str(r.tp),
            str(r.fp),
            str(r.fn),
            str(r.tn),
            _ci(r.precision, r.precision_ci),
            _ci(r.recall, r.recall_ci),
            _ci(r.false_alarms_per_1000, r.false_alarms_per_1000_ci, "{:.0f}"),
        )
    out.print(t)
    if not rows:
        err.print("no reviewed parts in the window")


# ---------------------------------------------------------------------------- users


def _password(from_stdin: bool, *, confirm: bool = True) -> str:
    if from_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
    else:
        value = click.prompt("password", hide_input=True, confirmation_prompt=confirm)
    try:
        return accounts.check_password(value)
    except accounts.AccountError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group("users")
def users_group() -> None:
    """Dashboard accounts (roles: viewer reads, reviewer also reviews, admin also manages users).
    Stored in the store's users table with Argon2 password hashes."""


@users_group.command("add")
@db_options
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="reviewer", show_default=True)
@click.option("--password-stdin", is_flag=True, help="read the password from standard input (one line)")
def users_add(db: str | None, station_file: str | None, name: str, role: str, password_stdin: bool) -> None:
    """Create account NAME; the password comes from a hidden prompt (or --password-stdin)."""
    store = open_review_store(db, station_file)
    try:
        acc = accounts.add_user(store, name, role, _password(password_stdin))
    except accounts.AccountError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    err.print(f"user {acc.name} ({acc.role}) created")


@users_group.command("list")
@db_options
def users_list(db: str | None, station_file: str | None) -> None:
    """Every account: name, role, created, disabled."""
    store = open_review_store(db, station_file)
    try:
        rows = accounts.users(store)
    finally:
        store.close()
    t = Table("name", "role", "created (UTC)", "disabled")
    for a in rows:
        t.add_row(
            a.name,
            a.role,
            a.created_at.strftime("%Y-%m-%d %H:%M"),
            a.disabled_at.strftime("%Y-%m-%d %H:%M") if a.disabled_at else "",
        )
    out.print(t)


@users_group.command("set")
@db_options
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES))
@click.option("--password", "new_password", is_flag=True, help="set a new password (prompted; ends its sessions)")
@click.option("--password-stdin", is_flag=True, help="with --password: read it from standard input")
@click.option("--disable/--enable", "disabled", default=None, help="switch the account off (its reviews stay) or on")
def users_set(
    db: str | None,
    station_file: str | None,
    name: str,
    role: str | None,
    new_password: bool,
    password_stdin: bool,
    disabled: bool | None,
) -> None:
    """Change account NAME's role, password, or whether it may sign in."""
    store = open_review_store(db, station_file)
    try:
        acc = accounts.update_user(
            store,
            name,
            role=role,
            password=_password(password_stdin) if new_password or password_stdin else None,
            disabled=disabled,
        )
    except accounts.AccountError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    err.print(f"user {acc.name}: role {acc.role}" + (", disabled" if acc.disabled_at else ""))


def commands() -> list[click.Command]:
    return [review_group, users_group]
