"""The ``har`` task on real HAPT subjects: loader, split, IMU source (good and bad input), the activity runner on
an int8 export, and one federated round over a real Mosquitto."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.imu_source import (
    ImuFormatError,
    ImuRateError,
    ImuTextSamples,
    imu_text_file,
)
from training.data.hapt import (
    ACTIVITIES,
    TEST_SUBJECTS,
    VAL_SUBJECTS,
    HaptUnavailable,
    HaptWindows,
    locate_hapt,
    published_test_subjects,
    read_labels,
)


@pytest.fixture(scope="module")
def hapt_root() -> Path:
    try:
        return locate_hapt()
    except HaptUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def windows(hapt_root, tmp_path_factory) -> HaptWindows:
    return HaptWindows(hapt_root, cache_dir=tmp_path_factory.mktemp("hapt-cache"))


def _lines(rows: np.ndarray, times: np.ndarray | None = None) -> list[str]:
    if times is not None:
        rows = np.column_stack([times, rows])
    return [" ".join(f"{v:.6f}" for v in row) for row in rows]


# --- the loader --------------------------------------------------------------------------------------------

def test_published_split_and_disjoint_subjects(hapt_root, windows):
    split = windows.split_subjects()
    assert published_test_subjects(hapt_root) == TEST_SUBJECTS  # read from Test/subject_id_test.txt
    assert split["test"] == (2, 4, 9, 10, 12, 13, 18, 20, 24) and split["val"] == VAL_SUBJECTS
    assert len(split["train"]) == 18
    sets = [set(s) for s in split.values()]
    assert sum(map(len, sets)) == 30 and set.union(*sets) == set(range(1, 31))


def test_windows_of_two_subjects_match_the_label_file(hapt_root, windows):
    x, y, subject = windows.load((1, 2))
    assert x.shape[1:] == (128, 6) and x.dtype == np.float32 and np.isfinite(x).all()
    assert set(np.unique(subject)) == {1, 2} and set(np.unique(y)) == set(range(len(ACTIVITIES)))
    labels = read_labels(hapt_root)
    for s in (1, 2):  # every labelled segment of the six activities gives floor((len - 128) / 64) + 1 windows
        rows = labels[(labels[:, 1] == s) & (labels[:, 2] <= 6)]
        seg = rows[:, 4] - rows[:, 3] + 1
        assert (subject == s).sum() == sum((n - 128) // 64 + 1 for n in seg if n >= 128)
    # the first window of subject 1 is the first labelled segment's first 128 samples (acc then gyro)
    e, _, _, start, _ = labels[(labels[:, 1] == 1) & (labels[:, 2] <= 6)][0]
    acc = np.loadtxt(hapt_root / "RawData" / f"acc_exp{e:02d}_user01.txt", max_rows=start + 127)[start - 1:]
    np.testing.assert_allclose(x[0, :, :3], acc, rtol=1e-6)
    again = HaptWindows(hapt_root, cache_dir=windows.cache_dir.parent).subject(1)  # from the cache
    np.testing.assert_array_equal(again.x, x[subject == 1])


def test_task_standardises_with_training_subjects_only(windows):
    from training.tasks.registry import make_task

    task = make_task("har", max_persons=2)
    task._windows = windows  # the module's small cache
    train, test = task.load("train"), task.load("test")
    assert set(np.unique(train.persons)) == {"user01", "user03"}
    assert set(np.unique(test.persons)) == {"user02", "user04"}
    raw = len(windows.load((1, 3))[1])
    # the CNN's recipe: one rotated copy of every training window (same subject), none for val or test
    assert len(train) == 2 * raw and len(test) == len(windows.load((2, 4))[1])
    assert list(train.persons[:raw]) == list(train.persons[raw:])
    assert not np.allclose(train.inputs["imu"][:raw], train.inputs["imu"][raw:])
    z = train.inputs["imu"][:raw].reshape(-1, 6)  # the recorded windows: standardised by their own statistics
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-3)
    contract = task.edge_contract(train)
    assert contract.source == "imu" and contract.window == 128 and contract.sample_rate_hz == 50
    assert contract.preprocessing["train_subjects"] == [1, 3]


# --- the IMU source ----------------------------------------------------------------------------------------

def test_imu_file_pastes_a_hapt_recording(hapt_root):
    acc = hapt_root / "RawData" / "acc_exp01_user01.txt"
    source = imu_text_file(acc, 50)
    first = next(source.chunks())
    assert first.shape == (50, 6)
    gyro = np.loadtxt(hapt_root / "RawData" / "gyro_exp01_user01.txt", max_rows=50)
    np.testing.assert_allclose(first[:, 3:], gyro, rtol=1e-9)


def test_time_column_header_and_stray_lines_are_counted():
    rows = np.arange(60 * 6, dtype=float).reshape(60, 6)
    lines = ["t,ax,ay,az,gx,gy,gz", *_lines(rows, np.arange(60) / 50)]
    lines[10] = "0.5 1 2 3"  # a stray short line mid-stream: dropped and counted
    lines[20] = "0.7 1 2 x 4 5 6"
    source = ImuTextSamples(lines, 50)
    got = np.concatenate(list(source.chunks()))
    assert got.shape == (58, 6) and source.malformed == 2


@pytest.mark.parametrize("columns", [5, 3, 8])
def test_wrong_channel_count_is_a_clear_error(columns):
    source = ImuTextSamples(["1 " * columns] * 10, 50)
    with pytest.raises(ImuFormatError, match=f"{columns} values; IMU input needs 6"):
        list(source.chunks())


def test_nan_samples_are_passed_as_nan_and_counted():
    rows = np.ones((20, 6))
    lines = _lines(rows)
    lines[3] = "1 1 nan 1 1 1"
    lines[4] = "inf 1 1 1 1 1"
    source = ImuTextSamples(lines, 50)
    got = np.concatenate(list(source.chunks()))
    assert source.invalid == 2 and source.malformed == 0
    assert np.isnan(got[3, 2]) and np.isnan(got[4, 0]) and np.isfinite(got[5]).all()


def test_timestamps_at_another_rate_are_refused():
    rows = np.zeros((100, 6))
    source = ImuTextSamples(_lines(rows, np.arange(100) / 100.0), 50)  # 100 Hz file, --fs 50
    with pytest.raises(ImuRateError, match="shows 100 Hz but --fs is 50 Hz"):
        list(source.chunks())
    with pytest.raises(ValueError, match="--fs must be given"):
        ImuTextSamples([], 0)
    assert math.isclose(ImuTextSamples(_lines(rows, np.arange(100) / 50.0), 50).fs_hz, 50)



# --- how the bench's federated setting is chosen ------------------------------------------------------------

def test_validation_folds_never_touch_the_test_subjects(windows):
    from tools.task_bench.har_folds import FOLDS, FoldTask

    held = []
    for fold in FOLDS:
        task = FoldTask(fold)
        task._windows = windows
        train, val, test = (set(task.subjects(s)) for s in ("train", "val", "test"))
        assert test == set(TEST_SUBJECTS) and len(train) == 18 and len(val) == 3
        assert not (train & val or train & test or val & test) and len(train | val | test) == 30
        held.append(val)
    assert held[0] == set(VAL_SUBJECTS) and not (held[0] & held[1] or held[0] & held[2] or held[1] & held[2])
    with pytest.raises(ValueError, match="fold"):
        FoldTask(3)


def test_fold_rule_keeps_the_shipped_setting_unless_clearly_beaten():
    from tools.task_bench.har_folds import choose

    assert choose({"shipped": [0.86, 0.90, 0.93], "b": [0.87, 0.90, 0.93]}, "shipped") == "shipped"  # +0.003
    assert choose({"shipped": [0.86, 0.90, 0.93], "b": [0.88, 0.91, 0.93]}, "shipped") == "b"  # +0.010
    assert choose({"shipped": [0.86, 0.90, 0.93], "b": [0.99, 0.99]}, "shipped") == "shipped"  # a fold missing


def test_bench_federated_setting_reaches_the_devices_plan():
    from tools.task_bench.har import FEDERATED, federated_config

    for setting in FEDERATED.values():
        fed = federated_config(setting, seed=2)
        assert (fed.rounds, fed.strategy, fed.strategy_args, fed.seed) == (
            setting["rounds"], setting["strategy"], setting.get("strategy_args", {}), 2)
        assert fed.local.lr_decay == setting.get("lr_decay", 1.0) and fed.local.epochs == setting["local_epochs"]
        assert federated_config(setting, seed=0, quick=True).rounds == 2

# --- federated round, int8 export, the edge runner ----------------------------------------------------------

@pytest.fixture(scope="module")
def small_task(windows):
    from training.tasks.har import HarTask

    task = HarTask(max_persons=2)
    task._windows = windows
    return task, task.load("train"), task.load("val"), task.load("test")


@pytest.fixture(scope="module")
def exported_cnn(small_task, tmp_path_factory):
    """The CNN trained two epochs on two subjects, exported int8 (the runner's model)."""
    from training.tasks.export import export_task
    from training.tasks.fit import fit_task

    task, train, val, _ = small_task
    trained = fit_task(task, train, val, epochs=2, batch_size=64, learning_rate=2e-3, seed=0)
    return trained, export_task(trained, train, tmp_path_factory.mktemp("har-int8"), "int8")



def test_bench_device_copies_stay_on_their_subject(small_task):
    from tools.task_bench.har import device_windows

    task, train, _, _ = small_task  # the CNN recipe: recorded windows + one copy
    recorded = len(train) // 2
    devices = device_windows(task, {"device_augment": {"copies": 2, "max_degrees": 15.0, "gain": 0.1}}, train, 0)
    assert len(devices) == 3 * recorded
    np.testing.assert_array_equal(devices.inputs["imu"][:recorded], train.inputs["imu"][:recorded])
    assert not np.allclose(devices.inputs["imu"][2 * recorded:], train.inputs["imu"][:recorded])
    for person in set(train.persons):
        assert (devices.persons == person).sum() == 3 * (train.persons[:recorded] == person).sum()
    assert device_windows(task, {}, train, 0) is train

@pytest.mark.integration
def test_one_federated_round_over_mosquitto(small_task, mosquitto, tmp_path):
    from broker.launcher import broker_url
    from training.federated.fleet import FleetConfig
    from training.federated.local_training import LocalConfig
    from training.federated.simulation import FederatedConfig
    from training.tasks.federated import run_task_federated

    task, train, val, _ = small_task
    fed = FederatedConfig(rounds=1, partition="person", local=LocalConfig(epochs=1, batch_size=32, learning_rate=0.1))
    trained = run_task_federated(task, train, val, fed, over_mqtt=True,
                                 fleet=FleetConfig(broker_url=broker_url(mosquitto)), run_dir=tmp_path / "fleet")
    assert trained.info["transport"] == "mqtt" and trained.info["devices"] == 2
    assert sorted(trained.info["device_rows"]) == ["har-user01", "har-user03"]
    assert [r["participants"] for r in trained.history] == [2]
    assert 0 <= trained.evaluate(val)["accuracy"] <= 1


def test_int8_cnn_export_and_the_runner_on_a_real_recording(small_task, exported_cnn, hapt_root, tmp_path):
    from edge_runtime.activity import ActivityPolicy, ActivityRunner, WindowClassifier
    from training.tasks.har_export import op_report

    task, _, _, test = small_task
    trained, exported = exported_cnn
    blob = exported.tflite_path.read_bytes()
    report = op_report(blob)
    assert report["float_tensors"] == 0 and "CONV_2D" in report["ops"] and len(blob) <= 32 * 1024
    clf = WindowClassifier.from_file(exported.tflite_path)
    # the runner's standardisation + int8 interpreter == the task's windows through the same interpreter
    raw, _, _ = task.windows.load((2,))
    np.testing.assert_allclose(clf.predict_proba(raw[:20]), clf.interpreter.predict({"imu": test.inputs["imu"][:20]}),
                               atol=1e-6)
    assert abs(task.evaluate(clf.interpreter.predict, test)["accuracy"] - trained.evaluate(test)["accuracy"]) <= 0.05
    # 60 s of subject 3's first recording, streamed through the runner in uneven chunks
    source = imu_text_file(hapt_root / "RawData" / "acc_exp05_user03.txt", 50)
    runner = ActivityRunner(clf, 50, 6, policy=ActivityPolicy(inactive_after_s=10))
    samples = 0
    for chunk in source.chunks():
        runner.feed(chunk)
        samples += len(chunk)
        if samples >= 3000:
            break
    status = runner.status
    assert status.samples == samples and status.windows == (samples - 128) // 64 + 1
    assert math.isclose(sum(status.seconds.values()), (128 + 64 * (status.windows - 1)) / 50, rel_tol=1e-9)
    assert set(status.seconds) <= set(ACTIVITIES) and status.current in ACTIVITIES
    first = np.concatenate([c for _, c in zip(range(3), imu_text_file(
        hapt_root / "RawData" / "acc_exp05_user03.txt", 50).chunks())])[:128]
    assert runner.results[0].activity == ACTIVITIES[int(np.argmax(clf.predict_proba(first[None])[0]))]
    still = [w for w in runner.results if w.activity not in ("walking", "upstairs", "downstairs")]
    assert bool(runner.alerts) == _has_still_stretch(runner.results, 10.0)
    assert all(a["kind"] == "prolonged_inactivity" for a in runner.alerts) and len(still) >= len(runner.alerts)


def _has_still_stretch(results, seconds: float) -> bool:
    start = None
    for i, w in enumerate(results):
        if w.activity in ("walking", "upstairs", "downstairs"):
            start = None
            continue
        start = w.time_s - (128 if i == 0 else 64) / 50 if start is None else start
        if w.time_s - start >= seconds:
            return True
    return False


@pytest.mark.integration
def test_edge_run_publishes_inactivity_alert_and_activity_status(exported_cnn, hapt_root, mosquitto, tmp_path,
                                                                  capsys):
    """`edge run --task har --broker`: a real laying stretch of subject 3 raises prolonged_inactivity through the
    spool (a subscriber decodes it: bus schema, no strip, no heart rate) and the retained status holds the
    activity counters the run printed."""
    import json

    from broker.device_messages import decode_alert, decode_status
    from broker.launcher import broker_url
    from broker.topics import FleetTopics
    from tests.mqtt_inbox import Inbox
    from tools.cli import main

    _, exported = exported_cnn
    labels = read_labels(hapt_root)
    _, _, _, start, end = labels[(labels[:, 0] == 5) & (labels[:, 1] == 3) & (labels[:, 2] == 6)][0]  # laying
    rows = np.concatenate(list(imu_text_file(hapt_root / "RawData" / "acc_exp05_user03.txt", 50).chunks()))
    stretch = tmp_path / "laying.txt"
    np.savetxt(stretch, rows[start - 1:end], fmt="%.6f")
    assert (end - start + 1) / 50 > 16  # room for the 8 s limit
    topics, url = FleetTopics("harw"), broker_url(mosquitto)
    inbox = Inbox(url, "har-inbox", [topics.alert("imu1")])
    try:
        assert main(["edge", "run", "--task", "har", "--model", str(exported.tflite_path), "--imu", str(stretch),
                     "--fs", "50", "--inactive-after", "8", "--broker", url, "--fleet", "harw", "--device", "imu1",
                     "--patient", "pt7", "--out", str(tmp_path / "edge")]) == 0
        got = inbox.wait_for(1)
    finally:
        inbox.close()
    printed = capsys.readouterr().out
    summary = json.loads(printed[:printed.rindex("}") + 1])
    assert summary["alerts_sent"] == 1 and len(summary["alerts"]) == 1
    alert = decode_alert(got[0].payload)[1]
    assert alert == summary["alerts"][0]
    assert alert["kind"] == "prolonged_inactivity" and alert["class"] in ("sitting", "standing", "laying")
    assert alert["patient"] == "pt7" and alert["heart_rate_bpm"] == 0 and "strip" not in alert
    assert alert["inactive_s"] >= 8 and alert["beats"] == alert["window_index"] + 1  # still from the start
    # a subscriber joining later gets the retained status: the device's last counters
    late = Inbox(url, "har-late", [topics.status("imu1")])
    try:
        status = decode_status(late.wait_for(1)[0].payload)[1]
    finally:
        late.close()
    printed_status = summary["status"]
    assert status["state"] == "offline" and status["patient"] == "pt7" and status["inactivity_alerts"] == 1
    assert status["activity_windows"] == printed_status["windows"] == (end - start + 1 - 128) // 64 + 1
    assert status["activity_bouts"] == printed_status["bouts"]
    assert status["activity_current"] == printed_status["current_activity"]
    assert status["activity_seconds"] == {k: round(v) for k, v in printed_status["seconds_per_activity"].items()}
    assert status["imu_samples"] == end - start + 1 and status["alerts_sent"] == 1


def test_runner_refuses_wrong_rate_and_channels_and_skips_invalid_windows(exported_cnn):
    from edge_runtime.activity import ActivityRunner, WindowClassifier

    _, exported = exported_cnn
    clf = WindowClassifier.from_file(exported.tflite_path)
    with pytest.raises(ValueError, match="trained at 50 Hz; the source gives 100 Hz"):
        ActivityRunner(clf, 100, 6)
    with pytest.raises(ValueError, match="needs 6 channels"):
        ActivityRunner(clf, 50, 5)
    runner = ActivityRunner(clf, 50, 6)
    chunk = np.tile([1.0, 0.0, 0.0, 0.0, 0.0, 0.0], (256, 1))
    chunk[128:256:2] = np.nan  # half of the second window's new samples lost
    runner.feed(chunk)
    assert runner.status.invalid_samples == 64
    assert runner.status.windows + runner.status.unusable_windows == 3
    assert runner.status.unusable_windows == 2  # the windows ending at 192 and 256 hold > 10 % invalid samples
    with pytest.raises(ValueError, match=r"shape \(n, 6\)"):
        runner.feed(np.zeros((10, 5)))


def test_lstm_exports_as_the_fused_int8_lstm_op(small_task, tmp_path):
    from training.tasks.export import export_task
    from training.tasks.fit import TaskModel
    from training.tasks.har import HarTask
    from training.tasks.har_export import op_report

    _, train, _, _ = small_task
    task = HarTask(max_persons=2, model="lstm")
    task._windows, task._scaler = small_task[0].windows, small_task[0].scaler()
    trained = TaskModel(task, task.build_model(train, 0))  # untrained: the op set does not depend on the weights
    exported = export_task(trained, train, tmp_path, "int8", calibration_rows=50)
    report = op_report(exported.tflite_path.read_bytes())
    assert report["fused_lstm"] and "WHILE" not in report["ops"]
    assert report["lstm_types"] == {"input": "int8", "weights": ["int8"], "output": "int8", "cell_state": "int16"}
    assert report["float_tensors"] == 0
