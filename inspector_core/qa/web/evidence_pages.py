"""The dashboard's whole-frame evidence (issue 15): the frame of an inspection with every
finding's box drawn over it (``_evidence.html`` on the inspection page), and its file.

A file is served by its SHA-256 (``/evidence/<sha256>``) only when a ``stored`` evidence row
names it: the route never serves a file by a name the database does not know, and a file
whose row retention has expired is gone from the dashboard at once.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine, inspect, select

from inspector_core.store.evidence import evidence_path
from inspector_core.store.evidence_records import Evidence

SHA = re.compile(r"^[0-9a-f]{64}$")


def default_dirs(engine: Engine) -> list[Path]:
    """The evidence folder beside a SQLite database file (a server database needs ``--evidence-dir``)."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return [Path(url.database + ".evidence")]
    return []


def evidence_of(engine: Engine, inspection_id: int) -> dict[str, Any] | None:
    """The inspection's evidence row, as the template shows it, or ``None``."""
    if not _has_table(engine):
        return None
    with engine.connect() as conn:
        row = conn.execute(select(Evidence).where(Evidence.inspection_id == inspection_id)).first()
    if row is None:
        return None
    e = row
    frame = None
    if e.width and e.height and e.scale:
        frame = (round(e.width / e.scale), round(e.height / e.scale))
    return {
        "status": e.status,
        "reason": e.reason,
        "kept_as": e.kept_as,
        "sha256": e.sha256,
        "format": e.format,
        "width": e.width,
        "height": e.height,
        "scale": e.scale,
        "bytes": e.bytes,
        "frame": frame,
        "url": f"/evidence/{e.sha256}" if e.status == "stored" and e.sha256 else None,
        "held": e.held_at is not None and (e.released_at is None or e.held_at > e.released_at),
        "released_at": e.released_at,
        "released_by": e.released_by,
        "expired_at": e.expired_at,
    }


_tables: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()


def _has_table(engine: Engine) -> bool:
    got = _tables.get(engine)
    if got is None:
        with engine.connect() as conn:
            got = _tables[engine] = inspect(conn).has_table("evidence")
    return got


def install(router: APIRouter, templates: Jinja2Templates, engine: Engine, dirs: Sequence[Path]) -> None:
    """Add ``/evidence/<sha256>`` to ``router`` and ``evidence_of(id)`` to the templates."""
    roots = [Path(d) for d in dirs]
    templates.env.globals["evidence_of"] = lambda inspection_id: evidence_of(engine, inspection_id)

    @router.get("/evidence/{sha256}", include_in_schema=False)
    def evidence_file(sha256: str) -> Response:
        if not SHA.match(sha256):
            raise HTTPException(404, "not an evidence file name (64 hex digits)")
        if not _has_table(engine):
            raise HTTPException(404, "this store has no evidence table")
        with engine.connect() as conn:
            fmt = conn.scalar(
                select(Evidence.format).where(Evidence.sha256 == sha256, Evidence.status == "stored").limit(1)
            )
        if fmt is None:
            raise HTTPException(404, f"no stored evidence {sha256}")
        for root in roots:
            path = evidence_path(root, sha256, fmt)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            return Response(
                data,
                media_type="image/png" if fmt == "png" else "image/jpeg",
                headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"},
            )
        where = ", ".join(str(r) for r in roots) or "no folder (serve a server database with --evidence-dir DIR)"
        raise HTTPException(404, f"evidence {sha256} is recorded but its file is not in {where}")
