"""line_results: what the PLC was told for each trigger of a station on a line

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

One row per trigger (``docs/line.md``): the code written to the PLC and whether it was the
deadline default, the real verdict (kept also when it came after the deadline: ``late``), the
latencies trigger -> frame -> verdict -> committed and trigger -> result on the PLC, the
overrun / missed-trigger flags and the PLC's acknowledge (``ack_ms``, ``ack_timeout``).
``inspection_uid`` joins the part's inspection.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "line_results",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("station_id", sa.Integer(), sa.ForeignKey("stations.id"), nullable=False),
        sa.Column("run_uid", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("counter", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("inspection_uid", sa.String(length=32), nullable=True),
        sa.Column("part_id", sa.String(length=300), nullable=True),
        sa.Column("product", sa.String(length=200), nullable=True),
        sa.Column("triggered_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("deadline_ms", sa.Float(), nullable=False),
        sa.Column("trigger_to_frame_ms", sa.Float(), nullable=True),
        sa.Column("frame_to_verdict_ms", sa.Float(), nullable=True),
        sa.Column("verdict_to_committed_ms", sa.Float(), nullable=True),
        sa.Column("trigger_to_result_ms", sa.Float(), nullable=True),
        sa.Column("code", sa.Integer(), nullable=False),
        sa.Column("defect_code", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(length=20), nullable=True),
        sa.Column("verdict_code", sa.Integer(), nullable=True),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("overrun", sa.Boolean(), nullable=False),
        sa.Column("missed", sa.Boolean(), nullable=False),
        sa.Column("ack_ms", sa.Float(), nullable=True),
        sa.Column("ack_timeout", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("run_uid", "seq", name="uq_line_results_run_seq"),
    )
    op.create_index("ix_line_results_station_time", "line_results", ["station_id", "triggered_at"])
    op.create_index("ix_line_results_inspection_uid", "line_results", ["inspection_uid"])


def downgrade() -> None:
    op.drop_index("ix_line_results_inspection_uid", table_name="line_results")
    op.drop_index("ix_line_results_station_time", table_name="line_results")
    op.drop_table("line_results")
