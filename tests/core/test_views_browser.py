"""A multi-view part's inspection page in a real headless Chromium (Debian's, driven by Playwright):
the evidence image holds the views side by side, each finding's box is drawn on its own view, and
each view has its panel with its crop. The screenshot is kept (var/screens/views-*.png) for a person."""

from __future__ import annotations

import sqlite3

import cv2
import numpy as np
import pytest

from tests.core.test_views import PLUGIN, _station
from tests.served import SCREENS, chromium, served

pytestmark = pytest.mark.browser


def test_views_side_by_side_with_their_boxes_in_chromium(tmp_path):
    from inspector_core.qa.web import create_app
    from inspector_core.store import Store
    from inspector_core.testing import run_station

    front, back = tmp_path / "front", tmp_path / "back"
    front.mkdir()
    back.mkdir()
    cv2.imwrite(str(front / "p0.png"), np.full((120, 200, 3), 20, np.uint8))
    side = np.full((150, 160, 3), 20, np.uint8)
    side[40:90, 30:100] = 240  # the only bright region: the back view fails the part
    cv2.imwrite(str(back / "p0.png"), side)
    cfg = _station([], deadline_ms=2000)
    cfg["source"] = {"type": "folder", "config": {"path": "front"}}
    cfg["views"] = {"front": {}, "back": {"source": {"type": "folder", "config": {"path": "back"}}}}
    cfg["steps"] = [
        {"detector": "bright", "name": "front_glare", "view": "front"},
        {
            "detector": "bright",
            "name": "back_glare",
            "view": "back",
            "roi": {"x": 20, "y": 30, "width": 90, "height": 70},
        },
    ]
    cfg["store"]["evidence"] = {"fail": "full", "min_free_bytes": 0}
    run_station(cfg, tmp_path, plugins=[PLUGIN], installed=True)
    db = sqlite3.connect(tmp_path / "inspector.db")
    iid, verdict = db.execute("SELECT id, verdict FROM inspections").fetchone()
    box = db.execute("SELECT x, y, w, h FROM defects WHERE view = 'back'").fetchone()
    assert verdict == "FAIL" and box == (20, 30, 90, 70)  # in the back view's frame pixels
    app = create_app(Store(f"sqlite:///{tmp_path / 'inspector.db'}", migrate=False).engine)
    with served(app) as base, chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base}/inspections/{iid}")
        page.wait_for_function("document.querySelector('#evidence img').naturalWidth > 0")
        img = page.locator("#evidence img")
        assert img.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [360, 150]  # 200 + 160 wide
        assert page.locator("#evidence text.view-name").all_text_contents() == ["front", "back"]
        ib, rb = img.bounding_box(), page.locator("#evidence svg rect").bounding_box()
        assert ib is not None and rb is not None
        k = ib["width"] / 360
        assert abs(rb["x"] - (ib["x"] + (200 + 20) * k)) < 3 and abs(rb["y"] - (ib["y"] + 30 * k)) < 3
        assert page.locator("#view-back figure.crop img").count() == 1
        assert page.locator("#view-front figure.crop").count() == 0
        SCREENS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENS / "views-test-page.png"), full_page=True)
    assert errors == []
