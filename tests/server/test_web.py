"""The dashboard's HTTP surface without a browser: nothing anonymous, roles, wrong passwords, throttling."""
from __future__ import annotations

import json

import pytest

from tests.server.conftest import PASSWORD
from tools.server_bench import DashboardClient

pytestmark = pytest.mark.integration

PAGES = ["/", "/alerts", "/patients", "/fleet", "/rounds", "/privacy", "/security", "/models", "/audit",
         "/devices/d1", "/docs", "/assets/plotly.min.js", "/assets/app.js"]
API = ["/api/me", "/api/devices", "/api/alerts", "/api/rounds", "/api/privacy", "/api/security", "/api/releases",
       "/api/audit", "/api/counters", "/api/patients", "/api/events", "/openapi.json"]


def test_anonymous_requests_are_refused(running_server):
    anon = DashboardClient(running_server.host, running_server.port)
    for path in PAGES:
        resp, _ = anon.request("GET", path)
        assert resp.status == 303 and resp.getheader("Location") == "/login", path
    for path in API:
        resp, _ = anon.request("GET", path)
        assert resp.status in (401, 303), path
    resp, _ = anon.request("POST", "/api/alerts/x/acknowledge")
    assert resp.status == 401
    resp, body = anon.request("GET", "/login")
    assert resp.status == 200 and b'name="password"' in body


def test_login_sets_a_strict_httponly_cookie_and_roles_are_separate(running_server):
    clara = DashboardClient(running_server.host, running_server.port)
    resp, _ = clara.request("POST", "/login", b"name=clara&password=" + PASSWORD.replace(" ", "+").encode(),
                            {"Content-Type": "application/x-www-form-urlencoded"})
    cookie = resp.getheader("Set-Cookie")
    assert resp.status == 303 and resp.getheader("Location") == "/alerts"
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    clara.cookie = cookie.split(";", 1)[0]
    assert clara.get_json("/api/me") == {"name": "clara", "role": "clinician"}
    assert clara.request("GET", "/api/devices")[0].status == 403  # the fleet is the engineers'
    ed = DashboardClient(running_server.host, running_server.port)
    assert ed.login("ed", PASSWORD)
    assert ed.request("GET", "/api/alerts")[0].status == 403  # alerts are the clinicians'
    spec = ed.get_json("/openapi.json")
    assert {"/api/devices", "/api/alerts", "/api/rounds", "/api/privacy", "/api/events"} <= set(spec["paths"])
    resp, body = ed.request("GET", "/docs")
    assert resp.status == 200 and b"/assets/swagger-ui-bundle.js" in body and b"cdn" not in body.lower()
    resp, _ = ed.request("POST", "/logout")
    assert ed.request("GET", "/api/me")[0].status == 401  # the session is gone on the server too


def test_cross_origin_posts_are_refused(running_server):
    clara = DashboardClient(running_server.host, running_server.port)
    assert clara.login("clara", PASSWORD)
    resp, _ = clara.request("PUT", "/api/consents/pt1", json.dumps({"training": True, "strip": True}).encode(),
                            {"Content-Type": "application/json", "Origin": "http://evil.example"})
    assert resp.status == 403
    resp, body = clara.request("PUT", "/api/consents/pt1", json.dumps({"training": True, "strip": True}).encode(),
                               {"Content-Type": "application/json"})
    assert resp.status == 200 and json.loads(body)["version"] == 1


def test_wrong_passwords_are_refused_then_the_account_is_locked(running_server):
    c = DashboardClient(running_server.host, running_server.port)
    assert not c.login("ed", "not the password")
    assert not c.login("nobody", "not the password")
    for _ in range(4):
        assert not c.login("ed", "still wrong")
    resp, _ = c.request("POST", "/login", b"name=ed&password=" + PASSWORD.replace(" ", "+").encode(),
                        {"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.getheader("Location") == "/login?error=locked"  # even the right password, while locked
    with running_server.store.session() as repo:
        reasons = [e.reason for e in repo.security_events()]
    # five failures from one address lock it (the sixth attempt is not even checked), then the right password too
    assert reasons.count("login_failed") == 5 and reasons.count("login_throttled") == 2
