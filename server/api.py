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


@router.get("/rounds", tags=["rounds"], summary="Federated rounds: plan, participation, bytes, metrics")
def rounds(request: Request, _: User = Depends(engineer)) -> dict[str, Any]:
    with ctx(request).store.session() as repo:
        return views.rounds_view(repo)


@router.get("/privacy", tags=["rounds"], summary="ε per round (cumulative), per device, and budget left")
def privacy(request: Request, _: User = Depends(engineer)) -> dict[str, Any]:
    with ctx(request).store.session() as repo:
        return views.privacy_view(repo)


@router.get("/security", tags=["security"], summary="Rejections by reason over time, ingest counters")
def security(request: Request, _: User = Depends(engineer)) -> dict[str, Any]:
    with ctx(request).store.session() as repo:
        return views.security_view(repo)


@router.get("/counters", tags=["security"], summary="Ingest counters: stored, rejected by reason, duplicates")
def counters(request: Request, _: User = Depends(require())) -> dict[str, int]:
    with ctx(request).store.session() as repo:
        return repo.counters()


@router.get("/releases", tags=["models"], summary="Model releases seen on the bus and the rollout per version")
def releases(request: Request, _: User = Depends(engineer)) -> dict[str, Any]:
    with ctx(request).store.session() as repo:
        return views.models_view(repo)


@router.get("/audit", tags=["account"], summary="Who viewed, acknowledged or changed what")
def audit(request: Request, _: User = Depends(engineer)) -> dict[str, Any]:
    with ctx(request).store.session() as repo:
        return views.audit_view(repo)
