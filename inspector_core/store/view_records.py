"""The views of a multi-view part: the ``inspection_views`` table (migration 0013; issue 14).

One row per view of an inspection of a station with ``views:`` (docs/views.md): whether the view was
inspected (``ok``), never arrived by the join's deadline (``missing``) or could not be inspected
(``error``), its frame's capture time and source metadata. The part's step results and defects name
their view in ``step_results.view`` and ``defects.view``; a single-view station writes no rows here
and leaves those columns ``NULL``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from inspector_core.store.schema import Base, BigId

STATUSES = ("ok", "missing", "error")


class InspectionView(Base):
    """One view of one inspection."""

    __tablename__ = "inspection_views"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id", ondelete="CASCADE"))
    view: Mapped[str] = mapped_column(String(100))
    """The view's name in the station file (``views: {NAME: ...}``)."""
    status: Mapped[str] = mapped_column(String(16))
    """One of :data:`STATUSES`."""
    captured_at: Mapped[datetime | None]
    """When the view's frame was captured (UTC); ``NULL`` for a missing view."""
    source_meta: Mapped[dict[str, Any] | None]
    """The view's frame's source metadata (file path, camera, ``view``)."""
    error: Mapped[str | None] = mapped_column(Text)
    """Why the view is missing or could not be inspected."""
    note: Mapped[str | None] = mapped_column(Text)
    """What else happened to it (a duplicate frame that was not inspected)."""
    evidence_x: Mapped[int | None] = mapped_column(Integer)
    """Where the view's frame starts (frame px from the left) in the part's evidence image, which
    holds the views side by side (``evidence.scale`` applies); ``NULL`` for a view without an image."""
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("ix_inspection_views_inspection", "inspection_id", "view", unique=True),)
