"""What goes without the aggregator's signature in consistency rounds (ADVERTS, SHARES_FOR: authenticated end to
end by the devices) and what a device still refuses unsigned; late replies the round no longer needs."""
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.fed_messages import fleet_id
from broker.launcher import broker_url
from broker.mqtt_link import Message, MqttLink
from broker.secagg_messages import (
    SecAggMessage,
    SecAggPlan,
    SharesFor,
    Step,
    UnmaskRequest,
    decode_secagg,
    encode_secagg,
)
from broker.signing import is_signed, verify_message
from broker.topics import FleetTopics
from edge_runtime.secagg_client import SecAggParticipant
from tests.federation_helpers import initial_weights
from tests.test_secagg_mqtt import _assert_close, _plain_mean
from tests.test_secagg_plus import _secure_fleet
from training.federated.secagg_round import SecAggSettings

SESSION = 0xE2E


def _participant(consistency: int, with_key: bool = True) -> SecAggParticipant:
    keys = {i: Ed25519PrivateKey.generate() for i in range(1, 5)}
    directory = {i: k.public_key() for i, k in keys.items()}
    participant = SecAggParticipant(1, np.random.default_rng(0), keys[1] if with_key else None,
                                    directory if with_key else None)
    plan = SecAggPlan(SESSION, 2, 4, 1.0, 2.0**16, degree=2 if consistency else 0, consistency=consistency,
                      members=(1, 2, 3, 4) if consistency else ())
    participant.begin(3, plan)
    return participant


def _message(step: Step, session: int = SESSION) -> SecAggMessage:
    payload = SharesFor(1, {}) if step == Step.SHARES_FOR else UnmaskRequest((1, 2), ())
    return SecAggMessage(step, session, payload)


def test_only_end_to_end_steps_of_a_checked_consistency_round_may_come_unsigned():
    checked = _participant(consistency=3)
    assert checked.authenticates(3, _message(Step.SHARES_FOR))
    assert checked.authenticates(3, _message(Step.ADVERTS))
    assert not checked.authenticates(3, _message(Step.UNMASK_REQUEST))  # the survivor lists stay signed
    assert not checked.authenticates(3, _message(Step.SHARES_FOR, SESSION ^ 1))  # another session
    assert not checked.authenticates(4, _message(Step.SHARES_FOR))  # another round
    # honest-but-curious rounds (no consistency check) and a device that cannot run the check: everything signed
    assert not _participant(consistency=0).authenticates(3, _message(Step.SHARES_FOR))
    assert not _participant(consistency=3, with_key=False).authenticates(3, _message(Step.SHARES_FOR))


@pytest.mark.integration
def test_a_consistency_round_sends_per_device_steps_unsigned_and_devices_refuse_other_unsigned_steps(
        mosquitto, tmp_path, caplog):
    n, fleet = 8, "sa-e2e"
    url = broker_url(mosquitto)
    seen: list[tuple[str, bytes]] = []
    spy = MqttLink(url, f"{fleet}-spy", [f"pw/{fleet}/secagg/#"], lambda m: seen.append((m.topic, m.payload)))
    spy.start()
    devices: list = []
    result, aggregator = _secure_fleet(url, tmp_path, fleet, n, (6,), SecAggSettings(degree=4, threshold_fraction=0.5),
                                       devices_out=devices)
    spy.stop()
    sa = result.history[0]["secagg"]
    assert sa["failed"] is None and sa["inputs"] == n and result.rejected == {}  # late replies are not rejections
    want = [w + m for w, m in zip(initial_weights(), _plain_mean(range(n)))]
    _assert_close(result.final_weights, want, atol=n / aggregator._state.plan.scale + 1e-6)
    steps: dict[Step, set[bool]] = {}
    for _topic, payload in seen:
        _, msg = decode_secagg(payload if not is_signed(payload) else verify_message(
            payload, aggregator.signing_key.public_key()))
        steps.setdefault(msg.step, set()).add(is_signed(payload))
    assert steps[Step.ADVERTS] == {False} and steps[Step.SHARES_FOR] == {False}  # end to end: no aggregator signature
    assert steps[Step.CONFIRM_REQUEST] == {True} and steps[Step.UNMASK_REQUEST] == {True}  # the lists it vouches for
    # a forged, unsigned unmask request (everyone but the victim "dropped") is refused before it is read
    device, victim = devices[0], 2
    forged = encode_secagg(fleet_id(fleet), 1, aggregator._state.plan.session,
                           UnmaskRequest((1, *range(3, n + 1)), (victim,)))
    errors = device.errors
    with caplog.at_level("WARNING", logger="edge_runtime.fed_client"):
        device._on_secagg(Message(FleetTopics(fleet).secagg(1), forged, 0, 0))
    assert device.errors == errors + 1
    assert any("unsigned UNMASK_REQUEST" in r.getMessage() for r in caplog.records)
