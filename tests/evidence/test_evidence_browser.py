"""The inspection page's frame with its boxes, in a real headless Chromium (Debian's, driven by
Playwright): the frame image loads from /evidence/<sha>, one box per finding lies where the
finding is, a click zooms. The screenshot is kept (var/screens/evidence-*.png) for a person."""

from __future__ import annotations

import sqlite3

import pytest

from inspector_core.testing import run_station
from tests.served import SCREENS, chromium, served

pytestmark = pytest.mark.browser


def test_frame_with_boxes_in_chromium(tmp_path):

    from inspector_core.qa.web import create_app
    from inspector_core.store import Store

    cfg = {
        "source": {"type": "synthetic", "config": {"count": 10, "seed": 3, "defect_rate": 0.9}},
        "steps": [{"detector": "scratch"}, {"detector": "dent"}],
        "store": {"evidence": {"fail": "downscaled", "max_side": 800, "min_free_bytes": 0}},
    }
    run_station(cfg, tmp_path)
    db = sqlite3.connect(tmp_path / "inspector.db")
    iid, n = db.execute(
        "SELECT e.inspection_id, count(d.id) FROM evidence e JOIN defects d ON d.inspection_id = e.inspection_id "
        "WHERE e.status = 'stored' GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
    ).fetchone()
    boxes = db.execute(  # in the page's order: failing findings first, then by score
        "SELECT x, y, w, h FROM defects WHERE inspection_id = ? ORDER BY failed DESC, score DESC, id", (iid,)
    ).fetchall()
    assert n >= 1
    app = create_app(Store(f"sqlite:///{tmp_path / 'inspector.db'}", migrate=False).engine)
    with served(app) as base, chromium() as browser:
        page = browser.new_page(viewport={"width": 1300, "height": 1100})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base}/inspections/{iid}")
        img = page.locator("#evidence img")
        page.wait_for_function("document.querySelector('#evidence img').naturalWidth > 0")
        assert img.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [800, 600]
        rects = page.locator("#evidence svg rect")
        assert rects.count() == len(boxes)
        # Each box is drawn where its finding is: frame px mapped onto the displayed image.
        ib = img.bounding_box()
        assert ib is not None
        k = ib["width"] / 1024
        for i, (x, y, w, h) in enumerate(boxes):
            rb = rects.nth(i).bounding_box()
            assert rb is not None
            assert abs(rb["x"] - (ib["x"] + x * k)) < 3 and abs(rb["y"] - (ib["y"] + y * k)) < 3
            assert abs(rb["width"] - w * k) < 4 and abs(rb["height"] - h * k) < 4
        SCREENS.mkdir(parents=True, exist_ok=True)
        page.locator("#evidence").screenshot(path=str(SCREENS / "evidence-frame.png"))
        page.screenshot(path=str(SCREENS / "evidence-page.png"), full_page=True)
        # A click zooms (the frame is drawn larger, inside a scrolling box); again, back.
        page.locator("#evidence .ev-frame").click()
        assert img.bounding_box()["width"] > ib["width"] * 2  # type: ignore[index]
        # ... scrolled so that the first failed box is in view.
        frame_box = page.locator("#evidence .ev-frame").bounding_box()
        failed = page.locator("#evidence svg rect.failed").first.bounding_box()
        assert frame_box is not None and failed is not None
        assert frame_box["x"] <= failed["x"] <= frame_box["x"] + frame_box["width"]
        assert frame_box["y"] <= failed["y"] <= frame_box["y"] + frame_box["height"]
        page.locator("#evidence").screenshot(path=str(SCREENS / "evidence-zoomed.png"))
        page.locator("#evidence .ev-frame").click()
        assert abs(img.bounding_box()["width"] - ib["width"]) < 2  # type: ignore[index]
        assert errors == []
