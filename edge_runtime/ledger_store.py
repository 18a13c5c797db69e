"""The device's local-DP ledger on its own storage: SQLite beside the alert spool, restored on start.

Without it a restart would reset the device's ε to zero and let it spend its budget again. Each release is
committed (``synchronous=FULL``: fsynced before the commit returns) before the noised update leaves the
device, so a power cut can lose a release that was never sent, never one that was.

A ledger that is gone or damaged while the device's other state (its alert spool, any other ``*.sqlite`` in
the state directory) is still there means the device forgot what it released: it refuses to train (``lost``
says why) until an operator resets the ledger with ``pulsewire edge dp-reset --state-dir DIR --yes``, which
logs the reset and keeps it in the new ledger (``resets``), so the restart of accounting is never silent.
Damage is detected by SQLite's integrity check and a SHA-256 hash chain over the rows whose head and length
are stored in the same transaction as every row (a truncated or edited row breaks it). This protects against
crashes, worn flash and reflashed storage; not against someone who rewrites the file on purpose (the device
owner can always lie about its own privacy: local DP protects the device from others, not from itself).

A brand-new device (empty state directory) starts a fresh ledger. Open the ledger (construct the
``DeviceClient`` with ``state_dir``) before the alert spool on the first start, or the spool looks like
the state of a device whose ledger was lost.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from edge_runtime.local_dp import PrivacyLedger

log = logging.getLogger(__name__)

LEDGER_FILE = "privacy-ledger.sqlite"
_GENESIS = "0" * 64


class LedgerLost(RuntimeError):
    """The device cannot know what it released before: it must not train until the ledger is reset."""


class LedgerStore:
    """One device's durable ledger: ``ledger`` (the rows so far) and ``record`` (append one, durably)."""

    def __init__(self, state_dir: Path, delta: float, start_new: bool = False) -> None:
        """``start_new``: create an empty ledger even beside existing device state (what ``reset_ledger`` does)."""
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / LEDGER_FILE
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.ledger = PrivacyLedger(delta)
        #: Why this device refuses to train (None: it may).
        self.lost: str | None = None
        self.resets: list[dict[str, Any]] = []
        if not self.path.exists() and not start_new and (others := _device_state(self.state_dir)):
            self.lost = (f"the privacy ledger {self.path} is missing but the device's state ({others[0].name}) is "
                         f"there: the ε it spent is unknown")
        else:
            try:
                self._open()
                self._load()
            except (sqlite3.Error, ValueError, KeyError) as exc:
                self.lost = f"the privacy ledger {self.path} is unreadable or damaged ({exc})"
                self._close()
        if self.lost:
            log.error("%s; refusing to train until `pulsewire edge dp-reset --state-dir %s --yes`", self.lost,
                      self.state_dir)

    # ------------------------------------------------------------------------------ reading
    def _open(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db = db
        db.execute("PRAGMA journal_mode=WAL")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if existed and not {"releases", "head"} <= tables:
            raise ValueError("the ledger's tables are missing")
        db.execute("PRAGMA synchronous=FULL")
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            raise ValueError(f"integrity check: {check}")
        db.execute("BEGIN IMMEDIATE")
        db.execute("CREATE TABLE IF NOT EXISTS releases (seq INTEGER PRIMARY KEY, row TEXT NOT NULL, "
                   "hash TEXT NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS head (id INTEGER PRIMARY KEY CHECK (id = 0), length INTEGER NOT NULL, "
                   "hash TEXT NOT NULL, delta REAL NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS resets (seq INTEGER PRIMARY KEY, at REAL NOT NULL, note TEXT NOT NULL)")
        db.execute("INSERT OR IGNORE INTO head (id, length, hash, delta) VALUES (0, 0, ?, ?)",
                   (_GENESIS, self.ledger.delta))
        db.execute("COMMIT")

    def _load(self) -> None:
        length, head, delta = self._db.execute("SELECT length, hash, delta FROM head WHERE id = 0").fetchone()
        chain, rows = _GENESIS, []
        for seq, text, digest in self._db.execute("SELECT seq, row, hash FROM releases ORDER BY seq"):
            chain = _link(chain, text)
            if digest != chain:
                raise ValueError(f"release {seq} does not match the hash chain")
            rows.append(json.loads(text))
        if (len(rows), chain) != (length, head):
            raise ValueError(f"{len(rows)} releases on file, the head records {length}: rows were lost")
        self.ledger = PrivacyLedger(min(self.ledger.delta, float(delta)), rows)
        self.resets = [{"at": at, **json.loads(note)} for at, note in
                       self._db.execute("SELECT at, note FROM resets ORDER BY seq")]

    # ------------------------------------------------------------------------------ writing
    def record(self, round_: int, dp) -> dict[str, float]:
        """Add one release to the ledger and make it durable before the caller lets the update go."""
        with self._lock:
            if self.lost or self._db is None:
                raise LedgerLost(self.lost or "the privacy ledger is closed")
            row = self.ledger.record(round_, dp)
            text = json.dumps(row, sort_keys=True)
            length, head = self._db.execute("SELECT length, hash FROM head WHERE id = 0").fetchone()
            digest = _link(head, text)
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT INTO releases (seq, row, hash) VALUES (?, ?, ?)", (length + 1, text, digest))
            self._db.execute("UPDATE head SET length = ?, hash = ?, delta = ? WHERE id = 0",
                             (length + 1, digest, self.ledger.delta))
            self._db.execute("COMMIT")
            return row

    def note_reset(self, summary: dict[str, Any]) -> None:
        """Keep a reset in the ledger it started: the device's status reports how often it was reset."""
        with self._lock:
            self._db.execute("INSERT INTO resets (at, note) VALUES (?, ?)", (time.time(), json.dumps(summary)))
            self.resets.append({"at": time.time(), **summary})

    def require_intact(self) -> None:
        if self.lost:
            raise LedgerLost(self.lost)

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def reset_ledger(state_dir: Path, reason: str) -> Path | None:
    """Start a new, empty ledger in ``state_dir``; the old file (if any) is kept beside it, renamed, and the
    reset is logged and written into the new ledger. Returns where the old ledger went (None: there was none)."""
    state_dir = Path(state_dir)
    path = state_dir / LEDGER_FILE
    old = LedgerStore(state_dir, 1.0) if path.exists() else None  # what can be read of it, for the record
    summary = {"previous_rounds": len(old.ledger.rows) if old and not old.lost else None,
               "previous_epsilon": old.ledger.epsilon if old and not old.lost else None,
               "previous_state": (old.lost if old else "missing") or "intact", "reason": reason}
    if old is not None:
        old.close()
    moved = None
    if path.exists():
        moved = path.with_name(f"{path.name}.reset-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(path, moved)
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    fresh = LedgerStore(state_dir, 1.0, start_new=True)
    fresh.note_reset(summary)
    fresh.close()
    log.warning("privacy ledger of %s reset (%s); the old ledger %s", state_dir, json.dumps(summary),
                f"is kept as {moved}" if moved else "was missing")
    return moved


def _link(previous: str, text: str) -> str:
    return hashlib.sha256((previous + text).encode()).hexdigest()


def _device_state(state_dir: Path) -> list[Path]:
    """Other SQLite stores of the device (its alert spool): their presence means the device ran before."""
    if not state_dir.is_dir():
        return []
    return sorted(p for p in state_dir.glob("*.sqlite") if p.name != LEDGER_FILE)
