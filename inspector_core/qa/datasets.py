"""Reviewed crops out of the store for retraining: an anomalib Folder dataset, COCO and YOLO boxes.

Which crop goes where, by the subject's current review (:mod:`inspector_core.qa.review`):

- **defect** (abnormal): a finding reviewed ``confirmed`` (directly, or by a ``confirmed``
  review of the FAIL part it failed); its mask is its box, a filled rectangle in the crop's
  pixels. A part reviewed ``missed`` with a drawn box adds every stored crop of that part that
  contains the box whole, masked with the reviewer's box (crops of PASS parts exist only with
  ``crops.save: all``).
- **good**: a finding reviewed ``false_alarm`` (directly or by its part's ``false_alarm``), and
  the candidate crops of a PASS part reviewed ``confirmed`` (the reviewer saw a good part).

``unsure`` and unreviewed crops are left out. Only crops are exported: the store keeps no frames
yet (evidence frames come later); a crop is the finding's box with ``padding_px`` of context,
scaled to at most ``max_size_px``.

Layout of ROOT::

    good/NAME.jpg            the normal images: `inspector train anomaly ROOT/good` takes it as GOOD
    good_test/NAME.jpg       every fifth normal image (20 %, at least one when there are two),
                             held out for thresholds: `--val-good ROOT/good_test` (anomalib
                             Folder's normal_test_dir). The trainer holds out good images itself
                             only when neither --val-good nor --val-bad is given, and with
                             --val-bad alone it has no good image to set a threshold on.
    defect/NAME.jpg          the abnormal images, and nothing else: anomalib's Folder takes every
                             image file under abnormal_dir as abnormal (a NAME_mask.png here made
                             it fail: more abnormal images than masks)
    mask/defect/NAME.png     its mask under anomalib Folder's mask_dir, same stem
    val_bad/NAME.jpg, val_bad/NAME_mask.png    the same images with their masks beside, as
                             `inspector train anomaly --val-bad ROOT/val_bad` reads them
    coco.json                COCO detection: every good and defect image, a box per defect
    yolo/images/NAME.jpg, yolo/labels/NAME.txt, yolo/data.yaml    YOLO (class cx cy w h, normalised)
    index.csv                every file, its part, finding, label and reviewer

Train: ``inspector train anomaly ROOT/good --val-good ROOT/good_test --val-bad ROOT/val_bad``.
anomalib: ``Folder(name=..., root=ROOT, normal_dir="good", abnormal_dir="defect",
normal_test_dir="good_test", mask_dir="mask/defect")``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sqlalchemy import Engine, select

from inspector_core.qa.filters import D, I, S
from inspector_core.qa.review import _failed, current
from inspector_core.store import schema

C = schema.Crop


@dataclasses.dataclass(frozen=True)
class Item:
    crop_id: int
    defect_id: int
    inspection_id: int
    station: str
    part_id: str
    kind: str
    label: str
    """``defect`` or ``good``."""
    box: tuple[int, int, int, int] | None
    """The mask's rectangle in crop pixels (x, y, w, h); ``None`` for good."""
    reviewer: str
    origin: str


@dataclasses.dataclass
class Export:
    good: int = 0
    """Normal images written, ``good_test`` included."""
    good_test: int = 0
    defect: int = 0
    masks: int = 0
    kinds: list[str] = dataclasses.field(default_factory=list)


def _crop_box(fx: int, fy: int, fw: int, fh: int, c: Any) -> tuple[int, int, int, int]:
    x0 = max(0, int(round((fx - c.cx) * c.scale)))
    y0 = max(0, int(round((fy - c.cy) * c.scale)))
    x1 = min(c.width, int(round((fx + fw - c.cx) * c.scale)))
    y1 = min(c.height, int(round((fy + fh - c.cy) * c.scale)))
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


def _contains(c: Any, box: tuple[int, int, int, int]) -> bool:
    x, y, w, h = box
    cw, ch = c.width / c.scale, c.height / c.scale
    return c.cx <= x and c.cy <= y and x + w <= c.cx + cw + 1 and y + h <= c.cy + ch + 1


def reviewed_items(
    engine: Engine,
    *,
    stations: Sequence[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Item]:
    """The reviewed crops and where they go (module rules), oldest crop first."""
    from inspector_core.store.review_records import Review

    q = (
        select(
            C.id.label("crop_id"),
            C.x.label("cx"),
            C.y.label("cy"),
            C.scale,
            C.width,
            C.height,
            D.id.label("did"),
            D.kind,
            D.x,
            D.y,
            D.w,
            D.h,
            _failed(True).label("failed"),
            I.id.label("iid"),
            I.verdict,
            I.part_id,
            S.name.label("station"),
        )
        .select_from(C)
        .join(D, D.id == C.defect_id)
        .join(I, I.id == C.inspection_id)
        .join(S, S.id == I.station_id)
        .where(I.id.in_(select(Review.inspection_id).distinct()))
        .order_by(C.id)
    )
    if stations:
        q = q.where(S.name.in_(list(stations)))
    if since is not None:
        q = q.where(I.captured_at >= since)
    if until is not None:
        q = q.where(I.captured_at < until)
    with engine.connect() as conn:
        rows = list(conn.execute(q))
    states = current(engine, {r.iid for r in rows})
    out: list[Item] = []
    for r in rows:
        own = states.get((r.iid, r.did))
        whole = states.get((r.iid, None))
        fbox = _crop_box(r.x, r.y, r.w, r.h, r)
        base = (r.crop_id, r.did, r.iid, r.station, r.part_id)
        if own is not None and own.label in ("confirmed", "false_alarm"):
            lab = "defect" if own.label == "confirmed" else "good"
            out.append(Item(*base, r.kind, lab, fbox if lab == "defect" else None, own.user, "finding review"))
        elif own is None and whole is not None and whole.label == "confirmed" and r.verdict == "FAIL" and r.failed:
            out.append(Item(*base, r.kind, "defect", fbox, whole.user, "part review (confirmed FAIL)"))
        elif own is None and whole is not None and whole.label == "false_alarm" and r.failed:
            out.append(Item(*base, r.kind, "good", None, whole.user, "part review (false alarm)"))
        elif own is None and whole is not None and whole.label == "confirmed" and r.verdict == "PASS":
            out.append(Item(*base, r.kind, "good", None, whole.user, "part review (confirmed PASS)"))
        elif whole is not None and whole.label == "missed" and whole.box is not None and _contains(r, whole.box):
            mbox = _crop_box(*whole.box, r)
            out.append(Item(*base, whole.kind or r.kind, "defect", mbox, whole.user, "missed (reviewer's box)"))
    return out


def _held_out(n: int) -> set[int]:
    """Which of ``n`` good images (in order) go to good_test/: 20 %, evenly spread, at least one
    when ``n >= 2`` (the trainer's threshold needs a good validation image), none of one."""
    if n < 2:
        return set()
    k = max(1, round(0.2 * n))
    return {j for j in range(n) if (j + 1) * k // n > j * k // n}


def write(engine: Engine, items: Sequence[Item], root: Path) -> Export:
    """Write the layout of the module's docstring under ``root`` (folders made as needed)."""
    from inspector_core.qa.cli import SpreadsheetCsv, safe_name
    from inspector_core.qa.history import crop_image

    for sub in ("good", "good_test", "defect", "mask/defect", "val_bad", "yolo/images", "yolo/labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    kinds = sorted({i.kind for i in items if i.label == "defect"})
    cat = {k: n for n, k in enumerate(kinds)}
    coco: dict[str, Any] = {
        "info": {"description": "Inspector reviewed crops", "date_created": datetime.now().isoformat()},
        "images": [],
        "annotations": [],
        "categories": [{"id": n + 1, "name": k, "supercategory": "defect"} for k, n in cat.items()],
    }
    ex = Export(kinds=kinds)
    with open(root / "index.csv", "w", newline="", encoding="utf-8") as fh:
        w = SpreadsheetCsv(fh)
        w.writerow(["file", "class", "kind", "crop_id", "defect_id", "inspection_id", "station", "part_id",
                    "mask_x", "mask_y", "mask_w", "mask_h", "reviewer", "origin"])  # fmt: skip
        held = _held_out(sum(1 for it in items if it.label == "good"))
        k_good = -1
        for it in items:
            folder = it.label
            if it.label == "good":
                k_good += 1
                folder = "good_test" if k_good in held else "good"
            got = crop_image(engine, it.crop_id)
            if got is None:
                continue
            fmt, data = got
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            if img is None:
                continue
            h, wd = img.shape[:2]
            ext = "png" if fmt == "png" else "jpg"
            stem = f"{it.crop_id:08d}_{safe_name(it.kind, 30)}_{safe_name(it.part_id)}"
            name = f"{stem}.{ext}"
            (root / folder / name).write_bytes(data)
            (root / "yolo/images" / name).write_bytes(data)
            if it.label == "defect":
                (root / "val_bad" / name).write_bytes(data)
            image_id = len(coco["images"]) + 1
            coco["images"].append({"id": image_id, "file_name": f"{folder}/{name}", "width": wd, "height": h})
            label_lines = []
            if it.label == "defect" and it.box is not None:
                x, y, bw, bh = it.box
                mask = np.zeros((h, wd), np.uint8)
                cv2.rectangle(mask, (x, y), (x + bw - 1, y + bh - 1), 255, thickness=-1)
                ok, buf = cv2.imencode(".png", mask)
                assert ok
                (root / "mask/defect" / f"{stem}.png").write_bytes(buf.tobytes())
                (root / "val_bad" / f"{stem}_mask.png").write_bytes(buf.tobytes())
                ex.masks += 1
                coco["annotations"].append(
                    {
                        "id": len(coco["annotations"]) + 1,
                        "image_id": image_id,
                        "category_id": cat[it.kind] + 1,
                        "bbox": [x, y, bw, bh],
                        "area": bw * bh,
                        "iscrowd": 0,
                    }
                )
                label_lines.append(
                    f"{cat[it.kind]} {(x + bw / 2) / wd:.6f} {(y + bh / 2) / h:.6f} {bw / wd:.6f} {bh / h:.6f}"
                )
            (root / "yolo/labels" / f"{stem}.txt").write_text("".join(s + "\n" for s in label_lines), encoding="utf-8")
            if it.label == "defect":
                ex.defect += 1
            else:
                ex.good += 1
                ex.good_test += folder == "good_test"
            bx = list(it.box) if it.box else ["", "", "", ""]
            w.writerow([f"{folder}/{name}", it.label, it.kind, it.crop_id, it.defect_id, it.inspection_id,
                        it.station, it.part_id, *bx, it.reviewer, it.origin])  # fmt: skip
    (root / "coco.json").write_text(json.dumps(coco, indent=1), encoding="utf-8")
    names = "".join(f"  {n}: {json.dumps(k)}\n" for k, n in cat.items())
    (root / "yolo/data.yaml").write_text(
        f"path: {json.dumps(str((root / 'yolo').resolve()))}\ntrain: images\nval: images\nnames:\n{names}",
        encoding="utf-8",
    )
    return ex
