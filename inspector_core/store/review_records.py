"""What people say about the machine's verdicts, and who they are: ``reviews``, ``users`` and
``user_sessions`` (migration 0010; issue 15).

A review is appended beside the machine verdict it is about, never in its place: the
``inspections`` and ``defects`` rows are evidence and stay as the station wrote them. The log
is append-only; the current state of a review subject (a part, or one finding on it) is its
latest row. Users are never deleted (``disabled_at``), so every review keeps its author.

Written only by :mod:`inspector_core.qa.review` and :mod:`inspector_core.qa.accounts` (the
dashboard and ``inspector review|users``), through a connection that never migrates.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from inspector_core.store.schema import Base, BigId

LABELS = ("confirmed", "false_alarm", "missed", "unsure")
"""What a reviewer can say. About a finding: ``confirmed`` (a real defect), ``false_alarm``
(not a defect), ``unsure``. About a part: ``confirmed`` (the machine's verdict is right),
``false_alarm`` (a FAIL part that is good), ``missed`` (the part has a defect the machine did
not report; with its box in frame pixels), ``unsure``."""

ROLES = ("viewer", "reviewer", "admin")
"""``viewer`` reads; ``reviewer`` also writes reviews; ``admin`` also manages users."""


class User(Base):
    """A person who signs in to the dashboard or is named by ``inspector review set --as``."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    """One of :data:`ROLES`."""
    password_hash: Mapped[str] = mapped_column(String(255))
    """An argon2id hash in PHC format (argon2-cffi), never the password."""
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]
    """Set when the account is switched off; its sessions end, its reviews stay."""


class UserSession(Base):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is stored, so
    reading this table does not let anyone sign in."""

    __tablename__ = "user_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """SHA-256 (hex) of the session cookie's token."""
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    """The token every write of this session must send back (header ``X-CSRF-Token`` or form
    field ``csrf``)."""
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class Review(Base):
    """One entry of the review log: a person's word on a part (``defect_id`` NULL) or on one of
    its findings, appended, never updated."""

    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id", ondelete="CASCADE"))
    defect_id: Mapped[int | None] = mapped_column(ForeignKey("defects.id", ondelete="CASCADE"))
    """The finding reviewed; ``NULL`` for a review of the whole part."""
    label: Mapped[str] = mapped_column(String(16))
    """One of :data:`LABELS`."""
    step: Mapped[str | None] = mapped_column(String(200))
    """For ``missed``: the step that should have found it (the station's step name)."""
    kind: Mapped[str | None] = mapped_column(String(100))
    """For ``missed``: the defect's kind (``scratch``)."""
    x: Mapped[int | None] = mapped_column(Integer)
    """For ``missed``: the box the reviewer drew, in frame pixels (x, y, w, h)."""
    y: Mapped[int | None] = mapped_column(Integer)
    w: Mapped[int | None] = mapped_column(Integer)
    h: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    via: Mapped[str] = mapped_column(String(16))
    """``web`` (the dashboard) or ``cli`` (``inspector review set``)."""
    created_at: Mapped[datetime]

    __table_args__ = (
        Index("ix_reviews_subject", "inspection_id", "defect_id", "id"),
        Index("ix_reviews_time", "created_at"),
    )


class ReviewOutcome(Base):
    """What the reviews of one part say about the machine, kept beside the log (migration 0014)
    so that precision / recall for a month is one range scan instead of a walk over every review,
    finding and inspection. Derived data: rewritten for a part, in the transaction that appends a
    review of it (:func:`inspector_core.store.review_outcomes.refresh`), from the part's current
    reviews and its failed findings, by the rules of :mod:`inspector_core.qa.review`; migration
    0014 built it from the log. Rows per reviewed part:

    - one *part row* (``step`` and ``kind`` ``NULL``, ``whole`` = 1) when the part's own current
      review says the reviewer judged the whole part (confirmed, false_alarm, missed);
    - one row per (step, kind) the machine failed the part for: ``tp`` or ``fp`` (or neither,
      e.g. unsure), ``whole`` = 1 when the part has a part row (it is then no tn for that pair);
    - one row for a ``missed`` (step, kind) the machine reported no failed finding of: ``fn`` = 1.

    ``station_id`` and ``captured_at`` are the inspection's (copied: the window and station
    filters read only this table)."""

    __tablename__ = "review_outcomes"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id", ondelete="CASCADE"))
    station_id: Mapped[int] = mapped_column(Integer)
    captured_at: Mapped[datetime]
    step: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str | None] = mapped_column(String(100))
    tp: Mapped[int] = mapped_column(Integer)
    fp: Mapped[int] = mapped_column(Integer)
    fn: Mapped[int] = mapped_column(Integer)
    whole: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_review_outcomes_inspection", "inspection_id"),
        # Covering: review_stats reads the window from this index alone.
        Index("ix_review_outcomes_time", "captured_at", "station_id", "step", "kind", "tp", "fp", "fn", "whole"),
    )


class ReviewPart(Base):
    """What the dashboard's review tiles add up, one row per reviewed part (migration 0015), kept
    beside the log like :class:`ReviewOutcome`: rewritten for a part in the transaction that
    appends a review of it (:func:`inspector_core.store.review_outcomes.refresh_parts`), so that
    the tiles for a month read one covering index range instead of every review and finding.

    ``station_id`` and ``captured_at`` are the inspection's (copied: the window reads this table
    alone)."""

    __tablename__ = "review_parts"
    inspection_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("inspections.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    station_id: Mapped[int] = mapped_column(Integer)
    captured_at: Mapped[datetime]
    reviews: Mapped[int] = mapped_column(Integer)
    """Rows of the log about the part or its findings (every change of mind counted)."""
    findings_reviewed: Mapped[int] = mapped_column(Integer)
    """On a FAIL part: its failed findings that have a review of their own or whose part has one
    (they have left the queue); 0 on any other part."""
    confirmed: Mapped[int] = mapped_column(Integer)
    """Subjects (the part, each of its findings) whose current review is ``confirmed``; the same
    for the other labels."""
    false_alarm: Mapped[int] = mapped_column(Integer)
    missed: Mapped[int] = mapped_column(Integer)
    unsure: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        # Covering: review.counts reads the window from this index alone.
        Index(
            "ix_review_parts_time",
            "captured_at",
            "station_id",
            "reviews",
            "findings_reviewed",
            "confirmed",
            "false_alarm",
            "missed",
            "unsure",
        ),
    )


class PassCandidate(Base):
    """A candidate finding (below its rule: ``failed`` false) of a PASS part, with the part's
    station, run and capture time (migration 0015), so that the review tiles count the PASS parts
    near a threshold from one covering index instead of reading every such part's row.

    Derived data, written by the database itself: a trigger on ``defects`` (``AFTER INSERT``; on
    PostgreSQL one per statement, over its new rows) copies each new candidate whose part is PASS,
    whoever writes the part (the station's writer, a spool replay, a bulk load); migration 0015
    filled it from the rows already stored. The machine's rows never change after they are
    written, and a part deleted takes its rows along (``ON DELETE CASCADE``)."""

    __tablename__ = "pass_candidates"
    defect_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("defects.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    inspection_id: Mapped[int] = mapped_column(BigId)
    station_id: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[int] = mapped_column(Integer)
    captured_at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(100))
    score: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        # Covering: a rule's band is a range of (kind, score); the rest is read from the entry.
        Index("ix_pass_candidates_score", "kind", "score", "run_id", "captured_at", "station_id", "inspection_id"),
        # The queue's page: PASS parts near the threshold newest first, the band read from the entry.
        Index("ix_pass_candidates_time", "captured_at", "inspection_id", "score", "kind", "run_id", "station_id"),
    )
