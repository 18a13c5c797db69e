"""The dashboard's HTML routes: login, logout and one page per ``render.PAGES`` entry (role-checked)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from server import views
from server.auth import COOKIE, check_password, new_session, token_hash
from server.models import User
from server.render import PAGES, Links, render
from server.web import ctx, require

router = APIRouter(include_in_schema=False)
LIVE = Links()


@router.get("/login")
def login_form(request: Request, error: str = "") -> HTMLResponse:
    message = {"bad": "Wrong name or password.", "locked": "Too many failed attempts: wait a minute."}.get(error, "")
    return HTMLResponse(render("login.html", LIVE, None, None, "Log in", error=message))


@router.post("/login")
def login(request: Request, name: str = Form(..., max_length=64), password: str = Form(..., max_length=1024)):
    c = ctx(request)
    keys = (f"user:{name}", f"addr:{request.client.host if request.client else '?'}")
    if c.throttle.locked(*keys):
        with c.store.session() as repo:
            repo.security_event("login", "login_throttled", None, None, f"user {name[:64]!r}")
        return RedirectResponse("/login?error=locked", status_code=303)
    with c.store.session() as repo:
        user = repo.user(name)
        if not check_password(user, password):
            c.throttle.failed(*keys)
            repo.security_event("login", "login_failed", None, None, f"user {name[:64]!r}")
            return RedirectResponse("/login?error=bad", status_code=303)
        c.throttle.succeeded(*keys)
        token = new_session(repo, user, c.session_lifetime)
        repo.audit(user.name, "login", "session")
        home = "/alerts" if user.role == "clinician" else "/fleet"
    response = RedirectResponse(home, status_code=303)
    response.set_cookie(COOKIE, token, max_age=int(c.session_lifetime.total_seconds()), httponly=True,
                        samesite="strict", secure=c.secure_cookies, path="/")
    return response


@router.post("/logout")
def logout(request: Request) -> RedirectResponse:
    token = request.cookies.get(COOKIE)
    if token:
        with ctx(request).store.session() as repo:
            repo.drop_session(token_hash(token))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/")
def home(user: User = Depends(require())) -> RedirectResponse:
    return RedirectResponse("/alerts" if user.role == "clinician" else "/fleet", status_code=303)


@router.get("/devices/{name}")
def device_page(name: str, request: Request, user: User = Depends(require("engineer"))) -> HTMLResponse:
    with ctx(request).store.session() as repo:
        data = views.device_view(repo, name)
        if data is None:
            raise HTTPException(404, "no such device")
        repo.audit(user.name, "viewed", f"device {name}")
    return HTMLResponse(render("device.html", LIVE, user.name, user.role, f"Device {name}", data))


def _page_route(page: str):
    spec = PAGES[page]

    def route(request: Request, user: User = Depends(require(spec.role))) -> HTMLResponse:
        c = ctx(request)
        with c.store.session() as repo:
            data = spec.view(repo)
            if page in ("alerts", "patients"):
                repo.audit(user.name, "viewed", page)
        if page == "models":  # the rollback button exists only where the server holds the signing key
            data["rollback"] = {"enabled": bool(c.actions and c.actions.can_rollback), "fleet": c.fleet}
        if page == "alerts":
            data["labelling"] = bool(c.actions and c.actions.can_label)
        return HTMLResponse(render(f"{page}.html", LIVE, user.name, user.role, spec.title, data))

    route.__name__ = f"page_{page}"
    return route


for _page in PAGES:
    router.add_api_route(f"/{_page}", _page_route(_page), methods=["GET"])
