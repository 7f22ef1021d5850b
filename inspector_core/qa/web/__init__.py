"""The QA dashboard and JSON API: ``inspector serve --db URL``.

Server-rendered (FastAPI + Jinja2, autoescaped), no CDN and no front-end build: the pages,
the SVG charts and one small script for the live counts all ship in this package. Read-only:
only GET routes, all reading through :mod:`inspector_core.qa`. The API lives under /api
with its OpenAPI schema at /openapi.json (the Swagger page is off: it loads from a CDN).

Bound to 127.0.0.1 by default. On any other address a token is required (``--token`` or
``INSPECTOR_TOKEN``); it is accepted as ``Authorization: Bearer <token>``, or once as
``?token=`` in a browser, which then keeps it in an HttpOnly cookie.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine

from inspector_core.qa import query as q
from inspector_core.qa.web import charts

HERE = Path(__file__).parent
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
COOKIE = "inspector_token"


def check_bind(host: str, token: str | None) -> str | None:
    """Why serving on ``host`` is refused, or ``None`` when it is allowed."""
    if host in LOCAL_HOSTS or token:
        return None
    return (f"refusing to serve on {host} without a token: the dashboard shows production data. "
            "Pass --token SECRET (or set INSPECTOR_TOKEN), or bind to 127.0.0.1 (the default).")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _time(value: str | None, name: str) -> datetime | None:
    from inspector_core.qa.cli import parse_time

    try:
        return parse_time(value, name=name)
    except Exception as exc:  # noqa: BLE001 - click.BadParameter carries the message
        raise q.QueryError(f"{name}: {getattr(exc, 'message', exc)}") from exc


def _filter(station: list[str], since: str | None, until: str | None, verdict: list[str], kind: list[str],
            part: str | None, min_score: str | None, min_size_mm: str | None, plugin: str | None,
            candidates: bool = False) -> q.HistoryFilter:
    def num(v: str | None, name: str) -> float | None:
        if v in (None, ""):
            return None
        try:
            return float(v)
        except ValueError:
            raise q.QueryError(f"{name}: not a number ({v[:40]!r})") from None

    return q.make_filter(stations=tuple(s for s in station if s), since=_time(since, "since"),
                         until=_time(until, "until"), verdicts=tuple(v.upper() for v in verdict if v),
                         kinds=tuple(k for k in kind if k), part_id=part or None,
                         min_score=num(min_score, "min_score"), min_size_mm=num(min_size_mm, "min_size_mm"),
                         plugin=plugin or None, include_candidates=candidates or None)


# Query parameters shared by the list pages and the API (plain strings: a bad value becomes a
# readable message on the page, not a bare 422).
Station = Annotated[list[str], Query(description="station name (repeatable)")]
Verdicts = Annotated[list[str], Query(description="PASS, FAIL, ERROR, NOT_INSPECTED (repeatable)")]
Kinds = Annotated[list[str], Query(description="defect kind (repeatable)")]


def create_app(engine: Engine, *, token: str | None = None) -> FastAPI:
    app = FastAPI(title="Inspector QA", version="1", docs_url=None, redoc_url=None,
                  description="Read-only defect history of Inspector stations.")
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["urlencode"] = lambda d: urlencode(d, doseq=True)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    if token:
        @app.middleware("http")
        async def require_token(request: Request, call_next):  # type: ignore[no-untyped-def]
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() \
                or request.cookies.get(COOKIE) or request.query_params.get("token") or ""
            if not hmac.compare_digest(given.encode(), token.encode()):
                return JSONResponse({"detail": "a token is required: Authorization: Bearer <token>, or ?token="},
                                    status_code=401)
            response = await call_next(request)
            if request.query_params.get("token"):
                response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
            return response

    @app.middleware("http")
    async def read_only(request: Request, call_next):  # type: ignore[no-untyped-def]
        if request.method not in ("GET", "HEAD"):
            return JSONResponse({"detail": "read-only: only GET"}, status_code=405)
        return await call_next(request)

    def page(request: Request, name: str, **ctx: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"stations_all": q.stations(engine), **ctx})

    # ------------------------------------------------------------------ pages

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def overview(request: Request, since: str = "7d", until: str | None = None, period: str = "day",
                 utc_offset: int = 0, station: Station = []) -> HTMLResponse:  # noqa: B006
        error = None
        if period not in ("hour", "shift", "day"):
            period, error = "day", "period: hour, shift or day"
        try:
            f = _filter(station, since, until, [], [], None, None, None, None)
        except q.QueryError as exc:
            error, f = str(exc), q.make_filter(since=_now() - timedelta(days=7))
        st = q.stats(engine, f, buckets=q.Buckets(period, max(-12, min(14, utc_offset))))  # type: ignore[arg-type]
        yield_series = {s: [(p.start, p.yield_) for p in st.periods if p.station == s] for s in st.p_bar}
        short = "%m-%d" if period == "day" else "%m-%d %H:%M"
        pcharts = [(s, charts.p_chart(f"reject rate, {s}", [((p.start + timedelta(hours=utc_offset)).strftime(short),
                                                             p.p, p.ucl, p.lcl, p.out_of_control)
                                                            for p in st.pchart if p.station == s], st.p_bar[s]))
                   for s in st.p_bar]
        return page(request, "overview.html", st=st, since=since, until=until or "", period=period,
                    utc_offset=utc_offset, station=station, error=error,
                    yield_chart=charts.line_chart(f"yield per {period}", yield_series,
                                                  label_fmt="%m-%d" if period == "day" else "%m-%d %H:%M"),
                    pareto_chart=charts.pareto_chart("Pareto of defect kinds",
                                                     [(r.kind, r.defects) for r in st.pareto]),
                    pcharts=pcharts)

    @app.get("/inspections", response_class=HTMLResponse, include_in_schema=False)
    def inspections_page(request: Request, station: Station = [], since: str | None = None,  # noqa: B006
                         until: str | None = None, verdict: Verdicts = [], kind: Kinds = [],  # noqa: B006
                         part: str | None = None, min_score: str | None = None, min_size_mm: str | None = None,
                         plugin: str | None = None, cursor: str | None = None, limit: int = 50) -> HTMLResponse:
        form = {"station": station, "since": since or "", "until": until or "", "verdict": verdict, "kind": kind,
                "part": part or "", "min_score": min_score or "", "min_size_mm": min_size_mm or "",
                "plugin": plugin or ""}
        error, res = None, q.Page([], None)
        try:
            f = _filter(station, since, until, verdict, kind, part, min_score, min_size_mm, plugin)
            res = q.history(engine, f, limit=max(1, min(limit, 500)), cursor=cursor or None)
        except q.QueryError as exc:
            error = str(exc)
        nxt = {**{k: v for k, v in form.items() if v}, "cursor": res.next_cursor} if res.next_cursor else None
        return page(request, "inspections.html", rows=res.rows, form=form, error=error, next_query=nxt,
                    kinds_all=q.kinds(engine), verdicts_all=q.VERDICTS)

    @app.get("/inspections/{inspection_id}", response_class=HTMLResponse, include_in_schema=False)
    def inspection_page(request: Request, inspection_id: int) -> HTMLResponse:
        d = q.inspection(engine, inspection_id)
        if d is None:
            raise HTTPException(404, f"no inspection {inspection_id}")
        return page(request, "inspection.html", d=d)

    @app.get("/gallery", response_class=HTMLResponse, include_in_schema=False)
    def gallery(request: Request, station: Station = [], kind: Kinds = [], min_score: str | None = None,  # noqa: B006
                min_size_mm: str | None = None, since: str | None = None, until: str | None = None,
                candidates: bool = False, cursor: int | None = None, limit: int = 60) -> HTMLResponse:
        form = {"station": station, "kind": kind, "min_score": min_score or "", "min_size_mm": min_size_mm or "",
                "since": since or "", "until": until or "", "candidates": candidates}
        error, rows = None, []
        try:
            f = _filter(station, since, until, [], kind, None, min_score, min_size_mm, None, candidates)
            rows = q.crops(engine, f, limit=max(1, min(limit, 500)), cursor=cursor)
        except q.QueryError as exc:
            error = str(exc)
        nxt = None
        if rows and len(rows) == limit:
            nxt = {**{k: v for k, v in form.items() if v}, "cursor": rows[-1].crop_id}
        return page(request, "gallery.html", rows=rows, form=form, error=error, next_query=nxt,
                    kinds_all=q.kinds(engine))

    @app.get("/crops/{crop_id}", include_in_schema=False)
    def crop_file(crop_id: int) -> Response:
        return api_crop(crop_id)

    # ------------------------------------------------------------------ API

    def bad(exc: q.QueryError) -> HTTPException:
        return HTTPException(400, str(exc))

    @app.get("/api/stations", tags=["meta"], summary="station names")
    def api_stations() -> list[str]:
        return q.stations(engine)

    @app.get("/api/kinds", tags=["meta"], summary="defect kinds in the store")
    def api_kinds() -> list[str]:
        return q.kinds(engine)

    @app.get("/api/history", tags=["history"], summary="inspections, newest first, filtered; keyset paging")
    def api_history(station: Station = [], since: str | None = None, until: str | None = None,  # noqa: B006
                    verdict: Verdicts = [], kind: Kinds = [], part: str | None = None,  # noqa: B006
                    min_score: str | None = None, min_size_mm: str | None = None, plugin: str | None = None,
                    candidates: bool = False, cursor: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=q.MAX_PAGE)] = 50) -> dict[str, Any]:
        try:
            f = _filter(station, since, until, verdict, kind, part, min_score, min_size_mm, plugin, candidates)
            res = q.history(engine, f, limit=limit, cursor=cursor)
        except q.QueryError as exc:
            raise bad(exc) from exc
        return {"rows": [r.as_dict() for r in res.rows], "next_cursor": res.next_cursor}

    @app.get("/api/inspections/{inspection_id}", tags=["history"],
             summary="one inspection: steps, findings with crop geometry, provenance")
    def api_inspection(inspection_id: int) -> dict[str, Any]:
        d = q.inspection(engine, inspection_id)
        if d is None:
            raise HTTPException(404, f"no inspection {inspection_id}")
        return d.as_dict()

    @app.get("/api/stats", tags=["stats"],
             summary="per station and period: counts, yield, first-pass yield, latency; Pareto; p-chart")
    def api_stats(station: Station = [], since: str = "7d", until: str | None = None,  # noqa: B006
                  period: Annotated[str, Query(pattern="^(hour|shift|day)$")] = "day",
                  utc_offset: Annotated[int, Query(ge=-12, le=14)] = 0,
                  shift_start: Annotated[int, Query(ge=0, le=23)] = 6,
                  shift_hours: Annotated[int, Query(ge=6, le=12)] = 8) -> dict[str, Any]:
        try:
            f = _filter(station, since, until, [], [], None, None, None, None)
        except q.QueryError as exc:
            raise bad(exc) from exc
        return q.stats(engine, f, buckets=q.Buckets(period, utc_offset, shift_start, shift_hours)).as_dict()  # type: ignore[arg-type]

    @app.get("/api/live", tags=["stats"], summary="counts per station over the last minutes (for the live tiles)")
    def api_live(minutes: Annotated[int, Query(ge=1, le=1440)] = 60) -> dict[str, Any]:
        since = _now() - timedelta(minutes=minutes)
        st = q.stats(engine, q.make_filter(since=since), buckets=q.Buckets("hour"))
        return {"since": since.isoformat() + "Z", "minutes": minutes, "at": _now().isoformat() + "Z",
                "stations": {t.station: {"parts": t.parts, "PASS": t.passed, "FAIL": t.failed, "ERROR": t.errors,
                                         "NOT_INSPECTED": t.not_inspected, "yield": t.yield_,
                                         "latency_p50_ms": t.latency_p50_ms} for t in st.totals}}

    @app.get("/api/whatif", tags=["stats"], summary="verdicts that would change under other rules (reads only)")
    def api_whatif(set: Annotated[list[str], Query(description="KIND.FIELD=VALUE, e.g. scratch.min_score=0.7")],  # noqa: A002
                   station: Station = [], since: str | None = None, until: str | None = None) -> dict[str, Any]:  # noqa: B006
        try:
            f = _filter(station, since, until, [], [], None, None, None, None)
            return q.whatif(engine, f, q.parse_overrides(set)).as_dict()
        except q.QueryError as exc:
            raise bad(exc) from exc

    @app.get("/api/crops", tags=["crops"], summary="crops with their defect, filtered; paged by crop id")
    def api_crops(station: Station = [], kind: Kinds = [], min_score: str | None = None,  # noqa: B006
                  min_size_mm: str | None = None, since: str | None = None, until: str | None = None,
                  candidates: bool = False, cursor: int | None = None,
                  limit: Annotated[int, Query(ge=1, le=q.MAX_PAGE)] = 100) -> list[dict[str, Any]]:
        try:
            f = _filter(station, since, until, [], kind, None, min_score, min_size_mm, None, candidates)
            rows = q.crops(engine, f, limit=limit, cursor=cursor)
        except q.QueryError as exc:
            raise bad(exc) from exc
        return [{**r.__dict__, "captured_at": r.captured_at.isoformat() + "Z", "url": f"/api/crops/{r.crop_id}"}
                for r in rows]

    @app.get("/api/crops/{crop_id}", tags=["crops"], summary="the crop's encoded image (JPEG or PNG)",
             response_class=Response)
    def api_crop(crop_id: int) -> Response:
        got = q.crop_image(engine, crop_id)
        if got is None:
            raise HTTPException(404, f"no crop {crop_id}")
        fmt, data = got
        return Response(data, media_type="image/png" if fmt == "png" else "image/jpeg",
                        headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return RedirectResponse("/static/favicon.svg")

    return app
