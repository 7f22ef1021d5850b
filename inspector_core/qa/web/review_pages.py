"""The dashboard's review pages and sign-in: the review queue (keyboard-driven), the review
API, the reviewed-parts statistics tile, and per-user accounts.

The dashboard stays a reader of the verdicts: the only rows it writes are reviews and sign-in
sessions, through a store opened without migrating (:func:`inspector_core.qa.review.open_writer`).

Every write needs a signed-in user (``/signin``: name and password, Argon2-checked; a failed
attempt costs the same time for an unknown name, and five failures in five minutes for a name
or an address refuse that name or address for the rest of the five minutes). The session is a
random token in an HttpOnly, SameSite=Strict cookie (``Secure`` over https), stored
server-side only as its SHA-256. Every write carries the session's CSRF token
(``X-CSRF-Token`` header, or the ``csrf`` form field for sign-out) and, when the browser sends
an ``Origin``, comes from this dashboard's own origin. Reviewing needs role reviewer or admin.

The kiosk token (``inspector serve --token``) still gives read access; a signed-in user has
read access too.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from inspector_core.qa import accounts, review
from inspector_core.qa import query as q
from inspector_core.store import Store, StoreError

SESSION_COOKIE = "inspector_session"
WRITE_PATHS = ("/signin", "/signout", "/api/reviews")
"""The only paths the dashboard accepts a POST on besides the token's ``/login``."""
MAX_BODY = 16 * 1024


def signed_in(request: Request, writer: Store) -> accounts.SignedIn | None:
    """The request's live session (looked up once per request)."""
    if "signed_in" not in request.scope.setdefault("state", {}):
        request.state.signed_in = accounts.session(writer, request.cookies.get(SESSION_COOKIE))
    return request.state.signed_in


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:  # not sent by every browser on a same-origin request; SameSite and CSRF guard those
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _refused(writer: Store, exc: Exception) -> str:
    """What the database refused when the dashboard wrote a review or a session, and the remedy."""
    from inspector_core.qa.reader import explain

    return (
        explain(writer.display_url, exc)
        + "; the dashboard's database user needs INSERT on reviews and user_sessions, INSERT and DELETE on "
        "review_outcomes and review_parts (the roll-ups a review rewrites), DELETE on user_sessions, UPDATE on "
        "users, or serve it with --read-only"
    )


def _safe_next(value: str | None) -> str:
    # Only a path of this dashboard: never //host or a scheme (no open redirect).
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/review"
    return value


def _window(station: list[str], since: str | None, until: str | None) -> tuple[list[str], Any, Any]:
    return [s for s in station if s], q.parse_when(since or None), q.parse_when(until or None)


class QueueWindow:
    """What the review queue and its tiles are asked for, read from the query string: one
    definition for ``/api/review/queue`` and ``/api/review/counts`` (a FastAPI dependency)."""

    def __init__(
        self,
        since: str = "7d",
        until: str | None = None,
        near: float = review.NEAR,
        station: Annotated[list[str] | None, Query()] = None,
    ) -> None:
        self.since, self.until, self.near, self.station = since, until, near, station or []

    def keywords(self) -> dict[str, Any]:
        """The keywords of ``review.queue`` / ``review.counts`` (``QueryError`` naming a bad time)."""
        sts, t0, t1 = _window(self.station, self.since, self.until)
        return {"stations": sts, "since": t0, "until": t1, "near": self.near}


def install(app: FastAPI, templates: Jinja2Templates, engine: Engine, writer: Store, throttle: Any = None) -> None:
    """Add the sign-in and review routes to ``app``; ``engine`` reads, ``writer`` writes reviews
    and sessions."""
    throttle = throttle or accounts.SignInThrottle()
    templates.env.globals["reviews_on"] = True

    def page(request: Request, template: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
        return templates.TemplateResponse(
            request,
            template,
            {"stations_all": q.stations(engine), "me": signed_in(request, writer), "error": None, **ctx},
            status_code=status_code,
        )

    def need_user(request: Request, *, write: bool) -> accounts.SignedIn | JSONResponse:
        me = signed_in(request, writer)
        if me is None:
            return JSONResponse({"detail": "sign in first: /signin"}, status_code=401)
        if write:
            if not _same_origin(request):
                return JSONResponse({"detail": "a write from another site is refused"}, status_code=403)
            if not accounts.csrf_ok(me, request.headers.get("x-csrf-token")):
                return JSONResponse(
                    {"detail": "missing or wrong X-CSRF-Token; reload the review page"}, status_code=403
                )
            if not me.account.can_review:
                return JSONResponse(
                    {"detail": f"user {me.account.name!r} has role {me.account.role!r}; reviewing needs reviewer"},
                    status_code=403,
                )
        return me

    # ------------------------------------------------------------------ signing in

    @app.get("/signin", response_class=HTMLResponse, include_in_schema=False)
    def signin_form(request: Request, next: str | None = None) -> HTMLResponse:  # noqa: A002 - the query's name
        return page(request, "signin.html", next=_safe_next(next))

    @app.post("/signin", include_in_schema=False)
    async def signin(request: Request) -> Response:
        body = parse_qs((await request.body())[:MAX_BODY].decode("utf-8", "replace"))
        name = (body.get("name") or [""])[0].strip()
        password = (body.get("password") or [""])[0]
        nxt = _safe_next((body.get("next") or [""])[0])
        if not _same_origin(request):
            return page(request, "signin.html", 403, next=nxt, error="a sign-in from another site is refused")
        client = request.client.host if request.client else "?"
        keys = (f"name:{name.lower()}", f"addr:{client}")
        wait = throttle.wait_s(*keys)
        if wait > 0:
            return page(
                request,
                "signin.html",
                429,
                next=nxt,
                name=name,
                error=f"too many failed sign-ins for this name or address; try again in {int(wait) + 1} s",
            )
        try:
            account = accounts.authenticate(writer, name, password) if name and password else None
            if account is None:
                throttle.failed(*keys)
                return page(request, "signin.html", 401, next=nxt, name=name, error="wrong name or password")
            throttle.succeeded(*keys)
            token, _ = accounts.start_session(writer, account)
        except (SQLAlchemyError, StoreError) as exc:
            return page(request, "signin.html", 503, next=nxt, name=name, error=_refused(writer, exc))
        response = RedirectResponse(nxt, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=int(timedelta(hours=accounts.SESSION_HOURS).total_seconds()),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @app.post("/signout", include_in_schema=False)
    async def signout(request: Request) -> Response:
        me = signed_in(request, writer)
        body = parse_qs((await request.body())[:MAX_BODY].decode("utf-8", "replace"))
        if me is not None:
            if not accounts.csrf_ok(me, (body.get("csrf") or [""])[0]) or not _same_origin(request):
                return JSONResponse({"detail": "missing or wrong CSRF token"}, status_code=403)
            accounts.end_session(writer, request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    # ------------------------------------------------------------------ the review page

    @app.get("/review", response_class=HTMLResponse, include_in_schema=False)
    def review_page(
        request: Request, since: str = "7d", near: float = review.NEAR, station: list[str] | None = None
    ) -> Response:
        me = signed_in(request, writer)
        if me is None:
            here = request.url.path + ("?" + request.url.query if request.url.query else "")
            return RedirectResponse("/signin?next=" + quote(here), 303)
        error, stats = None, []
        try:
            sts, t0, t1 = _window(station or [], since, None)
            stats = review.review_stats(engine, stations=sts, since=t0, until=t1)
        except q.QueryError as exc:
            error = str(exc)
        return page(
            request,
            "review.html",
            since=since,
            near=near,
            station=station or [],
            stats=stats,
            error=error,
            labels=review.LABELS,
        )

    # ------------------------------------------------------------------ the review API

    @app.get("/api/review/queue", tags=["review"], summary="what is left to review, in order, and the counts")
    def api_queue(
        request: Request, window: Annotated[QueueWindow, Depends()], limit: int = 50, counts: bool = True
    ) -> Response:
        """``counts=false`` leaves the tiles out (the review page asks ``/api/review/counts`` for
        them in a request of its own, so that the next items never wait for them)."""
        me = need_user(request, write=False)
        if isinstance(me, JSONResponse):
            return me
        try:
            asked = window.keywords()
            items = review.queue(engine, **asked, limit=limit)
            c = review.counts(engine, **asked) if counts else None
        except q.QueryError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        body: dict[str, Any] = {"items": [i.as_dict() for i in items]}
        if c is not None:
            body["counts"] = c.as_dict()
        return JSONResponse(body)

    @app.get("/api/review/counts", tags=["review"], summary="the review tiles: what is left, the current labels")
    def api_counts(request: Request, window: Annotated[QueueWindow, Depends()]) -> Response:
        me = need_user(request, write=False)
        if isinstance(me, JSONResponse):
            return me
        try:
            c = review.counts(engine, **window.keywords())
        except q.QueryError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        return JSONResponse(c.as_dict())

    @app.get("/api/review/stats", tags=["review"], summary="precision, recall, false alarms per 1,000 reviewed parts")
    def api_review_stats(
        request: Request, since: str = "30d", until: str | None = None, station: list[str] | None = None
    ) -> Response:
        me = need_user(request, write=False)
        if isinstance(me, JSONResponse):
            return me
        try:
            sts, t0, t1 = _window(station or [], since, until)
            rows = review.review_stats(engine, stations=sts, since=t0, until=t1)
        except q.QueryError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        return JSONResponse([r.as_dict() for r in rows])

    @app.get("/api/reviews", tags=["review"], summary="the review log of one inspection, oldest first")
    def api_log(request: Request, inspection_id: int) -> Response:
        me = need_user(request, write=False)
        if isinstance(me, JSONResponse):
            return me
        return JSONResponse([r.as_dict() for r in review.log(engine, inspection_id)])

    @app.post("/api/reviews", tags=["review"], summary="append a review (signed in, reviewer role, CSRF token)")
    async def api_add_review(request: Request) -> Response:
        me = need_user(request, write=True)
        if isinstance(me, JSONResponse):
            return me
        raw = (await request.body())[: MAX_BODY + 1]
        if len(raw) > MAX_BODY:
            return JSONResponse({"detail": "request too large"}, status_code=413)
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("not an object")
            iid = body.get("inspection_id")
            did = body.get("defect_id")
            box = body.get("box")
            if not isinstance(iid, int) or (did is not None and not isinstance(did, int)):
                raise ValueError("inspection_id (and defect_id, if given) must be integers")
            row = review.add_review(
                writer,
                inspection_id=iid,
                defect_id=did,
                label=str(body.get("label", "")),
                reason=str(body.get("reason") or ""),
                box=box if box is None else list(box),
                step=body.get("step") or None,
                kind=body.get("kind") or None,
                user=me.account,
                via="web",
            )
        except (ValueError, TypeError) as exc:  # ReviewError is a ValueError
            return JSONResponse({"detail": str(exc)}, status_code=400)
        except (SQLAlchemyError, StoreError) as exc:
            return JSONResponse({"detail": _refused(writer, exc)}, status_code=503)
        return JSONResponse({"review": row.as_dict()}, status_code=201)
