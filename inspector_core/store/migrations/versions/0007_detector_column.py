"""One name per concept: the ``plugin`` column of ``defects`` and ``step_results`` becomes ``detector``

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

The column always held the detector's name (``scratch``), while ``runs.plugins`` holds the plugin
distributions (``inspector-scratch 0.1.0``): two meanings of one word. ``ALTER TABLE ... RENAME
COLUMN`` is plain SQL in PostgreSQL and in SQLite >= 3.25; indexes follow the column.
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLES = ("defects", "step_results")


def upgrade() -> None:
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} RENAME COLUMN plugin TO detector")


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} RENAME COLUMN detector TO plugin")
