"""The ASGI app: authentication, security headers, live push (SSE), static files and the API docs.

Nothing is served anonymously except the login page and its stylesheet: API routes answer 401, pages
redirect to the login. Routes stay thin (``server.api``, ``server.pages``); data comes from
``server.views`` through the repository, one session per request.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from server.auth import COOKIE, token_hash
from server.context import WebContext
from server.models import User
from server.render import plotly_js

STATIC = Path(__file__).resolve().parent / "static"
#: Which live events each role receives.
ROLE_EVENTS = {"clinician": {"alert", "alert_state", "consent"},
               "engineer": {"device", "round", "security", "release", "counters"}}
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


def swagger_dir() -> Path:
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


def ctx(request: Request) -> WebContext:
    return request.app.state.ctx


def current_user(request: Request) -> User | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    with ctx(request).store.session() as repo:
        return repo.session_user(token_hash(token))


def require(role: str | None = None):
    """A dependency: the logged-in user (401 otherwise), of ``role`` when given (403 otherwise)."""

    def dependency(request: Request) -> User:
        user = current_user(request)
        if user is None:
            raise HTTPException(401, "log in first")
        if role is not None and user.role != role:
            raise HTTPException(403, f"this needs the {role} role")
        return user

    return dependency


def create_app(context: WebContext) -> FastAPI:
    from server import api, pages

    app = FastAPI(title="pulsewire fleet server", docs_url=None, redoc_url=None, openapi_url=None,
                  description="Devices, alerts, rounds, the privacy ledger, security events and model releases "
                              "of one pulsewire fleet. Every route needs a session cookie (POST /login).")
    app.state.ctx = context

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        if request.method not in ("GET", "HEAD") and request.headers.get("origin") not in (
                None, f"{request.url.scheme}://{request.url.netloc}"):
            return JSONResponse({"detail": "cross-origin request refused"}, status_code=403)
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"  # no-referrer would make Chromium send "Origin: null"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(StarletteHTTPException)
    async def unauthenticated(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 401 and not request.url.path.startswith("/api/"):
            return RedirectResponse("/login", status_code=303)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name == "style.css":  # the login page needs it before anyone is logged in
            return FileResponse(STATIC / name, headers={"Cache-Control": "max-age=3600"})
        raise HTTPException(404)

    @app.get("/assets/{name}", include_in_schema=False, dependencies=[Depends(require())])
    def assets(name: str) -> Response:
        files = {"plotly.min.js": plotly_js(), "app.js": STATIC / "app.js",
                 "swagger-ui-bundle.js": swagger_dir() / "swagger-ui-bundle.js",
                 "swagger-ui.css": swagger_dir() / "swagger-ui.css"}
        if name not in files:
            raise HTTPException(404)
        return FileResponse(files[name], headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require())])
    def openapi() -> dict:
        return app.openapi()

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(require())])
    def docs() -> Response:
        page = get_swagger_ui_html(openapi_url="/openapi.json", title="pulsewire API",
                                   swagger_js_url="/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/assets/swagger-ui.css", swagger_favicon_url="/static/none")
        # Swagger UI starts itself with an inline script; this page alone allows it
        page.headers["Content-Security-Policy"] = _CSP.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'")
        return page

    @app.get("/api/events", tags=["live"], summary="Server-sent events: what the ingest just stored")
    async def events(request: Request, user: User = Depends(require())) -> StreamingResponse:
        """``event: alert|device|round|security|release|counters`` with a JSON ``data`` line each; a clinician
        receives alert events, an engineer fleet events. A comment line every 15 s keeps proxies open."""
        wanted = ROLE_EVENTS[user.role]
        hub = ctx(request).hub

        async def stream():
            q = hub.subscribe()
            try:
                yield ": connected\n\n"
                while not await request.is_disconnected():
                    try:
                        kind, data = await asyncio.wait_for(q.get(), 15.0)
                    except asyncio.TimeoutError:
                        yield ": keepalive\n\n"
                        continue
                    if kind in wanted:
                        yield f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
            finally:
                hub.unsubscribe(q)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    app.include_router(pages.router)
    app.include_router(api.router, prefix="/api")
    return app
