"""Selection policies wired into the round engine: the policy named in ``RoundPolicy.selection`` decides who
trains, fed by the devices' statuses and the engine's own delivery history; fairness in every row."""
import json

import numpy as np
import pytest

from broker.fed_messages import LocalUpdate
from tests.federation_helpers import initial_weights
from training.federated.aggregator import Aggregator
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy
from training.federated.in_process import run_in_process
from training.federated.registry import make_strategy
from training.federated.round_engine import RoundEngine
from training.federated.strategies import ClientUpdate

W = [np.zeros(3, np.float32)]
STATUS = {
    "flat": {"state": "online", "battery_pct": 12, "charging": False},
    "charging": {"state": "online", "battery_pct": 15, "charging": True},
    "full": {"state": "online", "battery_pct": 95, "compute_class": "a53"},
    "half": {"state": "online", "battery_pct": 50},
    "away": {"state": "offline", "battery_pct": 100},
    "refused": {"state": "online", "consent": False},
}


def _engine(selection: str, devices=tuple(STATUS), rounds: int = 1) -> RoundEngine:
    return RoundEngine(make_strategy("fedavg"), list(devices), RoundPolicy(selection=selection), rounds,
                       [w.copy() for w in W], seed=3)


def test_power_aware_in_the_engine_skips_flat_offline_and_unconsented_devices():
    engine = _engine("power-aware:k=3")
    assert engine.open_round(STATUS)
    assert engine.selected == ["charging", "full", "half"]
    row = engine.close_round()
    assert row["fairness"] == {"jain_index": pytest.approx(0.5), "never_chosen": 3, "min_count": 0, "max_count": 1}


def test_the_uniform_policy_with_k_picks_k_of_the_eligible_devices_reproducibly():
    picks = []
    for _ in range(2):
        engine = _engine("uniform:k=2")
        engine.open_round(STATUS)
        picks.append(engine.selected)
    assert picks[0] == picks[1] and len(picks[0]) == 2
    assert set(picks[0]) <= {"flat", "charging", "full", "half"}


def test_reliability_weighting_learns_from_the_engine_which_device_delivers():
    """Over 40 rounds of one device each, a device that never delivers is asked less and less."""
    engine = _engine("reliability-weighted:k=1", devices=("steady", "flaky"), rounds=40)
    for _ in range(40):
        engine.open_round()
        if engine.selected == ["steady"]:
            engine.accept("steady", engine.round, ClientUpdate("steady", [np.ones(3, np.float32)], 5))
        engine.close_round()
    counts = engine.book.selected
    assert counts["steady"] + counts["flaky"] == 40
    assert counts["steady"] > 3 * counts["flaky"] and counts["flaky"] >= 1
    assert engine.history[-1]["fairness"]["jain_index"] < 0.8


def test_a_malformed_status_is_counted_and_the_device_judged_on_defaults():
    engine = _engine("power-aware", devices=("ok", "garbled"))
    engine.open_round({"ok": {"state": "online"}, "garbled": {"state": "online", "battery_pct": "lots"}})
    assert engine.selected == ["garbled", "ok"] and engine.rejected["bad_status"] == 1


def test_oort_in_process_prefers_the_device_with_the_higher_loss_once_measured():
    class Loss:
        def __init__(self, loss: float) -> None:
            self.loss = loss

        def fit(self, model):
            return LocalUpdate([np.zeros(3, np.float32)], num_examples=10, local_steps=1, train_loss=self.loss)

    names = [f"d{k}" for k in range(6)]
    devices = {n: Loss(3.0 if n == "d5" else 0.1) for n in names}
    engine = RoundEngine(make_strategy("fedavg"), names, RoundPolicy(selection="oort:k=2,explore=0.5"), 12,
                         [w.copy() for w in W], seed=1)
    run_in_process(engine, devices)
    # one slot a round explores until every device is measured; then d5's utility (10 x 3.0) wins
    assert engine.book.selected["d5"] >= 6
    assert all(row["selected"] == 2 for row in engine.history)


def test_the_aggregator_writes_how_often_each_device_was_chosen(tmp_path):
    cfg = AggregatorConfig("fair", {"a": 1, "b": 2, "c": 3}, rounds=2, policy=RoundPolicy(selection="uniform:k=2"))
    agg = Aggregator(cfg, initial_weights(), "mqtt://127.0.0.1:1", tmp_path)
    agg.engine.open_round({})
    agg._open_log()
    agg._close_round()
    written = json.loads((tmp_path / "selection.json").read_text())
    assert sum(written["counts"].values()) == 2 and written["rounds"] == 1 and written["never_chosen"] == 1
    assert json.loads((tmp_path / "rounds.json").read_text())[0]["fairness"]["never_chosen"] == 1


def test_a_wrong_selection_spec_says_what_to_write():
    for bad in ("oort:k=0", "best", "power-aware:min_battery_pct=200", "uniform:k=2,fraction=0.5"):
        with pytest.raises(ValueError):
            RoundPolicy(selection=bad)


def test_the_first_round_is_drawn_from_the_retained_statuses_not_an_empty_book(mosquitto, tmp_path):
    """Devices' statuses are retained on the broker; a freshly started aggregator takes them in before it draws
    round 1, so a device without consent or with a flat battery is not asked (it used to be: the book was
    empty when round 1 was drawn, and every device was judged on defaults)."""
    import paho.mqtt.client as mqtt

    from broker.device_messages import encode_status
    from broker.topics import FleetTopics

    fleet, ids = "settle", {name: k + 1 for k, name in enumerate(STATUS)}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="settle-devices")
    host, port = mosquitto.host, mosquitto.port
    client.connect(host, port)
    client.loop_start()
    try:
        for name, status in STATUS.items():
            client.publish(FleetTopics(fleet).status(name), encode_status(fleet, ids[name], status), qos=1,
                           retain=True).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()
    cfg = AggregatorConfig(fleet, ids, rounds=1, policy=RoundPolicy(selection="power-aware:k=3"),
                           honour_consent=False)
    agg = Aggregator(cfg, initial_weights(), f"mqtt://{host}:{port}", tmp_path)
    agg.link.start()
    try:
        agg._settle_statuses(10.0)
        assert set(agg.status) == set(STATUS)
        assert agg.open_round()
        assert set(agg.selected) == {"charging", "full", "half"}
    finally:
        agg.link.stop()
