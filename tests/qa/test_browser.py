"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): pages load,
filters change the list, thumbnails are real images, charts are drawn. Screenshots go to the
test's tmp dir (printed) for a human to look at."""

from __future__ import annotations

import contextlib

import pytest

from tests.served import chromium, served

pytestmark = pytest.mark.browser


@contextlib.contextmanager
def serving(tmp_path, **app_kwargs):

    from inspector_core.qa.web import create_app
    from inspector_core.store import Store
    from tests.qa.conftest import write_known

    url = f"sqlite:///{tmp_path / 'qa.db'}"
    write_known(url)
    app = create_app(Store(url).engine, **app_kwargs)
    with served(app) as base:
        yield base


@pytest.fixture
def server(tmp_path):
    with serving(tmp_path) as url:
        yield url


@pytest.fixture
def page():
    with chromium() as browser:
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.errors = errors
        yield pg


def test_dashboard_in_chromium(server, page, tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    # Overview: charts drawn (SVG paths with real geometry), live tiles filled by fetch.
    page.goto(f"{server}/?since=2026-11-19&period=shift")
    page.wait_for_function(
        "document.querySelector('#live .tile.loaded') !== null || "
        "[...document.querySelectorAll('#live .tile p')]"
        ".every(p => !p.textContent.includes('loading'))"
    )
    for cls in ("line", "pareto", "pchart"):
        box = page.locator(f"svg.chart.{cls}").first.bounding_box()
        assert box and box["width"] > 300 and box["height"] > 150
    assert page.locator("svg.chart.pareto rect.bar").count() == 3
    assert page.locator("svg.chart.line path.series").count() == 2
    assert page.locator("svg.chart.pchart circle").count() >= 10
    assert "Live: last 60 minutes" in page.inner_text("body")
    page.screenshot(path=str(shots / "overview.png"), full_page=True)

    # Inspections: filters change the list; thumbnails are decoded images.
    page.goto(f"{server}/inspections?limit=500")
    all_rows = page.locator("#inspections tbody tr").count()
    page.select_option("select[name=station]", "line2")
    page.select_option("select[name=verdict]", "FAIL")
    page.click("#filters button")
    page.wait_for_url("**/inspections?*station=line2*")
    fails = page.locator("#inspections tbody tr")
    assert 0 < fails.count() < min(all_rows, 50)
    assert all(t == "FAIL" for t in page.locator("#inspections td.verdict").all_inner_texts())
    page.wait_for_load_state("networkidle")
    widths = page.eval_on_selector_all("img.thumb", "imgs => imgs.map(i => i.complete ? i.naturalWidth : -1)")
    assert widths and all(w > 0 for w in widths), widths
    page.screenshot(path=str(shots / "inspections.png"), full_page=True)
    page.fill("input[name=part]", "*passwd")
    page.click("#filters button")
    page.wait_for_url("**part=*passwd*")
    assert page.locator("#inspections td.part").all_inner_texts() == ["../../etc/passwd"]

    # One inspection: crop with its box, steps, provenance.
    page.click("#inspections td a")
    page.wait_for_selector("#provenance")
    assert page.eval_on_selector(".boxed img", "i => i.naturalWidth") > 0
    assert page.locator(".boxed svg rect").count() >= 1
    assert "hash-line2" in page.inner_text("#provenance") and page.locator("#steps tbody tr").count() == 1
    page.screenshot(path=str(shots / "inspection.png"), full_page=True)

    # Gallery: kind and score filters.
    page.goto(f"{server}/gallery?kind=scratch&min_score=0.85")
    page.wait_for_load_state("networkidle")
    n = page.locator(".gallery .card").count()
    assert n > 0 and page.eval_on_selector_all(".gallery img", "imgs => imgs.every(i => i.naturalWidth > 0)")
    page.goto(f"{server}/gallery?kind=dent")
    assert page.locator(".gallery .card").count() != n
    page.screenshot(path=str(shots / "gallery.png"), full_page=True)
    assert page.errors == []
    print(f"screenshots: {shots}")


def test_sign_in_with_a_token_in_chromium(tmp_path, page):
    # A token-guarded dashboard: the first page is the sign-in form; after signing in, the
    # pages and the live tiles' fetches work from the cookie, and no URL ever held the token.
    with serving(tmp_path, token="kiosk-s3cret", host="0.0.0.0") as server:
        urls: list[str] = []
        page.on("request", lambda r: urls.append(r.url))
        page.goto(f"{server}/?since=2026-11-19")
        assert page.locator("form#login").count() == 1
        page.fill("input[name=token]", "kiosk-s3cret")
        page.click("form#login button")
        page.wait_for_selector("svg.chart.pareto")
        page.wait_for_function(
            "[...document.querySelectorAll('#live .tile p')].every(p => !p.textContent.includes('loading'))"
        )
        page.goto(f"{server}/inspections")
        assert page.locator("#inspections tbody tr").count() > 0
        assert urls and not any("kiosk-s3cret" in u for u in urls)
        cookie = next(c for c in page.context.cookies() if c["name"] == "inspector_token")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert page.errors == []
