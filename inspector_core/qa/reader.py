"""Opening a store for reading (the QA commands and the dashboard): never migrating, never writing.

A reader's connection cannot write: SQLite files are opened ``mode=ro``, PostgreSQL sessions
are ``READ ONLY``. Before any query the store must be an Inspector store at exactly the schema
revision this release knows; otherwise :class:`ReaderError` says what the database is and which
command fixes it (``inspector upgrade`` for an older schema, a newer Inspector for a newer one).
A database that refuses is reported by what it refused: it cannot be reached, the user is not
who it claims (authentication), there is no such database, or the user may not read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, make_url

from inspector_core.store import MIGRATIONS, Store, StoreError, is_unreachable

SQLITE_HEADER = b"SQLite format 3\x00"


class ReaderError(StoreError):
    """The store cannot be read; the message names the store, the cause and the remedy."""


def upgrade_command(source: str) -> str:
    """The command that upgrades the store named by ``source`` (``--db URL`` or ``--station-file F``)."""
    return f"inspector upgrade {source}"


def open_reader(url: str, *, source: str | None = None) -> Store:
    """The store at ``url``, opened read-only and checked to be at this release's schema.

    ``source`` is how the user named it (``--db URL``, ``--station-file F``), for the remedy in
    messages. Raises :class:`ReaderError`."""
    source = source or f"--db {url}"
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ReaderError(
            f"{source}: not a database URL ({exc}); use e.g. sqlite:///var/line3.db or postgresql://user@host/plant"
        ) from exc
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        store = _open_sqlite(parsed, shown, source)
    else:
        try:
            store = Store(url, migrate=False)
        except StoreError as exc:
            raise ReaderError(str(exc)) from exc
        if store.engine.dialect.name == "postgresql":
            event.listen(store.engine, "connect", _pg_read_only)
    try:
        check_schema(store, source)
    except BaseException:
        store.close()
        raise
    return store


def _open_sqlite(parsed: URL, shown: str, source: str) -> Store:
    if not parsed.database or parsed.database == ":memory:" or parsed.query.get("uri"):
        raise ReaderError(f"{source}: a reader needs a SQLite file (sqlite:///path/to/inspector.db), not {shown}")
    path = Path(parsed.database)
    if not path.exists():
        raise ReaderError(
            f"{source}: no such database file {str(path)!r}; check the path (a station creates "
            "its store when it first runs)"
        )
    if not path.is_file():
        raise ReaderError(f"{source}: {str(path)!r} is not a file")
    if not os.access(path, os.R_OK):
        raise ReaderError(
            f"{source}: permission denied: cannot read {str(path)!r}; the user needs read "
            "access to the file (and to its folder, for the -wal and -shm files)"
        )
    with path.open("rb") as fh:
        header = fh.read(100)
    if not header:
        raise ReaderError(
            f"{source}: {str(path)!r} is an empty file, not an Inspector store; nothing was "
            f"written to it. Check the path, or create a store there: "
            f"`{upgrade_command(source)} --create`"
        )
    if not header.startswith(SQLITE_HEADER):
        raise ReaderError(f"{source}: {str(path)!r} is not a SQLite database, not an Inspector store")
    ro = URL.create("sqlite", database="file:" + quote(str(path.resolve())), query={"mode": "ro", "uri": "true"})
    try:
        store = Store(ro.render_as_string(hide_password=False), migrate=False)
    except StoreError as exc:
        raise ReaderError(str(exc)) from exc
    # The writer's engine sets the journal mode (WAL) on every connection: a change of the file,
    # which a mode=ro connection refuses (on a file not yet in WAL mode). A reader's engine is a
    # plain read-only one; it reads a WAL or a rollback-journal file alike.
    store.engine.dispose()
    store.engine = create_engine(store.engine.url, connect_args={"check_same_thread": False, "timeout": 10})
    store.display_url = shown
    return store


def _pg_read_only(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    cur.close()
    dbapi_conn.commit()


def check_schema(store: Store, source: str) -> str:
    """The store's schema revision, which must be this release's; else :class:`ReaderError`."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    try:
        current = store.current_revision()
    except StoreError as exc:
        raise ReaderError(explain(store.display_url, exc.__cause__ or exc)) from exc
    head = store.head_revision()
    if current == head:
        return current
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        older = current is not None and ScriptDirectory.from_config(cfg).get_revision(current) is not None
    except Exception:  # noqa: BLE001 - alembic raises for a revision it has never heard of
        older = False
    if older:
        raise ReaderError(
            f"store {store.display_url} is at schema revision {current}, older than this release's "
            f"{head}; readers never upgrade a store. Upgrade it (as a user allowed to change the "
            f"schema) with `{upgrade_command(source)}`, or run one of its stations once"
        )
    if current is None:
        raise ReaderError(
            f"store {store.display_url} is not an Inspector store: it holds no Inspector schema "
            "(no alembic_version table); check the URL, or create a store there with "
            f"`{upgrade_command(source)} --create`"
        )
    try:
        store.check_revision()  # the store's own words for a revision it does not know
    except StoreError as exc:
        raise ReaderError(str(exc)) from exc
    raise ReaderError(
        f"store {store.display_url} is at schema revision {current}, which this release (newest "
        f"{head}) does not know: a newer Inspector wrote it; upgrade Inspector to read it"
    )


# ---------------------------------------------------------------------------- what the database refused

_NO_DATABASE = ("does not exist",)
_AUTH = ("password authentication failed", "no password supplied", "authentication failed", "pg_hba.conf", 'role "')
_PERMISSION = ("permission denied", "must be owner", "readonly database", "read-only", "unable to open database file")


def explain(display_url: str, exc: BaseException) -> str:
    """One line naming the store and what the database refused, with the remedy."""
    orig = getattr(exc, "orig", None) or exc
    reason = " ".join(str(orig).split())
    low = reason.lower()
    state = str(getattr(orig, "sqlstate", "") or "")
    if isinstance(exc, StoreError) and exc.__cause__ is None:
        return str(exc)
    if state.startswith("28") or any(t in low for t in _AUTH):
        return (
            f"store {display_url}: authentication failed ({reason}); check the user and password in the URL "
            "(or PGPASSWORD, ~/.pgpass) and that the server lets this user in from this host"
        )
    if state == "3D000" or ('database "' in low and any(t in low for t in _NO_DATABASE)):
        return (
            f"store {display_url}: no such database ({reason}); check the database name in the URL "
            "(a station creates its tables, not the database itself)"
        )
    if state == "42501" or any(t in low for t in _PERMISSION):
        return (
            f"store {display_url}: permission denied ({reason}); the user needs to connect to the database "
            "and SELECT from Inspector's tables"
        )
    if is_unreachable(exc):
        return (
            f"store {display_url}: cannot reach the database ({reason}); check that the server runs, that "
            "the network to it works and the URL (host, port)"
        )
    return f"store {display_url}: {reason}"
