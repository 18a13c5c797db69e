"""The REST API (OpenAPI at /docs): thin routes over ``server.views`` and the repository.

Clinicians read and act on alerts and patients; engineers read the fleet, rounds, the privacy ledger,
security events, model releases and the audit log. Every action is written to the audit log.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel

from broker.topics import NAME_PATTERN
from server import views
from server.models import User
from server.web import ctx, require

router = APIRouter()
clinician, engineer = require("clinician"), require("engineer")


class ConsentIn(BaseModel):
    training: bool
    strip: bool


@router.get("/me", tags=["account"])
def me(user: User = Depends(require())) -> dict[str, str]:
    return {"name": user.name, "role": user.role}


@router.get("/devices", tags=["fleet"], summary="Every device heard on the bus or enrolled")
def devices(request: Request, _: User = Depends(engineer)) -> dict[str, Any]:
    with ctx(request).store.session() as repo:
        return views.fleet_view(repo)


@router.get("/devices/{name}", tags=["fleet"], summary="One device: status, alerts, per-class counts, ε")
def device(name: str, request: Request, user: User = Depends(engineer)) -> dict[str, Any]:
    with ctx(request).store.session() as repo:
        view = views.device_view(repo, name)
        if view is None:
            raise HTTPException(404, "no such device")
        repo.audit(user.name, "viewed", f"device {name}")
        return view


@router.get("/alerts", tags=["alerts"], summary="The latest alerts, newest first, with their strips")
def alerts(request: Request, limit: int = 50, user: User = Depends(clinician)) -> dict[str, Any]:
    with ctx(request).store.session() as repo:
        return views.alerts_view(repo, max(1, min(limit, 500)))


@router.post("/alerts/{alert_id}/{action}", tags=["alerts"], summary="Acknowledge or resolve an alert")
def alert_action(alert_id: str, action: str, request: Request, user: User = Depends(clinician)) -> dict[str, Any]:
    if action not in ("acknowledge", "resolve"):
        raise HTTPException(404, "action is acknowledge or resolve")
    with ctx(request).store.session() as repo:
        alert = repo.alert(alert_id)
        if alert is None:
            raise HTTPException(404, "no such alert")
        repo.set_alert_state(alert, user.name, action)
        result = views.alert_dict(alert)
    ctx(request).hub.publish("alert_state", result)
    return result


@router.get("/patients", tags=["patients"], summary="Patients (pseudonyms) and their consent")
def patients(request: Request, _: User = Depends(clinician)) -> dict[str, Any]:
    with ctx(request).store.session() as repo:
        return views.patients_view(repo)


@router.put("/consents/{patient}", tags=["patients"],
            summary="Record a patient's consent and publish it (retained) to their devices")
def set_consent(patient: str, body: ConsentIn, request: Request, user: User = Depends(clinician)) -> dict[str, Any]:
    if not NAME_PATTERN.match(patient):
        raise HTTPException(422, "a patient pseudonym is 1-64 letters, digits, '_', '.', '-'")
    c = ctx(request)
    with c.store.session() as repo:
        row = repo.set_consent(c.fleet, patient, body.training, body.strip, user.name)
        version = row.version
    if c.publish_consent is not None:
        c.publish_consent(patient, body.training, body.strip, version)
    return {"patient": patient, "training": body.training, "strip": body.strip, "version": version}


def _read_route(view):
    def route(request: Request) -> dict[str, Any]:
        with ctx(request).store.session() as repo:
            return view(repo)
    return route


#: Read-only engineer views: (path, view, tag, summary).
_ENGINEER_VIEWS = [
    ("/rounds", views.rounds_view, "rounds", "Federated rounds: plan, participation, bytes, metrics"),
    ("/privacy", views.privacy_view, "rounds", "ε per round (cumulative), per device, and budget left"),
    ("/security", views.security_view, "security", "Rejections by reason over time, ingest counters"),
    ("/releases", views.models_view, "models", "Model releases seen on the bus and the rollout per version"),
    ("/audit", views.audit_view, "account", "Who viewed, acknowledged or changed what"),
]
for _path, _view, _tag, _summary in _ENGINEER_VIEWS:
    router.add_api_route(_path, _read_route(_view), methods=["GET"], tags=[_tag], summary=_summary,
                         dependencies=[Depends(engineer)])


@router.get("/counters", tags=["security"], summary="Ingest counters: stored, rejected by reason, duplicates")
def counters(request: Request, _: User = Depends(require())) -> dict[str, int]:
    with ctx(request).store.session() as repo:
        return repo.counters()
