"""Recipes (issue 14): the recipe each inspection ran under

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01

- ``inspections.recipe``: the name of the station recipe (product) the part was inspected under
  (``recipes:`` in the station file, docs/recipes.md); ``NULL`` for a station without recipes and
  on older rows.
- ``inspections.recipe_hash``: sha256 (hex) of that recipe's resolved config, so two runs of a
  recipe of the same name but different settings can be told apart; ``NULL`` where ``recipe`` is.

No index: QA filters by recipe within a station and a time range, which the existing
``ix_inspections_station_time`` serves; an index more would cost every insert.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("inspections", sa.Column("recipe", sa.String(length=100), nullable=True))
    op.add_column("inspections", sa.Column("recipe_hash", sa.String(length=64), nullable=True))


def downgrade() -> None:
    for column in ("recipe_hash", "recipe"):
        # Plain SQL in PostgreSQL and SQLite >= 3.35 (a batch copy of ``inspections`` would have to
        # reflect its expression index).
        op.execute(f"ALTER TABLE inspections DROP COLUMN {column}")
