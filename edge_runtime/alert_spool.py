"""A durable, ordered outbox for alerts: SQLite on the device's own storage.

An alert is written (and committed, WAL mode) before anything tries to send it and deleted only after
the broker acknowledged it (QoS 1 PUBACK). A broker outage or a power cut in between therefore loses
nothing; what was in flight at a crash is sent again after restart, with the same ``alert_id`` so the
receiver can tell the duplicate.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path


class AlertSpool:
    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                             "alert_id TEXT UNIQUE NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL)")

    def put(self, alert_id: str, topic: str, payload: bytes) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO outbox (alert_id, topic, payload) VALUES (?, ?, ?)",
                             (alert_id, topic, payload))

    def oldest(self, n: int = 1) -> list[tuple[int, str, str, bytes]]:
        """Up to ``n`` rows (seq, alert_id, topic, payload), oldest first."""
        with self._lock:
            return self._db.execute("SELECT seq, alert_id, topic, payload FROM outbox ORDER BY seq LIMIT ?",
                                    (n,)).fetchall()

    def remove(self, seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def depth(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
