import numpy as np
import pytest

from edge_runtime.signal_config import SignalConfig
from training.data.beat_dataset import load_beats
from training.data.protocols import make_split, protocol_records, validation_records
from training.data.splits import ALL_RECORDS, DS1, DS2, NON_PACED, PACED


def test_record_lists_are_consistent():
    assert len(ALL_RECORDS) == 48 and len(DS1) == 22 and len(DS2) == 22
    assert not set(DS1) & set(DS2)
    assert not set(PACED) & (set(DS1) | set(DS2))
    assert set(DS1) | set(DS2) == set(NON_PACED)


@pytest.mark.parametrize("seed", range(6))
def test_validation_holds_out_whole_ds1_patients_with_s_and_v(seed):
    val = validation_records(seed)
    assert set(val) <= set(DS1) and len(val) >= 4
    assert "208" not in val  # holds 90 % of DS1's F beats: must stay in training


@pytest.fixture(scope="module")
def all_beats(mitdb_dir, cache_root):
    return load_beats(mitdb_dir, protocol_records("intra"), SignalConfig(), cache_root, progress=False)


@pytest.mark.parametrize("seed", [0, 1])
def test_inter_patient_split_never_trains_on_ds2(all_beats, seed):
    split = make_split("inter", all_beats, seed)
    train_recs = set(all_beats.record[split.train])
    val_recs = set(all_beats.record[split.val])
    test_recs = set(all_beats.record[split.test])
    assert train_recs | val_recs == set(DS1) and not train_recs & val_recs
    assert test_recs == set(DS2)
    assert not (train_recs | val_recs) & set(PACED)


def test_intra_patient_split_is_disjoint_stratified_and_unpaced(all_beats):
    split = make_split("intra", all_beats, 0)
    parts = [split.train, split.val, split.test]
    assert sum(p.size for p in parts) == len(all_beats)
    assert np.unique(np.concatenate(parts)).size == len(all_beats)
    assert not set(all_beats.record) & set(PACED)
    for cls in range(4):
        share = np.mean(all_beats.labels[split.test] == cls) / np.mean(all_beats.labels == cls)
        assert 0.9 < share / 1.0 < 1.1  # each class is ~20 % test, like the whole


def test_beats_are_labelled_rows_with_full_windows(all_beats):
    assert all_beats.waves.shape[1] == SignalConfig().window_length
    assert np.all(np.isfinite(all_beats.waves)) and np.all(np.isfinite(all_beats.rr))
    counts = all_beats.of_records(DS1).class_counts()
    # only the first and last beat of a record (no RR neighbour) may be dropped
    assert 45866 - 2 * 22 <= counts["N"] <= 45866 and counts["V"] >= 3788 - 44
