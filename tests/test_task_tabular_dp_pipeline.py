"""The session-9 DP pipeline of the tabular task: a block of columns, log(x + a) with public offsets, a release of
the centres alone, all inside the one ε; the public parts read no record, the device applies the same map."""
import math

import numpy as np
import pytest

from edge_runtime.tabular_records import TabularScorer
from edge_runtime.task_model import TaskInterpreter
from tools.task_bench.tabular import DP_LOCAL, DP_PIPELINE, DP_ROUNDS, STATS_NOISE
from training.federated.dpsgd import calibrate_noise
from training.federated.local_training import LocalConfig
from training.federated.simulation import FederatedConfig
from training.tasks.export import export_task
from training.tasks.federated import run_task_federated
from training.tasks.tabular import TabularTask
from training.tasks.tabular_dp_selection import (
    CANDIDATES,
    STAGE_2,
    choose,
    non_test_records,
)
from training.tasks.tabular_dp_stats import (
    UPPER_BOUNDS,
    DpStats,
    private_mean_std,
    public_range,
    sensitivity,
)
from training.tasks.tabular_features import (
    FEATURE_SETS,
    OFFSET_SHARE,
    columns_of,
    feature_map,
    offsets,
)


def test_log_offset_bounds_and_the_centres_release_depend_on_no_record():
    cols = columns_of("worst")
    np.testing.assert_allclose(offsets(cols), OFFSET_SHARE * UPPER_BOUNDS[cols], rtol=1e-6)
    fmap = feature_map("log-offset", cols)
    low, width = public_range(fmap, UPPER_BOUNDS[cols])
    np.testing.assert_allclose(width, math.log(1 + 1 / OFFSET_SHARE), rtol=1e-5)  # the same range for every column
    rng = np.random.default_rng(5)
    hospitals = np.repeat(np.arange(4), 30)
    dp = DpStats(6.0, 0, "sums", 0.1)
    data = [rng.uniform(0.0, 1.0, (120, len(cols))) * UPPER_BOUNDS[cols] * s for s in (0.05, 0.6)]
    released = [private_mean_std(x, hospitals, fmap, dp, UPPER_BOUNDS[cols]) for x in data]
    np.testing.assert_array_equal(released[0][1], released[1][1])  # the scale: a public share of the public range
    np.testing.assert_allclose(released[0][1], 0.1 * width, rtol=1e-6)
    assert not np.allclose(released[0][0], released[1][0])  # the centres are the records' (noisy) own
    # one record moves the released Σu by at most sqrt(k): u stays in [0, 1] even for values beyond the bounds
    extreme = np.vstack([np.zeros(len(cols)), 10 * UPPER_BOUNDS[cols]])
    u = (np.clip(fmap(extreme), low, low + width) - low) / width
    assert np.all((u >= 0) & (u <= 1)) and np.linalg.norm(u, axis=1).max() <= sensitivity(len(cols), "sums") + 1e-9
    assert sensitivity(10, "sums") == math.sqrt(10) and sensitivity(10, "sums-squares") == math.sqrt(20)
    with pytest.raises(ValueError, match="release"):
        DpStats(6.0, release="medians")
    with pytest.raises(ValueError, match="feature set"):
        columns_of("best")


def test_the_bench_runs_the_shipped_pipeline_and_its_sigma_pays_for_the_release():
    assert DP_LOCAL["learning_rate"] == DP_PIPELINE.learning_rate and STATS_NOISE == DP_PIPELINE.noise_multiplier
    steps = DP_ROUNDS * round(1 / DP_LOCAL["dpsgd_rate"])
    assert DP_PIPELINE.noise() == calibrate_noise(1.0, 1e-6, DP_LOCAL["dpsgd_rate"], steps,
                                                  release_noise=DP_PIPELINE.noise_multiplier)
    assert DP_PIPELINE.noise() > calibrate_noise(1.0, 1e-6, DP_LOCAL["dpsgd_rate"], steps)
    assert DP_PIPELINE in CANDIDATES + STAGE_2
    assert DpStats.named("dp-centres") == DP_PIPELINE.stats(0)


def test_the_rule_takes_the_best_mean_and_among_ties_the_fewest_released_numbers():
    rows = [{"label": "a", "mean": 0.950, "released": 60, "noise_multiplier": 5.0},
            {"label": "b", "mean": 0.947, "released": 10, "noise_multiplier": 6.0},
            {"label": "c", "mean": 0.946, "released": 10, "noise_multiplier": 8.0},
            {"label": "d", "mean": 0.930, "released": 1, "noise_multiplier": 9.0}]
    assert choose(rows)["label"] == "c"  # a, b, c tie within 0.5 pp; b and c release 10; c spends less on it
    assert choose(rows[:1] + rows[3:])["label"] == "a"


def test_the_folded_records_are_the_non_test_patients_of_four_hospitals():
    rec = non_test_records()
    task = TabularTask()
    assert len(rec.y) == 456 and set(np.unique(rec.hospital)) == {0, 1, 2, 3}
    assert not set(rec.persons) & set(task.load("test").persons)


def test_a_column_block_with_log_offset_reaches_the_device_through_the_contract(tmp_path):
    """The device reads all 30 fields of a record, keeps the contract's columns, applies log(x + a) with the
    contract's offsets and standardises: the same inputs the model trained on."""
    from sklearn.datasets import load_breast_cancer

    task = TabularTask(transform="log-offset", features="worst", dp_stats=DpStats(6.0, 0, "sums", 0.1))
    train, val, test = (task.load(s) for s in ("train", "val", "test"))
    assert train.inputs["features"].shape[1] == len(FEATURE_SETS["worst"])
    fed = FederatedConfig(rounds=2, partition="hospitals", local=LocalConfig(epochs=1, batch_size=16,
                                                                             learning_rate=0.5))
    trained = run_task_federated(task, train, val, fed, last_round=True)
    exported = export_task(trained, train, tmp_path, "int8")
    pre = exported.metadata.extra["task"]["preprocessing"]
    assert pre["columns"] == list(FEATURE_SETS["worst"]) and len(pre["offset"]) == len(pre["columns"])
    edge = TaskInterpreter.from_file(exported.tflite_path)
    raw = load_breast_cancer()
    index = [int(p.split("/")[1]) for p in test.persons[:6]]
    lines = [",".join(f"{v:.17g}" for v in raw.data[i]) for i in index] + [",".join(["-1"] * 30), "1,2"]
    scorer = TabularScorer(edge)
    scored = list(scorer.score(lines))
    expected = np.argmax(edge.predict({"features": test.inputs["features"][:6]}), 1)
    assert [r["class"] for r in scored] == [task.class_names[c] for c in expected]
    assert scorer.stats.scored == 6 and scorer.stats.malformed == 2
