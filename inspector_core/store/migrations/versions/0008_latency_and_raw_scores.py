"""Latency through the store (committed, delivered per sink) and raw detector scores

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

- ``inspections.committed_at``: the writer's clock when it handed the row's batch to the
  database, just before that transaction's COMMIT (a value written inside a transaction cannot
  be taken after its own commit; the commit itself, an fsync, follows within milliseconds and is
  measured by ``bench/store_rate.py``). ``inspections.commit_latency_ms``: capture to committed,
  in ms, on the clock of ``latency_ms`` (``latency_ms`` + ``committed_at - decided_at``), so
  ``inspector stats`` shows its percentiles beside the capture-to-verdict ones. ``NULL`` on older
  rows and on NOT_INSPECTED parts (which have no ``latency_ms``).
- ``sink_deliveries``: one row each time a sink's delivery cursor moved: the sink accepted every
  inspection of the station with ``after_id < id <= through_id`` by ``delivered_at``. One row per
  cursor save (at the end of each delivery batch and at most every second while sending), not one
  per inspection and sink: cheap at any line rate; ``delivered_at`` is an upper bound for each
  inspection of the range (exact for the last one).
- ``step_results.raw_score`` / ``defects.raw_score``: the detector's own unclipped score
  (``Finding.raw_score``), kept beside the normalised ``score`` in [0, 1]; a step's is the highest
  raw score among all the findings its detector returned, those below the report floor included
  (whose normalised step score is 0). ``NULL`` when the detector gives none.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("inspections", sa.Column("committed_at", sa.DateTime(timezone=False), nullable=True))
    op.add_column("inspections", sa.Column("commit_latency_ms", sa.Float(), nullable=True))
    op.add_column("step_results", sa.Column("raw_score", sa.Float(), nullable=True))
    op.add_column("defects", sa.Column("raw_score", sa.Float(), nullable=True))
    op.create_table(
        "sink_deliveries",
        sa.Column("station_id", sa.Integer(), sa.ForeignKey("stations.id"), primary_key=True),
        sa.Column("sink", sa.String(length=200), primary_key=True),
        sa.Column("through_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("after_id", sa.BigInteger(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=False), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sink_deliveries")
    for table, column in (
        ("defects", "raw_score"),
        ("step_results", "raw_score"),
        ("inspections", "commit_latency_ms"),
        ("inspections", "committed_at"),
    ):
        # Plain SQL in PostgreSQL and SQLite >= 3.35 (a batch copy of ``inspections`` would have to
        # reflect its expression index).
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
