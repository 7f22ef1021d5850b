"""The sinks' durable outbox: a cursor per (station, sink) over inspections.id

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Before this, a verdict was handed to the sinks in memory after its commit and retried for about
3 s; a sink that stayed down, a slow sink or a kill lost it for that sink. Now each sink of a
station has a row in ``sink_cursors`` naming the last inspection it accepted; its worker reads
the station's inspections after the cursor, in id order, and advances the cursor after each
accepted batch, so a restart (or a kill -9) resumes where the sink stopped. The index
``(station_id, id)`` answers "the station's inspections after id N" and the backlog count
without reading other stations' rows.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sink_cursors",
        sa.Column("station_id", sa.Integer(), sa.ForeignKey("stations.id"), primary_key=True),
        sa.Column("sink", sa.String(length=200), primary_key=True),
        sa.Column("inspection_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("failing_since", sa.DateTime(timezone=False), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=False), nullable=True),
    )
    op.create_index("ix_inspections_station_id", "inspections", ["station_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_inspections_station_id", table_name="inspections")
    op.drop_table("sink_cursors")
