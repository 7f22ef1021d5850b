"""The dashboard and API in-process: pages render, hostile ids are escaped, read-only,
the token guard."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from inspector_core.qa.web import check_bind, create_app
from inspector_core.store import Store


@pytest.fixture
def client(known):
    url, parts = known
    return TestClient(create_app(Store(url).engine)), parts


def test_pages_and_api(client):
    c, parts = client
    home = c.get("/?since=2026-11-19&period=hour")
    assert home.status_code == 200 and home.text.count("<svg class=\"chart") >= 4  # yield, Pareto, 2 p-charts
    page = c.get("/inspections", params={"station": "line2", "verdict": "FAIL", "limit": 500})
    assert page.status_code == 200
    assert page.text.count('class="v-FAIL"') == sum(p.station == "line2" and p.verdict == "FAIL" for p in parts)
    # Hostile ids are shown escaped, never as markup.
    assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    rows = c.get("/api/history", params={"part": "<script>*"}).json()["rows"]
    assert [r["part_id"] for r in rows] == ["<script>alert(1)</script>"]
    detail = c.get(f"/inspections/{rows[0]['id']}")
    assert detail.status_code == 200 and "hash-line2" in detail.text and "fake-det 1.2.3" in detail.text
    crop_id = c.get(f"/api/inspections/{rows[0]['id']}").json()["defects"][0]["crop_id"]
    img = c.get(f"/crops/{crop_id}")
    assert img.headers["content-type"] == "image/jpeg" and img.content[:2] == b"\xff\xd8"
    assert c.get("/gallery", params={"kind": "dent"}).text.count('class="card"') == sum(
        1 for p in parts for k, _, _, f in p.findings if k == "dent" and f)
    schema = c.get("/openapi.json").json()
    assert {"/api/history", "/api/stats", "/api/inspections/{inspection_id}", "/api/crops/{crop_id}"} <= set(schema["paths"])
    assert c.get("/docs").status_code == 404  # Swagger UI would load from a CDN


def test_bad_filters_are_messages_not_crashes(client):
    c, _ = client
    assert c.get("/api/history", params={"min_score": "1; DROP TABLE inspections"}).status_code == 400
    assert "since" in c.get("/api/history", params={"since": "last tuesday"}).json()["detail"]
    page = c.get("/inspections", params={"min_score": "7"})
    assert page.status_code == 200 and 'id="error"' in page.text and "min_score" in page.text
    assert c.get("/inspections/999999").status_code == 404
    assert c.get("/api/crops/999999").status_code == 404


def test_read_only(client):
    c, _ = client
    for method in ("post", "put", "delete", "patch"):
        assert getattr(c, method)("/api/history").status_code == 405


def test_token(known):
    url, _ = known
    c = TestClient(create_app(Store(url).engine, token="s3cret"))
    assert c.get("/api/stations").status_code == 401
    assert c.get("/api/stations", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/stations", headers={"Authorization": "Bearer s3cret"}).json() == ["line1", "line2"]
    assert c.get("/?token=s3cret&since=2026-11-19").status_code == 200
    assert c.get("/api/stations").status_code == 200  # the cookie set by ?token=
    assert check_bind("127.0.0.1", None) is None and check_bind("0.0.0.0", "x") is None
    assert "refusing to serve on 0.0.0.0 without a token" in check_bind("0.0.0.0", None)
