"""The QA dashboard and JSON API: ``inspector serve --db URL``.

Server-rendered (FastAPI + Jinja2, autoescaped), no CDN and no front-end build: the pages,
the SVG charts and one small script for the live counts all ship in this package. Read-only:
only GET routes, all reading through :mod:`inspector_core.qa`; the one exception, when
``create_app`` is given a ``writer``, is reviews and sign-in (:mod:`.review_pages`: appended
beside the verdicts, never over them). The API lives under /api
with its OpenAPI schema at /openapi.json (the Swagger page is off: it loads from a CDN).

Bound to 127.0.0.1 by default, and then only answering requests whose Host header is the
loopback (``localhost``, ``127.0.0.1``, ``[::1]``) or the bound address: a page on another site
cannot read it through DNS rebinding. On any other address a token is required (``--token`` or
``INSPECTOR_TOKEN``); it is accepted only as ``Authorization: Bearer <token>`` or in the
HttpOnly cookie that the sign-in form at ``/login`` sets (a POST: the token never appears in a
URL, a log line, the browser's history or a Referer). A ``?token=`` in the URL is refused.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from starlette.middleware.trustedhost import TrustedHostMiddleware

from inspector_core.qa import query as q
from inspector_core.qa.review import log as review_log
from inspector_core.qa.web import charts, evidence_pages, review_pages
from inspector_core.store import Store
from inspector_core.store.outbox import sink_states

HERE = FilePath(__file__).parent
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
LOOPBACK_HOST_HEADERS = ("localhost", "127.0.0.1", "[::1]", "::1")
COOKIE = "inspector_token"
WHATIF_DEFAULT_SINCE = "7d"
"""``/api/whatif`` without ``since`` re-judges the last 7 days, never the whole history."""
UTC_OFFSETS = (-12, 14)
RowId = Annotated[int, Path(ge=1, le=q.MAX_ID, description="a row id (1 .. 2^63-1)")]
CropCursor = Annotated[int | None, Query(ge=1, le=q.MAX_ID, description="the last crop id seen")]


def allowed_hosts(host: str, token: str | None) -> list[str]:
    """Host headers the dashboard answers: the loopback names and the bound address when it
    is served without a token; any when a token guards it (it is then reached by whatever
    name the plant's network gives it)."""
    if token:
        return ["*"]
    bound = [f"[{host}]" if ":" in host and not host.startswith("[") else host]
    return list(dict.fromkeys([*LOOPBACK_HOST_HEADERS, host, *bound]))


def check_bind(host: str, token: str | None) -> str | None:
    """Why serving on ``host`` is refused, or ``None`` when it is allowed."""
    if host in LOCAL_HOSTS or token:
        return None
    return (
        f"refusing to serve on {host} without a token: the dashboard shows production data. "
        "Pass --token SECRET (or set INSPECTOR_TOKEN), or bind to 127.0.0.1 (the default)."
    )


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _time(value: str | None, name: str) -> datetime | None:
    try:
        return q.parse_when(value)
    except q.QueryError as exc:
        raise q.QueryError(f"{name}: {exc}") from None


def _filter(
    station: list[str],
    since: str | None,
    until: str | None,
    verdict: list[str],
    kind: list[str],
    part: str | None,
    min_score: str | None,
    min_size_mm: str | None,
    detector: str | None,
    candidates: bool = False,
    recipe: str | None = None,
) -> q.HistoryFilter:
    def num(v: str | None, name: str) -> float | None:
        if v in (None, ""):
            return None
        try:
            return float(v)
        except ValueError:
            raise q.QueryError(f"{name}: not a number ({v[:40]!r})") from None

    return q.make_filter(
        stations=tuple(s for s in station if s),
        since=_time(since, "since"),
        until=_time(until, "until"),
        verdicts=tuple(v.upper() for v in verdict if v),
        kinds=tuple(k for k in kind if k),
        part_id=part or None,
        min_score=num(min_score, "min_score"),
        min_size_mm=num(min_size_mm, "min_size_mm"),
        detector=detector or None,
        include_candidates=candidates or None,
        recipes=(recipe,) if recipe else (),
    )


# Query parameters shared by the list pages and the API (plain strings: a bad value becomes a
# readable message on the page, not a bare 422).
Station = Annotated[list[str], Query(description="station name (repeatable)")]
Verdicts = Annotated[list[str], Query(description="PASS, FAIL, ERROR, NOT_INSPECTED (repeatable)")]
Kinds = Annotated[list[str], Query(description="defect kind (repeatable)")]


class CropParams:
    """The crop filters, read from the query string: one definition for the gallery and
    ``/api/crops`` (a FastAPI dependency, ``Annotated[CropParams, Depends()]``)."""

    def __init__(
        self,
        station: Station = [],
        kind: Kinds = [],
        min_score: str | None = None,
        min_size_mm: str | None = None,
        since: str | None = None,
        until: str | None = None,
        candidates: bool = False,
    ) -> None:
        self.station, self.kind, self.since, self.until = station, kind, since, until
        self.min_score, self.min_size_mm, self.candidates = min_score, min_size_mm, candidates
        self.verdict: list[str] = []
        self.part: str | None = None
        self.detector: str | None = None
        self.recipe: str | None = None

    def filter(self) -> q.HistoryFilter:
        """The store's filter (``QueryError`` naming a value that is not a time or a number)."""
        return _filter(
            self.station,
            self.since,
            self.until,
            self.verdict,
            self.kind,
            self.part,
            self.min_score,
            self.min_size_mm,
            self.detector,
            self.candidates,
            self.recipe,
        )

    def form(self) -> dict[str, Any]:
        """The values as the page's filter form shows them (and its next-page link repeats them)."""
        return {
            "station": self.station,
            "kind": self.kind,
            "min_score": self.min_score or "",
            "min_size_mm": self.min_size_mm or "",
            "since": self.since or "",
            "until": self.until or "",
            "candidates": self.candidates,
        }


class HistoryParams(CropParams):
    """The inspection filters (the crop filters plus verdict, part id and detector): one
    definition for the inspections page and ``/api/history``."""

    def __init__(
        self,
        station: Station = [],
        since: str | None = None,
        until: str | None = None,
        verdict: Verdicts = [],
        kind: Kinds = [],
        part: str | None = None,
        min_score: str | None = None,
        min_size_mm: str | None = None,
        detector: str | None = None,
        candidates: bool = False,
        recipe: str | None = None,
    ) -> None:
        super().__init__(station, kind, min_score, min_size_mm, since, until, candidates)
        self.verdict, self.part, self.detector, self.recipe = verdict, part, detector, recipe

    def form(self) -> dict[str, Any]:
        shown = {"verdict": self.verdict, "part": self.part or "", "detector": self.detector or ""}
        return {**super().form(), **shown, "recipe": self.recipe or ""}


Crops = Annotated[CropParams, Depends()]
History = Annotated[HistoryParams, Depends()]


class NotSignedIn(Exception):
    """A request without the token (or with a wrong one, or with it in the URL)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _token_guard(token: str, signed_in: Callable[[Request], bool] | None = None) -> Any:
    """A dependency accepting the token only from ``Authorization: Bearer`` or the cookie, or a
    signed-in user's session (``signed_in``, when accounts are on)."""
    bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")
    cookie = APIKeyCookie(name=COOKIE, auto_error=False, description="set by signing in at /login")

    # Defaults, not Annotated[...]: the annotations are strings here (PEP 563) and cannot name
    # the closure's bearer and cookie.
    def require_token(
        request: Request,
        header: HTTPAuthorizationCredentials | None = Depends(bearer),
        from_cookie: str | None = Depends(cookie),
    ) -> None:
        if "token" in request.query_params:
            raise NotSignedIn(
                "the token is not accepted in the URL (it would stay in logs, history and links): "
                "send it as Authorization: Bearer <token>, or sign in at /login"
            )
        given = header.credentials if header is not None else from_cookie or ""
        if not hmac.compare_digest(given.encode(), token.encode()) and not (signed_in and signed_in(request)):
            raise NotSignedIn("a token is required: send Authorization: Bearer <token>, or sign in at /login")

    return Depends(require_token)


def create_app(
    engine: Engine,
    *,
    token: str | None = None,
    host: str = "127.0.0.1",
    hosts: Sequence[str] | None = None,
    writer: Store | None = None,
    evidence_dirs: Sequence[FilePath] | None = None,
) -> FastAPI:
    """The dashboard on ``engine``. ``host`` is the address it is bound to (for the Host header
    check, :func:`allowed_hosts`; ``hosts`` overrides the list). ``writer``: the store opened for
    reviews and accounts (:func:`inspector_core.qa.review.open_writer`); with it the dashboard
    has sign-in and the review pages (:mod:`inspector_core.qa.web.review_pages`). ``evidence_dirs``:
    where the evidence files are (default: beside a SQLite file; :mod:`.evidence_pages`)."""
    app = FastAPI(
        title="Inspector QA",
        version="1",
        docs_url=None,
        redoc_url=None,
        description="Read-only defect history of Inspector stations.",
    )
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["urlencode"] = lambda d: urlencode(d, doseq=True)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.add_middleware(
        TrustedHostMiddleware, allowed_hosts=list(hosts) if hosts is not None else allowed_hosts(host, token)
    )

    def user_signed_in(request: Request) -> bool:
        return writer is not None and review_pages.signed_in(request, writer) is not None

    app_routes = APIRouter(dependencies=[_token_guard(token, user_signed_in)] if token else [])
    write_paths = ("/login", *(review_pages.WRITE_PATHS if writer is not None else ()))

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        if request.url.path.startswith("/api") or request.url.path == "/openapi.json":
            return JSONResponse({"detail": exc.detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return templates.TemplateResponse(
            request, "login.html", {"error": exc.detail, "stations_all": []}, status_code=401
        )

    @app.exception_handler(OperationalError)
    async def store_unavailable(request: Request, exc: OperationalError) -> Response:
        return JSONResponse(
            {"detail": f"the store cannot be read right now ({' '.join(str(exc.orig).split())})"}, status_code=503
        )

    @app.middleware("http")
    async def read_only(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.method not in ("GET", "HEAD") and not (request.url.path in write_paths and request.method == "POST"):
            return JSONResponse({"detail": "read-only: only GET"}, status_code=405)
        return await call_next(request)

    # ------------------------------------------------------------------ signing in (token only)

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request) -> HTMLResponse:
        return templates.TemplateResponse(request, "login.html", {"error": None, "stations_all": []})

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        """The sign-in form posts the token (in the body, never a URL); a right one becomes an
        HttpOnly, SameSite=Strict cookie and a redirect to the overview."""
        body = parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
        given = (body.get("token") or [""])[0]
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            return templates.TemplateResponse(
                request,
                "login.html",
                {"error": "wrong token" if token else "this dashboard needs no token", "stations_all": []},
                status_code=401 if token else 400,
            )
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return response

    def page(request: Request, name: str, **ctx: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"stations_all": q.stations(engine), **ctx})

    # ------------------------------------------------------------------ pages

    @app_routes.get("/", response_class=HTMLResponse, include_in_schema=False)
    def overview(
        request: Request,
        since: str = "7d",
        until: str | None = None,
        period: str = "day",
        utc_offset: int = 0,
        station: Station = [],
    ) -> HTMLResponse:
        error = None
        if period not in ("hour", "shift", "day"):
            period, error = "day", "period: hour, shift or day"
        if not UTC_OFFSETS[0] <= utc_offset <= UTC_OFFSETS[1]:
            utc_offset, error = 0, f"utc_offset: whole hours from {UTC_OFFSETS[0]} to {UTC_OFFSETS[1]}"
        try:
            f = CropParams(station, since=since, until=until).filter()
        except q.QueryError as exc:
            error, f = str(exc), q.make_filter(since=_now() - timedelta(days=7))
        st = q.stats(engine, f, buckets=q.Buckets(period, utc_offset))  # type: ignore[arg-type]
        yield_series = {s: [(p.start, p.yield_) for p in st.periods if p.station == s] for s in st.p_bar}
        short = "%m-%d" if period == "day" else "%m-%d %H:%M"
        pcharts = [
            (
                s,
                charts.p_chart(
                    f"reject rate, {s}",
                    [
                        ((p.start + timedelta(hours=utc_offset)).strftime(short), p.p, p.ucl, p.lcl, p.out_of_control)
                        for p in st.pchart
                        if p.station == s
                    ],
                    st.p_bar[s],
                ),
            )
            for s in st.p_bar
        ]
        return page(
            request,
            "overview.html",
            st=st,
            since=since,
            until=until or "",
            period=period,
            utc_offset=utc_offset,
            station=station,
            error=error,
            yield_chart=charts.line_chart(
                f"yield per {period}", yield_series, label_fmt="%m-%d" if period == "day" else "%m-%d %H:%M"
            ),
            pareto_chart=charts.pareto_chart("Pareto of defect kinds", [(r.kind, r.defects) for r in st.pareto]),
            pcharts=pcharts,
            sinks=sink_states(engine),
        )

    @app_routes.get("/inspections", response_class=HTMLResponse, include_in_schema=False)
    def inspections_page(request: Request, params: History, cursor: str | None = None, limit: int = 50) -> HTMLResponse:
        form = params.form()
        error, res = None, q.Page([], None)
        try:
            res = q.history(engine, params.filter(), limit=max(1, min(limit, 500)), cursor=cursor or None)
        except q.QueryError as exc:
            error = str(exc)
        nxt = {**{k: v for k, v in form.items() if v}, "cursor": res.next_cursor} if res.next_cursor else None
        return page(
            request,
            "inspections.html",
            rows=res.rows,
            form=form,
            error=error,
            next_query=nxt,
            kinds_all=q.kinds(engine),
            verdicts_all=q.VERDICTS,
        )

    @app_routes.get("/inspections/{inspection_id}", response_class=HTMLResponse, include_in_schema=False)
    def inspection_page(request: Request, inspection_id: RowId) -> HTMLResponse:
        d = q.inspection(engine, inspection_id)
        if d is None:
            raise HTTPException(404, f"no inspection {inspection_id}")
        return page(request, "inspection.html", d=d, reviews=review_log(engine, inspection_id))

    @app_routes.get("/gallery", response_class=HTMLResponse, include_in_schema=False)
    def gallery(request: Request, params: Crops, cursor: CropCursor = None, limit: int = 60) -> HTMLResponse:
        form = params.form()
        error, rows = None, []
        try:
            rows = q.crops(engine, params.filter(), limit=max(1, min(limit, 500)), cursor=cursor)
        except q.QueryError as exc:
            error = str(exc)
        nxt = None
        if rows and len(rows) == limit:
            nxt = {**{k: v for k, v in form.items() if v}, "cursor": rows[-1].crop_id}
        return page(
            request, "gallery.html", rows=rows, form=form, error=error, next_query=nxt, kinds_all=q.kinds(engine)
        )

    @app_routes.get("/crops/{crop_id}", include_in_schema=False)
    def crop_file(crop_id: RowId) -> Response:
        return api_crop(crop_id)

    # ------------------------------------------------------------------ API

    def bad(exc: q.QueryError) -> HTTPException:
        return HTTPException(400, str(exc))

    @app_routes.get("/api/stations", tags=["meta"], summary="station names")
    def api_stations() -> list[str]:
        return q.stations(engine)

    @app_routes.get("/api/kinds", tags=["meta"], summary="defect kinds in the store")
    def api_kinds() -> list[str]:
        return q.kinds(engine)

    @app_routes.get("/api/history", tags=["history"], summary="inspections, newest first, filtered; keyset paging")
    def api_history(
        params: History,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=q.MAX_PAGE)] = 50,
    ) -> dict[str, Any]:
        try:
            res = q.history(engine, params.filter(), limit=limit, cursor=cursor)
        except q.QueryError as exc:
            raise bad(exc) from exc
        return {"rows": [r.as_dict() for r in res.rows], "next_cursor": res.next_cursor}

    @app_routes.get(
        "/api/inspections/{inspection_id}",
        tags=["history"],
        summary="one inspection: steps, findings with crop geometry, provenance",
    )
    def api_inspection(inspection_id: RowId) -> dict[str, Any]:
        d = q.inspection(engine, inspection_id)
        if d is None:
            raise HTTPException(404, f"no inspection {inspection_id}")
        return d.as_dict()

    @app_routes.get(
        "/api/stats",
        tags=["stats"],
        summary="per station and period: counts, yield, first-pass yield, latency; Pareto; p-chart",
    )
    def api_stats(
        station: Station = [],
        since: str = "7d",
        until: str | None = None,
        period: Annotated[str, Query(pattern="^(hour|shift|day)$")] = "day",
        utc_offset: Annotated[int, Query(ge=-12, le=14)] = 0,
        shift_start: Annotated[int, Query(ge=0, le=23)] = 6,
        shift_hours: Annotated[int, Query(ge=6, le=12)] = 8,
    ) -> dict[str, Any]:
        try:
            f = CropParams(station, since=since, until=until).filter()
        except q.QueryError as exc:
            raise bad(exc) from exc
        return q.stats(engine, f, buckets=q.Buckets(period, utc_offset, shift_start, shift_hours)).as_dict()  # type: ignore[arg-type]

    @app_routes.get(
        "/api/live", tags=["stats"], summary="counts per station over the last minutes (for the live tiles)"
    )
    def api_live(minutes: Annotated[int, Query(ge=1, le=1440)] = 60) -> dict[str, Any]:
        since = _now() - timedelta(minutes=minutes)
        st = q.stats(engine, q.make_filter(since=since), buckets=q.Buckets("hour"))
        return {
            "since": since.isoformat() + "Z",
            "minutes": minutes,
            "at": _now().isoformat() + "Z",
            "stations": {
                t.station: {
                    "parts": t.parts,
                    "PASS": t.passed,
                    "FAIL": t.failed,
                    "ERROR": t.errors,
                    "NOT_INSPECTED": t.not_inspected,
                    "yield": t.yield_,
                    "latency_p50_ms": t.latency_p50_ms,
                }
                for t in st.totals
            },
        }

    @app_routes.get(
        "/api/whatif",
        tags=["stats"],
        summary="verdicts that would change under other rules (reads only); the last 7 days by default",
    )
    def api_whatif(
        set: Annotated[list[str], Query(description="KIND.FIELD=VALUE, e.g. scratch.min_score=0.7")],  # noqa: A002
        station: Station = [],
        since: Annotated[
            str, Query(description="from (default: 7 days back; a whole history is never re-judged by default)")
        ] = WHATIF_DEFAULT_SINCE,
        until: str | None = None,
    ) -> dict[str, Any]:
        try:
            f = CropParams(station, since=since, until=until).filter()
            w = q.whatif(engine, f, q.parse_overrides(set))
        except q.QueryError as exc:
            raise bad(exc) from exc
        return {
            "since": f.since.isoformat() + "Z" if f.since else None,
            "until": f.until.isoformat() + "Z" if f.until else None,
            **w.as_dict(),
        }

    @app_routes.get("/api/crops", tags=["crops"], summary="crops with their defect, filtered; paged by crop id")
    def api_crops(
        params: Crops, cursor: CropCursor = None, limit: Annotated[int, Query(ge=1, le=q.MAX_PAGE)] = 100
    ) -> list[dict[str, Any]]:
        try:
            rows = q.crops(engine, params.filter(), limit=limit, cursor=cursor)
        except q.QueryError as exc:
            raise bad(exc) from exc
        return [
            {**r.__dict__, "captured_at": r.captured_at.isoformat() + "Z", "url": f"/api/crops/{r.crop_id}"}
            for r in rows
        ]

    @app_routes.get(
        "/api/crops/{crop_id}",
        tags=["crops"],
        summary="the crop's encoded image (JPEG or PNG)",
        response_class=Response,
    )
    def api_crop(crop_id: RowId) -> Response:
        got = q.crop_image(engine, crop_id)
        if got is None:
            raise HTTPException(404, f"no crop {crop_id}")
        fmt, data = got
        return Response(
            data,
            media_type="image/png" if fmt == "png" else "image/jpeg",
            headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"},
        )

    @app_routes.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return RedirectResponse("/static/favicon.svg")

    dirs = evidence_pages.default_dirs(engine) if evidence_dirs is None else evidence_dirs
    evidence_pages.install(app_routes, templates, engine, dirs)
    if writer is not None:
        review_pages.install(app, templates, engine, writer)
    app.include_router(app_routes)
    return app
