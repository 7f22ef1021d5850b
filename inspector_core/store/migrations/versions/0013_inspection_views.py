"""Multi-view parts (issue 14): the views of an inspection, and the view of each step and defect

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01

- ``inspection_views``: one row per view of an inspection of a station with ``views:``
  (docs/views.md): ``status`` ok / missing / error, the view frame's ``captured_at`` and
  ``source_meta``, why it is missing (``error``), a ``note`` (a duplicate frame not inspected),
  and where it sits in the part's evidence image (``evidence_x``, ``width``, ``height``).
- ``step_results.view`` / ``defects.view``: the view the step looked at and the finding is on
  (its box is in that view's frame pixels). ``NULL`` on single-view stations and older rows.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "inspection_views",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "inspection_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.ForeignKey("inspections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("view", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("captured_at", sa.DateTime(), nullable=True),
        sa.Column("source_meta", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("evidence_x", sa.Integer(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
    )
    op.create_index("ix_inspection_views_inspection", "inspection_views", ["inspection_id", "view"], unique=True)
    op.add_column("step_results", sa.Column("view", sa.String(length=100), nullable=True))
    op.add_column("defects", sa.Column("view", sa.String(length=100), nullable=True))


def downgrade() -> None:
    for table in ("defects", "step_results"):
        op.execute(f"ALTER TABLE {table} DROP COLUMN view")
    op.drop_index("ix_inspection_views_inspection", table_name="inspection_views")
    op.drop_table("inspection_views")
