"""review_parts, pass_candidates: the review tiles from roll-ups and covering indexes (issue 15)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01

The dashboard's review tiles (findings left, PASS parts near the threshold, current labels,
reviews in the log) walked every review, failed finding and near-threshold part of the window:
0.7 s of CPU on SQLite, 1.6 s on PostgreSQL, for a month of 1,000,000 inspections with 50,000
reviews. Now:

- ``review_parts``: per reviewed part, what the tiles add up; kept by the review writer in the
  transaction that appends a review (``inspector_core/store/review_outcomes.py``), built here from
  the log as it stands;
- ``pass_candidates``: the candidate findings of PASS parts with the part's station, run and
  capture time, copied by a trigger on ``defects`` (whoever writes a part), filled here from the
  rows already stored; by (kind, score) for the tiles, by time for the queue's page;
- ``ix_inspections_verdict_time`` gains ``station_id`` and ``n_defects`` (key columns on SQLite,
  INCLUDE on PostgreSQL): the failed findings of a window's FAIL parts are summed from the index
  alone. Same leading columns, so every plan that used it still can.

See ``docs/schema.md``.
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
COUNTS = ("reviews", "findings_reviewed", "confirmed", "false_alarm", "missed", "unsure")
COPY = (
    "INSERT INTO pass_candidates (defect_id, inspection_id, station_id, run_id, captured_at, kind, score) "
    "SELECT d.id, i.id, i.station_id, i.run_id, i.captured_at, d.kind, d.score "
    "FROM {rows} AS d JOIN inspections AS i ON i.id = d.inspection_id "
    "WHERE {candidate} AND i.verdict = 'PASS'"
)
"""The candidates of PASS parts among ``rows``: the trigger's body and the backfill."""

SQLITE_TRIGGER = """
CREATE TRIGGER tr_defects_pass_candidates AFTER INSERT ON defects WHEN NEW.failed = 0
BEGIN
    INSERT INTO pass_candidates (defect_id, inspection_id, station_id, run_id, captured_at, kind, score)
    SELECT NEW.id, i.id, i.station_id, i.run_id, i.captured_at, NEW.kind, NEW.score
    FROM inspections AS i WHERE i.id = NEW.inspection_id AND i.verdict = 'PASS';
END
"""
PG_FUNCTION = f"""
CREATE FUNCTION pass_candidates_copy() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {COPY.format(rows="new_defects", candidate="NOT d.failed")};
    RETURN NULL;
END
$$
"""
# Once per statement over its new rows (a transition table): the writer inserts a batch's
# defects in one statement (or COPY), so the join runs once per batch, not once per row.
PG_TRIGGER = """
CREATE TRIGGER tr_defects_pass_candidates AFTER INSERT ON defects
REFERENCING NEW TABLE AS new_defects FOR EACH STATEMENT EXECUTE FUNCTION pass_candidates_copy()
"""


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "review_parts",
        sa.Column(
            "inspection_id",
            BigId,
            sa.ForeignKey("inspections.id", ondelete="CASCADE"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("station_id", sa.Integer(), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=False), nullable=False),
        *(sa.Column(c, sa.Integer(), nullable=False) for c in COUNTS),
    )
    op.create_index("ix_review_parts_time", "review_parts", ["captured_at", "station_id", *COUNTS])
    op.create_table(
        "pass_candidates",
        sa.Column(
            "defect_id", BigId, sa.ForeignKey("defects.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
        ),
        sa.Column("inspection_id", BigId, nullable=False),
        sa.Column("station_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("kind", sa.String(length=100), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
    )
    op.create_index(
        "ix_pass_candidates_score",
        "pass_candidates",
        ["kind", "score", "run_id", "captured_at", "station_id", "inspection_id"],
    )
    op.create_index(
        "ix_pass_candidates_time",
        "pass_candidates",
        ["captured_at", "inspection_id", "score", "kind", "run_id", "station_id"],
    )
    op.execute(COPY.format(rows="defects", candidate="NOT d.failed" if pg else "d.failed = 0"))
    if pg:
        op.execute(PG_FUNCTION)
        op.execute(PG_TRIGGER)
    else:
        op.execute(SQLITE_TRIGGER)
    op.drop_index("ix_inspections_verdict_time", table_name="inspections")
    if pg:
        op.create_index(
            "ix_inspections_verdict_time",
            "inspections",
            ["verdict", "captured_at"],
            postgresql_include=["station_id", "n_defects"],
        )
    else:
        op.create_index(
            "ix_inspections_verdict_time", "inspections", ["verdict", "captured_at", "station_id", "n_defects"]
        )
    from inspector_core.store.review_outcomes import refresh_parts

    refresh_parts(op.get_bind(), None)


def downgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.drop_index("ix_inspections_verdict_time", table_name="inspections")
    op.create_index("ix_inspections_verdict_time", "inspections", ["verdict", "captured_at"])
    op.execute("DROP TRIGGER tr_defects_pass_candidates" + (" ON defects" if pg else ""))
    if pg:
        op.execute("DROP FUNCTION pass_candidates_copy()")
    op.drop_index("ix_pass_candidates_time", table_name="pass_candidates")
    op.drop_index("ix_pass_candidates_score", table_name="pass_candidates")
    op.drop_table("pass_candidates")
    op.drop_index("ix_review_parts_time", table_name="review_parts")
    op.drop_table("review_parts")
