"""Training consent honoured by the aggregator's selection, over a real Mosquitto with the real aggregator and
device clients: the retained consent records and the devices' statuses (which name their wearer) are read
before the first round, a device whose patient refused training is never selected (not even asked, so it
does not decline either), and a withdrawal between rounds takes that device out of the next round.
"""
from __future__ import annotations

import pytest

from broker.consent import Consent, encode_consent
from broker.launcher import broker_url
from broker.mqtt_link import MqttLink
from broker.topics import FleetTopics
from edge_runtime.consent_gate import ConsentGate
from tests.federation_helpers import REGISTRY, expected_fedavg, wait_until
from tests.test_federation_mqtt import Federation, _assert_weights
from training.federated.aggregator_config import RoundPolicy
from training.federated.consent_watch import ConsentWatch

pytestmark = pytest.mark.integration

PATIENTS = {"dev-a": "pt-a", "dev-b": "pt-b", "dev-c": "pt-c"}


def test_the_aggregator_never_selects_a_device_whose_patient_withdrew(mosquitto, tmp_path):
    url, fleet = broker_url(mosquitto), "consentsel"
    topics = FleetTopics(fleet)
    clinic = MqttLink(url, "clinic-consent", [], lambda _m: None)
    clinic.start()

    def record(patient: str, training: bool, version: int) -> None:
        data = encode_consent(Consent(fleet, patient, training, False, version, "2026-11-26T09:00:00+00:00"))
        info = clinic.publish(topics.consent(patient), data, qos=1, retain=True)
        info.wait_for_publish(10)

    for patient, training in (("pt-a", True), ("pt-b", True), ("pt-c", False)):
        record(patient, training, 1)
    fed = Federation(mosquitto, tmp_path, fleet, rounds=2, policy=RoundPolicy(deadline_s=60))
    gates = {name: ConsentGate(fleet, name, PATIENTS[name], url) for name in REGISTRY}
    for name, gate in gates.items():
        gate.start()
        fed.devices[name].consent = gate  # the device side of the same rule: it names its wearer in its status
    for gate in gates.values():
        wait_until(gate.heard.is_set, 20, "the retained consent record")
    for d in fed.devices.values():
        d.start()
    watch = ConsentWatch(fleet, url)  # what the aggregator will see: the statuses name the patients
    watch.start()
    wait_until(lambda: watch.withdrawn() == {"dev-c"}, 20, "dev-c's withdrawal")
    watch.stop()

    def withdraw_b(row: dict) -> None:  # between round 1 and round 2, pt-b withdraws
        if row["round"] == 1:
            record("pt-b", False, 2)
            wait_until(lambda: fed.aggregator.consent.withdrawn() == {"dev-b", "dev-c"}, 20, "pt-b's withdrawal")

    fed.aggregator.on_round = withdraw_b
    fed._thread.start()
    try:
        result = fed.finish(timeout_s=90)
    finally:
        for gate in gates.values():
            gate.stop()
        for patient in PATIENTS.values():
            clinic.publish(topics.consent(patient), b"", qos=1, retain=True).wait_for_publish(10)
        clinic.stop()
    assert [h["selected"] for h in result.history] == [2, 1]
    assert [h["participants"] for h in result.history] == [2, 1]
    assert [h["declined"] for h in result.history] == [0, 0]  # never asked, so nothing to decline
    _assert_weights(result.final_weights, expected_fedavg(2, participants=[[0, 1], [0]]))
