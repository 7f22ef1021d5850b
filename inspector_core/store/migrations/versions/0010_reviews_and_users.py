"""reviews, users, user_sessions: people's word on the machine's verdicts, and who they are

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

``reviews`` is an append-only log beside ``inspections`` and ``defects`` (never overwriting
them): the current state of a part's or a finding's review is its latest row. ``users`` holds
dashboard accounts (argon2 hashes, roles viewer / reviewer / admin), ``user_sessions`` the
signed-in browsers (SHA-256 of the cookie's token, the CSRF token). See ``docs/qa.md``.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=100), nullable=False, unique=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=False), nullable=True),
    )
    op.create_table(
        "user_sessions",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=False), nullable=False),
    )
    op.create_index("ix_user_sessions_user_id", "user_sessions", ["user_id"])
    op.create_table(
        "reviews",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("inspection_id", BigId, sa.ForeignKey("inspections.id", ondelete="CASCADE"), nullable=False),
        sa.Column("defect_id", BigId, sa.ForeignKey("defects.id", ondelete="CASCADE"), nullable=True),
        sa.Column("label", sa.String(length=16), nullable=False),
        sa.Column("step", sa.String(length=200), nullable=True),
        sa.Column("kind", sa.String(length=100), nullable=True),
        sa.Column("x", sa.Integer(), nullable=True),
        sa.Column("y", sa.Integer(), nullable=True),
        sa.Column("w", sa.Integer(), nullable=True),
        sa.Column("h", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
    )
    op.create_index("ix_reviews_subject", "reviews", ["inspection_id", "defect_id", "id"])
    op.create_index("ix_reviews_time", "reviews", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_reviews_time", table_name="reviews")
    op.drop_index("ix_reviews_subject", table_name="reviews")
    op.drop_table("reviews")
    op.drop_index("ix_user_sessions_user_id", table_name="user_sessions")
    op.drop_table("user_sessions")
    op.drop_table("users")
