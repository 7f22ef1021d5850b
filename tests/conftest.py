"""Shared fixtures: the real data, a private PostgreSQL database per test, the MQTT broker.

Under CI (``CI=true``) a missing service or data folder fails the test instead of skipping
it: those tests must run there.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

# The fault-injection suite's session summary (here, so that the xdist controller prints it too).
from tests.faults.summary import pytest_runtest_logreport, pytest_terminal_summary  # noqa: F401


@pytest.fixture(autouse=True)
def _pipe_width_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's tables get the width they get in a pipe or a log (``console.PIPE_WIDTH``) in every
    test: pytest-xdist's workers run with ``COLUMNS=80``, which squeezed the stats and review
    tables' headers into ellipses there while the same tests passed in one process."""
    from inspector_core.console import PIPE_WIDTH

    monkeypatch.setenv("COLUMNS", str(PIPE_WIDTH))


ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("INSPECTOR_DATA") or ROOT.parent / "shared" / "data")
"""The real photographs: ``$INSPECTOR_DATA``, else ``../shared/data`` beside the checkout."""
# Stations on the shared photographs name them as ${INSPECTOR_DATA} (stations/glass-two-lights.yaml):
# every test, and every station a test validates or runs, sees the same folder.
os.environ.setdefault("INSPECTOR_DATA", str(DATA))
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every model-training test runs on one worker, one after another, starting first: two
    trainings would fight for the same cores, and tests/anomaly/test_train.py's module-scoped
    model would be trained again on each worker its tests land on. The other worker runs the
    rest of the suite meanwhile. Everything else is independent: each test has its own
    tmp_path, PostgreSQL database, MQTT topic prefix and free ports."""
    for item in items:
        if item.get_closest_marker("train") is not None:
            item.add_marker(pytest.mark.xdist_group("train"))


def unavailable(reason: str):
    """Skip locally; fail in CI, where every service and the data must be there."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: this test must run, not skip)")
    pytest.skip(reason)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        unavailable(f"the real images are not at {DATA}")
    return DATA


@pytest.fixture
def pg_url():
    """A new, uniquely named PostgreSQL database, dropped after the test."""
    if not port_open("127.0.0.1", 5432):
        unavailable("PostgreSQL is not listening on 127.0.0.1:5432")
    import psycopg

    name = f"inspector_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def mqtt_broker() -> tuple[str, int]:
    if not port_open("127.0.0.1", 1883):
        unavailable("Mosquitto is not listening on 127.0.0.1:1883")
    return ("127.0.0.1", 1883)
