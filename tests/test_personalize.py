"""On-device head retraining with numpy, on a real patient's beats."""
import numpy as np
import pytest

from broker.launcher import broker_url
from edge_runtime.aami import AAMI_CLASSES
from edge_runtime.classifier import BeatClassifier
from edge_runtime.metrics import classification_report
from edge_runtime.fed_client import DeviceClient
from edge_runtime.personalize import Head, HeadConfig, HeadFeatures, HeadUpdater, train_head
from training.data.beat_dataset import load_beats
from training.federated.aggregator import Aggregator
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy

pytestmark = pytest.mark.slow


def test_population_head_reproduces_the_int8_model(exported):
    path = exported["int8"].tflite_path
    clf = BeatClassifier.from_file(path)
    hf = HeadFeatures(clf, path.read_bytes())
    test = exported["test"]
    feats = hf.features(test.waves[:400], test.rr[:400])
    head = Head(hf.population_w, hf.population_b)
    assert np.mean(head.predict(feats) == clf.predict(test.waves[:400], test.rr[:400])) >= 0.995


def test_five_labelled_minutes_improve_the_rest_of_the_record(exported, mitdb_dir, cache_root):
    path = exported["int8"].tflite_path
    clf = BeatClassifier.from_file(path)
    hf = HeadFeatures(clf, path.read_bytes())
    beats = load_beats(mitdb_dir, ["232"], clf.metadata.signal, cache_root, progress=False)  # many S beats
    n = int(np.searchsorted(beats.sample, 5 * 60 * 360))
    feats = hf.features(beats.waves, beats.rr)
    population = Head(hf.population_w, hf.population_b)
    personal = train_head(feats[:n], beats.labels[:n], population)
    scores = [classification_report(beats.labels[n:], h.predict(feats[n:]), AAMI_CLASSES,
                                    macro_over=("N", "S"))["macro_f1"] for h in (population, personal)]
    assert scores[1] > scores[0] + 0.02, scores
    assert np.abs(personal.w - population.w).max() > 0  # it did move
    with pytest.raises(ValueError):
        HeadConfig(steps=0)


@pytest.mark.integration
def test_a_litert_only_device_contributes_a_head_delta_over_mosquitto(exported, mitdb_dir, cache_root, mosquitto,
                                                                      tmp_path):
    path = exported["int8"].tflite_path
    clf = BeatClassifier.from_file(path)
    beats = load_beats(mitdb_dir, ["232"], clf.metadata.signal, cache_root, progress=False)
    n = int(np.searchsorted(beats.sample, 5 * 60 * 360))
    updater = HeadUpdater(HeadFeatures(clf, path.read_bytes()), beats.waves[:n], beats.rr[:n], beats.labels[:n])
    device = DeviceClient("p232", 232, "heads", broker_url(mosquitto), updater)
    start = [w.copy() for w in exported["trained"].model.get_weights()]
    agg = Aggregator(AggregatorConfig(fleet="heads", devices={"p232": 232}, rounds=1,
                                      policy=RoundPolicy(deadline_s=60)), start, broker_url(mosquitto), tmp_path)
    device.start()
    try:
        result = agg.run()
    finally:
        device.stop()
    assert result.history[0]["participants"] == 1 and result.rejected == {}
    for before, after in zip(start[:-2], result.final_weights[:-2]):
        np.testing.assert_array_equal(before, after)  # the body is untouched
    assert np.abs(result.final_weights[-2] - start[-2]).max() > 1e-4  # the head moved
