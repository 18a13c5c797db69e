"""The REST API (OpenAPI at /docs): thin routes over ``server.views`` and the repository.

Clinicians read and act on alerts and patients; engineers read the fleet, rounds, the privacy ledger,
security events, model releases and the audit log. Every action is written to the audit log.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from broker.clinician_labels import MAX_BEATS

from broker.topics import NAME_PATTERN
from server import views
from server.fleet_actions import ActionFailed
from server.models import User
from server.web import ctx, require

router = APIRouter()
clinician, engineer = require("clinician"), require("engineer")


class RollbackIn(BaseModel):
    version: int = Field(ge=1, lt=2**31)


class LabelsIn(BaseModel):
    #: Sample indices of the strip's beats in the device's stream (as the alert's strip names them).
    beats: list[int] = Field(min_length=1, max_length=MAX_BEATS)
    labels: list[str] = Field(min_length=1, max_length=MAX_BEATS)


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


@router.post("/alerts/{alert_id}/labels", tags=["alerts"],
             summary="Confirm or correct the beats of an alert's strip: signed, sent to that device only")
def alert_labels(alert_id: str, body: LabelsIn, request: Request, user: User = Depends(clinician)) -> dict[str, Any]:
    actions = ctx(request).actions
    if actions is None or not actions.can_label:
        raise HTTPException(409, "this server signs no labels (start it with --labels-key clinic/labels.key); "
                                 "use `pulsewire label` instead")
    with ctx(request).store.session() as repo:
        alert = repo.alert(alert_id)
        if alert is None:
            raise HTTPException(404, "no such alert")
        try:
            return actions.relabel(repo, user.name, alert, body.beats, body.labels)
        except ActionFailed as exc:
            raise HTTPException(exc.status, str(exc)) from None


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


@router.post("/releases/rollback", tags=["models"],
             summary="Pin the fleet to a version and revoke the newer ones (signed, retained on pw/FLEET/pin)")
def rollback(body: RollbackIn, request: Request, user: User = Depends(engineer)) -> dict[str, Any]:
    actions = ctx(request).actions
    if actions is None or not actions.can_rollback:
        raise HTTPException(409, "this server signs no pins (start it with --release-signing-key); use "
                                 "`pulsewire release rollback` instead")
    with ctx(request).store.session() as repo:
        try:
            result, signed = actions.rollback(repo, user.name, body.version)
        except ActionFailed as exc:
            raise HTTPException(exc.status, str(exc)) from None
    try:
        actions.publish_pin(signed)  # after the commit: the server's own ingest then finds the pin already stored
    except ActionFailed as exc:
        with ctx(request).store.session() as repo:
            repo.audit(user.name, "rollback_not_published", f"fleet {result['fleet']}", str(exc))
        raise HTTPException(exc.status, f"pin recorded but not published: {exc}") from None
    ctx(request).hub.publish("release", {"pinned": result["pinned"], "revoked": result["revoked"]})
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
