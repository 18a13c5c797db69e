"""A deployed fleet, as a team would start it: `fleet init`, enrolled devices, the generated TLS + ACL Mosquitto
config, an aggregator process and `edge run --join` processes; clinician labels, restarts and rollbacks."""
import getpass
import json
import queue
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import wfdb

from broker.fleet_config import DeviceBundle, FleetSettings
from broker.launcher import MosquittoBroker, free_port
from broker.mqtt_link import BrokerSettings, MqttLink
from broker.topics import FleetTopics
from tools.cli import main

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
DEVICES = {"d1": "208", "d2": "119", "d3": "106"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, mitdb_dir):
    """`pulsewire fleet init` + three enrolled devices, and Mosquitto running the generated config."""
    root = tmp_path_factory.mktemp("deploy")
    port = free_port()
    assert main(["fleet", "init", "ward", "--dir", str(root / "fleet"), "--host", "127.0.0.1", "--port", str(port),
                 "--listen", "127.0.0.1", "--broker-user", getpass.getuser()]) == 0
    for name in DEVICES:
        assert main(["device", "enroll", name, "--fleet-dir", str(root / "fleet")]) == 0
    for name, record in DEVICES.items():  # 40 s of each wearer's ECG, as a text stream
        signal_mv = wfdb.rdrecord(str(mitdb_dir / record), sampto=360 * 40, channels=[0]).p_signal[:, 0]
        np.savetxt(root / f"{name}.txt", signal_mv, fmt="%.3f")
    settings = FleetSettings.load(root / "fleet")
    broker = MosquittoBroker(port=port, state_dir=settings.broker_folder / "state",
                             config=settings.broker_folder / "mosquitto.conf")
    broker.start()
    yield root, settings, broker
    broker.close()


def _device(root: Path, name: str, model: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    log = root / f"{name}-{time.monotonic_ns()}.err"
    proc = subprocess.Popen([sys.executable, "-m", "tools.cli", "edge", "run", "--join", "--bundle",
                             str(root / "fleet" / "devices" / f"{name}.pwdevice"), "--model", str(model),
                             "--input", str(root / f"{name}.txt"), "--fs", "360", "--out", str(root / "out" / name),
                             *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
    return proc, log


def _wait_for(predicate, what: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _stop(proc: subprocess.Popen) -> dict:
    """SIGTERM as a service manager sends it; the device prints its summary on the way out."""
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return json.loads(out[:out.rindex("}") + 1])


def _csv_beats(root: Path, name: str) -> tuple[list[str], list[str], list[str]]:
    rows = (root / "out" / name / f"{name}.csv").read_text().splitlines()[1:]
    cols = [r.split(",") for r in rows]
    return [c[0] for c in cols], [c[2] for c in cols], [c[5] for c in cols]


def _label(root: Path, name: str, beats: list[str], labels: list[str]) -> None:
    assert main(["label", "--fleet-config", str(root / "fleet"), "--device", name, "--alert", f"{name}-a1",
                 "--beats", *beats, "--labels", *labels]) == 0


def _aggregate(root: Path, model: Path, run_dir: str, *extra: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "aggregate", "--fleet-config", str(root / "fleet"),
                           "--model", str(model), "--run-dir", str(root / run_dir), "--deadline", "60", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[0])


def test_devices_learn_from_labels_join_rounds_and_keep_their_head_across_a_restart(fleet, exported):
    root, settings, _ = fleet
    model = exported["int8"].tflite_path
    alerts = queue.Queue()  # the clinic's view: alerts of every device, through the TLS broker and its ACL
    clinic = _link(settings.broker("clinic"), "t-clinic", [FleetTopics("ward").all_alerts()], alerts)
    devices = {name: _device(root, name, model, "--consent") for name in DEVICES}
    for name, (_, log) in devices.items():
        _wait_for(lambda log=log: "input ended" in log.read_text(), f"{name} to classify its stream")
    _wait_for(lambda: alerts.qsize() >= 3, "the devices' alerts", 30)
    assert {t for t, _ in _drain(alerts, 0.5)} == {FleetTopics("ward").alert(name) for name in DEVICES}
    clinic.stop()
    for name in DEVICES:  # the clinician confirms the first 30 beats of each device's alert
        beats, classes, _ = _csv_beats(root, name)
        _label(root, name, beats[:30], classes[:30])
    for name in DEVICES:
        _wait_for(lambda name=name: (root / "fleet" / "devices" / f"{name}.state" / "head.npz").is_file(),
                  f"{name} to personalize its head")

    result = _aggregate(root, model, "run", "--rounds", "2", "--eval-records", "100", "--eval-max-beats", "300")
    assert result["participants"] == [3, 3] and result["rejected"] == {}
    assert len(result["val_macro_f1"]) == 2 and (root / "run" / "head_best.npz").is_file()
    summaries = {name: _stop(proc) for name, (proc, _) in devices.items()}
    for name, summary in summaries.items():
        assert summary["fleet"]["rounds_sent"] == [1, 2], name
        assert summary["fleet"]["labelled_beats"] == 30 and summary["fleet"]["personalized_head"]

    # d1 restarts: the personalized head serves from its first beat, and its delta enters the resumed round 3
    proc, log = _device(root, "d1", model, "--consent")
    _wait_for(lambda: "input ended" in log.read_text(), "d1 to classify after its restart")
    versions = set(_csv_beats(root, "d1")[2])
    assert versions == {f"{exported['int8'].metadata.model_version}+personal"}
    resumed = _aggregate(root, model, "run", "--rounds", "3", "--devices", "d1:1")
    assert resumed["participants"] == [3, 3, 1]
    assert 3 in _stop(proc)["fleet"]["rounds_sent"]

    # the wearer's choice: --population-head serves the model's own head, the labels stay on the device
    proc, log = _device(root, "d1", model, "--population-head")
    _wait_for(lambda: "input ended" in log.read_text(), "d1 with the population head")
    assert set(_csv_beats(root, "d1")[2]) == {exported["int8"].metadata.model_version}
    assert _stop(proc)["fleet"]["labelled_beats"] == 30


def _link(settings: BrokerSettings, client_id: str, subscriptions=(), inbox=None, timeout_s: float = 10) -> MqttLink:
    link = MqttLink(settings, client_id, list(subscriptions),
                    (lambda m: inbox.put((m.topic, m.payload))) if inbox is not None else (lambda m: None))
    link.start(timeout_s=timeout_s)
    return link


def _device_settings(root: Path, name: str) -> BrokerSettings:
    bundle = DeviceBundle.load(root / "fleet" / "devices" / f"{name}.pwdevice")
    return bundle.materialize(root / f"tls-{name}")


def _drain(inbox: queue.Queue, wait_s: float = 1.0) -> list:
    time.sleep(wait_s)
    got = []
    while not inbox.empty():
        got.append(inbox.get())
    return got


def test_labels_reach_only_their_device_and_devices_write_only_their_topics(fleet):
    root, settings, _ = fleet
    topics = FleetTopics("ward")
    inbox1, inbox2, agg_inbox = queue.Queue(), queue.Queue(), queue.Queue()
    d1 = _link(_device_settings(root, "d1"), "t-d1", [topics.label("d1")], inbox1)
    # d2 asks for every label topic: the broker's ACL, not the subscription, must keep d1's labels from it
    d2 = _link(_device_settings(root, "d2"), "t-d2", ["pw/ward/label/#"], inbox2)
    agg = _link(settings.broker("aggregator"), "t-agg", [topics.all_updates(), topics.all_alerts()], agg_inbox)
    time.sleep(0.3)
    _label(root, "d1", ["100", "200"], ["N", "V"])
    d2.publish(topics.update(1, "d1"), b"update forged by d2", qos=1).wait_for_publish(5)
    d2.publish(topics.alert("d1"), b"alert forged by d2", qos=1).wait_for_publish(5)
    d2.publish(topics.label("d1"), b"labels forged by d2", qos=1).wait_for_publish(5)
    d2.publish(topics.update(1, "d2"), b"d2's own update", qos=1).wait_for_publish(5)
    got1, got2, got_agg = _drain(inbox1), _drain(inbox2, 0), _drain(agg_inbox, 0)
    # the retained labels of earlier tests may come too; nothing forged by d2 does
    assert got1 and all(t == topics.label("d1") and p.startswith(b"PWDOC1") for t, p in got1)
    assert all(t == topics.label("d2") for t, _ in got2)  # at most its own retained labels: never d1's
    assert got_agg == [(topics.update(1, "d2"), b"d2's own update")]
    for link in (d1, d2, agg):
        link.stop()


def test_clients_without_a_fleet_certificate_are_refused(fleet, tmp_path):
    root, settings, _ = fleet
    url = settings.broker_url
    with pytest.raises(Exception, match="no MQTT connection"):  # TLS, but no client certificate
        _link(BrokerSettings(url, str(settings.ca_cert)), "t-nocert", timeout_s=3).stop()
    assert main(["fleet", "init", "other", "--dir", str(tmp_path / "other"), "--host", "127.0.0.1"]) == 0
    assert main(["device", "enroll", "d1", "--fleet-dir", str(tmp_path / "other")]) == 0
    foreign = DeviceBundle.load(tmp_path / "other" / "devices" / "d1.pwdevice").materialize(tmp_path / "tls", url)
    with pytest.raises(Exception, match="no MQTT connection"):  # a device certificate of another fleet's CA
        _link(BrokerSettings(url, str(settings.ca_cert), foreign.cert, foreign.key), "t-foreign", timeout_s=3).stop()
    with pytest.raises(Exception, match="no MQTT connection"):  # plain MQTT on the TLS port
        _link(BrokerSettings(url.replace("mqtts://", "mqtt://")), "t-plain", timeout_s=3).stop()


def test_a_rollback_sticks_across_a_reconnect_and_a_restart(fleet, exported, tmp_path):
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from edge_runtime.model_store import ModelStore
    from edge_runtime.release_listener import ReleaseListener
    from edge_runtime.runtime import EdgeRuntime

    root, settings, _ = fleet
    model, fleet_dir = str(exported["int8"].tflite_path), str(root / "fleet")
    # first install from a signed release file: the device never holds the signing key
    assert main(["release", "--fleet-config", fleet_dir, "--model", model, "--version", "1",
                 "--out", str(tmp_path / "v1.pwrel")]) == 0
    assert main(["edge", "install", "--release", str(tmp_path / "v1.pwrel"), "--models", str(tmp_path / "models"),
                 "--pubkey", str(settings.signing_pub), "--fleet", "ward"]) == 0
    public = load_pem_public_key(settings.signing_pub.read_bytes())
    store = ModelStore(tmp_path / "models", public, "ward")
    runtime = EdgeRuntime(store.load_current(), 360.0, [])
    swapped = []

    def on_installed(classifier):
        runtime.swap_classifier(classifier)
        swapped.append(classifier)

    device = _device_settings(root, "d3")
    listener = ReleaseListener(store, device, "ward", "d3", on_installed)
    listener.start()
    assert main(["release", "--fleet-config", fleet_dir, "--model", model, "--version", "2"]) == 0
    _wait_for(lambda: store.current_version() == 2 and len(swapped) == 1, "release 2 to install", 30)
    assert main(["release", "rollback", "--fleet-config", fleet_dir, "--version", "1"]) == 0  # revokes the retained 2
    _wait_for(lambda: len(swapped) == 2, "the rollback to version 1", 30)
    assert store.current_version() == 1 and runtime.classifier is swapped[-1]
    listener.stop()

    # reconnect after a restart: the retained release 2 arrives again and must stay refused
    store = ModelStore(tmp_path / "models", public, "ward")
    listener = ReleaseListener(store, device, "ward", "d3", on_installed)
    listener.start()
    _wait_for(lambda: len(listener.verdicts) >= 2, "the retained release and pin after the reconnect", 30)
    assert store.current_version() == 1
    assert {v.reason for v in listener.verdicts} == {"revoked", "pin_already_applied"}
    assert len(swapped) == 2  # nothing was swapped in
    # a pin is not a freeze: the next release installs
    assert main(["release", "--fleet-config", fleet_dir, "--model", model, "--version", "3"]) == 0
    _wait_for(lambda: store.current_version() == 3, "release 3 to install", 30)
    listener.stop()


def test_a_device_enrolled_while_the_broker_runs_works_after_an_acl_reload(fleet):
    root, settings, broker = fleet
    assert main(["device", "enroll", "d4", "--fleet-dir", str(root / "fleet")]) == 0
    broker.reload()  # what `kill -HUP` does: the new ACL block, no restart
    time.sleep(0.5)
    alerts = queue.Queue()
    clinic = _link(settings.broker("clinic"), "t-clinic-d4", [FleetTopics("ward").all_alerts()], alerts)
    d4 = _link(_device_settings(root, "d4"), "t-d4")
    time.sleep(0.3)
    d4.publish(FleetTopics("ward").alert("d4"), b"first alert of d4", qos=1).wait_for_publish(5)
    assert _drain(alerts) == [(FleetTopics("ward").alert("d4"), b"first alert of d4")]
    assert FleetSettings.load(root / "fleet").devices["d4"] == 4
    for link in (clinic, d4):
        link.stop()


def test_the_dashboard_rolls_back_and_labels_through_the_generated_acl(fleet, tmp_path):
    """The fleet server as deployed: ingest as the clinic identity, pins published as the aggregator (the ACL
    lets only it write pins), labels as the clinic: both reach the devices and verify with the fleet's keys."""
    from broker.clinician_labels import verify_labels
    from broker.device_messages import encode_alert
    from broker.model_pin import verify_pin
    from broker.model_release import Release, load_private_key, load_public_key, sign_release
    from tests.server.conftest import PASSWORD, start_server, wait_until
    from tools.server_bench import DashboardClient

    root, settings, _ = fleet
    topics = FleetTopics("ward")
    signing = load_private_key(settings.signing_key)
    rs, stop = start_server(str(tmp_path / "server.db"), settings.broker("clinic"), "ward",
                            release_key=load_public_key(settings.signing_pub), release_signing_key=signing,
                            labels_key=load_private_key(settings.labels_key),
                            aggregator_broker=settings.broker("aggregator"))
    inbox = queue.Queue()
    d1 = _link(_device_settings(root, "d1"), "t-d1-dash", [topics.pin(), topics.label("d1")], inbox)
    agg = _link(settings.broker("aggregator"), "t-agg-dash")
    try:
        for version in (90, 91):
            agg.publish(topics.release(), sign_release(Release("ward", version, b"m", b"{}", "d"), signing),
                        qos=1, retain=True).wait_for_publish(5)
        strip = {"fs_hz": 360, "gain": 200, "start": 700, "samples": [0, 50, 0] * 100, "beats": [[1, "N"], [151, "V"]]}
        alert = {"alert_id": "d1-dash-1", "device": "d1", "patient": "pt1", "kind": "ventricular_run",
                 "time": "2026-11-26T09:00:00Z", "beat_index": 851, "beats": 1, "class": "V",
                 "confidence_permille": 900, "heart_rate_bpm": 80, "model_version": "1", "schema": 1, "strip": strip}
        d1.publish(topics.alert("d1"), encode_alert("ward", settings.devices["d1"], alert), qos=1).wait_for_publish(5)
        ed, clara = DashboardClient(rs.host, rs.port), DashboardClient(rs.host, rs.port)
        assert ed.login("ed", PASSWORD) and clara.login("clara", PASSWORD)
        wait_until(lambda: {90, 91} <= {r["version"] for r in ed.get_json("/api/releases")["releases"]})
        wait_until(lambda: clara.get_json("/api/alerts")["alerts"])
        _drain(inbox, 0.3)  # the retained pin and labels of earlier tests
        json_post = {"Content-Type": "application/json"}
        resp, body = ed.request("POST", "/api/releases/rollback", b'{"version": 90}', json_post)
        assert resp.status == 200, body
        resp, body = clara.request("POST", "/api/alerts/d1-dash-1/labels", b'{"beats": [701, 851], "labels": ["N", "S"]}',
                                   json_post)
        assert resp.status == 200, body
        got = dict(_drain(inbox, 1.0))
        pin = verify_pin(got[topics.pin()], load_public_key(settings.signing_pub))
        assert pin.version == 90 and 91 in pin.revoked
        labels = verify_labels(got[topics.label("d1")], load_public_key(settings.labels_pub), "ward", "d1")
        assert (labels.beats, labels.labels) == ((701, 851), ("N", "S"))
    finally:
        d1.stop()
        agg.stop()
        stop()
