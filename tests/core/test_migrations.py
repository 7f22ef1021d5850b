"""Migrations: a migrated database has the model's columns, and 0007 keeps the detector names."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from inspector_core.store import MIGRATIONS, Store, schema


def _alembic(conn) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


@pytest.mark.filterwarnings("ignore:autogenerate skipping")
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_migrated_database_has_every_column_of_the_model(backend, tmp_path, request):
    url = f"sqlite:///{tmp_path / 's.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    store = Store(url)
    with store.engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), schema.Base.metadata)
    columns = [d for d in diff if isinstance(d, tuple) and d[0] in ("add_column", "remove_column")]
    columns += [d for d in diff if isinstance(d, tuple) and d[0] in ("add_table", "remove_table")]
    assert columns == []
    store.close()


def _one_inspection(conn, verdict: str, n_defects: int) -> None:
    """Station 1, its run 1 and inspection 1 (part p1), as the schema of 0006 to 0011 has them."""
    conn.execute(text("INSERT INTO stations (id, name, created_at) VALUES (1, 'l1', '2026-12-01 00:00:00')"))
    conn.execute(
        text(
            "INSERT INTO runs (id, station_id, started_at, hostname, software_version, plugins, config_yaml,"
            " config_hash, models) VALUES (1, 1, '2026-12-01 00:00:00', 'h', '0', '{}', '', 'x', '{}')"
        )
    )
    conn.execute(
        text(
            "INSERT INTO inspections (id, uid, station_id, run_id, seq, part_id, captured_at, decided_at, verdict,"
            " n_defects, first_of_part) VALUES (1, 'u1', 1, 1, 0, 'p1', '2026-12-01 00:00:00',"
            " '2026-12-01 00:00:00', :verdict, :n, true)"
        ),
        {"verdict": verdict, "n": n_defects},
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_0007_renames_plugin_to_detector_and_keeps_the_values(backend, tmp_path, request):
    url = f"sqlite:///{tmp_path / 's.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        command.upgrade(_alembic(conn), "0006")
        _one_inspection(conn, "FAIL", 1)
        conn.execute(
            text(
                "INSERT INTO step_results (inspection_id, step_index, step, plugin, status, n_findings)"
                " VALUES (1, 0, 'front', 'scratch', 'ok', 1)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO defects (inspection_id, step, plugin, kind, score, failed, x, y, w, h,"
                " measurements, message) VALUES (1, 'front', 'scratch', 'scratch', 0.9, true, 1, 2, 3, 4, '{}', '')"
            )
        )
        command.upgrade(_alembic(conn), "head")
        assert conn.execute(text("SELECT detector FROM step_results")).scalar_one() == "scratch"
        assert conn.execute(text("SELECT detector FROM defects")).scalar_one() == "scratch"
        command.downgrade(_alembic(conn), "0006")
        assert conn.execute(text("SELECT plugin FROM defects")).scalar_one() == "scratch"
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_0012_adds_the_recipe_columns_empty_on_older_rows_and_goes_back(backend, tmp_path, request):
    url = f"sqlite:///{tmp_path / 's.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        command.upgrade(_alembic(conn), "0011")
        _one_inspection(conn, "PASS", 0)
        command.upgrade(_alembic(conn), "0012")
        assert conn.execute(text("SELECT recipe, recipe_hash FROM inspections")).one() == (None, None)
        conn.execute(text("UPDATE inspections SET recipe = 'plate-b', recipe_hash = :h"), {"h": "f" * 64})
        assert conn.execute(text("SELECT recipe FROM inspections")).scalar_one() == "plate-b"
        command.downgrade(_alembic(conn), "0011")
        names = (
            [r[1] for r in conn.execute(text("PRAGMA table_info(inspections)"))]
            if backend == "sqlite"
            else [
                r[0]
                for r in conn.execute(
                    text("SELECT column_name FROM information_schema.columns WHERE table_name = 'inspections'")
                )
            ]
        )
        assert "recipe" not in names and "recipe_hash" not in names and "part_id" in names
    engine.dispose()
