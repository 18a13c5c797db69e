"""MIT-BIH beat classification (AAMI N/S/V/F/Q) on the task interface: the pipeline's first task.

Persons are records. The split is the inter-patient protocol the beat commands use (de Chazal 2004): DS1
records train, DS1 records drawn by the seed (``validation_records``) are "val" and select epochs and rounds,
DS2 is "test". Inputs are {"wave": the beat window (n, window, 1), "rr": the RR features standardised with the
training side's mean and std}, MLII only; class weights (n / (k·n_c))^0.5 capped at 20 weight each beat's loss;
macro F1 over N, S, V, F selects. The beat commands (`foundation`, `simulate`, `fleet`) keep their own wrappers
(leads, augmentation, logit offsets, attacks, ``BeatClassifier`` export); their federated rounds run through the
same trainer and round engine as this task (``tests/test_task_beat.py`` checks the weights are identical).
"""
from __future__ import annotations

import os

import keras
import numpy as np

from edge_runtime.aami import AAMI_CLASSES
from edge_runtime.metrics import classification_report
from edge_runtime.signal_config import SignalConfig
from edge_runtime.task_contract import EdgeContract
from edge_runtime.template_features import feature_set_named
from training.config import TrainConfig
from training.data.beat_dataset import BeatDataset
from training.data.feature_sets import load_feature_beats
from training.data.mitdb import default_cache_root, locate_mitdb
from training.data.protocols import validation_records
from training.data.splits import DS1, DS2
from training.model import RR_INPUT, WAVE_INPUT, build_classifier
from training.tasks.base import Predict, Task, TaskSplit
from training.train import SCORED_CLASSES, RRScaler, class_weights


class BeatTask(Task):
    name = "beat"
    summary = "AAMI beat classes (N, S, V, F, Q) from the beat window and RR features; MIT-BIH inter-patient"
    class_names = AAMI_CLASSES
    selection_metric = "macro_f1"
    alerts = ("ventricular_run", "supraventricular_run", "summary")
    data_source = ("MIT-BIH Arrhythmia Database (Moody & Mark 2001; PhysioNet, ODC-By 1.0), $MITDB_DIR; "
                   "DS1/DS2 of de Chazal et al. 2004")
    signal = SignalConfig()
    train_config = TrainConfig()

    def __init__(self, max_persons: int | None = None) -> None:
        super().__init__(max_persons)
        #: The RR scaler of the training side per seed (what a federation gets from fleet-wide sums), and the one
        #: the last ``split_of`` applied: the edge contract carries it.
        self._scalers: dict[int, RRScaler] = {}
        self._applied: RRScaler | None = None

    def _records(self, split: str, seed: int) -> tuple[str, ...]:
        val = validation_records(seed)
        records = {"train": tuple(r for r in DS1 if r not in val), "val": val, "test": DS2}.get(split)
        if records is None:
            raise ValueError(f"split {split!r} unknown; one of train, val, test")
        return records[:self.max_persons] if self.max_persons else records

    def beats(self, split: str, seed: int = 0) -> BeatDataset:
        """The split's MLII beats (records capped by ``max_persons``), from the beat cache when it has them."""
        cache = default_cache_root()
        data_dir = locate_mitdb(os.environ.get("MITDB_DIR"), cache, allow_download=False)
        return load_feature_beats(data_dir, self._records(split, seed), cache, self.train_config.features,
                                  self.signal)

    def split_of(self, beats: BeatDataset, scaler: RRScaler) -> TaskSplit:
        """Beats as the task's rows: the window with a channel axis and the scaled RR features; persons = records."""
        self._applied = scaler
        return TaskSplit({WAVE_INPUT: beats.waves[..., None], RR_INPUT: scaler(beats.rr)}, beats.labels,
                         beats.record)

    def load(self, split: str, seed: int = 0) -> TaskSplit:
        if seed not in self._scalers:
            self._scalers[seed] = RRScaler.fit(self.beats("train", seed).rr)
        return self.split_of(self.beats(split, seed), self._scalers[seed])

    def build_model(self, train: TaskSplit, seed: int = 0) -> keras.Model:
        return build_classifier(train.inputs[WAVE_INPUT].shape[1], train.inputs[RR_INPUT].shape[1],
                                len(AAMI_CLASSES), self.train_config.model)

    def evaluate(self, predict: Predict, split: TaskSplit) -> dict[str, float]:
        rep = classification_report(split.targets, np.argmax(predict(split.inputs), axis=1), AAMI_CLASSES,
                                    macro_over=SCORED_CLASSES)
        out = {"macro_f1": rep["macro_f1"] or 0.0, "accuracy": rep["accuracy"] or 0.0}
        for name in SCORED_CLASSES:
            out.update({f"{name}_{k}": v for k, v in rep["per_class"][name].items()
                        if k in ("se", "ppv") and v is not None})
        return out

    def sample_weights(self, train: TaskSplit) -> np.ndarray:
        cfg = self.train_config
        cw = class_weights(train.targets, len(AAMI_CLASSES), cfg.class_weight_power, cfg.max_class_weight)
        return np.asarray([cw[c] for c in range(len(AAMI_CLASSES))], np.float32)

    def edge_contract(self, train: TaskSplit) -> EdgeContract:
        """The beat stream's windows and RR features, with the RR scaler the rows were scaled with."""
        if self._applied is None:
            raise ValueError("the beat task's contract needs the RR scaler: load the train split first")
        return EdgeContract(task=self.name, source="beats", channels=("MLII",), sample_rate_hz=self.signal.fs_hz,
                            window=self.signal.window_length,
                            preprocessing={"signal": self.signal.to_dict(), "rr_feature_names": list(feature_set_named(self.train_config.features)),
                                           "rr_mean": [float(v) for v in self._applied.mean],
                                           "rr_std": [float(v) for v in self._applied.std]})
