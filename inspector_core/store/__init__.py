"""The verdict store: one record type, the schema, opening a database, the roll-up, the recorder
(the station's one writer) with its spool.

A station has exactly one :class:`Recorder`: a thread that takes finished inspections from a
queue and commits whatever has accumulated in one transaction (group commit). Only after that
commit does it hand the reports on. When a server database is unreachable, the batch goes to a
local spool on disk instead, drained into the database, in order and once, when it answers again.
"""

from __future__ import annotations

from inspector_core.store.database import MIGRATIONS, Store, StoreError, StoreTimeout, classify, is_unreachable
from inspector_core.store.recorder import Recorder
from inspector_core.store.records import (
    CropRecord,
    DefectRecord,
    EventRecord,
    InspectionRecord,
    RunRecord,
    StepRecord,
    naive_utc,
    utcnow,
)
from inspector_core.store.rollup import (
    HourRollup,
    bucket_value,
    hour_of,
    latency_bucket,
)
from inspector_core.store.spool import Spool, SpoolError, spool_file

__all__ = [
    "EventRecord",
    "RunRecord",
    "SpoolError",
    "StoreTimeout",
    "classify",
    "spool_file",
    "MIGRATIONS",
    "CropRecord",
    "DefectRecord",
    "HourRollup",
    "InspectionRecord",
    "Recorder",
    "StepRecord",
    "Spool",
    "Store",
    "StoreError",
    "bucket_value",
    "hour_of",
    "is_unreachable",
    "latency_bucket",
    "naive_utc",
    "utcnow",
]
