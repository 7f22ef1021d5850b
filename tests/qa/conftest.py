"""A store with known history, written through the real Store (migrations, writer), so the
QA queries can be checked against figures computed here independently, in plain Python."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta

import cv2
import numpy as np
import pytest
import yaml

from inspector_core.store import (
    CropRecord,
    DefectRecord,
    InspectionRecord,
    StepRecord,
    Store,
)

T0 = datetime(2026, 11, 20, 0, 0, 0)  # UTC
HOSTILE_IDS = [
    "../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "a'; DROP TABLE inspections; --",
    "quo\"te' OR 1=1 --",
    "100%_off",
    "back\\slash",
    "[set]*?",
    "/abs/path",
    '=HYPERLINK("http://x")',
    "nul\x01byte",
    "ünïcødé/ドット",
    "<script>alert(1)</script>",
]
RULES = {
    "rules": {"scratch": {"min_score": 0.5, "min_size_mm": 1.0}, "dent": {"min_score": 0.6}},
    "default_rule": {"min_score": 0.5},
}


def jpeg(w: int = 48, h: int = 32, shade: int = 128) -> bytes:
    img = np.full((h, w, 3), shade, np.uint8)
    cv2.rectangle(img, (8, 8), (w - 8, h - 8), (0, 0, 255), 2)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


@dataclasses.dataclass
class Part:
    station: str
    part_id: str
    at: datetime
    verdict: str
    latency: float | None
    findings: list[tuple[str, float, float | None, bool]]  # kind, score, size_mm, failed


def known_parts() -> list[Part]:
    """Two stations over two days. Deterministic; every figure the tests expect is derived
    from this list in Python."""
    rng = np.random.default_rng(5)
    parts: list[Part] = []
    kinds = ["scratch", "scratch", "scratch", "dent", "dent", "misalignment"]
    for st, n, fail_every in (("line1", 120, 6), ("line2", 80, 4)):
        for i in range(n):
            at = T0 + timedelta(minutes=23 * i + (7 if st == "line2" else 0))
            pid = f"{st}-P{i:04d}"
            latency = float(10 + (i % 17) * 1.5)
            if i % 29 == 28:
                parts.append(Part(st, pid, at, "NOT_INSPECTED", None, []))
            elif i % 31 == 30:
                parts.append(Part(st, pid, at, "ERROR", latency, []))
            elif i % fail_every == 0:
                k = kinds[(i // fail_every) % len(kinds)]
                parts.append(
                    Part(
                        st,
                        pid,
                        at,
                        "FAIL",
                        latency,
                        [(k, round(0.62 + 0.3 * rng.random(), 3), 2.5, True), ("scratch", 0.3, 0.5, False)],
                    )
                )
            elif i % 5 == 1:
                # a candidate below the rules: PASS now, FAIL under a stricter rule
                parts.append(
                    Part(st, pid, at, "PASS", latency, [("scratch", round(0.35 + 0.1 * rng.random(), 3), 2.0, False)])
                )
            else:
                parts.append(Part(st, pid, at, "PASS", latency, []))
    # Re-inspections: failed once, then passed (not first-pass), on line1.
    for j, i in enumerate((6, 12)):
        parts.append(Part("line1", f"line1-P{i:04d}", T0 + timedelta(hours=47, minutes=j), "PASS", 12.0, []))
    # Hostile part ids on line2, failing with a scratch, each with a crop.
    for j, pid in enumerate(HOSTILE_IDS):
        parts.append(
            Part("line2", pid, T0 + timedelta(hours=30, minutes=j), "FAIL", 20.0, [("scratch", 0.9, 3.0, True)])
        )
    return parts


def write_known(url: str) -> list[Part]:
    store = Store(url)
    parts = known_parts()
    runs = {}
    for st in ("line1", "line2"):
        cfg = {"name": st, "source": {"type": "synthetic"}, "steps": [{"detector": "fake"}], **RULES}
        runs[st] = store.begin_run(
            st,
            hostname="test",
            software_version="0.1.0",
            plugins={"fake": {"distribution": "fake-det", "version": "1.2.3"}},
            config_yaml=yaml.safe_dump(cfg),
            config_hash=f"hash-{st}",
            models={"fake/model": {"path": "m.onnx", "sha256": "ab" * 32}},
        )
    records = []
    for seq, p in enumerate(parts):
        sid, rid = runs[p.station]
        defects = [
            DefectRecord(
                "fake",
                "fake",
                k,
                s,
                failed,
                (100 + 10 * n, 50, 40, 20),
                80.0,
                mm,
                {"length_px": 80.0, "length_mm": mm or 0.0},
                f"{k} {s}",
                CropRecord("jpeg", 48, 32, 84 + 10 * n, 34, 0.5, jpeg(shade=60 + 20 * n)),
            )
            for n, (k, s, mm, failed) in enumerate(p.findings)
        ]
        steps = (
            []
            if p.verdict == "NOT_INSPECTED"
            else [
                StepRecord(
                    0,
                    "fake",
                    "fake",
                    "error" if p.verdict == "ERROR" else "ok",
                    None if p.verdict == "ERROR" else max((f[1] for f in p.findings), default=0.0),
                    (p.latency or 0) * 0.8,
                    len(p.findings),
                    "boom" if p.verdict == "ERROR" else None,
                )
            ]
        )
        records.append(
            InspectionRecord(
                uuid.uuid4().hex,
                sid,
                rid,
                seq,
                p.part_id,
                p.at,
                p.at + timedelta(milliseconds=p.latency or 0),
                p.verdict,
                p.latency,
                error="step fake: boom" if p.verdict == "ERROR" else None,
                error_step="fake" if p.verdict == "ERROR" else None,
                steps=steps,
                defects=defects,
            )
        )
    store.write(records)
    store.close()
    return parts


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """An empty store URL: a SQLite file, or a fresh PostgreSQL database (dropped after)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'qa.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def known(db_url):
    """``(url, parts)``: the known history written into ``db_url``."""
    return db_url, write_known(db_url)
