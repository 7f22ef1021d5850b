"""evidence: whole-frame evidence files beside the database, and their retention

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01

One row per inspection whose frame the station kept (or meant to keep: a frame dropped because
the disk was full is a row too, ``status`` ``dropped``). The image itself is a content-addressed
file beside the database (``<db>.evidence/ab/cd/<sha256>.<ext>``), written and fsynced before
the transaction that commits this row. Retention marks rows ``expired`` (file reference cleared)
before it deletes files. See ``docs/schema.md`` and ``docs/qa.md``.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "evidence",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "inspection_id",
            BigId,
            sa.ForeignKey("inspections.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("station_id", sa.Integer(), sa.ForeignKey("stations.id"), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("kept_as", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("format", sa.String(length=8), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("scale", sa.Float(), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("expired_at", sa.DateTime(timezone=False), nullable=True),
        sa.Column("held_at", sa.DateTime(timezone=False), nullable=True),
        sa.Column("held_by", sa.String(length=100), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=False), nullable=True),
        sa.Column("released_by", sa.String(length=100), nullable=True),
    )
    op.create_index("ix_evidence_retention", "evidence", ["station_id", "kept_as", "status", "captured_at"])
    op.create_index("ix_evidence_sha256", "evidence", ["sha256"])


def downgrade() -> None:
    op.drop_index("ix_evidence_sha256", table_name="evidence")
    op.drop_index("ix_evidence_retention", table_name="evidence")
    op.drop_table("evidence")
