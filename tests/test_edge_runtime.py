"""The device loop end to end on real ECG: source -> stream -> int8 classifier -> CSV and WFDB annotations."""
import csv
import json

import numpy as np
import pytest
from scipy import signal as sp_signal

from edge_runtime.beat_stream import offline_beats
from edge_runtime.classifier import BeatClassifier
from edge_runtime.runtime import CsvSink, EdgeRuntime, WfdbAnnotationSink
from edge_runtime.scoring import score_detection
from edge_runtime.sources import TextSamples, WfdbReplay, paced
from edge_runtime.aami import aami_labels
from training.data.mitdb import load_record
from tools.cli import main

pytestmark = pytest.mark.slow


class _Collect:
    def __init__(self):
        self.beats = []

    def on_beat(self, beat):
        self.beats.append(beat)

    def close(self):
        pass


def _reference(rec):
    _, pos = aami_labels(rec.ann_symbol)
    return rec.ann_sample[pos]


def test_runtime_equals_offline_inference_and_writes_standard_files(exported, excerpt_dir, tmp_path):
    model = exported["int8"].tflite_path
    clf = BeatClassifier.from_file(model)
    source = WfdbReplay(excerpt_dir / "208x", "MLII", chunk_s=0.1)
    collect = _Collect()
    sinks = [collect, CsvSink(tmp_path / "208x.csv"), WfdbAnnotationSink("208x", tmp_path, source.fs_hz)]
    stats = EdgeRuntime(clf, source.fs_hz, sinks).run(paced(source, None))

    rec = load_record(excerpt_dir, "208x")
    peaks, inputs = offline_beats(rec.signal_mv)
    assert [b.sample for b in collect.beats] == list(peaks[inputs.beat_index])
    offline = [clf.metadata.class_names[k] for k in clf.predict(inputs.waves, inputs.rr)]
    # beats the signal quality rules out are labelled Q instead of classified (the first few: no morphology yet)
    usable = [b.usable for b in collect.beats]
    assert [b.label for b in collect.beats] == [c if u else "Q" for c, u in zip(offline, usable)]
    assert sum(usable) >= 0.95 * len(usable)
    assert stats.beats == len(offline) and sum(stats.per_class.values()) == stats.beats
    rows = list(csv.DictReader(open(tmp_path / "208x.csv")))
    assert len(rows) == stats.beats and rows[0]["model_version"] == "t1"
    assert all(30 < float(r["heart_rate_bpm"]) < 250 for r in rows)

    code = main(["edge", "score", "--record", str(excerpt_dir / "208x"), "--annotations-dir", str(tmp_path),
                 "--json", str(tmp_path / "score.json")])
    assert code == 0
    report = json.loads((tmp_path / "score.json").read_text())
    assert report["detection"]["se"] > 0.98 and report["detection"]["ppv"] > 0.98


def test_text_input_at_250_hz_is_resampled_and_bad_lines_are_skipped(exported, excerpt_dir, tmp_path):
    rec = load_record(excerpt_dir, "208x")
    x250 = sp_signal.resample_poly(rec.signal_mv, 25, 36)
    lines = ["time_s,ecg_mv"] + [f"{i / 250:.4f},{v:.5f}" for i, v in enumerate(x250)]
    lines.insert(5000, "12.3,garbage")
    lines.insert(9000, "")
    source = TextSamples(iter(lines), fs_hz=250.0)
    collect = _Collect()
    EdgeRuntime(BeatClassifier.from_file(exported["int8"].tflite_path), 250.0, [collect]).run(source.chunks())
    assert source.malformed == 1
    detected = np.array([b.sample for b in collect.beats])
    reference = np.round(_reference(rec) * 250 / 360).astype(int)
    score = score_detection(reference[reference > 250], detected, fs_hz=250.0)
    # the first beats of a stream have no RR context and are not reported: compare from 1 s on
    assert score.sensitivity > 0.97 and score.positive_predictivity > 0.98, score.to_dict()


def test_edge_score_says_what_is_missing(tmp_path, excerpt_dir, capsys):
    assert main(["edge", "score", "--record", str(excerpt_dir / "208x"), "--annotations-dir", str(tmp_path)]) == 2
    assert "pulsewire edge run" in capsys.readouterr().err


def test_selftest_passes_and_catches_a_broken_model(exported, tmp_path, capsys):
    assert main(["edge", "selftest", "--model", str(exported["int8"].tflite_path)]) == 0
    assert "selftest passed" in capsys.readouterr().out
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(exported["int8"].tflite_path.read_bytes()[:-10] + b"0123456789")
    (tmp_path / "broken.json").write_text(exported["int8"].tflite_path.with_suffix(".json").read_text())
    assert main(["edge", "selftest", "--model", str(broken)]) == 1
    assert "FAIL  model and metadata" in capsys.readouterr().out
