"""Whole-frame evidence files: content-addressed, beside the database (issue 15; docs/qa.md).

A kept frame is encoded (JPEG or PNG, full size or downscaled), named by the SHA-256 of the
encoded bytes and written to ``<root>/ab/cd/<sha256>.<ext>``: to a temporary file first, fsynced,
renamed into place, and its folder fsynced, all before the writer commits the ``evidence`` row
that names it (``Recorder``). A committed ``stored`` row therefore never names a missing file.

Pictures never stop the line: a disk that is full (``ENOSPC``), a folder that cannot be written,
or free space below ``min_free_bytes`` drops the frame, and the row says so (``status``
``dropped``, ``reason``) with an ``evidence_dropped`` event when dropping starts and an
``evidence_resumed`` event when frames are written again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inspector_core.store.records import EvidenceRecord

log = logging.getLogger(__name__)

EXT = {"jpeg": "jpg", "png": "png"}


def evidence_path(root: Path, sha256: str, fmt: str) -> Path:
    """Where the file of ``sha256`` lives under ``root``."""
    return root / sha256[:2] / sha256[2:4] / f"{sha256}.{EXT.get(fmt, fmt)}"


def default_root(store_url: str, station_dir: Path, configured: str | None) -> Path:
    """The evidence folder: ``configured`` (relative to the station file), else
    ``<database file>.evidence`` beside a SQLite file, else ``evidence/`` beside the station file."""
    if configured:
        p = Path(configured)
        return p if p.is_absolute() else station_dir / p
    from sqlalchemy.engine import make_url

    url = make_url(store_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database + ".evidence")
    return station_dir / "evidence"


def encode(image: np.ndarray, *, full: bool, max_side: int, fmt: str, quality: int) -> tuple[bytes, int, int, float]:
    """The frame encoded: (bytes, width, height, scale). ``full=False`` scales the longer side
    down to ``max_side`` (never up)."""
    h, w = image.shape[:2]
    scale = 1.0 if full else min(1.0, max_side / max(h, w))
    img = image
    if scale < 1.0:
        img = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    else:
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {w}x{h} frame as {fmt}")
    return buf.tobytes(), img.shape[1], img.shape[0], scale


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` durably: temporary file, fsync, rename, fsync of the folder.
    The file is written even when it exists (its bytes are the same): its time is then fresh,
    which keeps retention's orphan sweep off it until its row is committed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class EvidenceWriter:
    """Keeps frames as the station's ``store.evidence`` policy says (``policy`` is that
    :class:`~inspector_core.runtime.config.EvidencePolicy`). Used from the recorder's writer
    thread; :meth:`kept_as` from the station's verdict thread."""

    def __init__(
        self,
        root: Path,
        policy: Any,
        *,
        on_event: Callable[[str, str], None] = lambda kind, msg: None,
        rng: random.Random | None = None,
        writer: Callable[[Path, bytes], None] = write_file,
    ) -> None:
        self.root = root
        self.policy = policy
        self.on_event = on_event
        self.rng = rng or random.Random()
        self.writer = writer
        """How a file is written (tests replace it to simulate a full disk)."""
        self.written = 0
        self.dropped = 0
        self.encode_s = 0.0
        self._dropping: str | None = None
        self._free_checked = 0.0
        self._free = 1 << 62

    def kept_as(self, verdict: str) -> str | None:
        """``fail``, ``pass`` (sampled) or ``None``: whether this part's frame is to be kept."""
        if verdict in ("FAIL", "ERROR"):
            return "fail" if self.policy.fail != "none" else None
        if verdict == "PASS" and self.policy.pass_sample > 0 and self.rng.random() < self.policy.pass_sample:
            return "pass"
        return None

    def dropped_record(self, kept_as: str, reason: str) -> EvidenceRecord:
        """A row saying the frame was not kept, and why (an event when dropping starts)."""
        self.dropped += 1
        if self._dropping is None:
            self._dropping = reason
            msg = (
                f"evidence frames are being dropped ({reason}); verdicts are still recorded. "
                f"Free space in {self.root} or lower store.evidence (fail: downscaled, pass_sample) "
                "and run `inspector retention`"
            )
            log.warning(msg)
            self.on_event("evidence_dropped", msg)
        return EvidenceRecord(kept_as, "dropped", reason)

    def free_bytes(self) -> int:
        """Free space on the evidence folder's disk (asked at most once a second)."""
        now = time.monotonic()
        if now - self._free_checked >= 1.0:
            self._free_checked = now
            probe = self.root
            while not probe.exists() and probe.parent != probe:
                probe = probe.parent
            try:
                self._free = shutil.disk_usage(probe).free
            except OSError:
                self._free = 1 << 62
        return self._free

    def keep(self, image: Any, kept_as: str) -> EvidenceRecord:
        """Encode and write ``image``; never raises (a failure is a ``dropped`` record)."""
        p = self.policy
        floor = int(p.min_free_bytes)
        if floor and self.free_bytes() < floor:
            return self.dropped_record(
                kept_as, f"free space on {self.root} below store.evidence.min_free_bytes ({floor} bytes)"
            )
        t0 = time.perf_counter()
        try:
            full = kept_as == "fail" and p.fail == "full"
            if callable(image):  # a multi-view part's views side by side, built here (runtime/join.py)
                image = image()
            data, w, h, scale = encode(image, full=full, max_side=p.max_side, fmt=p.format, quality=p.quality)
        except Exception as exc:  # noqa: BLE001 - a frame that cannot be encoded is not worth the verdict
            return self.dropped_record(kept_as, f"cannot encode the frame: {type(exc).__name__}: {exc}")
        finally:
            self.encode_s += time.perf_counter() - t0
        sha = hashlib.sha256(data).hexdigest()
        try:
            self.writer(evidence_path(self.root, sha, p.format), data)
        except OSError as exc:
            self._free_checked = 0.0  # ask the disk again next time
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                return self.dropped_record(kept_as, f"disk full writing {self.root} ({exc.strerror})")
            return self.dropped_record(kept_as, f"cannot write {self.root}: {exc}")
        self.written += 1
        if self._dropping is not None:
            msg = f"evidence frames are written again to {self.root} ({self.dropped} dropped so far)"
            self._dropping = None
            log.warning(msg)
            self.on_event("evidence_resumed", msg)
        return EvidenceRecord(kept_as, "stored", None, sha, p.format, w, h, scale, len(data))

    def check_stored(self, ev: EvidenceRecord) -> None:
        """A spooled or retried record's file may be gone (swept meanwhile): say so on the row."""
        if ev.status == "stored" and ev.sha256 and ev.format and not self.exists(ev.sha256, ev.format):
            ev.status, ev.reason = "lost", "the file was gone when the spooled row was written"
            ev.sha256 = None

    def exists(self, sha256: str, fmt: str) -> bool:
        return evidence_path(self.root, sha256, fmt).is_file()


def add_evidence(store: Any, rows: list[tuple[Any, EvidenceRecord]], *, timeout_s: float | None = None) -> int:
    """Insert the evidence rows of inspections already committed (``rows``: (InspectionRecord,
    EvidenceRecord), the record naming its inspection by ``uid``), in one transaction; their files
    are already on disk. An inspection that has a row already keeps it. Returns rows inserted."""
    from sqlalchemy import insert, select

    from inspector_core.store.evidence_records import Evidence
    from inspector_core.store.records import naive_utc, utcnow
    from inspector_core.store.schema import Inspection

    if not rows:
        return 0
    by_uid = {r.uid: ev for r, ev in rows}
    with store.transaction(timeout_s=timeout_s, write=True) as conn:
        found = conn.execute(
            select(Inspection.id, Inspection.uid, Inspection.station_id, Inspection.captured_at).where(
                Inspection.uid.in_(list(by_uid))
            )
        ).all()
        ids = [f[0] for f in found]
        have = set(conn.scalars(select(Evidence.inspection_id).where(Evidence.inspection_id.in_(ids))))
        now = utcnow()
        values = [
            {
                "inspection_id": iid,
                "station_id": sid,
                "captured_at": naive_utc(at),
                "kept_as": by_uid[uid].kept_as,
                "status": by_uid[uid].status,
                "reason": by_uid[uid].reason,
                "sha256": by_uid[uid].sha256,
                "format": by_uid[uid].format,
                "width": by_uid[uid].width,
                "height": by_uid[uid].height,
                "scale": by_uid[uid].scale,
                "bytes": by_uid[uid].bytes,
                "created_at": now,
            }
            for iid, uid, sid, at in found
            if iid not in have
        ]
        if values:
            conn.execute(insert(Evidence), values)
    return len(values)
