"""The store's tables: plain enough that a QA engineer's own SQL or BI tool can read them.

Documented for readers in ``docs/schema.md``; changed only through an Alembic migration in
``inspector_core/store/migrations/versions``. All times are UTC, stored without a time zone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")

VERDICTS = ("PASS", "FAIL", "ERROR", "NOT_INSPECTED")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=False)}


class Station(Base):
    """One production-line station, by the ``name`` in its config."""

    __tablename__ = "stations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime]


class Run(Base):
    """One start of a station: what software, plugins, config and models it ran with."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str | None] = mapped_column(String(32), unique=True, index=True)
    """Hex UUID the station gives the run at start (migration 0005; ``NULL`` on older runs):
    spooled records name their run by it, never by ``id``."""
    station_id: Mapped[int] = mapped_column(ForeignKey("stations.id"), index=True)
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    hostname: Mapped[str] = mapped_column(String(200))
    software_version: Mapped[str] = mapped_column(String(50))
    plugins: Mapped[dict[str, Any]]
    """``{plugin name: {"distribution": ..., "version": ...}}`` for every plugin in use."""
    config_yaml: Mapped[str] = mapped_column(Text)
    config_hash: Mapped[str] = mapped_column(String(64), index=True)
    models: Mapped[dict[str, Any]]
    """``{"<step>/<label>": {"path": ..., "sha256": ...}}`` for every file a step depends on."""
    parts_seen: Mapped[int | None]
    """Set when the run ends cleanly; ``None`` after a crash."""

    station: Mapped[Station] = relationship()


class Inspection(Base):
    """One part's verdict. Every frame a station receives gets exactly one row."""

    __tablename__ = "inspections"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    """Globally unique id (hex UUID) given at capture; makes spooled re-writes idempotent."""
    station_id: Mapped[int] = mapped_column(ForeignKey("stations.id"))
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    seq: Mapped[int] = mapped_column(Integer)
    """Position of the frame in its run (0, 1, ...)."""
    part_id: Mapped[str] = mapped_column(String(300))
    captured_at: Mapped[datetime]
    decided_at: Mapped[datetime]
    verdict: Mapped[str] = mapped_column(String(16))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    """Capture to verdict, milliseconds."""
    error: Mapped[str | None] = mapped_column(Text)
    error_step: Mapped[str | None] = mapped_column(String(200))
    n_defects: Mapped[int] = mapped_column(Integer, default=0)
    source_meta: Mapped[dict[str, Any] | None]
    first_of_part: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """True on the earliest inspection (by ``captured_at``, then ``id``) of its ``(station_id,
    part_id)``; decided by the writer (migration 0003 backfilled older rows)."""
    committed_at: Mapped[datetime | None]
    """The writer's clock when it handed the row's batch to the database, just before that
    transaction's COMMIT (migration 0008; ``NULL`` on older rows)."""
    commit_latency_ms: Mapped[float | None] = mapped_column(Float)
    """Capture to committed, milliseconds, on the clock of ``latency_ms`` (``latency_ms`` plus
    ``committed_at - decided_at``); ``NULL`` where ``latency_ms`` is (migration 0008)."""
    recipe: Mapped[str | None] = mapped_column(String(100))
    """The station recipe (product) the part was inspected under; ``NULL``: none (migration 0012)."""
    recipe_hash: Mapped[str | None] = mapped_column(String(64))
    """sha256 of that recipe's resolved config (migration 0012)."""

    station: Mapped[Station] = relationship()
    steps: Mapped[list[StepResult]] = relationship(back_populates="inspection", order_by="StepResult.step_index")
    defects: Mapped[list[Defect]] = relationship(back_populates="inspection", order_by="Defect.id")

    __table_args__ = (
        Index("ix_inspections_station_time", "station_id", "captured_at"),
        Index("ix_inspections_time", "captured_at"),
        # Covering for the review tiles' failed findings of a window (sum of n_defects; migration 0015).
        Index("ix_inspections_verdict_time", "verdict", "captured_at", "station_id", "n_defects").ddl_if(
            dialect="sqlite"
        ),
        Index(
            "ix_inspections_verdict_time", "verdict", "captured_at", postgresql_include=["station_id", "n_defects"]
        ).ddl_if(dialect="postgresql"),
        Index("ix_inspections_part", "part_id"),
        Index("ix_inspections_run", "run_id", "seq"),
        # QA queries (migration 0002; docs/schema.md explains each plan).
        Index(
            "ix_inspections_station_hour",
            "station_id",
            text("substr(captured_at, 1, 13)"),
            "verdict",
            "captured_at",
            "latency_ms",
        ).ddl_if(dialect="sqlite"),
        Index(
            "ix_inspections_station_hour",
            "station_id",
            text("date_trunc('hour', captured_at)"),
            "verdict",
            postgresql_include=["captured_at", "latency_ms"],
        ).ddl_if(dialect="postgresql"),
        Index("ix_inspections_station_part", "station_id", "part_id", "captured_at"),
        Index("ix_inspections_station_latency", "station_id", "latency_ms", "captured_at"),
        # Part-id prefix globs on PostgreSQL (migration 0004).
        Index(
            "ix_inspections_part_pattern", "part_id", "captured_at", postgresql_ops={"part_id": "varchar_pattern_ops"}
        ).ddl_if(dialect="postgresql"),
        # The sinks' outbox reads a station's inspections after a cursor, in id order (migration 0006).
        Index("ix_inspections_station_id", "station_id", "id"),
    )


class StepResult(Base):
    """Every step's outcome on every part, PASS parts included, so thresholds can be
    re-examined later. ``score`` is the step's highest finding score (0 with none)."""

    __tablename__ = "step_results"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id", ondelete="CASCADE"))
    step_index: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(200))
    detector: Mapped[str] = mapped_column(String(200))
    """The detector's name (``scratch``)."""
    status: Mapped[str] = mapped_column(String(16))
    """``ok``, ``error`` (raised) or ``timeout`` (overran its budget)."""
    score: Mapped[float | None] = mapped_column(Float)
    raw_score: Mapped[float | None] = mapped_column(Float)
    """The detector's own unclipped score for the part: the highest ``Finding.raw_score`` of all
    the findings it returned, those below its report floor included (where ``score`` is 0);
    ``NULL`` when it gives none (migration 0008)."""
    latency_ms: Mapped[float | None] = mapped_column(Float)
    n_findings: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    view: Mapped[str | None] = mapped_column(String(100))
    """The view of the part the step looked at (``inspection_views``); ``NULL``: a single-view
    station (migration 0013)."""

    inspection: Mapped[Inspection] = relationship(back_populates="steps")
    __table_args__ = (Index("ix_step_results_inspection", "inspection_id"),)


class Defect(Base):
    """A finding a detector reported on a part, in frame pixels. ``failed`` says whether the
    verdict rules counted it (True) or it was a candidate below them (kept for what-ifs)."""

    __tablename__ = "defects"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(String(200))
    detector: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(100))
    score: Mapped[float] = mapped_column(Float)
    raw_score: Mapped[float | None] = mapped_column(Float)
    """The detector's own unclipped score (``Finding.raw_score``), beside the normalised ``score``
    in [0, 1]; ``NULL`` when it gives none (migration 0008)."""
    failed: Mapped[bool] = mapped_column(Boolean)
    x: Mapped[int] = mapped_column(Integer)
    y: Mapped[int] = mapped_column(Integer)
    w: Mapped[int] = mapped_column(Integer)
    h: Mapped[int] = mapped_column(Integer)
    size_px: Mapped[float | None] = mapped_column(Float)
    size_mm: Mapped[float | None] = mapped_column(Float)
    measurements: Mapped[dict[str, Any]]
    message: Mapped[str] = mapped_column(Text, default="")
    view: Mapped[str | None] = mapped_column(String(100))
    """The view of the part the finding is on; its box is in that view's frame pixels; ``NULL``: a
    single-view station (migration 0013)."""

    inspection: Mapped[Inspection] = relationship(back_populates="defects")
    crop: Mapped[Crop | None] = relationship(back_populates="defect", uselist=False)
    __table_args__ = (
        Index("ix_defects_inspection", "inspection_id"),
        Index("ix_defects_kind_score", "kind", "score"),
        Index("ix_defects_failed_kind", "failed", "kind", "inspection_id"),
    )


class Crop(Base):
    """The evidence of one defect: an encoded image (JPEG or PNG) of its padded box,
    committed in the same transaction as its inspection."""

    __tablename__ = "crops"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    defect_id: Mapped[int] = mapped_column(ForeignKey("defects.id", ondelete="CASCADE"), unique=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id", ondelete="CASCADE"), index=True)
    format: Mapped[str] = mapped_column(String(8))
    """``jpeg`` or ``png``."""
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    x: Mapped[int] = mapped_column(Integer)
    """Where the crop's top-left lies in the frame, and its scale (crop px per frame px)."""
    y: Mapped[int] = mapped_column(Integer)
    scale: Mapped[float] = mapped_column(Float)
    data: Mapped[bytes] = mapped_column(LargeBinary)

    defect: Mapped[Defect] = relationship(back_populates="crop")


class Event(Base):
    """Things that happened to a run besides verdicts: a camera gap, a reconnect, a sink
    that failed, the plant database unreachable and the spool drained."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    uid: Mapped[str | None] = mapped_column(String(32), unique=True, index=True)
    """Given by the recorder (migration 0005), so an event drained twice from the spool is kept once."""
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(100))
    message: Mapped[str] = mapped_column(Text)


class InspectionHour(Base):
    """Roll-up of ``inspections`` per station, UTC hour and verdict, kept by the writer in the
    same transaction as the inspections it counts (migration 0003 backfilled older rows).
    Stats filtered only by station, time and verdict read this instead of the inspections."""

    __tablename__ = "inspection_hours"
    station_id: Mapped[int] = mapped_column(ForeignKey("stations.id"), primary_key=True)
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    """``captured_at`` truncated to the hour (UTC)."""
    verdict: Mapped[str] = mapped_column(String(16), primary_key=True)
    parts: Mapped[int] = mapped_column(Integer)
    """Inspections."""
    first_parts: Mapped[int] = mapped_column(Integer)
    """Inspections that are the first of their part id at the station (``first_of_part``)."""
    first_passed: Mapped[int] = mapped_column(Integer)
    """Of those, PASS and the part's only inspection so far (first-pass parts)."""
    latency_count: Mapped[int] = mapped_column(Integer)
    latency_sum: Mapped[float] = mapped_column(Float)
    latency_min: Mapped[float | None] = mapped_column(Float)
    latency_max: Mapped[float | None] = mapped_column(Float)


class InspectionHourLatency(Base):
    """Latency histogram of the inspections of one ``inspection_hours`` row: how many had
    ``latency_ms`` in log-spaced bucket ``bucket``, i.e. in ``[1.05**bucket, 1.05**(bucket+1))``
    (values below 0.01 ms count in the bucket of 0.01 ms)."""

    __tablename__ = "inspection_hour_latency"
    station_id: Mapped[int] = mapped_column(ForeignKey("stations.id"), primary_key=True)
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    verdict: Mapped[str] = mapped_column(String(16), primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    n: Mapped[int] = mapped_column(Integer)


class SinkCursor(Base):
    """The sinks' durable outbox (migration 0006): how far each sink of a station has been
    delivered. Every inspection of the station with ``id`` above ``inspection_id`` is the
    sink's backlog; its worker sends them in ``id`` order (the commit order of the station's
    one writer) and advances the cursor after the sink accepted them (at least once)."""

    __tablename__ = "sink_cursors"
    station_id: Mapped[int] = mapped_column(ForeignKey("stations.id"), primary_key=True)
    sink: Mapped[str] = mapped_column(String(200), primary_key=True)
    """The sink's key: its ``name:`` in the station config, else its type (``mqtt``)."""
    inspection_id: Mapped[int] = mapped_column(BigInteger)
    """The last inspection (``inspections.id``) the sink accepted; 0 before any."""
    updated_at: Mapped[datetime]
    """When the cursor last moved (or was created)."""
    failing_since: Mapped[datetime | None]
    """Set while the sink keeps failing (event ``sink_failing``); cleared when it delivers again."""
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]


class SinkDelivery(Base):
    """When a sink took its verdicts (migration 0008): one row each time its delivery cursor
    moved. The sink had accepted every inspection of the station with ``after_id < id <=
    through_id`` by ``delivered_at``: exact for the last of the range, an upper bound for the
    others (a cursor is saved at the end of each delivery batch and at most every second while
    sending, see ``runtime/delivery.py``)."""

    __tablename__ = "sink_deliveries"
    station_id: Mapped[int] = mapped_column(ForeignKey("stations.id"), primary_key=True)
    sink: Mapped[str] = mapped_column(String(200), primary_key=True)
    through_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    after_id: Mapped[int] = mapped_column(BigInteger)
    delivered_at: Mapped[datetime]


# The line's table lives beside its writer (issue 13); imported here so that Base.metadata,
# which Alembic and the migration tests compare with the database, holds it.
# Whole-frame evidence and its retention (issue 15), likewise.
from inspector_core.store import evidence_records as _evidence_records  # noqa: E402, F401
from inspector_core.store import line_records as _line_records  # noqa: E402, F401

# The review log and the accounts that write it (issue 15), likewise.
from inspector_core.store import review_records as _review_records  # noqa: E402, F401

# The views of a multi-view part (issue 14), likewise.
from inspector_core.store import view_records as _view_records  # noqa: E402, F401
