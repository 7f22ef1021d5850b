"""review_outcomes: per reviewed part, what its current reviews say about the machine (issue 15)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01

A roll-up beside the review log (``reviews``, 0010), kept by the review writer in the
transaction that appends a review (``inspector_core/store/review_outcomes.py``), so that
precision / recall per station for a month reads one covering index range instead of every
review, finding and inspection (50,000 reviews on 1,000,000 inspections: seconds before). Built
here from the log as it stands. See ``docs/schema.md``.
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "review_outcomes",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("inspection_id", BigId, sa.ForeignKey("inspections.id", ondelete="CASCADE"), nullable=False),
        sa.Column("station_id", sa.Integer(), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("step", sa.String(length=200), nullable=True),
        sa.Column("kind", sa.String(length=100), nullable=True),
        sa.Column("tp", sa.Integer(), nullable=False),
        sa.Column("fp", sa.Integer(), nullable=False),
        sa.Column("fn", sa.Integer(), nullable=False),
        sa.Column("whole", sa.Integer(), nullable=False),
    )
    op.create_index("ix_review_outcomes_inspection", "review_outcomes", ["inspection_id"])
    op.create_index(
        "ix_review_outcomes_time",
        "review_outcomes",
        ["captured_at", "station_id", "step", "kind", "tp", "fp", "fn", "whole"],
    )
    from inspector_core.store.review_outcomes import refresh

    refresh(op.get_bind(), None)


def downgrade() -> None:
    op.drop_index("ix_review_outcomes_time", table_name="review_outcomes")
    op.drop_index("ix_review_outcomes_inspection", table_name="review_outcomes")
    op.drop_table("review_outcomes")
