"""The AF task: RR features and EC57 episode measures on hand-made sequences, the rhythm loader on real MIT-BIH
records, bad input, the AF termination study on the real aftdb learning set, and the device's AF monitor raising
an onset alert on a real AF stretch."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from broker.device_messages import decode_alert, encode_alert
from edge_runtime.af_episodes import p_gated, smooth_decisions
from edge_runtime.af_features import (
    FEATURE_NAMES,
    check_rr,
    rr_features,
    window_features,
)
from training.tasks.af_metrics import af_report, merge_spans, record_counts

F = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _rr(kind: str, n: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "sinus":
        return 0.8 + 0.01 * rng.standard_normal(n)
    if kind == "af":
        return rng.uniform(0.4, 1.1, n)
    if kind == "bigeminy":
        return np.where(np.arange(n) % 2 == 0, 0.5, 1.1) + 0.005 * rng.standard_normal(n)
    raise AssertionError(kind)


def test_features_separate_af_from_sinus_and_bigeminy():
    sinus, af, big = (rr_features(_rr(k)) for k in ("sinus", "af", "bigeminy"))
    assert af[F["cv"]] > 5 * sinus[F["cv"]]
    assert af[F["p_drr_10"]] > 0.5 > sinus[F["p_drr_10"]]
    assert af[F["sample_entropy"]] > sinus[F["sample_entropy"]] + 0.5
    # bigeminy is irregular but regularly so: alternating RR, strongly negative lag-1 autocorrelation, few cells
    assert big[F["autocorr_1"]] < -0.8 < af[F["autocorr_1"]]
    assert big[F["poincare_cells"]] < af[F["poincare_cells"]]
    assert abs(sinus[F["mean_rr_s"]] - 0.8) < 0.01


@pytest.mark.parametrize("rr, needle", [
    (np.array([0.8] * 10 + [np.nan] + [0.8] * 10), "NaN"),
    (np.full(40, 288.0), "seconds"),  # sample differences not divided by the rate
    (np.full(40, 0.8 / 360), "seconds"),  # divided twice / wrong rate
    (np.array([0.8, -0.8] * 10), "positive"),
    (np.ones((4, 10)), "1-D"),
])
def test_bad_rr_gets_a_clear_error(rr, needle):
    with pytest.raises(ValueError, match=needle):
        check_rr(rr)


def test_window_needs_enough_beats():
    with pytest.raises(ValueError, match="at least 8"):
        rr_features(np.full(5, 0.8))
    with pytest.raises(ValueError, match="one P-wave correlation per RR"):
        window_features(np.full(20, 0.8), np.zeros(19), np.ones(19, bool))


def test_episode_measures_on_hand_made_episodes():
    reference = [(0.0, 100.0), (200.0, 300.0)]
    detected = [(50.0, 150.0), (400.0, 410.0)]
    c = record_counts(reference, detected)
    assert (c["ref_detected"], c["det_true"], c["overlap_s"]) == (1, 1, 50.0)
    report = af_report([("x", reference, detected), ("y", [], [])])
    g = report["gross"]
    assert g["episode_se"] == 0.5 and g["episode_ppv"] == 0.5
    assert g["duration_se"] == pytest.approx(50 / 200) and g["duration_ppv"] == pytest.approx(50 / 110)
    assert g["duration_error_s"] == pytest.approx(-90.0)
    assert report["per_record"]["y"]["episode_se"] is None  # no reference AF: no Se, not 0 or 100 %
    with pytest.raises(ValueError, match="finite"):
        record_counts([(10.0, 5.0)], [])


def test_spans_merge_and_majority_smoothing():
    flags = np.array([1, 0, 1, 1, 0, 0, 1, 0, 0], bool)
    assert smooth_decisions(flags, 3).astype(int).tolist() == [0, 1, 1, 1, 0, 0, 0, 0, 0]
    assert smooth_decisions(flags, 1).tolist() == flags.tolist()
    with pytest.raises(ValueError, match="odd"):
        smooth_decisions(flags, 2)
    # the P-wave gate: a likely-AF window whose normal beats keep their P waves is not AF
    assert p_gated(np.array([0.9, 0.9, 0.2]), np.array([0.1, 0.8, 0.1]), 0.5, 0.5).tolist() == [True, False, False]
    spans = np.array([[0, 10], [10, 20], [20, 30], [30, 40]], float)
    assert merge_spans(spans, np.array([1, 1, 0, 1], bool)) == [(0.0, 20.0), (30.0, 40.0)]


def test_rhythm_annotations_of_real_records(mitdb_dir):
    from training.tasks.af_data import record_rhythm, windows_of

    r201, r202, r100 = (record_rhythm(mitdb_dir, n) for n in ("201", "202", "100"))
    assert len(r201.episodes) == 3 and r201.episodes[0][0] < 1.0  # 201 opens in AF
    assert r100.episodes == () and not r100.beat_af.any()
    # 202 has 4 "(AFIB" and 1 "(AFL" starts; flutter and fibrillation that follow each other form one episode
    assert len(r202.episodes) == 3
    af_minutes = sum(b - a for a, b in r202.episodes) / 60
    assert 10.0 < af_minutes < 11.0
    wins = windows_of(r201.beat_s, r201.beat_af, r201.beat_p, r201.beat_normal, 32, 8)
    assert wins.features.shape[1] == len(FEATURE_NAMES) and 0.3 < wins.targets.mean() < 0.6
    assert np.all(np.diff(wins.span_s[:, 0]) > 0)  # decisions tile the record in time order


def test_task_slice_loads_af_positive_persons(mitdb_dir, monkeypatch, cache_root):
    from training.tasks.af import AfTask
    from training.tasks.registry import make_task

    monkeypatch.setenv("PULSEWIRE_CACHE", str(cache_root))
    assert isinstance(make_task("af", max_persons=2), AfTask)
    task = AfTask(max_persons=2, data_dir=mitdb_dir)
    val = task.load("val")
    assert "201" in set(val.persons) and val.targets.sum() > 0  # validation sees AF of an unseen person
    assert set(task.persons("test", 0)) <= {"202", "210", "219", "221", "222"}
    with pytest.raises(ValueError, match="split"):
        task.load("dev")
    contract = task.edge_contract(val)
    assert contract.source == "rpeaks" and contract.window == 32
    with pytest.raises(ValueError, match="channels"):
        contract.check_source(channels=2, sample_rate_hz=None)


def test_termination_study_on_the_learning_set(mitdb_dir):
    from training.tasks.af_termination import termination_study
    from training.tasks.aftdb import label_of, locate_aftdb

    study = termination_study(locate_aftdb(mitdb_dir=mitdb_dir), permutations=20)
    m = np.asarray(study["confusion"])
    assert m.shape == (3, 3) and m.sum() == 30 and m.sum(axis=1).tolist() == [10, 10, 10]
    assert study["accuracy"] == pytest.approx(np.trace(m) / 30)
    assert 0 < study["permutation_p"] <= 1 and 0 < study["binomial_p"] <= 1
    assert study["features"] == ["daf_lead0", "daf_lead1"] and 0 <= study["s_vs_t_accuracy"] <= 1
    with pytest.raises(ValueError, match="learning-set"):
        label_of("test-set-a/a01")


def test_dominant_atrial_frequency_is_lower_in_terminating_af(mitdb_dir):
    """Lead 2 of the learning set: non-terminating AF fibrillates faster than AF that stops (the 2004 challenge
    finding the termination study builds on); and bad input is refused."""
    from training.tasks.aftdb import beat_times, locate_aftdb
    from training.tasks.atrial_frequency import dominant_frequency, segment_frequencies

    folder = locate_aftdb(mitdb_dir=mitdb_dir)
    daf = {c: np.mean([segment_frequencies(folder, f"learning-set/{c}{i:02d}",
                                           beat_times(folder, f"learning-set/{c}{i:02d}"))[1] for i in range(1, 11)])
           for c in ("n", "t")}
    assert 3.0 < daf["t"] < daf["n"] - 0.5 < 12.0
    with pytest.raises(ValueError, match="at least 8 s"):
        dominant_frequency(np.zeros(100), 128.0, np.array([0.5]))
    with pytest.raises(ValueError, match="5 beats"):
        dominant_frequency(np.sin(np.arange(7680) / 10.0), 128.0, np.array([10.0, 20.0]))


def _tiny_model(mitdb_dir):
    """A small Keras model trained here on records 203 (AF) and 119 (bigeminy): enough to see 201's AF."""
    import keras

    from edge_runtime.af_features import standardise
    from training.tasks.af_data import record_rhythm, windows_of

    rhythms = [record_rhythm(mitdb_dir, n) for n in ("203", "119")]
    parts = [windows_of(r.beat_s, r.beat_af, r.beat_p, r.beat_normal, 32, 4) for r in rhythms]
    x = np.concatenate([p.features for p in parts])
    y = np.concatenate([p.targets for p in parts])
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    keras.utils.set_random_seed(0)
    x_in = keras.Input((len(FEATURE_NAMES),), name="rr_features")
    model = keras.Model(x_in, keras.layers.Dense(2, activation="softmax")(keras.layers.Dense(8, activation="relu")(x_in)))
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(standardise(x, mean, std), y, epochs=8, batch_size=128, verbose=0)
    return model, mean, std


def _annotated_beats(mitdb_dir, name: str, beat_s: np.ndarray, version: str):
    """The annotated beats of a record as the device's beats: times and the beat windows its stream would cut."""
    from edge_runtime.runtime import BeatResult
    from training.data.mitdb import load_record
    from training.tasks.af_data import annotated_waves

    rec = load_record(mitdb_dir, name)
    samples = np.round(np.asarray(beat_s) * rec.fs_hz).astype(np.int64)
    waves, index = annotated_waves(rec.signal_mv, rec.fs_hz, samples)
    wave_of = dict(zip(index.tolist(), waves))
    return [BeatResult(int(s), float(t), "N", 1.0, 75.0, version, wave=wave_of.get(i))
            for i, (s, t) in enumerate(zip(samples, beat_s))]


@pytest.fixture(scope="module")
def tiny(mitdb_dir):
    return _tiny_model(mitdb_dir)


def _contract(mean, std):
    from edge_runtime.task_contract import EdgeContract

    return EdgeContract("af", "rpeaks", ("rr_s",), None, 32,
                        {"hop": 8, "smooth": 3, "threshold": 0.5, "min_episode_s": 30.0, "p_gate": 0.5,
                         "p_gate_feature": "p_corr_median_normal",
                         "feature_names": list(FEATURE_NAMES), "feature_mean": mean.tolist(),
                         "feature_std": std.tolist()})


def test_monitor_finds_the_episodes_the_evaluation_scores(mitdb_dir, tiny):
    """Streaming (one beat at a time, delayed vote) and batch evaluation give the same episodes on record 219."""
    from edge_runtime.af_features import standardise
    from edge_runtime.af_monitor import AfMonitor
    from edge_runtime.alerts import AlertBuilder
    from training.tasks.af_data import record_rhythm, windows_of

    model, mean, std = tiny
    predict = lambda x: model(x["rr_features"]).numpy()
    rhythm = record_rhythm(mitdb_dir, "219")
    wins = windows_of(rhythm.beat_s, rhythm.beat_af, rhythm.beat_p, rhythm.beat_normal, 32, 8)
    probs = predict({"rr_features": standardise(wins.features, mean, std)})[:, 1]
    flags = p_gated(probs, wins.features[:, FEATURE_NAMES.index("p_corr_median_normal")], 0.5, 0.5)
    batch = [e for e in merge_spans(wins.span_s, smooth_decisions(flags, 3)) if e[1] - e[0] >= 30]
    monitor = AfMonitor(predict, _contract(mean, std), AlertBuilder("d", "p"), lambda a: None, "v")
    for beat in _annotated_beats(mitdb_dir, "219", rhythm.beat_s, "v"):
        monitor.on_beat(beat)
    monitor.close()
    assert monitor.restarts == 0 and len(batch) >= 2
    assert np.allclose(np.asarray(monitor.episodes), np.asarray(batch))


def test_monitor_raises_af_onset_on_record_201(mitdb_dir, tiny):
    from edge_runtime.af_monitor import AfMonitor
    from edge_runtime.alerts import AlertBuilder
    from edge_runtime.runtime import BeatResult
    from training.tasks.af_data import record_rhythm

    model, mean, std = tiny
    contract = _contract(mean, std)
    alerts, status = [], {}
    builder = AlertBuilder("dev-af", "anon-1", stream_start=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    monitor = AfMonitor(lambda x: model(x["rr_features"]).numpy(), contract, builder, alerts.append, "t1",
                        status=status)
    rhythm = record_rhythm(mitdb_dir, "201")
    first_sinus = rhythm.episodes[0][1]  # 201 is in AF from its start to ~378 s, then sinus
    for beat in _annotated_beats(mitdb_dir, "201", rhythm.beat_s[rhythm.beat_s < first_sinus + 90], "beat-1"):
        monitor.on_beat(beat)
    monitor.on_beat(BeatResult(0, float("nan"), "Q", 0.0, 0.0, "beat-1", usable=False))  # bad beat: restart
    monitor.close()
    kinds = [a["kind"] for a in alerts]
    assert kinds[0] == "af_onset" and "af_offset" in kinds
    onset = alerts[0]
    assert onset["time"].startswith("2026-01-01T00:00") and onset["class"] == "AF"  # within the first minute
    longest = max(a["af_duration_s"] for a in alerts if a["kind"] == "af_offset")
    assert longest > 200
    assert status["af_seconds"] > 200 and status["af_burden_permille_hour"] > 500 and status["af_window_restarts"] >= 1
    for a in alerts:  # the real wire encoder accepts the AF kinds
        assert decode_alert(encode_alert("fleet1", 7, a))[1]["kind"] == a["kind"]


def test_monitor_refuses_a_contract_of_another_task():
    from edge_runtime.af_monitor import AfMonitor
    from edge_runtime.alerts import AlertBuilder
    from edge_runtime.task_contract import EdgeContract

    har = EdgeContract("har", "imu", ("ax", "ay", "az", "gx", "gy", "gz"), 50.0, 128, {})
    with pytest.raises(ValueError, match="'af' model"):
        AfMonitor(lambda x: x, har, AlertBuilder("d", "p"), lambda a: None, "v")


@pytest.mark.integration
def test_a_federated_round_over_mosquitto_and_an_int8_export_the_monitor_runs(mitdb_dir, mosquitto, tmp_path,
                                                                                monkeypatch, cache_root):
    """Two devices (records 203 and 101) over a real broker, int8 export, and the device-side monitor on the
    exported model: the same episodes as the task's own evaluation of that int8 model, AF found on 201."""
    from broker.launcher import broker_url
    from edge_runtime.af_monitor import AfMonitor
    from edge_runtime.alerts import AlertBuilder
    from edge_runtime.task_model import TaskInterpreter
    from training.federated.fleet import FleetConfig
    from training.federated.local_training import LocalConfig
    from training.federated.simulation import FederatedConfig
    from training.tasks.af import AfTask
    from training.tasks.export import export_task
    from training.tasks.federated import run_task_federated

    monkeypatch.setenv("PULSEWIRE_CACHE", str(cache_root))
    task = AfTask(max_persons=2, data_dir=mitdb_dir)
    train, val = task.load("train"), task.load("val")
    assert set(train.persons) == {"203", "101"}
    fed = FederatedConfig(rounds=2, partition="person", local=LocalConfig(epochs=4, batch_size=64,
                                                                          learning_rate=1e-2))
    trained = run_task_federated(task, train, val, fed, over_mqtt=True,
                                 fleet=FleetConfig(broker_url=broker_url(mosquitto)), run_dir=tmp_path / "fleet")
    assert trained.info["transport"] == "mqtt" and [r["participants"] for r in trained.history] == [2, 2]
    exported = export_task(trained, train, tmp_path, "int8")
    int8 = TaskInterpreter.from_file(exported.tflite_path)
    assert int8.contract.task == "af" and int8.contract.preprocessing["min_episode_s"] == 30.0
    agree = np.mean(np.argmax(int8.predict(val.inputs), 1) == np.argmax(trained.predict(val.inputs), 1))
    assert agree > 0.95
    alerts = []
    monitor = AfMonitor(int8.predict, int8.contract, AlertBuilder("d", "p"), alerts.append, "v")
    rhythm = task.record("201")[0]
    for beat in _annotated_beats(mitdb_dir, "201", rhythm.beat_s, "v"):
        monitor.on_beat(beat)
    monitor.close()
    expected = {name: det for name, _, det in task.detections(int8.predict, val.of_persons(["201"]))}["201"]
    assert np.allclose(np.asarray(monitor.episodes).reshape(-1, 2), np.asarray(expected).reshape(-1, 2))
    assert any(a["kind"] == "af_onset" for a in alerts)

    # the device command on the raw signal of 201 (its own R-peaks), alerts and status over the broker
    from broker.device_messages import decode_status
    from broker.topics import FleetTopics
    from tests.mqtt_inbox import Inbox
    from tools.cli import main

    topics = FleetTopics("afw")
    inbox = Inbox(broker_url(mosquitto), "af-inbox", [topics.alert("afdev"), topics.status("afdev")])
    try:
        assert main(["edge", "run", "--task", "af", "--record", str(mitdb_dir / "201"), "--model",
                     str(exported.tflite_path), "--broker", broker_url(mosquitto), "--fleet", "afw", "--device",
                     "afdev", "--out", str(tmp_path / "edge")]) == 0
        got = inbox.wait_for(3)
    finally:
        inbox.close()
    sent = [decode_alert(m.payload)[1] for m in got if m.topic == topics.alert("afdev")]
    assert sent and sent[0]["kind"] == "af_onset" and {a["kind"] for a in sent} <= {"af_onset", "af_offset"}
    statuses = [decode_status(m.payload)[1] for m in got if m.topic == topics.status("afdev")]
    assert any("af_seconds" in s for s in statuses)


def test_edge_run_refuses_a_missing_model(tmp_path, capsys):
    from tools.cli import main

    assert main(["edge", "run", "--task", "af", "--record", "x", "--out", str(tmp_path)]) == 2
    assert "--model" in capsys.readouterr().err


def test_gate_selection_rule_needs_aftdb_retention_and_ds1_sensitivity():
    from tools.task_bench.af_selection import pick

    def row(gate, se, ppv, dur_se, windows, segments):
        return {"p_gate": gate, "episode_se": se, "episode_ppv": ppv, "duration_se": dur_se,
                "aftdb": {"window_retention": windows, "segment_retention": segments}}

    rows = [row(None, 1.0, 0.3, 0.98, 1.0, 1.0), row(0.7, 1.0, 0.8, 0.97, 0.97, 1.0),
            row(0.6, 1.0, 0.8, 0.97, 0.96, 1.0), row(0.5, 1.0, 0.9, 0.97, 0.90, 1.0),
            row(0.4, 0.9, 0.95, 0.97, 0.99, 1.0), row(0.3, 1.0, 0.99, 0.90, 0.99, 1.0)]
    assert pick(rows) == 0.7  # 0.5 loses aftdb AF, 0.4 DS1 Se, 0.3 DS1 duration; the tie goes to the weaker gate
    assert pick([r for r in rows if r["p_gate"] != 0.7 and r["p_gate"] != 0.6]) is None
    assert pick([row(0.5, 1.0, 0.9, 0.97, 0.99, 0.9)]) is None  # segments losing their episode count too
