"""What each page and API route shows, as plain JSON-ready dicts built from the repository.

The web routes, the live pages and the static snapshot all take their data from here, so the REST
API, the dashboard and ``pulsewire server snapshot`` cannot drift apart.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from server.ingest import alert_summary
from server.models import Alert, Device, Round
from server.repository import Repository


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def device_dict(d: Device, epsilon: float | None = None) -> dict[str, Any]:
    return {"name": d.name, "enrolled": d.registered, "state": d.state, "first_seen": _iso(d.first_seen),
            "last_seen": _iso(d.last_seen), "battery": d.battery, "model_version": d.model_version, "link": d.link,
            "signal_quality": d.signal_quality, "role": d.role, "patient": d.patient, "epsilon": epsilon}


def fleet_view(repo: Repository) -> dict[str, Any]:
    eps = repo.epsilon_by_device()
    devices = [device_dict(d, eps.get(d.name)) for d in repo.devices()]
    states = Counter(d["state"] for d in devices)
    return {"devices": devices, "states": dict(states), "unknown": sum(1 for d in devices if not d["enrolled"])}


def alert_dict(a: Alert) -> dict[str, Any]:
    return {**alert_summary(a.body, a.received.isoformat()), "acknowledged_by": a.acknowledged_by,
            "acknowledged_at": _iso(a.acknowledged_at), "resolved_by": a.resolved_by, "resolved_at": _iso(a.resolved_at)}


def device_view(repo: Repository, name: str) -> dict[str, Any] | None:
    d = repo.device_named(name)
    if d is None:
        return None
    return {"device": device_dict(d, repo.epsilon_by_device().get(d.name)), "status": d.status,
            "class_counts": repo.class_counts(d.name),
            "alerts": [alert_dict(a) for a in repo.alerts(limit=50, device=d.name)],
            "ledger": [{"round": e.round, "epsilon": e.epsilon} for e in repo.ledger(device=d.name, fleet_wide=False)]}


def alerts_view(repo: Repository, limit: int = 50) -> dict[str, Any]:
    """The latest events (runs) first; periodic summaries apart, so they never push an event off the page."""
    return {"alerts": [alert_dict(a) for a in repo.alerts(limit=limit, summaries=False)],
            "summaries": [alert_dict(a) for a in repo.alerts(limit=20, summaries=True)],
            "total": repo.alert_count()}


def patients_view(repo: Repository) -> dict[str, Any]:
    consents = {c.patient: c for c in repo.consents()}
    rows = []
    for p in repo.patients():
        c = consents.get(p)
        rows.append({"patient": p, "training": bool(c and c.training), "strip": bool(c and c.strip),
                     "version": c.version if c else 0, "updated_by": c.updated_by if c else None,
                     "updated_at": _iso(c.updated_at) if c else None})
    return {"patients": rows}


def round_dict(r: Round) -> dict[str, Any]:
    return {"fleet": r.fleet, "round": r.round, "state": r.state, "strategy": r.strategy, "selected": len(r.selected or []),
            "participants": r.participants, "declined": r.declined, "bytes_received": r.bytes_received,
            "bytes_down": r.bytes_down, "seconds": r.seconds, "loss": r.loss, "metrics": r.metrics,
            "rejected": r.rejected, "closed_at": _iso(r.closed_at)}


def rounds_view(repo: Repository) -> dict[str, Any]:
    return {"rounds": [round_dict(r) for r in repo.rounds()]}


def privacy_view(repo: Repository) -> dict[str, Any]:
    rows = repo.ledger()
    budget = next((e.budget for e in reversed(rows) if e.budget is not None), None)
    spent = rows[-1].epsilon if rows else None
    return {"rounds": [{"fleet": e.fleet, "round": e.round, "epsilon": e.epsilon, "delta": e.delta} for e in rows],
            "per_device": dict(sorted(repo.epsilon_by_device().items())), "budget": budget, "spent": spent,
            "left": None if budget is None or spent is None else max(0.0, budget - spent)}


def security_view(repo: Repository) -> dict[str, Any]:
    """Rejections by reason per minute (the chart), the totals and the latest events (the table)."""
    events = repo.security_events(limit=2000)
    by_minute: dict[str, Counter] = defaultdict(Counter)
    totals: Counter = Counter()
    for e in events:
        by_minute[e.time.strftime("%Y-%m-%d %H:%M")][e.reason] += e.count
        totals[e.reason] += e.count
    series = {reason: [[minute, by_minute[minute].get(reason, 0)] for minute in sorted(by_minute)]
              for reason in sorted(totals)}
    return {"series": series, "totals": dict(totals.most_common()),
            "counters": repo.counters(),
            "recent": [{"time": _iso(e.time), "source": e.source, "reason": e.reason, "device": e.device,
                        "round": e.round, "count": e.count, "detail": e.detail} for e in events[:100]]}


def models_view(repo: Repository) -> dict[str, Any]:
    """Releases with their state (pinned / revoked by the pin in force), the pins, and the rollout: which
    version each device reports and its last model-update verdict."""
    rollout: dict[str, list[str]] = defaultdict(list)
    devices = []
    for d in repo.devices():
        rollout[d.model_version or "unknown"].append(d.name)
        update = (d.status or {}).get("last_model_update")
        devices.append({"name": d.name, "fleet": d.fleet, "model_version": d.model_version,
                        "last_model_update": update if isinstance(update, (dict, str)) else None})
    return {"releases": [{"fleet": r.fleet, "version": r.version, "signer": r.signer, "size": r.size,
                          "signal_digest": r.signal_digest, "seen_at": _iso(r.seen_at), "state": r.state}
                         for r in repo.releases()],
            "pins": [{"fleet": p.fleet, "version": p.version, "revoked": list(p.revoked), "sequence": p.sequence,
                      "signer": p.signer, "seen_at": _iso(p.seen_at)} for p in repo.pins()],
            "rollout": {v: sorted(names) for v, names in sorted(rollout.items())},
            "devices": sorted(devices, key=lambda x: x["name"])}


def audit_view(repo: Repository) -> dict[str, Any]:
    return {"entries": [{"time": _iso(e.time), "user": e.user, "action": e.action, "target": e.target,
                         "detail": e.detail} for e in repo.audit_log()]}
