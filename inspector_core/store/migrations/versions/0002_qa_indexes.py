"""QA query indexes: hour groups, repeated part ids, latency percentiles, Pareto

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Why each exists is in docs/schema.md ("Indexes and query plans"). The hour index is on an
expression, which differs by dialect: ``substr(captured_at, 1, 13)`` on SQLite (the stored
text ``YYYY-MM-DD HH``), ``date_trunc('hour', captured_at)`` on PostgreSQL.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.create_index(
            "ix_inspections_station_hour",
            "inspections",
            ["station_id", sa.text("substr(captured_at, 1, 13)"), "verdict", "captured_at", "latency_ms"],
        )
    elif dialect == "postgresql":
        op.create_index(
            "ix_inspections_station_hour",
            "inspections",
            ["station_id", sa.text("date_trunc('hour', captured_at)"), "verdict"],
            postgresql_include=["captured_at", "latency_ms"],
        )
    op.create_index("ix_inspections_station_part", "inspections", ["station_id", "part_id", "captured_at"])
    op.create_index("ix_inspections_station_latency", "inspections", ["station_id", "latency_ms", "captured_at"])
    op.create_index("ix_defects_failed_kind", "defects", ["failed", "kind", "inspection_id"])


def downgrade() -> None:
    op.drop_index("ix_defects_failed_kind", table_name="defects")
    op.drop_index("ix_inspections_station_latency", table_name="inspections")
    op.drop_index("ix_inspections_station_part", table_name="inspections")
    if op.get_bind().dialect.name in ("sqlite", "postgresql"):
        op.drop_index("ix_inspections_station_hour", table_name="inspections")
