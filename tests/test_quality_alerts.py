"""Signal quality on the alert path: noise, flat and lead-off input never raise an alert over a real
Mosquitto, and the device status reports lead-off and poor-signal time; a record without a beat still
gets its (empty) annotation file."""
from __future__ import annotations

import queue

import numpy as np
import pytest

from broker.device_messages import decode_alert, decode_status
from broker.launcher import broker_url
from broker.topics import FleetTopics
from edge_runtime.alert_publisher import AlertPublisher
from edge_runtime.alerts import AlertBuilder
from edge_runtime.classifier import BeatClassifier
from edge_runtime.runtime import BeatResult, EdgeRuntime
from tests.test_alerts import _subscriber
from tests.test_robustness_chain import _no_ecg
from tools.cli import main


def test_unusable_beats_never_start_a_run():
    def beats(usable):
        return [BeatResult(i * 288, i * 0.8, "V", 0.9, 75.0, "v1", 0.0, 1.0 if usable else 0.1, usable)
                for i in range(6)]

    clean, poor = AlertBuilder("d1", "anon"), AlertBuilder("d2", "anon")
    assert [a["kind"] for b in beats(True) for a in clean.on_beat(b)] == ["ventricular_run"]
    assert [a for b in beats(False) for a in poor.on_beat(b)] == []


@pytest.mark.integration
@pytest.mark.slow
def test_noise_flat_and_lead_off_raise_no_alert_over_mosquitto(mosquitto, exported, tmp_path):
    """Two minutes of each input without a heart (noise of four kinds, flat, at the rail, NaN) through the
    whole device loop and a real broker: no run alert at all; the retained status counts the bad time."""
    clf = BeatClassifier.from_file(exported["int8"].tflite_path)
    topics = FleetTopics("sqi")
    sub, inbox = _subscriber(mosquitto, topics.all_alerts(), "sqi-monitor")
    kinds = ["white", "emg", "motion", "mains", "flat", "rail", "nan"]
    detected = {}
    for k, kind in enumerate(kinds):
        x = _no_ecg(kind, 360 * 120, np.random.default_rng(k))
        pub = AlertPublisher(f"sqi-{kind}", 100 + k, "sqi", broker_url(mosquitto), tmp_path / f"{kind}.sqlite", "anon")
        runtime = EdgeRuntime(clf, 360.0, [pub], status=pub.extra_status)
        pub.start()
        assert pub.link.connected.wait(10)
        stats = runtime.run(x[i:i + 360] for i in range(0, x.size, 360))
        detected[kind] = (stats.beats, stats.unusable_beats, stats.per_class, pub.sent)
    alerts = []
    while True:
        try:
            alerts.append(decode_alert(inbox.get(timeout=3))[1])
        except queue.Empty:
            break
    sub.loop_stop()
    sub.disconnect()
    assert [a for a in alerts if a["kind"] != "summary"] == [], detected
    assert sum(d[0] for d in detected.values()) > 300  # the detector did fire on the noise: quality stopped it
    statuses = {}
    for kind in kinds:
        s, box = _subscriber(mosquitto, topics.status(f"sqi-{kind}"), f"sqi-status-{kind}")
        statuses[kind] = decode_status(box.get(timeout=10))[1]
        s.loop_stop()
        s.disconnect()
    for kind in ("flat", "rail", "nan"):
        assert statuses[kind]["lead_off_s"] >= 110, statuses[kind]
    assert statuses["nan"]["invalid_samples"] == 360 * 120
    for kind in ("white", "emg", "motion", "mains"):
        assert statuses[kind]["poor_signal_s"] >= 60 and statuses[kind]["unusable_beats"] > 0, statuses[kind]


@pytest.mark.slow
def test_a_record_without_beats_writes_an_empty_annotation_file(exported, tmp_path, capsys):
    import wfdb

    (tmp_path / "flat.txt").write_text("\n".join(["0.25"] * 360 * 20) + "\n")
    code = main(["edge", "run", "--input", str(tmp_path / "flat.txt"), "--fs", "360", "--model",
                 str(exported["int8"].tflite_path), "--out", str(tmp_path / "out")])
    assert code == 0
    out = capsys.readouterr().out
    assert "no beat detected in 20.0 s" in out and "holds no annotation" in out
    ann = wfdb.rdann(str(tmp_path / "out" / "flat"), "pw")
    assert ann.sample.size == 0
