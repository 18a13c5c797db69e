"""The repository layer: every read and write the ingest and the web make, in one place, on one session.

Callers own the session and the transaction (``Store.session()``), so the ingest commits a batch of
messages at once before acknowledging them, and a web request reads one consistent view.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as DbSession

from server import db
from server.models import (Alert, AuditEntry, Consent, Counter, Device, LedgerEntry, ModelPin, ModelRelease, Round,
                           SecurityEvent, Session, User, utcnow)

#: Status fields the fleet page shows, copied into columns when a device sends them.
_STATUS_COLUMNS = {"battery": "battery", "link": "link", "signal_quality": "signal_quality"}


class Store:
    """The database: engine, migrations and sessions."""

    def __init__(self, url: str, migrate: bool = True) -> None:
        self.engine: Engine = db.make_engine(url)
        if migrate:
            db.upgrade(self.engine)
        self._sessions = db.sessions(self.engine)

    @contextmanager
    def session(self) -> Iterator["Repository"]:
        """One transaction: committed when the block ends, rolled back on an exception."""
        with self._sessions() as s, s.begin():
            repo = Repository(s)
            yield repo
            repo.flush_counts()

    def close(self) -> None:
        self.engine.dispose()


class Repository:
    def __init__(self, session: DbSession) -> None:
        self.s = session
        self._devices: dict[tuple[str, str], Device] = {}
        self._counts: dict[str, int] = {}

    # ------------------------------------------------------------------ counters
    def count(self, name: str, n: int = 1) -> None:
        """Add to a counter; written once per transaction (``flush_counts``), not once per message."""
        self._counts[name] = self._counts.get(name, 0) + n

    def flush_counts(self) -> None:
        for name, n in sorted(self._counts.items()):
            row = self.s.get(Counter, name)
            if row is None:
                self.s.add(Counter(name=name, value=n))
            else:
                row.value += n
        self._counts.clear()
        self.s.flush()

    def counters(self) -> dict[str, int]:
        self.flush_counts()
        return {c.name: c.value for c in self.s.scalars(select(Counter).order_by(Counter.name))}

    # ------------------------------------------------------------------ devices
    def device(self, fleet: str, name: str) -> Device | None:
        dev = self._devices.get((fleet, name))
        if dev is None:
            dev = self.s.scalar(select(Device).where(Device.fleet == fleet, Device.name == name))
            if dev is not None:
                self._devices[(fleet, name)] = dev
        return dev

    def device_named(self, name: str) -> Device | None:
        """The device of that name in any fleet (the first by id when several fleets use the name)."""
        return self.s.scalar(select(Device).where(Device.name == name).order_by(Device.id).limit(1))

    def preload_devices(self, keys: set[tuple[str, str]]) -> None:
        """Fetch the devices a batch of messages names with one query per fleet instead of one per message."""
        by_fleet: dict[str, list[str]] = {}
        for fleet, name in keys:
            by_fleet.setdefault(fleet, []).append(name)
        for fleet, names in by_fleet.items():
            for dev in self.s.scalars(select(Device).where(Device.fleet == fleet, Device.name.in_(names))):
                self._devices[(fleet, dev.name)] = dev

    def register_devices(self, fleet: str, registry: dict[str, int]) -> None:
        for name, device_id in registry.items():
            dev = self.device(fleet, name) or Device(fleet=fleet, name=name, state="never seen")
            dev.device_id, dev.registered = device_id, True
            self.s.add(dev)
        self.s.flush()

    def _touch(self, fleet: str, name: str, device_id: int | None, registered: bool) -> Device:
        dev = self.device(fleet, name)
        if dev is None:
            dev = Device(fleet=fleet, name=name, device_id=device_id, registered=registered, status={})
            self.s.add(dev)
            self._devices[(fleet, name)] = dev
        dev.last_seen = utcnow()
        return dev

    def record_status(self, fleet: str, name: str, device_id: int, status: dict[str, Any],
                      registered: bool) -> Device:
        dev = self._touch(fleet, name, device_id, registered)
        dev.state = str(status.get("state", "unknown"))[:32]
        if dev.state != "offline" or not dev.status:
            merged = dict(dev.status or {})
            merged.update(status)
            dev.status = merged
        for key, column in _STATUS_COLUMNS.items():
            value = status.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                setattr(dev, column, float(value) if column != "link" else str(value))
            elif isinstance(value, str) and column == "link":
                dev.link = value[:64]
        for key in ("model_version", "patient"):  # a device names its wearer's pseudonym in its status
            if isinstance(status.get(key), str):
                setattr(dev, key, status[key][:200])
        caps = status.get("capabilities")
        if isinstance(caps, list):
            dev.role = "training" if "train" in caps else "inference-only"
        return dev

    def devices(self, fleet: str | None = None) -> list[Device]:
        q = select(Device).order_by(Device.name)
        return list(self.s.scalars(q if fleet is None else q.where(Device.fleet == fleet)))

    # ------------------------------------------------------------------ alerts
    def record_alert(self, fleet: str, alert: dict[str, Any], registered: bool) -> Alert | None:
        """The stored alert, or None when this ``alert_id`` is already stored (a redelivery)."""
        if self.s.scalar(select(Alert.id).where(Alert.alert_id == alert["alert_id"])) is not None:
            return None
        dev = self._touch(fleet, str(alert["device"]), None, registered)
        dev.patient = str(alert["patient"])[:200]
        if isinstance(alert.get("model_version"), str):
            dev.model_version = alert["model_version"][:200]
        row = Alert(alert_id=str(alert["alert_id"])[:200], fleet=fleet, device=str(alert["device"])[:200],
                    patient=str(alert["patient"])[:200], kind=str(alert["kind"])[:64], label=str(alert["class"])[:8],
                    time=str(alert["time"])[:64], beats=int(alert["beats"]),
                    confidence_permille=int(alert["confidence_permille"]),
                    heart_rate_bpm=int(alert["heart_rate_bpm"]), model_version=str(alert["model_version"])[:200],
                    body=alert)
        self.s.add(row)
        self.s.flush()
        return row

    def alerts(self, limit: int = 100, device: str | None = None, patient: str | None = None,
               open_only: bool = False, summaries: bool | None = None) -> list[Alert]:
        """Newest first; ``summaries`` True: only periodic summaries, False: only events, None: both."""
        q = select(Alert).order_by(Alert.id.desc()).limit(limit)
        if summaries is not None:
            q = q.where((Alert.kind == "summary") if summaries else (Alert.kind != "summary"))
        if device is not None:
            q = q.where(Alert.device == device)
        if patient is not None:
            q = q.where(Alert.patient == patient)
        if open_only:
            q = q.where(Alert.resolved_at.is_(None))
        return list(self.s.scalars(q))

    def alert(self, alert_id: str) -> Alert | None:
        return self.s.scalar(select(Alert).where(Alert.alert_id == alert_id))

    def alert_count(self) -> int:
        return self.s.scalar(select(func.count(Alert.id))) or 0

    def class_counts(self, device: str) -> dict[str, int]:
        rows = self.s.execute(select(Alert.label, func.count(Alert.id)).where(Alert.device == device)
                              .group_by(Alert.label))
        return {label: n for label, n in rows}

    def set_alert_state(self, alert: Alert, user: str, action: str) -> None:
        now = utcnow()
        if action == "acknowledge" and alert.acknowledged_at is None:
            alert.acknowledged_by, alert.acknowledged_at = user, now
        elif action == "resolve" and alert.resolved_at is None:
            if alert.acknowledged_at is None:
                alert.acknowledged_by, alert.acknowledged_at = user, now
            alert.resolved_by, alert.resolved_at = user, now
        self.audit(user, action + "d" if action.endswith("e") else action, f"alert {alert.alert_id}")

    # ------------------------------------------------------------------ rounds and the privacy ledger
    def _round(self, fleet: str, number: int) -> Round:
        row = self.s.scalar(select(Round).where(Round.fleet == fleet, Round.round == number))
        if row is None:
            row = Round(fleet=fleet, round=number, selected=[], metrics={}, rejected={})
            self.s.add(row)
        return row

    def record_round_event(self, event: dict[str, Any]) -> Round | None:
        fleet, number, kind = event["fleet"], event["round"], event["event"]
        if kind == "rejected":
            self.security_event("aggregator", str(event["reason"])[:64], event.get("device"), number,
                                str(event.get("detail", ""))[:500], int(event.get("count", 1) or 1))
            return None
        row = self._round(fleet, number)
        row.strategy = str(event.get("strategy"))[:64]
        if kind == "opened":
            row.selected = list(event["selected"])
            row.opened_at = row.opened_at or utcnow()
            row.state = "open" if row.state != "closed" else row.state
        else:
            row.state, row.closed_at = "closed", utcnow()
            row.participants, row.declined = event["participants"], event["declined"]
            row.bytes_received, row.bytes_down = event["bytes_received"], event.get("bytes_down")
            row.seconds, row.loss = event.get("seconds"), event.get("loss")
            row.metrics, row.rejected = dict(event["metrics"]), dict(event.get("rejected") or {})
            if event.get("privacy"):
                self._ledger(fleet, number, event["privacy"], event.get("accepted") or [], event.get("budget"))
        self.s.flush()
        return row

    def _ledger(self, fleet: str, number: int, privacy: dict[str, Any], accepted: list[str],
                budget: float | None) -> None:
        eps = privacy.get("epsilon_rdp", privacy.get("epsilon"))
        if not isinstance(eps, (int, float)):
            return
        for device in [None, *accepted]:
            exists = self.s.scalar(select(LedgerEntry.id).where(
                LedgerEntry.fleet == fleet, LedgerEntry.round == number,
                LedgerEntry.device.is_(None) if device is None else LedgerEntry.device == device))
            if exists is None:
                self.s.add(LedgerEntry(fleet=fleet, round=number, device=device, epsilon=float(eps),
                                       delta=privacy.get("delta"), budget=budget, detail=privacy))

    def rounds(self, fleet: str | None = None) -> list[Round]:
        q = select(Round).order_by(Round.fleet, Round.round)
        return list(self.s.scalars(q if fleet is None else q.where(Round.fleet == fleet)))

    def ledger(self, device: str | None = None, fleet_wide: bool = True) -> list[LedgerEntry]:
        q = select(LedgerEntry).order_by(LedgerEntry.fleet, LedgerEntry.round)
        if fleet_wide:
            q = q.where(LedgerEntry.device.is_(None))
        elif device is not None:
            q = q.where(LedgerEntry.device == device)
        else:
            q = q.where(LedgerEntry.device.is_not(None))
        return list(self.s.scalars(q))

    def epsilon_by_device(self) -> dict[str, float]:
        """Each device's ε: the fleet's cumulative ε at the last round it took part in (later rounds do not
        touch its data, so this bounds what it has spent)."""
        rows = self.s.execute(select(LedgerEntry.device, func.max(LedgerEntry.epsilon))
                              .where(LedgerEntry.device.is_not(None)).group_by(LedgerEntry.device))
        return {d: e for d, e in rows}

    # ------------------------------------------------------------------ security, releases, consent, audit
    def security_event(self, source: str, reason: str, device: str | None, round_: int | None, detail: str,
                       count: int = 1) -> None:
        self.s.add(SecurityEvent(source=source, reason=reason, device=device and str(device)[:200], round=round_,
                                 detail=detail[:2000], count=count))

    def security_events(self, limit: int = 500) -> list[SecurityEvent]:
        return list(self.s.scalars(select(SecurityEvent).order_by(SecurityEvent.id.desc()).limit(limit)))

    def record_release(self, fleet: str, version: int, signer: str, size: int, signal_digest: str | None) -> bool:
        exists = self.s.scalar(select(ModelRelease.id).where(ModelRelease.fleet == fleet,
                                                             ModelRelease.version == version))
        if exists is None:
            pin = self.pin(fleet)
            state = "released" if pin is None else "revoked" if version in pin.revoked else \
                "pinned" if version == pin.version else "released"
            self.s.add(ModelRelease(fleet=fleet, version=version, signer=signer, size=size,
                                    signal_digest=signal_digest, state=state))
        return exists is None

    def releases(self) -> list[ModelRelease]:
        return list(self.s.scalars(select(ModelRelease).order_by(ModelRelease.version.desc())))

    def record_pin(self, fleet: str, version: int, revoked: list[int], sequence: int, signer: str) -> bool:
        """Store a pin unless one of this fleet with the same or a higher sequence is known (a replayed older
        pin changes nothing on the devices either); revoked releases are marked so."""
        latest = self.pin(fleet)
        if latest is not None and latest.sequence >= sequence:
            return False
        self.s.add(ModelPin(fleet=fleet, version=version, revoked=sorted(revoked), sequence=sequence, signer=signer))
        for rel in self.s.scalars(select(ModelRelease).where(ModelRelease.fleet == fleet)):
            rel.state = "revoked" if rel.version in revoked else "pinned" if rel.version == version else "released"
        return True

    def pin(self, fleet: str) -> ModelPin | None:
        """The pin in force for ``fleet`` (the highest sequence), if any."""
        return self.s.scalar(select(ModelPin).where(ModelPin.fleet == fleet).order_by(ModelPin.sequence.desc())
                             .limit(1))

    def pins(self) -> list[ModelPin]:
        """The pin in force of every fleet (newest sequence first)."""
        seen: dict[str, ModelPin] = {}
        for p in self.s.scalars(select(ModelPin).order_by(ModelPin.sequence.desc())):
            seen.setdefault(p.fleet, p)
        return list(seen.values())

    def consent(self, fleet: str, patient: str) -> Consent | None:
        return self.s.scalar(select(Consent).where(Consent.fleet == fleet, Consent.patient == patient))

    def set_consent(self, fleet: str, patient: str, training: bool, strip: bool, user: str) -> Consent:
        row = self.consent(fleet, patient)
        if row is None:
            row = Consent(fleet=fleet, patient=patient, version=0)
            self.s.add(row)
        row.training, row.strip, row.version = training, strip, row.version + 1
        row.updated_by, row.updated_at = user, utcnow()
        self.audit(user, "consent", f"patient {patient}", f"training={training} strip={strip} v{row.version}")
        self.s.flush()
        return row

    def consents(self) -> list[Consent]:
        return list(self.s.scalars(select(Consent).order_by(Consent.patient)))

    def patients(self) -> list[str]:
        names = set(self.s.scalars(select(Alert.patient).distinct()))
        names.update(p for p in self.s.scalars(select(Device.patient).distinct()) if p)
        names.update(c.patient for c in self.consents())
        return sorted(names)

    def audit(self, user: str, action: str, target: str, detail: str = "") -> None:
        self.s.add(AuditEntry(user=user, action=action, target=target[:300], detail=detail))

    def audit_log(self, limit: int = 200) -> list[AuditEntry]:
        return list(self.s.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)))

    # ------------------------------------------------------------------ users and sessions
    def add_user(self, name: str, role: str, password_hash: str) -> User:
        user = User(name=name, role=role, password_hash=password_hash)
        self.s.add(user)
        try:
            self.s.flush()
        except IntegrityError:
            raise ValueError(f"user {name!r} exists already") from None
        return user

    def user(self, name: str) -> User | None:
        return self.s.scalar(select(User).where(User.name == name))

    def add_session(self, token_hash: str, user: User, lifetime: dt.timedelta) -> None:
        self.s.add(Session(token_hash=token_hash, user_id=user.id, expires=utcnow() + lifetime))

    def session_user(self, token_hash: str) -> User | None:
        row = self.s.get(Session, token_hash)
        if row is None:
            return None
        expires = row.expires if row.expires.tzinfo else row.expires.replace(tzinfo=dt.timezone.utc)
        if expires < utcnow():
            self.s.delete(row)
            return None
        return self.s.get(User, row.user_id)

    def drop_session(self, token_hash: str) -> None:
        row = self.s.get(Session, token_hash)
        if row is not None:
            self.s.delete(row)
