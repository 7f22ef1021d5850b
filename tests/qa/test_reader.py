"""Readers never write: every QA command and the dashboard open the store read-only and without
migrating; an older schema is refused naming ``inspector upgrade``, a newer one is refused, an
empty file stays empty, and a database that refuses is reported by what it refused."""

from __future__ import annotations

import socket
import uuid
from datetime import datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from inspector_core.cli import main
from inspector_core.qa.reader import ReaderError, open_reader
from inspector_core.store import Store, schema
from tests.qa.test_rollup import _upgrade

READERS = [
    ["history"],
    ["history", "--format", "csv", "--all"],
    ["stats", "--since", "30d"],
    ["whatif", "--set", "default.min_score=0.5"],
    ["export", "crops", "--to", "{tmp}/crops"],
    ["export", "dataset", "--to", "{tmp}/dataset"],
    ["serve", "--port", "1"],  # refused before it binds
]


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.scalar(text("SELECT version_num FROM alembic_version"))
    finally:
        engine.dispose()


def head() -> str:
    s = Store("sqlite://", migrate=False)
    return s.head_revision()


@pytest.mark.parametrize("cmd", READERS, ids=lambda c: " ".join(c[:2]))
def test_every_reader_refuses_an_older_schema_and_leaves_it(db_url, tmp_path, cmd):
    _upgrade(db_url, "0004")
    res = run(*[a.format(tmp=tmp_path) for a in cmd], "--db", db_url)
    assert res.exit_code != 0
    assert "older than this release" in res.output and f"inspector upgrade --db {db_url}" in res.output
    assert "Traceback" not in res.output
    assert revision(db_url) == "0004"  # not migrated


def test_upgrade_command_then_readers_work(db_url):
    _upgrade(db_url, "0004")
    res = run("upgrade", "--db", db_url)
    assert res.exit_code == 0, res.output
    assert f"upgraded from schema revision 0004 to {head()}" in res.output
    assert revision(db_url) == head()
    assert run("history", "--db", db_url).exit_code == 0
    again = run("upgrade", "--db", db_url)
    assert again.exit_code == 0 and "already at schema revision" in again.output


def test_upgrade_via_station_file(tmp_path):
    db = tmp_path / "line.db"
    _upgrade(f"sqlite:///{db}", "0003")
    station = tmp_path / "line.yaml"
    station.write_text("name: line\nstore:\n  url: sqlite:///line.db\n", encoding="utf-8")
    refused = run("stats", "--station-file", str(station))
    assert refused.exit_code != 0 and f"inspector upgrade --station-file {station}" in refused.output
    assert run("upgrade", "--station-file", str(station)).exit_code == 0
    assert revision(f"sqlite:///{db}") == head()


def test_a_newer_schema_is_refused(db_url):
    Store(db_url).close()
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    engine.dispose()
    for cmd in (["history"], ["stats"], ["serve", "--port", "1"]):
        res = run(*cmd, "--db", db_url)
        assert res.exit_code != 0 and "newer" in res.output and "upgrade Inspector" in res.output, res.output
        assert "Traceback" not in res.output
    res = run("upgrade", "--db", db_url)
    assert res.exit_code != 0 and "newer" in res.output
    assert revision(db_url) == "0099_from_the_future"


def test_history_on_an_empty_file_writes_nothing(tmp_path):
    empty = tmp_path / "empty.db"
    empty.touch()
    res = run("history", "--db", f"sqlite:///{empty}")
    assert res.exit_code != 0 and "empty file, not an Inspector store" in res.output
    assert empty.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]
    # and a database with no Inspector schema is named as such, unchanged
    other = tmp_path / "other.db"
    engine = create_engine(f"sqlite:///{other}")
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        conn.exec_driver_sql("CREATE TABLE mine (x)")
    engine.dispose()
    before = other.read_bytes()
    res = run("stats", "--db", f"sqlite:///{other}")
    assert res.exit_code != 0 and "not an Inspector store" in res.output and "--create" in res.output
    assert other.read_bytes() == before
    # upgrade --create makes it a store
    assert run("upgrade", "--db", f"sqlite:///{empty}", "--create").exit_code == 0
    assert run("history", "--db", f"sqlite:///{empty}").exit_code == 0


def test_a_readers_connection_cannot_write(db_url):
    Store(db_url).close()
    store = open_reader(db_url)
    with pytest.raises(Exception, match="(?i)read-only|readonly"), store.engine.begin() as conn:
        conn.execute(insert(schema.Station).values(name="intruder", created_at=datetime(2026, 12, 1)))
    store.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.postgres
def test_operational_errors_are_named_by_what_they_are(pg_url):
    Store(pg_url).close()
    u = make_url(pg_url)
    cases = [
        (u.set(database=f"nope_{uuid.uuid4().hex[:8]}"), "no such database"),
        (u.set(username=f"nobody_{uuid.uuid4().hex[:8]}"), "authentication failed"),
        (u.set(port=_free_port()), "cannot reach the database"),
    ]
    for url, words in cases:
        with pytest.raises(ReaderError) as info:
            open_reader(url.render_as_string(hide_password=False))
        assert words in str(info.value), str(info.value)
    # A user that may connect but not read Inspector's tables.
    role = f"qa_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
    try:
        with pytest.raises(ReaderError) as info:
            open_reader(u.set(username=role).render_as_string(hide_password=False))
        assert "permission denied" in str(info.value) and "SELECT" in str(info.value)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
        admin.dispose()
