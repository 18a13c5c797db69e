"""The anomaly task: score/threshold/AUC arithmetic on hand-made scores, the real MIT-BIH slice (training sees
only N beats), bad inputs, and the device-side monitor flagging a real ventricular stretch."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.anomaly_score import AnomalyScoring
from edge_runtime.signal_config import RR_FEATURE_NAMES
from training.tasks.anomaly_metrics import aucs, choose_percentile, detection, roc_auc, threshold_at

N_RR = len(RR_FEATURE_NAMES)


# ---------------------------------------------------------------- arithmetic on hand-made scores
def test_roc_auc_counts_pairs_and_ties():
    assert roc_auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert roc_auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert roc_auc([1.0, 3.0], [2.0]) == 0.5  # one pair won, one lost
    assert roc_auc([2.0], [2.0, 2.0]) == 0.5  # ties count one half
    assert roc_auc([2.0, 5.0], [1.0, 2.0, 6.0]) == pytest.approx((1 + 0.5 + 0 + 1 + 1 + 0) / 6)
    assert math.isnan(roc_auc([], [1.0]))
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([np.nan], [1.0])


def test_threshold_and_detection_at_it():
    normal = np.arange(1, 101, dtype=float)
    assert threshold_at(normal, 90) == pytest.approx(90.1)
    with pytest.raises(ValueError, match="percentile"):
        threshold_at(normal, 100)
    with pytest.raises(ValueError, match="no normal beats"):
        threshold_at([], 99)
    scores = np.array([0.1, 0.2, 0.3, 5.0, 0.9, 6.0, 7.0, 0.2])
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 3])  # N N N N(false alarm) S S V F
    d = detection(scores, labels, threshold=1.0, class_names=("N", "S", "V", "F"))
    assert d["false_alarm_rate"] == 0.25
    assert d["se_S"] == 0.5 and d["ppv_S"] == 0.5  # 1 S hit against 1 flagged N
    assert d["se_V"] == 1.0 and d["ppv_V"] == 0.5
    assert d["se_F"] == 0.0
    assert d["se_abnormal"] == 0.5 and d["ppv_abnormal"] == pytest.approx(2 / 3)
    a = aucs(scores, labels, ("N", "S", "V", "F"))
    assert a["auc_V"] == 1.0 and a["auc_S"] == pytest.approx((3 + 4) / 8)


def test_choose_percentile_maximises_validation_f1():
    rng = np.random.default_rng(0)
    normal = rng.uniform(0, 1, 1000)
    abnormal = np.full(30, 0.985)  # just above the 97.5th percentile, below the 99th
    scores = np.concatenate([normal, abnormal])
    labels = np.r_[np.zeros(1000, int), np.ones(30, int)]
    p, t = choose_percentile(scores, labels, (90.0, 97.5, 99.0))
    assert p == 97.5 and t == pytest.approx(np.percentile(normal, 97.5))


def test_score_is_wave_error_plus_weighted_rr_error():
    s = AnomalyScoring(window=4, rr_mean=(0.0,) * N_RR, rr_std=(1.0,) * N_RR, rr_weight=2.0)
    waves, rr = s.inputs(np.array([[1, 1, 1, 1]], float), np.ones((1, N_RR)))
    recon = np.zeros((1, 4 + N_RR))
    recon[0, :4] = [1, 1, 1, 3]  # wave error (0+0+0+4)/4 = 1
    recon[0, 4:] = 0.0  # RR error mean(1) = 1, weighted 2
    assert s.scores(waves, rr, recon)[0] == pytest.approx(3.0)
    assert AnomalyScoring.from_dict(s.with_threshold(2.5, 99).to_dict()).threshold == 2.5


@pytest.mark.parametrize("wave, rr, match", [
    (np.full((1, 4), np.nan), np.ones((1, N_RR)), "NaN"),
    (np.ones((1, 5)), np.ones((1, N_RR)), r"shape \(n, 4\)"),
    (np.ones((1, 4)), np.ones((1, N_RR - 1)), "RR features must have shape"),
    (np.ones(4), np.ones((1, N_RR)), r"shape \(n, 4\)"),
])
def test_bad_beats_give_clear_errors(wave, rr, match):
    s = AnomalyScoring(window=4, rr_mean=(0.0,) * N_RR, rr_std=(1.0,) * N_RR)
    with pytest.raises(ValueError, match=match):
        s.inputs(wave, rr)


def test_bad_constants_are_refused():
    with pytest.raises(ValueError, match="rr_std"):
        AnomalyScoring(window=4, rr_mean=(0.0,) * N_RR, rr_std=(0.0,) * N_RR)
    with pytest.raises(ValueError, match="malformed"):
        AnomalyScoring.from_dict({"window": 4})


# ---------------------------------------------------------------- the real MIT-BIH slice
@pytest.fixture(scope="module")
def task():
    if not os.environ.get("MITDB_DIR"):
        pytest.skip("MITDB_DIR not set")
    from training.tasks.registry import make_task

    return make_task("anomaly", max_persons=3)


def test_training_sees_only_normal_beats_of_ds1_training_persons(task):
    from training.data.protocols import validation_records
    from training.data.splits import DS1, DS2

    train, val, test = (task.load(s, seed=0) for s in ("train", "val", "test"))
    raw = task.beats("train", 0)
    assert set(raw.labels.tolist()) == {0} and len(raw) == len(train) > 1000  # N only, on the real rows
    assert set(train.targets.tolist()) == {0}
    persons = set(train.persons.tolist())
    assert persons <= set(DS1) and not persons & set(validation_records(0)) and not persons & set(DS2)
    assert set(val.persons.tolist()) <= set(validation_records(0))
    assert set(test.persons.tolist()) <= set(DS2)
    assert {1, 2} <= set(test.targets.tolist())  # S and V beats are scored on test
    target = task.training_targets(train)
    assert target.shape == (len(train), task.signal.window_length + N_RR)
    np.testing.assert_array_equal(target[:, :task.signal.window_length], train.inputs["wave"])


def test_unknown_split_is_refused(task):
    with pytest.raises(ValueError, match="split must be one of"):
        task.load("dev")


# ---------------------------------------------------------------- trained, exported int8, on the device side
@pytest.fixture(scope="module")
def exported(task, tmp_path_factory):
    """A tiny autoencoder trained on the slice's normal beats, calibrated on its validation persons, int8."""
    from training.tasks.export import export_task
    from training.tasks.fit import fit_task

    train, val = task.load("train", 0), task.load("val", 0)
    trained = fit_task(task, train, val, epochs=4, batch_size=128, learning_rate=2e-3, seed=0)
    task.calibrate(trained.predict, val)
    return export_task(trained, train, tmp_path_factory.mktemp("anomaly"), "int8", seed=0)


def _beat(data, i: int):
    from edge_runtime.runtime import BeatResult

    return BeatResult(int(data.sample[i]), float(data.sample[i]) / 360.0, "NSVFQ"[int(data.labels[i])], 0.9, 70.0,
                      "test", wave=data.waves[i], rr=data.rr[i])


@pytest.fixture(scope="module")
def record_210(task):
    """Record 210 (a DS2 test person, never trained on) and its longest run of V beats (rows start..end-1)."""
    from training.data.beat_dataset import load_beats
    from training.data.mitdb import default_cache_root

    data = load_beats(Path(os.environ["MITDB_DIR"]), ["210"], task.signal, default_cache_root(), progress=False)
    edges = np.diff(np.r_[False, data.labels == 2, False].astype(int))
    start, end = max(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)), key=lambda r: r[1] - r[0])
    assert end - start >= 4
    return data, int(start), int(end)


def _anomaly_alerts(exported, status: dict | None = None):
    from edge_runtime.alerts import AlertBuilder
    from edge_runtime.anomaly_monitor import AnomalyAlerts, AnomalyCounter, AnomalyModel

    model = AnomalyModel.from_file(exported.tflite_path)
    return model, AnomalyAlerts(AlertBuilder("dev-210", "p210"), AnomalyCounter(model, run_length=2), status)


def test_int8_monitor_flags_a_real_ventricular_stretch(exported, task, record_210):
    from broker.device_messages import decode_alert, encode_alert
    from edge_runtime.anomaly_monitor import AnomalySink

    data, start, end = record_210
    status: dict = {}
    model, builder = _anomaly_alerts(exported, status)
    assert model.threshold == pytest.approx(task.threshold[0])
    rows = range(start - 40, end + 10)
    sink = AnomalySink(builder)
    for i in rows:
        sink.on_beat(_beat(data, i))
    sink.close()
    scores = model.scores(data.waves[list(rows)], data.rr[list(rows)])
    v_scores = scores[start - rows.start:end - rows.start]
    assert np.median(v_scores) > model.threshold > np.median(scores[:40])
    anomalies = [a for a in sink.alerts if a["kind"] == "anomaly"]
    assert any(int(data.sample[start]) <= a["beat_index"] <= int(data.sample[end - 1]) for a in anomalies)
    assert status["anomaly_beats"] >= 2 and status["anomaly_events"] == len(anomalies)
    _, decoded = decode_alert(encode_alert("fleet-a", 7, anomalies[0]))
    assert decoded["kind"] == "anomaly"


@pytest.mark.integration
def test_anomaly_alert_and_counts_reach_mosquitto(exported, record_210, mosquitto, tmp_path):
    from broker.device_messages import decode_alert, decode_status
    from broker.launcher import broker_url
    from broker.topics import FleetTopics
    from edge_runtime.alert_publisher import AlertPublisher
    from tests.mqtt_inbox import Inbox

    data, start, end = record_210
    topics = FleetTopics("anom")
    inbox = Inbox(broker_url(mosquitto), "anomaly-monitor", [topics.all_alerts()])
    _, builder = _anomaly_alerts(exported)
    pub = AlertPublisher("dev-210", 210, "anom", broker_url(mosquitto), tmp_path / "spool.sqlite", "p210",
                         builder=builder)
    builder.status_out = pub.extra_status
    pub.start()
    assert pub.link.connected.wait(10)
    for i in range(start - 10, end + 5):
        pub.on_beat(_beat(data, i))
    events = builder.counter.events
    pub.close()  # drains the spool before it returns
    alerts = [decode_alert(m.payload)[1] for m in inbox.wait_for(pub.sent)]
    inbox.close()
    assert events >= 1 and sum(a["kind"] == "anomaly" for a in alerts) == events
    status_box = Inbox(broker_url(mosquitto), "anomaly-status", [topics.status("dev-210")])
    status = decode_status(status_box.wait_for(1)[0].payload)[1]  # retained: the last status at close
    status_box.close()
    assert status["anomaly_events"] == events and status["anomaly_scored"] == end + 5 - (start - 10)


def test_monitor_skips_unscorable_beats_and_refuses_models_without_threshold(exported):
    import dataclasses

    from edge_runtime.anomaly_monitor import AnomalyCounter, AnomalyModel, AnomalyModelError
    from edge_runtime.model_metadata import ModelMetadata, metadata_path_for
    from edge_runtime.runtime import BeatResult
    from edge_runtime.task_model import TaskInterpreter

    model = AnomalyModel.from_file(exported.tflite_path)
    counter = AnomalyCounter(model)
    window = model.scoring.window
    bad = [BeatResult(1, 0.0, "N", 0.9, 70.0, "t", wave=np.full(window, np.nan), rr=np.ones(N_RR)),
           BeatResult(2, 0.1, "N", 0.9, 70.0, "t", wave=np.ones(window + 3), rr=np.ones(N_RR))]
    assert [counter.on_beat(b) for b in bad] == [None, None]
    assert counter.rejected == 2 and counter.scored == 0
    meta = ModelMetadata.load(metadata_path_for(exported.tflite_path))
    contract = {**meta.extra["task"], "preprocessing": {**meta.extra["task"]["preprocessing"], "threshold": None}}
    content = exported.tflite_path.read_bytes()
    with pytest.raises(AnomalyModelError, match="threshold"):
        AnomalyModel(TaskInterpreter(content, dataclasses.replace(meta, extra={"task": contract})))
    other = {**meta.extra["task"], "task": "beat"}
    with pytest.raises(AnomalyModelError, match="task 'beat'"):
        AnomalyModel(TaskInterpreter(content, dataclasses.replace(meta, extra={"task": other})))


@pytest.mark.integration
def test_one_federated_round_over_mosquitto(task, mosquitto):
    from broker.launcher import broker_url
    from training.federated.fleet import FleetConfig
    from training.federated.local_training import LocalConfig
    from training.federated.simulation import FederatedConfig
    from training.tasks.federated import run_task_federated

    train, val = task.load("train", 0), task.load("val", 0)
    fed = FederatedConfig(rounds=1, strategy="fedavg", partition="person", seed=0,
                          local=LocalConfig(epochs=1, batch_size=64, learning_rate=0.5))
    trained = run_task_federated(task, train, val, fed, over_mqtt=True,
                                 fleet=FleetConfig(broker_url=broker_url(mosquitto)))
    assert trained.info["transport"] == "mqtt" and trained.info["devices"] == len(set(train.persons.tolist()))
    rounds = [h for h in trained.history if h.get("round", 0) >= 1]
    assert rounds and np.isfinite(rounds[-1]["val_selection"])
    assert task.evaluate(trained.predict, val)["auc_V"] > 0.5


def test_edge_run_anomaly_without_its_model_exits_2(capsys):
    from tools.cli import main

    assert main(["edge", "run", "--task", "anomaly", "--input", "-", "--out", "unused"]) == 2
    assert "--anomaly-model" in capsys.readouterr().err


def test_the_c_generator_takes_the_int8_autoencoder(exported):
    from training.codegen import generate_c

    summary = generate_c(exported.tflite_path.read_bytes()).summary()
    assert set(summary["ops"]) == {"CONCATENATION", "FULLY_CONNECTED"}
    assert summary["arena_bytes"] < 1024 and summary["const_bytes"] < 16 * 1024
