"""The fleet simulator against the real Mosquitto: a few hundred devices on asyncio connections in two
worker processes, real wire format; every acknowledged alert reaches a subscriber."""
from __future__ import annotations

import threading

import pytest

from broker.device_messages import decode_alert, decode_status
from broker.launcher import broker_url
from broker.mqtt_link import MqttLink
from broker.topics import FleetTopics
from broker.wire import decode_tensors
from tools.fleet_sim.config import FleetSimConfig
from tools.fleet_sim.device import SimDevice
from training.federated.selection import DeviceStatus


def test_config_refuses_what_cannot_run_and_shares_devices_evenly():
    with pytest.raises(ValueError, match="--workers"):
        FleetSimConfig(broker_url="mqtt://x:1", devices=40000, workers=2)
    with pytest.raises(ValueError, match="--round-devices"):
        FleetSimConfig(broker_url="mqtt://x:1", devices=10, round_devices=11)
    cfg = FleetSimConfig(broker_url="mqtt://x:1", devices=10, workers=3)
    shares = [list(cfg.worker_share(i)) for i in range(3)]
    assert [len(s) for s in shares] == [4, 3, 3] and sum(shares, []) == list(range(10))


def test_device_messages_use_the_real_wire_format():
    import datetime as dt
    import random

    dev = SimDevice.create(7, seed=0, slow_fraction=0.0)
    _, status = decode_status(dev.status_payload("fleetx"))
    assert DeviceStatus.from_status(dev.name, status).battery_pct == round(dev.battery_pct)
    before = dev.battery_pct
    dev.charging = False
    dev.advance(3600, random.Random(0))
    assert dev.battery_pct < before  # an hour of streaming drains the battery
    alert = dev.next_alert(random.Random(0), dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    header, decoded = decode_alert(dev.alert_payload("fleetx", alert))
    assert decoded == alert and header.device_id == dev.device_id
    update = decode_tensors(dev.update_payload("fleetx", 3, ((32, 5), (5,)), seed=0))
    assert [t.shape for t in update.tensors] == [(32, 5), (5,)] and update.header.round == 3


def _retained_status(url: str, topic: str) -> bytes:
    got, done = [], threading.Event()
    link = MqttLink(url, "pw-test-fleetsim-reader", [topic], lambda m: (got.append(m.payload), done.set()))
    link.start()
    try:
        assert done.wait(10), f"no retained status on {topic}"
    finally:
        link.stop()
    return got[0]


@pytest.mark.integration
def test_few_hundred_devices_with_rounds_and_slow_links_lose_no_alert(mosquitto):
    from tools.fleet_sim.run import simulate_fleet

    cfg = FleetSimConfig(broker_url=broker_url(mosquitto), fleet="simtest", devices=300, workers=2,
                         status_every_s=5, alerts_per_second=20, duration_s=14, connect_rate=400,
                         slow_fraction=0.1, round_every_s=6, round_devices=60, seed=1)
    report = simulate_fleet(cfg, broker_pid=mosquitto.pid)
    assert report["devices"]["peak_connected"] == 300 and report["devices"]["connect_failures"] == 0
    assert report["alerts"]["acked"] > 50 and report["alerts"]["lost"] == 0
    assert report["messages"]["received_by_monitor"]["status"] >= 300
    assert report["messages"]["rejected_by_monitor"] == {}
    rounds = report["rounds"]
    assert set(rounds) == {"1", "2"}
    assert all(r["updates_acked"] == r["updates_seen"] == 60 for r in rounds.values())
    assert report["resources"]["per_process"]["broker"]["peak_rss_mib"] > 0
    # the retained status of a device is what selection reads
    _, status = decode_status(_retained_status(broker_url(mosquitto), FleetTopics("simtest").status("sim000123")))
    assert DeviceStatus.from_status("sim000123", status).compute_class in ("m4", "m7", "a53")


@pytest.mark.integration
def test_churn_devices_come_and_go_and_alerts_still_arrive(mosquitto):
    from tools.fleet_sim.run import simulate_fleet

    cfg = FleetSimConfig(broker_url=broker_url(mosquitto), fleet="simchurn", devices=120, workers=1,
                         status_every_s=3, alerts_per_second=15, duration_s=10, connect_rate=400,
                         churn_online_s=3, churn_offline_s=1, seed=2)
    report = simulate_fleet(cfg)
    d = report["devices"]
    assert d["churn_leaves"] > 50 and d["connects"] > 120 + 50
    assert report["alerts"]["acked"] > 20 and report["alerts"]["lost"] == 0


def test_cli_refuses_bad_flags_with_exit_2(capsys):
    from tools.cli import main

    assert main(["simulate-fleet", "--broker", "mqtt://127.0.0.1:1", "--devices", "0"]) == 2
    assert "--devices must be at least 1" in capsys.readouterr().err
    assert main(["simulate-fleet", "--broker", "mqtt://127.0.0.1:1", "--churn", "soon"]) == 2
    assert "ONLINE_S:OFFLINE_S" in capsys.readouterr().err


@pytest.mark.integration
def test_monitor_counts_malformed_alerts_and_keeps_going(mosquitto):
    import datetime as dt
    import random
    import time

    from tools.fleet_sim.monitor import FleetMonitor

    monitor = FleetMonitor(broker_url(mosquitto), "simbad")
    monitor.start()
    try:
        dev = SimDevice.create(1, seed=0, slow_fraction=0.0)
        alert = dev.next_alert(random.Random(0), dt.datetime.now(dt.timezone.utc))
        link = MqttLink(broker_url(mosquitto), "pw-test-simbad-dev", [], lambda m: None)
        link.start()
        topic = FleetTopics("simbad").alert(dev.name)
        for payload in (b"not a pulsewire message, just forty bytes", dev.alert_payload("simbad", alert)[:-3],
                        dev.alert_payload("simbad", alert)):
            link.publish(topic, payload, qos=1).wait_for_publish(10)
        link.stop()
        deadline = time.monotonic() + 10
        while not monitor.alert_ids and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        monitor.stop()
    assert monitor.alert_ids == {alert["alert_id"]}
    assert monitor.rejected == {"bad_magic": 1, "truncated": 1}


def test_projection_arithmetic_by_hand():
    from tools.fleet_sim.projection import model_sizes, mqtt_overhead, project

    # PUBLISH: type byte + 1-byte remaining length + (2 + 3) topic + 2 packet id; PUBACK 4
    assert mqtt_overhead("a/b", 10) == 1 + 1 + 2 + 3 + 2 + 4
    assert mqtt_overhead("a/b", 200) == 1 + 2 + 2 + 3 + 2 + 4  # remaining length 209 needs 2 bytes
    sizes = model_sizes("f")
    assert sizes["update_int8_full_model"] < sizes["global_model_float32"] < 4 * 4757 + 200
    cfg = FleetSimConfig(broker_url="mqtt://x:1", fleet="f", devices=100, status_every_s=60, alerts_per_second=1)
    report = {"config": cfg.to_dict(), "messages": {"mean_bytes_by_kind": {"status": 200.0, "alert": 300.0}}}
    rows = {r["kind"]: r for r in project(report, devices=600_000, selected=6_000, round_s=600,
                                          alerts_per_device_per_hour=6)["rows"]}
    assert rows["status"]["messages_per_s"] == 10_000 and rows["alert"]["messages_per_s"] == 1_000
    assert rows["status"]["messages_per_round"] == 6_000_000
    assert rows["update (full model, int8)"]["messages_per_round"] == 6_000
    announced = rows["global model + plan to every subscribed device (as published)"]
    assert announced["messages_per_round"] == 600_000  # every device, not only the selected ones
    # the plan names 6,000 devices ("sim000000": 9 characters and JSON quoting each) on top of the weights
    assert announced["payload_bytes"] > sizes["global_model_float32"] + 6_000 * 9
    assert rows["status"]["wire_bytes"] == 200 + mqtt_overhead(FleetTopics("f").status("sim000000"), 200)
