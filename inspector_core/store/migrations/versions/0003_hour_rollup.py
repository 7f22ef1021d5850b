"""Hourly roll-up of inspections for QA stats; first_of_part on inspections (backfilled)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

``inspection_hours`` (per station, UTC hour, verdict: counts, first-part counts, latency
count/sum/min/max) and ``inspection_hour_latency`` (its latency histogram, log-spaced buckets of
ratio 1.05) are kept by ``Store.write`` in the same transaction as the inspections. This
migration fills both, and ``inspections.first_of_part``, from the inspections already stored,
with the same aggregation code the writer uses (``inspector_core.store.HourRollup``), so an old
database reads the same as one written from the start. docs/schema.md describes them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CHUNK = 5000


def upgrade() -> None:
    from inspector_core.store import HourRollup

    op.add_column("inspections", sa.Column("first_of_part", sa.Boolean(), nullable=False, server_default=sa.false()))
    hours = op.create_table(
        "inspection_hours",
        sa.Column("station_id", sa.Integer(), sa.ForeignKey("stations.id"), nullable=False),
        sa.Column("hour", sa.DateTime(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("parts", sa.Integer(), nullable=False),
        sa.Column("first_parts", sa.Integer(), nullable=False),
        sa.Column("first_passed", sa.Integer(), nullable=False),
        sa.Column("latency_count", sa.Integer(), nullable=False),
        sa.Column("latency_sum", sa.Float(), nullable=False),
        sa.Column("latency_min", sa.Float(), nullable=True),
        sa.Column("latency_max", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("station_id", "hour", "verdict"),
    )
    latency = op.create_table(
        "inspection_hour_latency",
        sa.Column("station_id", sa.Integer(), sa.ForeignKey("stations.id"), nullable=False),
        sa.Column("hour", sa.DateTime(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("bucket", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("station_id", "hour", "verdict", "bucket"),
    )

    # Backfill. First of a part: earliest captured_at, then lowest id, per (station, part id).
    bind = op.get_bind()
    i = sa.table(
        "inspections",
        sa.column("id", sa.Integer()),
        sa.column("station_id", sa.Integer()),
        sa.column("part_id", sa.String()),
        sa.column("captured_at", sa.DateTime()),
        sa.column("verdict", sa.String()),
        sa.column("latency_ms", sa.Float()),
        sa.column("first_of_part", sa.Boolean()),
    )
    part = (i.c.station_id, i.c.part_id)
    ranked = sa.select(
        i.c.id,
        i.c.station_id,
        i.c.captured_at,
        i.c.verdict,
        i.c.latency_ms,
        sa.func.row_number().over(partition_by=part, order_by=(i.c.captured_at, i.c.id)).label("rn"),
        sa.func.count().over(partition_by=part).label("n"),
    ).subquery()
    bind.execute(
        sa.update(i).where(i.c.id.in_(sa.select(ranked.c.id).where(ranked.c.rn == 1))).values(first_of_part=True)
    )
    rollup = HourRollup()
    rows = bind.execute(
        sa.select(
            ranked.c.station_id, ranked.c.captured_at, ranked.c.verdict, ranked.c.latency_ms, ranked.c.rn, ranked.c.n
        ).execution_options(yield_per=CHUNK)
    )
    for sid, at, verdict, lat, rn, n in rows:
        rollup.add(sid, at, verdict, lat, rn == 1, rn == 1 and n == 1 and verdict == "PASS")
    for table, data in ((hours, rollup.hour_rows()), (latency, rollup.latency_rows())):
        for k in range(0, len(data), CHUNK):
            bind.execute(table.insert(), data[k : k + CHUNK])


def downgrade() -> None:
    op.drop_table("inspection_hour_latency")
    op.drop_table("inspection_hours")
    with op.batch_alter_table("inspections") as batch_op:
        batch_op.drop_column("first_of_part")
