"""The fleet folder and device bundles (`fleet init`, `device enroll`), signed pins and labels, without a broker."""
import stat

import pytest
from cryptography.hazmat.primitives import serialization

from broker.clinician_labels import BeatLabels, sign_labels, verify_labels
from broker.fleet_bootstrap import enroll_device, init_fleet
from broker.fleet_config import DeviceBundle, FleetConfigError, FleetSettings
from broker.model_pin import Pin, sign_pin, verify_pin
from broker.model_release import ReleaseError, load_private_key
from broker.mqtt_link import BrokerSettings
from broker.wire import WireError


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fleet") / "ward"
    settings = init_fleet(folder, "ward", "127.0.0.1", 18883)
    settings, _ = enroll_device(settings, "d1")
    settings, _ = enroll_device(settings, "d2", 42)
    return FleetSettings.load(folder)


def _private_pems(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*.key")}


def test_enrolled_devices_are_in_the_config_and_the_acl(fleet):
    assert fleet.devices == {"d1": 1, "d2": 42}
    acl = (fleet.broker_folder / "acl").read_text()
    assert "user d1\n" in acl and "topic read pw/ward/label/d2" in acl and "topic write pw/ward/label/+" in acl
    assert "topic write pw/ward/firmware" in acl and "topic read pw/ward/pin" in acl


def test_private_keys_stay_in_their_folders_and_bundles_hold_only_their_own(fleet):
    keys = _private_pems(fleet.folder)
    assert set(keys) == {"ca/ca.key", "broker/server.key", "aggregator/aggregator.key", "aggregator/signing.key",
                         "clinic/clinic.key", "clinic/labels.key"}
    for name in keys:
        assert stat.S_IMODE((fleet.folder / name).stat().st_mode) == 0o600
    bundle_text = fleet.bundle("d1").read_text()
    assert stat.S_IMODE(fleet.bundle("d1").stat().st_mode) == 0o600
    for name, pem in keys.items():  # no fleet secret travels to a device
        body = b"".join(pem.splitlines()[1:-1]).decode()
        assert body not in bundle_text.replace("\n", ""), name
    d1, d2 = DeviceBundle.load(fleet.bundle("d1")), DeviceBundle.load(fleet.bundle("d2"))
    assert d1.key_pem != d2.key_pem and d1.update_key_pem != d2.update_key_pem
    assert d1.signing_pub_pem == fleet.signing_pub.read_text() and d2.device_id == 42
    # the device's update key is the one the aggregator will check
    update_pub = serialization.load_pem_private_key(d1.update_key_pem.encode(), None).public_key()
    assert update_pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo) == \
        fleet.device_pub("d1").read_bytes()


def test_bundles_materialize_tls_settings(fleet, tmp_path):
    settings = DeviceBundle.load(fleet.bundle("d1")).materialize(tmp_path / "tls")
    assert settings.url == "mqtts://127.0.0.1:18883" and settings.tls is not None
    assert stat.S_IMODE((tmp_path / "tls" / "device.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("name, expected", [("aggregator", "reserved"), ("d1", "already enrolled"),
                                            ("bad/name", "letters, digits")])
def test_enrolment_refuses_reserved_duplicate_and_hostile_names(fleet, name, expected):
    with pytest.raises(FleetConfigError, match=expected):
        enroll_device(fleet, name)


def test_init_refuses_to_overwrite_a_fleet(fleet):
    with pytest.raises(FleetConfigError, match="already holds a fleet"):
        init_fleet(fleet.folder, "ward")


@pytest.mark.parametrize("text, expected", [
    ("[fleet]\nname = 'ward'\n", "broker_url"),
    ("[fleet]\nname = 'ward'\nbroker_url = 'http://x'\n", "not understood"),
    ("[fleet]\nname = 'w/x'\nbroker_url = 'mqtts://x:1'\n", "letters, digits"),
    ("[fleet]\nname = 'ward'\nbroker_url = 'mqtts://x:1'\n[devices]\na = 1\nb = 1\n", "share an id"),
    ("[fleet\n", "not valid TOML"),
])
def test_fleet_config_says_what_to_fix(tmp_path, text, expected):
    (tmp_path / "fleet.toml").write_text(text)
    with pytest.raises(FleetConfigError, match=expected):
        FleetSettings.load(tmp_path)


@pytest.mark.parametrize("kwargs, expected", [
    ({"url": "mqtts://h:1"}, "--ca"),
    ({"url": "mqtt://h:1", "ca": __file__}, "use mqtts://"),
    ({"url": "mqtts://h:1", "ca": __file__, "cert": __file__}, "together"),
    ({"url": "mqtts://h:1", "ca": "/nonexistent/ca.crt"}, "not found"),
])
def test_broker_settings_say_what_to_fix(kwargs, expected):
    with pytest.raises(ValueError, match=expected):
        BrokerSettings(**kwargs)


def test_pins_and_labels_verify_only_for_their_key_kind_and_device(fleet):
    signing, labels_key = load_private_key(fleet.signing_key), load_private_key(fleet.labels_key)
    pin = sign_pin(Pin("ward", 1, (2,), 5), signing)
    assert verify_pin(pin, signing.public_key()) == Pin("ward", 1, (2,), 5)
    with pytest.raises(ReleaseError, match="bad_signature"):
        verify_pin(pin, labels_key.public_key())
    with pytest.raises(ReleaseError, match="corrupt|bad_signature"):
        verify_pin(pin[:-1] + bytes([pin[-1] ^ 1]), signing.public_key())
    doc = sign_labels(BeatLabels("ward", "d1", "a1", (10, 20), ("N", "V"), 7), labels_key)
    assert verify_labels(doc, labels_key.public_key(), "ward", "d1").labels == ("N", "V")
    with pytest.raises(WireError, match="wrong_device"):
        verify_labels(doc, labels_key.public_key(), "ward", "d2")
    with pytest.raises(WireError, match="wrong_kind"):  # a label document is never a pin, even with the right key
        verify_pin(sign_labels(BeatLabels("ward", "d1", "a1", (1,), ("N",), 7), signing), signing.public_key())
    with pytest.raises(ValueError, match="one label per beat"):
        BeatLabels("ward", "d1", "a1", (1, 2), ("N",), 1)
    with pytest.raises(ValueError, match="both pinned and revoked"):
        Pin("ward", 2, (2,), 1)
