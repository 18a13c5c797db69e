"""ECG anomaly detection: an autoencoder trained on normal beats only; a beat it reconstructs badly is anomalous.

Data: MIT-BIH beats (``BeatDataset``, the de Chazal inter-patient split). Training rows are the N beats of the
DS1 training records; "val" is all beats of the held-out DS1 records (``validation_records(seed)``: they select
epochs and rounds by AUC of abnormal vs normal and set the threshold at a percentile of their normal scores);
"test" is every beat of DS2 (S, V and F against N, never used to choose anything). A record is a person.

Model: dense layers only (window + scaled RR features -> 32 -> 8 -> 32 -> window + RR). Dense layers with fused
ReLU and one concatenation are what both the int8 TFLite converter and the C generator (``training.codegen``:
FULLY_CONNECTED, CONCATENATION) take; a convolutional decoder would need TRANSPOSE_CONV or an upsampling resize,
which the generator does not lower. The score is ``edge_runtime.anomaly_score``: the device computes the same.
"""
from __future__ import annotations

import logging
import os

import keras
import numpy as np

from edge_runtime.aami import AAMI_CLASSES
from edge_runtime.anomaly_score import AnomalyScoring
from edge_runtime.signal_config import RR_FEATURE_NAMES, SignalConfig
from edge_runtime.task_contract import EdgeContract
from training.data.beat_dataset import BeatDataset, load_beats
from training.data.mitdb import ATTRIBUTION, default_cache_root, locate_mitdb
from training.data.protocols import validation_records
from training.data.splits import DS1, DS2
from training.tasks.anomaly_metrics import PERCENTILES, aucs, choose_percentile, detection, threshold_at
from training.tasks.base import SPLITS, Predict, Task, TaskSplit

log = logging.getLogger(__name__)

#: Classes scored against N (Q, 15 beats in all of MIT-BIH, is left out as EC57 leaves it out of its measures).
SCORED = ("N", "S", "V", "F")
#: Percentile used when the validation persons hold no abnormal beat to choose one with (tiny slices only).
DEFAULT_PERCENTILE = 99.0


class AnomalyTask(Task):
    name = "anomaly"
    summary = "ECG beat anomaly autoencoder trained on normal MIT-BIH beats; score = reconstruction error"
    class_names = ()
    selection_metric = "selection"
    alerts = ("anomaly",)
    data_source = ATTRIBUTION

    def __init__(self, max_persons: int | None = None, latent: int = 8, hidden: int = 32) -> None:
        super().__init__(max_persons)
        if latent < 1 or hidden < latent:
            raise ValueError(f"need 1 <= latent <= hidden, got latent {latent}, hidden {hidden}")
        self.latent, self.hidden = latent, hidden
        self.signal = SignalConfig()
        self._records: dict[str, BeatDataset] = {}
        self._scoring: dict[tuple[str, ...], AnomalyScoring] = {}
        #: (threshold, percentile) of the last ``calibrate``: what ``evaluate`` and ``edge_contract`` use.
        self.threshold: tuple[float, float] | None = None

    # ------------------------------------------------------------------ data
    def persons(self, split: str, seed: int) -> tuple[str, ...]:
        """Records of ``split`` for ``seed`` (validation records are drawn by seed), capped at ``max_persons``."""
        val = validation_records(seed)
        chosen = {"train": tuple(r for r in DS1 if r not in val), "val": val, "test": DS2}
        if split not in chosen:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return chosen[split][:self.max_persons]

    def beats(self, split: str, seed: int = 0) -> BeatDataset:
        """The split's beats as ``BeatDataset`` (MLII): training keeps N beats only, the others every class."""
        data = self._records_of(self.persons(split, seed))
        data = data.subset(np.flatnonzero(data.labels == AAMI_CLASSES.index("N")) if split == "train"
                           else np.flatnonzero(np.isin(data.labels, [AAMI_CLASSES.index(c) for c in SCORED])))
        if len(data) == 0:
            raise ValueError(f"split {split!r} (records {', '.join(self.persons(split, seed))}) holds no beats")
        return data

    def load(self, split: str, seed: int = 0) -> TaskSplit:
        data = self.beats(split, seed)
        waves, rr = self.scoring(seed).inputs(data.waves, data.rr)
        return TaskSplit({"wave": waves, "rr": rr}, data.labels.astype(np.int64), data.record)

    def scoring(self, seed: int = 0) -> AnomalyScoring:
        """Score constants of ``seed``'s split: RR scaling from its training persons' normal beats."""
        key = self.persons("train", seed)
        if key not in self._scoring:
            train = self.beats("train", seed)
            std = np.maximum(train.rr.std(axis=0), 1e-6)
            self._scoring[key] = AnomalyScoring(self.signal.window_length, tuple(map(float, train.rr.mean(axis=0))),
                                                tuple(map(float, std)))
        return self._scoring[key]

    def _records_of(self, records: tuple[str, ...]) -> BeatDataset:
        """Beats of ``records``, read (from the beat cache) the first time a record is asked for."""
        missing = [r for r in records if r not in self._records]
        if missing:
            cache = default_cache_root()
            data_dir = locate_mitdb(os.environ.get("MITDB_DIR"), cache, allow_download=False)
            loaded = load_beats(data_dir, missing, self.signal, cache, progress=False)
            self._records.update({r: loaded.of_records([r]) for r in missing})
        return BeatDataset.concat([self._records[r] for r in records])

    # ------------------------------------------------------------------ model
    def build_model(self, train: TaskSplit, seed: int = 0) -> keras.Model:
        keras.utils.set_random_seed(seed)
        window = train.inputs["wave"].shape[1]
        wave = keras.Input((window,), name="wave")
        rr = keras.Input((len(RR_FEATURE_NAMES),), name="rr")
        h = keras.layers.Concatenate(name="beat")([wave, rr])
        h = keras.layers.Dense(self.hidden, activation="relu", name="enc")(h)
        h = keras.layers.Dense(self.latent, activation="relu", name="latent")(h)
        h = keras.layers.Dense(self.hidden, activation="relu", name="dec")(h)
        out = keras.layers.Dense(window + len(RR_FEATURE_NAMES), name="reconstruction")(h)
        return keras.Model([wave, rr], out, name="anomaly_autoencoder")

    def loss(self) -> keras.losses.Loss:
        return keras.losses.MeanSquaredError(reduction="none")

    def training_targets(self, split: TaskSplit) -> np.ndarray:
        """The autoencoder reproduces its input: the window followed by the scaled RR features."""
        return np.concatenate([split.inputs["wave"], split.inputs["rr"]], axis=1).astype(np.float32)

    # ------------------------------------------------------------------ scoring
    def scores(self, predict: Predict, split: TaskSplit) -> np.ndarray:
        """Anomaly score of every row of ``split`` under ``predict`` (Keras, float or int8 TFLite)."""
        return self._weights(split).scores(split.inputs["wave"], split.inputs["rr"], np.asarray(predict(split.inputs)))

    def calibrate(self, predict: Predict, val: TaskSplit) -> None:
        """Threshold on the validation persons: the percentile (of ``PERCENTILES``) of their normal scores that
        maximises abnormal-beat F1 on them. Call after training, before ``edge_contract`` and the test."""
        scores = self.scores(predict, val)
        normal = val.targets == 0
        if np.any(~normal) and np.any(normal):
            percentile, threshold = choose_percentile(scores, val.targets, PERCENTILES)
        else:
            percentile = DEFAULT_PERCENTILE
            threshold = threshold_at(scores[normal] if np.any(normal) else scores, percentile)
        self.threshold = (float(threshold), float(percentile))
        log.info("anomaly threshold %.4g at the %g-th percentile of validation normal scores", threshold, percentile)

    def evaluate(self, predict: Predict, split: TaskSplit) -> dict[str, float]:
        """AUC of S, V, F (and all abnormal) against N; with a calibrated threshold, Se/+P at it. "selection" is
        ``auc_abnormal`` (minus the mean normal score where the split holds no abnormal beat)."""
        scores = self.scores(predict, split)
        out = aucs(scores, split.targets, SCORED)
        normal = scores[split.targets == 0]
        out["mean_score_N"] = float(normal.mean()) if normal.size else float("nan")
        out["selection"] = out["auc_abnormal"] if np.isfinite(out["auc_abnormal"]) else -out["mean_score_N"]
        if self.threshold is not None:
            out.update(detection(scores, split.targets, self.threshold[0], SCORED))
            out["threshold"] = self.threshold[0]
        return out

    def _weights(self, split: TaskSplit) -> AnomalyScoring:
        """The score's weighting for rows already scaled (the RR scaling itself is applied by ``load``)."""
        n = len(RR_FEATURE_NAMES)
        return AnomalyScoring(split.inputs["wave"].shape[1], (0.0,) * n, (1.0,) * n)

    def edge_contract(self, train: TaskSplit) -> EdgeContract:
        """The beat stream's window and RR features, with the score constants (threshold once calibrated) of the
        split ``train`` comes from."""
        key = tuple(sorted(np.unique(train.persons)))
        fitted = [s for persons, s in self._scoring.items() if tuple(sorted(persons)) == key]
        if not fitted:
            raise ValueError("edge_contract needs a training split made by this task's load('train', seed)")
        scoring = fitted[0] if self.threshold is None else fitted[0].with_threshold(*self.threshold)
        return EdgeContract(task=self.name, source="beats", channels=("ecg",), sample_rate_hz=self.signal.fs_hz,
                            window=self.signal.window_length, preprocessing=scoring.to_dict())
