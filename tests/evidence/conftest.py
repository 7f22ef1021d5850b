"""A store with evidence written through the real writer path (EvidenceWriter, Store.write), on
SQLite and on the real PostgreSQL."""

from __future__ import annotations

import dataclasses
import random
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from inspector_core.runtime.config import EvidencePolicy, RetentionPolicy
from inspector_core.store import InspectionRecord, RunRecord, Store
from inspector_core.store.evidence import EvidenceWriter

NOW = datetime(2026, 12, 1, 12, 0, 0)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ev.db'}"
    return request.getfixturevalue("pg_url")


def frame(seed: int, w: int = 64, h: int = 48) -> np.ndarray:
    """A small frame whose encoded bytes differ per seed."""
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


@dataclasses.dataclass
class Env:
    store: Store
    root: Path
    writer: EvidenceWriter
    station_id: int
    run_id: int
    station: str = "line1"

    def part(self, verdict: str, age_days: float, *, seed: int | None = None, kept: bool = True) -> int:
        """Write one inspection captured ``age_days`` before NOW, with its frame kept; its id."""
        at = NOW - timedelta(days=age_days)
        r = InspectionRecord(
            uuid.uuid4().hex, self.station_id, self.run_id, 0, f"P-{uuid.uuid4().hex[:8]}", at, at, verdict, 12.0
        )
        if kept:
            kept_as = "fail" if verdict in ("FAIL", "ERROR") else "pass"
            r.evidence = self.writer.keep(frame(random.randrange(1 << 30) if seed is None else seed), kept_as)
        self.store.write([r])
        from sqlalchemy import select

        from inspector_core.store.schema import Inspection

        with self.store.transaction() as conn:
            return conn.scalar(select(Inspection.id).where(Inspection.uid == r.uid))


@pytest.fixture
def env(db_url, tmp_path):
    store = Store(db_url)
    run = RunRecord("line1", "host", "0", {}, "", "h", {})
    sid, rid = store.ensure_run(run)
    policy = EvidencePolicy(fail="downscaled", pass_sample=1.0, min_free_bytes=0, format="png")
    root = tmp_path / "ev.db.evidence"
    e = Env(store, root, EvidenceWriter(root, policy), sid, rid)
    yield e
    store.close()


def retention(**kw) -> RetentionPolicy:
    return RetentionPolicy(**kw)
