"""Signed model releases: only a verified, newer, compatible, working model replaces the running one."""
import dataclasses
import threading
import time

import paho.mqtt.client as mqtt

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.model_release import Release, ReleaseError, generate_keys, load_private_key, load_public_key, \
    sign_release, verify_release
from broker.launcher import broker_url
from broker.topics import FleetTopics
from edge_runtime.model_metadata import ModelMetadata, metadata_path_for
from edge_runtime.model_store import ModelStore
from edge_runtime.release_listener import ReleaseListener
from edge_runtime.signal_config import SignalConfig

pytestmark = pytest.mark.slow  # uses the session's trained model


@pytest.fixture
def keys(tmp_path):
    private, public = generate_keys(tmp_path / "keys")
    return load_private_key(private), load_public_key(public)


def _release(exported, version, metadata=None, model=None, fleet="ward"):
    path = exported["int8"].tflite_path
    meta = metadata or ModelMetadata.load(metadata_path_for(path))
    return Release(fleet, version, model if model is not None else path.read_bytes(), meta.to_json().encode(),
                   meta.signal.digest())


def test_valid_release_installs_and_rolls_back(exported, keys, tmp_path):
    private, public = keys
    store = ModelStore(tmp_path / "models", public, "ward")
    assert store.consider(sign_release(_release(exported, 1), private)).accepted
    assert store.consider(sign_release(_release(exported, 2), private)).to_dict() == \
        {"accepted": True, "version": 2, "reason": "installed"}
    assert store.current_version() == 2
    clf = store.load_current()
    test = exported["test"]
    assert clf.predict(test.waves[:20], test.rr[:20]).shape == (20,)
    assert store.rollback() == 1 and store.current_version() == 1


@pytest.mark.parametrize("case, reason", [
    ("unsigned", "corrupt"), ("wrong_key", "bad_signature"), ("older", "not_newer"), ("same", "not_newer"),
    ("other_fleet", "wrong_fleet"), ("pipeline", "pipeline_mismatch"), ("garbage_model", "smoke_failed"),
    ("tampered", "bad_signature"),
])
def test_bad_releases_are_refused_and_the_old_model_keeps_running(exported, keys, tmp_path, case, reason):
    private, public = keys
    store = ModelStore(tmp_path / "models", public, "ward")
    assert store.consider(sign_release(_release(exported, 5), private)).accepted
    meta = ModelMetadata.load(metadata_path_for(exported["int8"].tflite_path))
    data = {
        "unsigned": lambda: b"hello",
        "wrong_key": lambda: sign_release(_release(exported, 6), Ed25519PrivateKey.generate()),
        "older": lambda: sign_release(_release(exported, 4), private),
        "same": lambda: sign_release(_release(exported, 5), private),
        "other_fleet": lambda: sign_release(_release(exported, 6, fleet="icu"), private),
        "pipeline": lambda: sign_release(_release(exported, 6, dataclasses.replace(
            meta, signal=dataclasses.replace(SignalConfig(), band_high_hz=35.0))), private),
        "garbage_model": lambda: sign_release(_release(exported, 6, model=b"\0" * 2048), private),
        "tampered": lambda: _flip_byte(sign_release(_release(exported, 6), private)),
    }[case]()
    verdict = store.consider(data)
    assert not verdict.accepted and verdict.reason == reason
    assert store.current_version() == 5
    test = exported["test"]
    assert store.load_current().predict(test.waves[:5], test.rr[:5]).shape == (5,)


def _flip_byte(data: bytes) -> bytes:
    raw = bytearray(data)
    raw[len(raw) // 2] ^= 0xFF
    return bytes(raw)


def test_verify_rejects_truncation_and_size(keys):
    private, public = keys
    data = sign_release(Release("ward", 1, b"m" * 10, b"{}", "x"), private)
    assert verify_release(data, public).model == b"m" * 10
    with pytest.raises(ReleaseError):
        verify_release(data[:-1], public)
    with pytest.raises(ReleaseError) as err:
        verify_release(b"PWREL1" + bytes(5 * 1024 * 1024), public)
    assert err.value.reason == "oversized"


@pytest.mark.integration
def test_release_published_over_mosquitto_reaches_the_device(exported, keys, tmp_path, mosquitto):
    private, public = keys
    store = ModelStore(tmp_path / "models", public, "ward")
    installed = threading.Event()
    listener = ReleaseListener(store, broker_url(mosquitto), "ward", "p1", lambda clf: installed.set())
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="aggregator-releases")
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    pub.publish(FleetTopics("ward").release(), sign_release(_release(exported, 3), private), qos=1,
                retain=True).wait_for_publish(10)
    listener.start()  # comes online after the release: the retained copy reaches it
    try:
        assert installed.wait(20) and store.current_version() == 3
        pub.publish(FleetTopics("ward").release(), sign_release(_release(exported, 2), private), qos=1,
                    retain=True).wait_for_publish(10)
        deadline = time.monotonic() + 10
        while len(listener.verdicts) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listener.verdicts[-1].reason == "not_newer" and store.current_version() == 3
    finally:
        listener.stop()
        pub.loop_stop()
        pub.disconnect()
