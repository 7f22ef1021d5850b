"""Runs and events get a uid given by the station, so a spool names its run without database ids

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

A station that starts while its plant database is down cannot know the ``runs.id`` the database
will give it, and a spool replayed into another database must not attach rows by ids that mean
something else there. So a run gets a uid (hex UUID) when the station starts; spooled records
name their station and run by name and uid, and the writer resolves (or creates) the rows when
the database answers. Events get a uid too, so an event drained twice from the spool (a kill
between the commit and the spool's delete) is written once. Older rows keep ``NULL`` (unique
indexes allow many).
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("uid", sa.String(length=32), nullable=True))
    op.create_index("ix_runs_uid", "runs", ["uid"], unique=True)
    op.add_column("events", sa.Column("uid", sa.String(length=32), nullable=True))
    op.create_index("ix_events_uid", "events", ["uid"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_events_uid", table_name="events")
    with op.batch_alter_table("events") as batch_op:
        batch_op.drop_column("uid")
    op.drop_index("ix_runs_uid", table_name="runs")
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_column("uid")
