"""``inspector retention``: what a station's evidence retention removes, and doing it (issue 15).

::

    inspector retention --station-file stations/line3.yaml --dry-run   # counts and bytes per class
    inspector retention --station-file stations/line3.yaml             # does it
    inspector retention hold 1234 --station-file stations/line3.yaml --as alice
    inspector retention release 1234 --station-file stations/line3.yaml --as alice

The station file gives the store, the station's name, ``store.retention`` and the evidence
folder (``store.evidence.dir``); the plugins it names need not be installed here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click
import yaml

from inspector_core.store import Store, StoreError


@dataclasses.dataclass
class _StationStore:
    name: str
    url: str
    root: Path
    retention: Any
    source: str


def _station(station_file: str) -> _StationStore:
    from pydantic import ValidationError

    from inspector_core.runtime.config import StoreSpec, _resolve_url
    from inspector_core.store.evidence import default_root

    path = Path(station_file)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise click.UsageError(f"--station-file {station_file}: cannot read it ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise click.UsageError(f"--station-file {station_file}: not a station file (no name:)")
    try:
        spec = StoreSpec.model_validate(data.get("store") or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise click.UsageError(f"{station_file}: store.{where}: {first['msg']}") from None
    directory = path.resolve().parent
    url = _resolve_url(spec.url, directory)
    root = default_root(url, directory, spec.evidence.dir)
    return _StationStore(data["name"], url, root, spec.retention, f"--station-file {station_file}")


def _open(st: _StationStore) -> Store:
    from inspector_core.qa.reader import check_schema

    store = Store(st.url, migrate=False)
    try:
        check_schema(store, st.source)
    except Exception:
        store.close()
        raise
    return store


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@click.group(
    "retention",
    invoke_without_command=True,
    help="Remove a station's old evidence frames (store.retention), or show what would go (--dry-run).",
)
@click.option("--station-file", type=click.Path(dir_okay=False, exists=True), help="the station file")
@click.option("--dry-run", is_flag=True, help="say what would go (counts and bytes per class); change nothing")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def retention(ctx: click.Context, station_file: str | None, dry_run: bool, as_json: bool) -> None:
    if ctx.invoked_subcommand is not None:
        return
    if not station_file:
        raise click.UsageError("say which station: --station-file stations/x.yaml")
    from inspector_core.store import retention as ret

    st = _station(station_file)
    try:
        store = _open(st)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        if dry_run:
            plan = ret.plan(store, st.name, st.retention)
            plan.orphans = ret.sweep_orphans(store, st.root, grace_s=st.retention.orphan_grace_s, dry_run=True)
            report = ret.Report(plan)
        else:
            report = ret.apply(store, st.root, st.name, st.retention)
    finally:
        store.close()
    _print(st, report, dry_run, as_json)


def _print(st: _StationStore, rep: Any, dry_run: bool, as_json: bool) -> None:
    p = rep.plan
    classes = sorted(set(p.stored) | {"fail", "pass"})
    if as_json:
        out = {
            "station": st.name,
            "evidence_dir": str(st.root),
            "dry_run": dry_run,
            "classes": {
                c: {
                    "stored_rows": p.stored.get(c, _zero()).rows,
                    "stored_bytes": p.stored.get(c, _zero()).bytes,
                    "by_age_rows": p.by_age.get(c, _zero()).rows,
                    "by_age_bytes": p.by_age.get(c, _zero()).bytes,
                    "by_quota_rows": p.by_quota.get(c, _zero()).rows,
                    "by_quota_bytes": p.by_quota.get(c, _zero()).bytes,
                    "held_rows": p.held.get(c, _zero()).rows,
                    "held_bytes": p.held.get(c, _zero()).bytes,
                }
                for c in classes
            },
            "over_quota_bytes": p.over_quota,
            "orphan_files": p.orphans[0] if dry_run else rep.orphans_deleted,
            "orphan_bytes": p.orphans[1] if dry_run else rep.orphan_bytes,
            "expired_rows": rep.expired_rows,
            "files_deleted": rep.files_deleted,
            "bytes_deleted": rep.bytes_deleted,
            "files_kept_shared": rep.files_kept_shared,
            "seconds": round(rep.seconds, 3),
        }
        click.echo(json.dumps(out, indent=2))
        return
    verb = "would go" if dry_run else "went"
    click.echo(f"station {st.name}: evidence in {st.root}")
    for c in classes:
        s, a, q, h = (d.get(c, _zero()) for d in (p.stored, p.by_age, p.by_quota, p.held))
        click.echo(
            f"  {c}: {s.rows} stored ({_mb(s.bytes)}); {verb}: {a.rows} by age ({_mb(a.bytes)}), "
            f"{q.rows} by quota ({_mb(q.bytes)}); held (kept): {h.rows} ({_mb(h.bytes)})"
        )
    if p.over_quota:
        click.echo(f"  still {_mb(p.over_quota)} over max_bytes: held frames are kept until released")
    if dry_run:
        click.echo(f"  orphan files (no row, older than the grace period) {verb}: {p.orphans[0]} ({_mb(p.orphans[1])})")
        click.echo("  nothing was changed (--dry-run)")
    else:
        click.echo(
            f"  {rep.expired_rows} rows marked expired, {rep.files_deleted} files deleted ({_mb(rep.bytes_deleted)})"
            + (f", {rep.files_kept_shared} kept (another row has the same bytes)" if rep.files_kept_shared else "")
            + f"; orphan files deleted: {rep.orphans_deleted} ({_mb(rep.orphan_bytes)}); {rep.seconds:.1f} s"
        )


def _zero() -> Any:
    from inspector_core.store.retention import ClassCount

    return ClassCount()


def _hold_or_release(station_file: str, inspection_id: int, as_user: str, what: str) -> None:
    from inspector_core.qa.accounts import AccountError, user
    from inspector_core.store import retention as ret

    st = _station(station_file)
    try:
        store = _open(st)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        try:
            account = user(store, as_user)
        except AccountError as exc:
            raise click.ClickException(str(exc)) from exc
        if not account.can_review:
            raise click.ClickException(
                f"user {as_user!r} may not {what} evidence (role {account.role}"
                + (", disabled" if account.disabled_at is not None else "")
                + "): a reviewer or admin may"
            )
        n = (ret.hold if what == "hold" else ret.release)(store, inspection_id, as_user)
    finally:
        store.close()
    if n == 0:
        raise click.ClickException(f"inspection {inspection_id} has no evidence frame in {st.url}")
    click.echo(f"inspection {inspection_id}: evidence {'held' if what == 'hold' else 'released'} by {as_user}")


@retention.command("hold", help="Keep an inspection's evidence frame until it is released.")
@click.argument("inspection_id", type=int)
@click.option("--station-file", type=click.Path(dir_okay=False, exists=True), required=True)
@click.option("--as", "as_user", required=True, help="the reviewer's user name")
def hold_cmd(inspection_id: int, station_file: str, as_user: str) -> None:
    _hold_or_release(station_file, inspection_id, as_user, "hold")


@retention.command(
    "release", help="Release an inspection's evidence frame: earlier reviews and holds no longer keep it."
)
@click.argument("inspection_id", type=int)
@click.option("--station-file", type=click.Path(dir_okay=False, exists=True), required=True)
@click.option("--as", "as_user", required=True, help="the reviewer's user name")
def release_cmd(inspection_id: int, station_file: str, as_user: str) -> None:
    _hold_or_release(station_file, inspection_id, as_user, "release")


def commands() -> list[click.Command]:
    return [retention]
