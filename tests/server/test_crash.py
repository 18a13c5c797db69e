"""Nothing lost, nothing twice: a SIGKILLed server process and a restarted Mosquitto in the middle of a stream
of alerts from the real edge publisher; every alert is stored exactly once."""
from __future__ import annotations

import os
import signal

import pytest

from broker.launcher import MosquittoBroker, broker_url, free_port
from edge_runtime.alert_publisher import AlertPublisher
from edge_runtime.alerts import AlertPolicy
from edge_runtime.runtime import BeatResult
from server.repository import Store
from tests.server.conftest import wait_until
from tools.server_bench import start_server_process

pytestmark = pytest.mark.integration


class _Device:
    """The real AlertPublisher fed beats that raise one ventricular_run alert per 4 beats."""

    def __init__(self, url: str, fleet: str, spool) -> None:
        self.publisher = AlertPublisher("crashdev", 9, fleet, url, spool, "pt-crash", status_every_s=1.0,
                                        policy=AlertPolicy(summary_every_s=1e9))  # runs only, no summaries
        self.publisher.start()
        self.sample = 0
        self.alerts = 0

    def alerts_out(self, n: int) -> None:
        for _ in range(n):
            for label in ("N", "V", "V", "V"):
                self.sample += 300
                self.publisher.on_beat(BeatResult(self.sample, self.sample / 360, label, 0.9, 120.0, "m1"))
            self.alerts += 1


def _stored(db: str) -> list[str]:
    store = Store(db, migrate=False)
    with store.session() as repo:
        ids = [a.alert_id for a in repo.alerts(limit=10_000)]
    store.close()
    return ids


def test_sigkilled_server_and_restarted_broker_store_every_alert_exactly_once(tmp_path):
    broker = MosquittoBroker(state_dir=tmp_path / "mosquitto")
    broker.start()
    url, fleet, db = broker_url(broker), "crashward", str(tmp_path / "server.db")
    port = free_port()
    server = start_server_process(db, url, fleet, port, tmp_path / "server1.log")
    device = _Device(url, fleet, tmp_path / "spool.sqlite")
    try:
        device.alerts_out(25)
        wait_until(lambda: len(_stored(db)) >= 5, 30)  # the stream is flowing into the database ...
        os.kill(server.pid, signal.SIGKILL)  # ... when the server dies without a word
        server.wait()
        killed_with = len(_stored(db))
        device.alerts_out(25)  # the broker keeps these for the server's persistent session
        wait_until(lambda: device.publisher.spool.depth() == 0, 30)
        server = start_server_process(db, url, fleet, port, tmp_path / "server2.log")
        device.alerts_out(10)
        broker.restart()  # Mosquitto goes down and up again (its persistence file keeps the sessions)
        device.alerts_out(10)
        expected = device.alerts
        ids = wait_until(lambda: (s := _stored(db)) and len(s) >= expected and s, 60)
    finally:
        device.publisher.close()
        server.terminate()
        server.wait(timeout=30)
        broker.close()
    assert killed_with < 50  # the kill really happened mid-stream
    assert len(ids) == len(set(ids)) == expected == 70
    assert set(ids) == {f"crashdev-{device.publisher.builder.boot_id}-{i}" for i in range(1, 71)}
