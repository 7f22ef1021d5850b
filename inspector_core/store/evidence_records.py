"""Whole-frame evidence: the ``evidence`` table (migration 0011; issue 15).

One row per inspection whose frame the station kept, or meant to keep and could not (``status``
``dropped``, with the ``reason``: the disk was full, below the free-space floor, a backlog). The
image is a content-addressed file beside the database (:mod:`inspector_core.store.evidence`),
written and fsynced before the transaction that commits its row, so a committed ``stored`` row
never names a missing file. Retention (``inspector retention``) marks rows ``expired`` and clears
their ``sha256`` in a transaction, then deletes the files no row names any more.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from inspector_core.store.schema import Base, BigId

STATUSES = ("stored", "dropped", "expired", "lost")
"""``stored``: the file is there. ``dropped``: the station did not keep the frame (``reason``).
``expired``: retention deleted it. ``lost``: a spooled row whose file was gone when it was drained."""

KEPT_AS = ("fail", "pass")
"""Why the frame was kept: the part did not pass (FAIL, ERROR), or it is a sampled PASS part."""


class Evidence(Base):
    """The frame of one inspection, kept as a file beside the database."""

    __tablename__ = "evidence"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id", ondelete="CASCADE"), unique=True)
    station_id: Mapped[int] = mapped_column(ForeignKey("stations.id"))
    captured_at: Mapped[datetime]
    """The inspection's ``captured_at`` (retention's age), copied so retention reads one table."""
    kept_as: Mapped[str] = mapped_column(String(8))
    """One of :data:`KEPT_AS`: the retention class."""
    status: Mapped[str] = mapped_column(String(16))
    """One of :data:`STATUSES`."""
    reason: Mapped[str | None] = mapped_column(Text)
    """Why it was dropped, lost or expired."""
    sha256: Mapped[str | None] = mapped_column(String(64))
    """SHA-256 (hex) of the file's bytes, its name in the evidence folder; ``NULL`` unless ``stored``."""
    format: Mapped[str | None] = mapped_column(String(8))
    """``jpeg`` or ``png``."""
    width: Mapped[int | None] = mapped_column(Integer)
    """The stored image's size (pixels); ``scale`` is stored px per frame px (1.0: full)."""
    height: Mapped[int | None] = mapped_column(Integer)
    scale: Mapped[float | None] = mapped_column(Float)
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    expired_at: Mapped[datetime | None]
    held_at: Mapped[datetime | None]
    """A person put the frame on hold (``inspector retention hold``): retention keeps it."""
    held_by: Mapped[str | None] = mapped_column(String(100))
    released_at: Mapped[datetime | None]
    """A person released the hold (``inspector retention release``): reviews and holds made
    before this no longer keep the frame; a later review or hold does again."""
    released_by: Mapped[str | None] = mapped_column(String(100))

    __table_args__ = (
        Index("ix_evidence_retention", "station_id", "kept_as", "status", "captured_at"),
        Index("ix_evidence_sha256", "sha256"),
    )
