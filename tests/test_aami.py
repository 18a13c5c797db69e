import numpy as np
import wfdb

from edge_runtime.aami import AAMI_CLASSES, aami_class, aami_labels
from training.data.splits import DS1, DS2


def test_symbol_mapping_follows_ec57():
    expected = {"N": "N", "L": "N", "R": "N", "e": "N", "j": "N", "A": "S", "a": "S", "J": "S", "S": "S",
                "V": "V", "E": "V", "F": "F", "/": "Q", "f": "Q", "Q": "Q"}
    for symbol, cls in expected.items():
        assert aami_class(symbol) == cls
    for non_beat in "+~|!\"x[]":
        assert aami_class(non_beat) is None


def test_labels_keep_positions_of_beats_only():
    labels, positions = aami_labels(["+", "N", "A", "~", "V", "F", "/"])
    assert positions.tolist() == [1, 2, 4, 5, 6]
    assert [AAMI_CLASSES[i] for i in labels] == ["N", "S", "V", "F", "Q"]


def _counts(mitdb_dir, records):
    total = np.zeros(len(AAMI_CLASSES), int)
    for rec in records:
        labels, _ = aami_labels(list(wfdb.rdann(str(mitdb_dir / rec), "atr").symbol))
        total += np.bincount(labels, minlength=len(AAMI_CLASSES))
    return dict(zip(AAMI_CLASSES, total.tolist()))


def test_real_annotation_counts_equal_de_chazal_2004(mitdb_dir):
    assert _counts(mitdb_dir, DS1) == {"N": 45866, "S": 944, "V": 3788, "F": 415, "Q": 8}
    assert _counts(mitdb_dir, DS2) == {"N": 44259, "S": 1837, "V": 3221, "F": 388, "Q": 7}
