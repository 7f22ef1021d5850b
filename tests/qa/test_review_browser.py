"""The review queue in a real headless Chromium (Debian's, driven by Playwright): sign in, review
ten items by keyboard alone (one key, one review; a missed defect's box dragged on the crop),
the counts change without a page reload, the store holds exactly those reviews. Screenshots go
to the test's tmp dir, or to ``$INSPECTOR_SCREENS`` when set, for a human to look at."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from inspector_core.qa import accounts, review
from inspector_core.qa.filters import parse_when
from tests.qa.test_browser import page  # noqa: F401 - the Chromium fixture
from tests.served import served

pytestmark = pytest.mark.browser


@contextlib.contextmanager
def serving_reviews(url: str):

    from inspector_core.qa.reader import open_reader
    from inspector_core.qa.web import create_app

    reader, writer = open_reader(url), review.open_writer(url)
    app = create_app(reader.engine, writer=writer)
    try:
        with served(app) as base:
            yield base, writer
    finally:
        reader.close()
        writer.close()


def test_review_ten_items_by_keyboard_in_chromium(page, tmp_path, monkeypatch):  # noqa: F811 - the fixture
    from argon2 import PasswordHasher, profiles

    from tests.qa.conftest import write_known

    cheap = PasswordHasher.from_parameters(profiles.CHEAPEST)
    monkeypatch.setattr(accounts, "_hasher", cheap)
    monkeypatch.setattr(accounts, "_DUMMY_HASH", cheap.hash("dummy"))
    shots = Path(os.environ.get("INSPECTOR_SCREENS") or tmp_path / "screens")
    shots.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{tmp_path / 'qa.db'}"
    write_known(url)
    with serving_reviews(url) as (base, writer):
        accounts.add_user(writer, "ann", "reviewer", "ann-password-1")
        before = review.counts(writer.engine, since=parse_when("2026-11-19"))
        page.goto(f"{base}/review?since=2026-11-19")
        assert "/signin" in page.url
        page.fill("input[name=name]", "ann")
        page.fill("input[name=password]", "ann-password-1")
        page.screenshot(path=str(shots / "review-signin.png"))
        page.click("button[type=submit]")
        page.wait_for_selector("#item:not([hidden])")
        assert page.inner_text("#me") == "ann"
        page.wait_for_function("document.getElementById('n-left').textContent !== '-'")
        assert int(page.inner_text("#n-left")) == before.findings_left
        page.screenshot(path=str(shots / "review-queue.png"), full_page=True)

        def reviews_shown() -> int:
            return int(page.inner_text("#n-reviews"))

        def press(key: str, expect: int) -> None:
            page.keyboard.press(key)
            page.wait_for_function(f"document.getElementById('n-reviews').textContent === '{expect}'", timeout=10000)

        loads = []
        page.on("framenavigated", lambda f: loads.append(f.url))
        subjects = []
        n = 0
        # Four findings of FAIL parts, then a PASS part near the threshold, then four more findings, ...
        plan = ["d", "f", "u", "d", "f", "d", "k", "j", "d", "f", "m", "d"]
        for key in plan:
            subject = page.inner_text("#i-subject")
            if key in ("j", "k"):
                page.keyboard.press(key)
                continue
            if key == "m":
                # Mark a missed defect: m, drag its box over the crop, Enter.
                page.keyboard.press("m")
                box = page.locator("#i-img").bounding_box()
                assert box is not None
                zoom = box["width"] / 48  # the crops in the known history are 48 x 32 px
                page.mouse.move(box["x"] + 10 * zoom, box["y"] + 8 * zoom)
                page.mouse.down()
                page.mouse.move(box["x"] + 30 * zoom, box["y"] + 20 * zoom, steps=6)
                page.mouse.up()
                page.wait_for_selector("#drawn")
                page.screenshot(path=str(shots / "review-missed-box.png"), full_page=True)
                key = "Enter"
            subjects.append((subject, key))
            n += 1
            press(key, n)
        assert n == 10
        assert loads == []  # no page load between reviews: one key, one review, the next item at once
        # The statistics table is redrawn from /api/review/stats shortly after the last review.
        page.wait_for_function("document.querySelectorAll('#review-stats tbody tr td').length > 1", timeout=10000)
        page.screenshot(path=str(shots / "review-after-ten.png"), full_page=True)
        assert page.errors == []

        # The store holds exactly those ten reviews, by ann, from the dashboard.
        with writer.engine.connect() as c:
            from sqlalchemy import text

            rows = c.execute(text("SELECT label, defect_id, x, y, w, h, via FROM reviews ORDER BY id")).all()
        assert len(rows) == 10 and all(r.via == "web" for r in rows)
        labels = [r.label for r in rows]
        assert labels.count("missed") == 2  # the dragged one, and d on a PASS part
        dragged = next(r for r in rows if r.label == "missed" and r.defect_id is None and r.w == 40)
        # Crop px (10, 8)-(30, 20) at the crop's offset (84, 34) and scale 0.5: frame px (104, 50, 40, 24).
        assert (dragged.x, dragged.y, dragged.w, dragged.h) == pytest.approx((104, 50, 40, 24), abs=2)
        after = review.counts(writer.engine, since=parse_when("2026-11-19"))
        for label in review.LABELS:
            assert int(page.inner_text(f"#n-{label}")) == after.labels[label]
        assert int(page.inner_text("#n-left")) == after.findings_left < before.findings_left
        assert int(page.inner_text("#n-near")) == after.near_pass_left < before.near_pass_left
        # The statistics tile, on reloading the page.
        page.goto(f"{base}/review?since=2026-11-19")
        page.wait_for_selector("#review-stats tbody tr td")
        cells = page.inner_text("#review-stats tbody")
        assert "line" in cells and "scratch" in cells
        page.locator("#review-stats").scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "review-stats.png"), full_page=True)
    print(f"screenshots: {shots}")
