import shutil

import numpy as np
import pytest
import wfdb

from training.data.mitdb import DataUnavailable, RecordError, load_record, locate_mitdb


def test_excerpt_loads_mlii_in_millivolts(excerpt_dir):
    rec = load_record(excerpt_dir, "208x")
    ref = wfdb.rdrecord(str(excerpt_dir / "208x"), channels=[0])
    assert rec.lead == "MLII" and rec.fs_hz == 360.0
    np.testing.assert_array_equal(rec.signal_mv, ref.p_signal[:, 0])
    assert {"N", "V", "F"} <= set(rec.ann_symbol.tolist())


def test_lead_is_chosen_by_name_not_index(mitdb_dir):
    rec = load_record(mitdb_dir, "114")  # V5 is channel 0, MLII channel 1 in this record
    ref = wfdb.rdrecord(str(mitdb_dir / "114"), channels=[1])
    assert ref.sig_name == ["MLII"]
    np.testing.assert_array_equal(rec.signal_mv, ref.p_signal[:, 0])


def test_record_without_the_lead_is_an_error_naming_it(mitdb_dir):
    with pytest.raises(RecordError, match=r"102\.hea: no lead 'MLII'"):
        load_record(mitdb_dir, "102")


@pytest.fixture()
def excerpt_copy(tmp_path, excerpt_dir):
    for f in excerpt_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def test_truncated_dat_is_an_error_naming_the_file(excerpt_copy):
    dat = excerpt_copy / "208x.dat"
    dat.write_bytes(dat.read_bytes()[:50_000])
    with pytest.raises(RecordError, match=r"208x\.dat: truncated"):
        load_record(excerpt_copy, "208x")


def test_missing_annotation_file_is_an_error(excerpt_copy):
    (excerpt_copy / "208x.atr").unlink()
    with pytest.raises(RecordError, match=r"208x\.atr: missing"):
        load_record(excerpt_copy, "208x")


def test_corrupt_header_is_an_error(excerpt_copy):
    (excerpt_copy / "208x.hea").write_text("this is not a WFDB header\n")
    with pytest.raises(RecordError, match=r"208x"):
        load_record(excerpt_copy, "208x")


def test_corrupt_annotations_are_an_error(excerpt_copy):
    (excerpt_copy / "208x.atr").write_bytes(b"\xff" * 7)
    with pytest.raises(RecordError, match=r"208x"):
        load_record(excerpt_copy, "208x")


def test_missing_directory_and_offline_say_what_to_do(tmp_path):
    with pytest.raises(DataUnavailable, match="--data-dir"):
        locate_mitdb(tmp_path / "nope", tmp_path)
    with pytest.raises(DataUnavailable, match="MITDB_DIR"):
        locate_mitdb(None, tmp_path, allow_download=False)
