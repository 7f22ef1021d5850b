"""The dashboard and API in-process: pages render, hostile ids are escaped, read-only,
the token guard."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from inspector_core.qa.web import allowed_hosts, check_bind, create_app
from inspector_core.store import Store


@pytest.fixture
def client(known):
    url, parts = known
    return TestClient(create_app(Store(url).engine), base_url="http://127.0.0.1"), parts


def test_pages_and_api(client):
    c, parts = client
    home = c.get("/?since=2026-11-19&period=hour")
    assert home.status_code == 200 and home.text.count('<svg class="chart') >= 4  # yield, Pareto, 2 p-charts
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
        1 for p in parts for k, _, _, f in p.findings if k == "dent" and f
    )
    schema = c.get("/openapi.json").json()
    assert {"/api/history", "/api/stats", "/api/inspections/{inspection_id}", "/api/crops/{crop_id}"} <= set(
        schema["paths"]
    )
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


def test_token_only_in_a_header_or_the_cookie(known):
    url, _ = known
    c = TestClient(create_app(Store(url).engine, token="s3cret", host="0.0.0.0"), base_url="http://plant-qa:8080")
    assert c.get("/api/stations").status_code == 401
    assert c.get("/api/stations", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/stations", headers={"Authorization": "Bearer s3cret"}).json() == ["line1", "line2"]
    # The token in the URL is refused, even the right one, and sets no cookie.
    r = c.get("/?token=s3cret&since=2026-11-19")
    assert r.status_code == 401 and "not accepted in the URL" in r.text and "set-cookie" not in r.headers
    assert c.get("/api/stations", params={"token": "s3cret"}).status_code == 401
    # A page without the token is the sign-in form; signing in posts the token, sets an
    # HttpOnly cookie and redirects to a URL without it.
    form = c.get("/inspections")
    assert form.status_code == 401 and 'method="post" action="/login"' in form.text
    assert c.post("/login", data={"token": "wrong"}).status_code == 401
    r = c.post("/login", data={"token": "s3cret"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/" and "s3cret" not in r.headers["location"]
    assert "httponly" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
    assert c.get("/api/stations").json() == ["line1", "line2"]  # the cookie
    assert c.get("/?since=2026-11-19").status_code == 200
    assert c.post("/api/history").status_code == 405  # still read-only
    # the OpenAPI schema documents both ways in
    schemes = c.get("/openapi.json").json()["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}
    assert check_bind("127.0.0.1", None) is None and check_bind("0.0.0.0", "x") is None
    assert "refusing to serve on 0.0.0.0 without a token" in check_bind("0.0.0.0", None)


def test_tokenless_dashboard_checks_the_host_header(known):
    url, _ = known
    app = create_app(Store(url).engine)
    for host in ("127.0.0.1", "localhost", "[::1]", "127.0.0.1:8080", "localhost:8080"):
        assert TestClient(app, base_url=f"http://{host}").get("/api/stations").status_code == 200, host
    # DNS rebinding: a page on evil.example whose name now points at 127.0.0.1.
    for host in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example"):
        r = TestClient(app, base_url=f"http://{host}").get("/api/stations")
        assert r.status_code == 400 and "line1" not in r.text, host
    assert allowed_hosts("192.168.1.20", None)[-1] == "192.168.1.20"
    assert (
        TestClient(create_app(Store(url).engine, host="192.168.1.20"), base_url="http://192.168.1.20:8080")
        .get("/api/stations")
        .status_code
        == 200
    )


HUGE = "99999999999999999999"


def test_out_of_range_values_are_4xx_naming_the_field(client):
    c, _ = client
    checks = [
        (f"/inspections/{HUGE}", "inspection_id"),
        (f"/api/inspections/{HUGE}", "inspection_id"),
        (f"/api/crops/{HUGE}", "crop_id"),
        (f"/crops/{HUGE}", "crop_id"),
        (f"/api/crops?cursor={HUGE}", "cursor"),
        (f"/gallery?cursor={HUGE}", "cursor"),
        (f"/api/stats?utc_offset={HUGE}", "utc_offset"),
        ("/api/stats?since=5000000d", "since"),
        ("/api/history?since=5000000d", "since"),
        ("/api/history?since=9999-12-31T23:00-05:00", "since"),
        ("/api/history?min_size_mm=inf", "min_size_mm"),
        ("/api/history?min_score=nan", "min_score"),
        ("/api/history?part=a%00b", "part_id"),
        ("/api/history?station=line%001", "stations"),
        ("/api/history?cursor=MjAyNi0xMS0yMFQwMDowMDowMHw5OTk5OTk5OTk5OTk5OTk5OTk5OTk5", "cursor"),
        ("/api/whatif?set=scratch.min_score=0.7&since=5000000d", "since"),
    ]
    for path, field in checks:
        r = c.get(path)
        assert r.status_code in (400, 422), (path, r.status_code)
        assert field in r.text, (path, r.text[:300])
    # Pages show the problem on the page.
    for path, field in (
        (f"/?utc_offset={HUGE}", "utc_offset"),
        ("/?since=5000000d", "since"),
        ("/inspections?part=a%00b", "part_id"),
    ):
        r = c.get(path)
        assert r.status_code == 200 and 'id="error"' in r.text and field in r.text, path


def test_whatif_has_a_default_window(client):
    c, parts = client
    # The known history is from 2026-11-20: outside the last 7 days, so nothing is re-judged
    # by default, while an explicit window re-judges every PASS/FAIL part in it.
    default = c.get("/api/whatif", params={"set": "scratch.min_score=0.99"}).json()
    assert default["parts"] == 0 and default["since"] is not None
    explicit = c.get("/api/whatif", params={"set": "scratch.min_score=0.99", "since": "2026-11-19"}).json()
    assert explicit["parts"] == sum(p.verdict in ("PASS", "FAIL", "ERROR") for p in parts)
    schema = c.get("/openapi.json").json()["paths"]["/api/whatif"]["get"]
    since = next(p for p in schema["parameters"] if p["name"] == "since")
    assert since["schema"]["default"] == "7d"


@pytest.mark.postgres
def test_a_database_gone_while_serving_is_503_with_the_reason(pg_url):
    import psycopg

    from inspector_core.qa.reader import open_reader
    from tests.qa.conftest import write_known

    write_known(pg_url)
    c = TestClient(create_app(open_reader(pg_url).engine), base_url="http://127.0.0.1", raise_server_exceptions=False)
    assert c.get("/api/stations").json() == ["line1", "line2"]
    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    r = c.get("/api/stations")
    assert r.status_code == 503 and "cannot be read right now" in r.json()["detail"]
