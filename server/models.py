"""The database schema as SQLAlchemy 2 typed models. Every change goes with an Alembic migration.

Device-supplied strings are stored verbatim (they are data, bound as parameters, never SQL) and
escaped where they are shown.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, dt.datetime: DateTime(timezone=True)}


class Device(Base):
    __tablename__ = "devices"
    id: Mapped[int] = mapped_column(primary_key=True)
    fleet: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    device_id: Mapped[int | None] = mapped_column(BigInteger)  # the u32 of its wire headers
    registered: Mapped[bool] = mapped_column(Boolean, default=False)  # False: heard on the bus, never enrolled
    state: Mapped[str] = mapped_column(String(32), default="unknown")  # online / offline / ...
    first_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)
    battery: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[str | None] = mapped_column(String(200))
    link: Mapped[str | None] = mapped_column(String(64))
    signal_quality: Mapped[float | None] = mapped_column(Float)
    role: Mapped[str] = mapped_column(String(32), default="unknown")  # training / inference-only / unknown
    patient: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the last status as sent
    __table_args__ = (UniqueConstraint("fleet", "name"),)


class Alert(Base):
    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(200), unique=True)
    fleet: Mapped[str] = mapped_column(String(64))
    device: Mapped[str] = mapped_column(String(200), index=True)
    patient: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(8))
    time: Mapped[str] = mapped_column(String(64))  # as the device wrote it
    beats: Mapped[int] = mapped_column(Integer)
    confidence_permille: Mapped[int] = mapped_column(Integer)
    heart_rate_bpm: Mapped[int] = mapped_column(Integer)
    model_version: Mapped[str] = mapped_column(String(200))
    body: Mapped[dict[str, Any]] = mapped_column()  # the whole alert, strip included
    received: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column()
    resolved_by: Mapped[str | None] = mapped_column(String(64))
    resolved_at: Mapped[dt.datetime | None] = mapped_column()


class Round(Base):
    __tablename__ = "rounds"
    id: Mapped[int] = mapped_column(primary_key=True)
    fleet: Mapped[str] = mapped_column(String(64))
    round: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="open")  # open / closed
    strategy: Mapped[str | None] = mapped_column(String(64))
    selected: Mapped[list[Any]] = mapped_column(default=list)
    participants: Mapped[int | None] = mapped_column(Integer)
    declined: Mapped[int | None] = mapped_column(Integer)
    bytes_received: Mapped[int | None] = mapped_column(BigInteger)
    bytes_down: Mapped[int | None] = mapped_column(BigInteger)
    seconds: Mapped[float | None] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    rejected: Mapped[dict[str, Any]] = mapped_column(default=dict)
    opened_at: Mapped[dt.datetime | None] = mapped_column()
    closed_at: Mapped[dt.datetime | None] = mapped_column()
    __table_args__ = (UniqueConstraint("fleet", "round"),)


class LedgerEntry(Base):
    """Privacy spent: one global row per closed DP round, plus one per participating device."""

    __tablename__ = "privacy_ledger"
    id: Mapped[int] = mapped_column(primary_key=True)
    fleet: Mapped[str] = mapped_column(String(64))
    round: Mapped[int] = mapped_column(Integer)
    device: Mapped[str | None] = mapped_column(String(200), index=True)  # None: the fleet-wide (central) ε
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float | None] = mapped_column(Float)
    budget: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    __table_args__ = (UniqueConstraint("fleet", "round", "device"),)


class SecurityEvent(Base):
    __tablename__ = "security_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    time: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    source: Mapped[str] = mapped_column(String(32))  # aggregator / ingest / login
    reason: Mapped[str] = mapped_column(String(64), index=True)
    device: Mapped[str | None] = mapped_column(String(200))
    round: Mapped[int | None] = mapped_column(Integer)
    count: Mapped[int] = mapped_column(Integer, default=1)
    detail: Mapped[str] = mapped_column(Text, default="")


class ModelRelease(Base):
    __tablename__ = "model_releases"
    id: Mapped[int] = mapped_column(primary_key=True)
    fleet: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    signer: Mapped[str] = mapped_column(String(128))  # SHA-256 of the signing public key, or "unverified"
    size: Mapped[int] = mapped_column(Integer)
    signal_digest: Mapped[str | None] = mapped_column(String(128))
    seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    state: Mapped[str] = mapped_column(String(16), default="released")  # released / rolled_back
    __table_args__ = (UniqueConstraint("fleet", "version"),)


class ModelPin(Base):
    """A signed rollback pin seen on ``pw/{fleet}/pin`` (the newest sequence per fleet is the one in force)."""
    __tablename__ = "model_pins"
    id: Mapped[int] = mapped_column(primary_key=True)
    fleet: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    revoked: Mapped[list[Any]] = mapped_column()
    sequence: Mapped[int] = mapped_column(BigInteger)
    signer: Mapped[str] = mapped_column(String(128))  # SHA-256 of the signing public key, or "unverified"
    seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    __table_args__ = (UniqueConstraint("fleet", "sequence"),)


class Consent(Base):
    __tablename__ = "consents"
    id: Mapped[int] = mapped_column(primary_key=True)
    fleet: Mapped[str] = mapped_column(String(64))
    patient: Mapped[str] = mapped_column(String(64))
    training: Mapped[bool] = mapped_column(Boolean, default=False)
    strip: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    __table_args__ = (UniqueConstraint("fleet", "patient"),)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # clinician / engineer
    password_hash: Mapped[str] = mapped_column(String(256))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Session(Base):
    __tablename__ = "sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the cookie value
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    expires: Mapped[dt.datetime] = mapped_column()


class AuditEntry(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    time: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    user: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))  # viewed / acknowledged / resolved / consent / ...
    target: Mapped[str] = mapped_column(String(300))
    detail: Mapped[str] = mapped_column(Text, default="")


class Counter(Base):
    """Ingest counters that survive restarts: messages stored, rejected by reason, duplicates."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)
