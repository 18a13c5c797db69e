"""One foundation run: split, train, export float32 + int8, evaluate both through the edge classifier."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable
from pathlib import Path

import numpy as np

from edge_runtime.classifier import BeatClassifier
from edge_runtime.metrics import classification_report
from training.config import TrainConfig
from edge_runtime.aami import AAMI_CLASSES
from training.data.beat_dataset import BeatDataset
from training.data.protocols import make_split
from training.export import export_model, representative_beats
from training.model_stats import model_stats
from training.train import SCORED_CLASSES, TrainedModel, calibrate, train_centralized

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """Everything a report needs about one (protocol, seed) run; ``to_dict`` is the JSON form."""

    protocol: str
    seed: int
    split: str
    metrics: dict  # {"float32": report, "int8": report}: the protocol's test beats on MLII
    int8_agreement: float  # share of test beats where int8 and float32 pick the same class
    int8_bytes: int
    float32_bytes: int
    stats: dict
    latency_us_median: float
    best_epoch: int
    history: list
    train_seconds: float
    model_paths: dict
    #: The same test patients on another lead, e.g. {"other": {"float32": report, "int8": report}}:
    #: reported only, never used for any choice.
    lead_metrics: dict = field(default_factory=dict)
    logit_offsets: tuple = ()

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _latency_us(clf: BeatClassifier, data: BeatDataset, n: int = 300) -> float:
    """Median wall time of one batch-1 invoke (quantize + invoke + read) in microseconds."""
    n = min(n, len(data))
    times = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        clf.raw_outputs(data.waves[i:i + 1], data.rr[i:i + 1])
        times[i] = time.perf_counter() - t0
    return float(np.median(times) * 1e6)


def export_and_evaluate(trained: TrainedModel, train: BeatDataset, test: BeatDataset, protocol: str,
                        seed: int, split: str, stem: Path, train_seconds: float) -> RunResult:
    """Export float32 + int8 (calibrated on training beats) and score both on ``test`` through the
    edge classifier: the only place a test set is touched, after the model is chosen. ``test`` beats
    on MLII give ``metrics``; those on other leads give ``lead_metrics`` (reported, never selected on)."""
    version = f"{stem.name}-{trained.config.digest()}"
    calib = train.subset(representative_beats(train, 1000, seed))
    extra = {"logit_offsets_folded": list(trained.logit_offsets)} if trained.logit_offsets else {}
    extra["training_leads"] = list(trained.config.leads)
    exported = {
        "float32": export_model(trained, stem.with_name(stem.name + "_float32.tflite"), "float32", version,
                                extra=extra),
        "int8": export_model(trained, stem.with_name(stem.name + "_int8.tflite"), "int8", version, calib, extra),
    }
    main_test = test.of_leads(["MLII"])
    others = {lead: test.of_leads([lead]) for lead in np.unique(test.lead) if lead != "MLII"}
    metrics, preds, latency = {}, {}, 0.0
    lead_metrics: dict = {lead: {} for lead in others}
    for kind, ex in exported.items():
        clf = BeatClassifier.from_file(ex.tflite_path)
        preds[kind] = clf.predict(main_test.waves, main_test.rr)
        metrics[kind] = classification_report(main_test.labels, preds[kind], AAMI_CLASSES,
                                              macro_over=SCORED_CLASSES)
        for lead, part in others.items():
            lead_metrics[lead][kind] = classification_report(part.labels, clf.predict(part.waves, part.rr),
                                                             AAMI_CLASSES, macro_over=SCORED_CLASSES)
        if kind == "int8":
            latency = _latency_us(clf, main_test)
    return RunResult(
        protocol=protocol, seed=seed, split=split, metrics=metrics,
        int8_agreement=float(np.mean(preds["int8"] == preds["float32"])),
        int8_bytes=exported["int8"].size_bytes, float32_bytes=exported["float32"].size_bytes,
        stats=model_stats(trained.model).__dict__, latency_us_median=latency, best_epoch=trained.best_epoch,
        history=trained.history, train_seconds=train_seconds,
        model_paths={k: str(v.tflite_path) for k, v in exported.items()},
        lead_metrics=lead_metrics, logit_offsets=tuple(trained.logit_offsets),
    )


def run_protocol(data: BeatDataset, protocol: str, cfg: TrainConfig, out_dir: Path, verbose: int = 0) -> RunResult:
    """Train on the protocol's training beats with ``cfg.seed``; test only once, after selection."""
    split = make_split(protocol, data, cfg.seed)
    train = data.subset(split.train).of_leads(cfg.training_lead_tags())
    val = data.subset(split.val).of_leads(cfg.leads)
    test = data.subset(split.test).of_leads(["MLII", "other"])
    log.info("%s seed %d: %d train / %d val / %d test beats", protocol, cfg.seed, len(train), len(val), len(test))
    t0 = time.perf_counter()
    trained = train_centralized(train, val, cfg, verbose=verbose)
    return export_and_evaluate(trained, train, test, protocol, cfg.seed, split.description,
                               Path(out_dir) / f"{protocol}_seed{cfg.seed}", time.perf_counter() - t0)


def run_seeds(data: BeatDataset, protocol: str, cfg: TrainConfig, seeds: list[int], out_dir: Path,
              verbose: int = 0) -> list[RunResult]:
    return [run_protocol(data, protocol, replace(cfg, seed=s), out_dir, verbose) for s in seeds]


#: ``train_fn(train, val, test, seed)``: a federated (or any) trainer; ``test`` may only be scored for reports.
Trainer = Callable[[BeatDataset, BeatDataset, BeatDataset, int], TrainedModel]


def run_trainer_seeds(data: BeatDataset, protocol: str, seeds: list[int], out_dir: Path, label: str,
                      train_fn: Trainer, leads: tuple[str, ...] = ("MLII",),
                      train_tags: tuple[str, ...] | None = None) -> list[RunResult]:
    """Per seed: the protocol's split (training and validation beats of ``leads``), ``train_fn``, then
    int8 export and the one test-set evaluation (MLII, and every other lead loaded, reported apart).
    ``train_tags`` adds lead tags that only train (perturbed copies, "MLII/aug"). The trained model gets
    its config's logit offsets folded in, as centralized training does."""
    runs = []
    for seed in seeds:
        split = make_split(protocol, data, seed)
        train = data.subset(split.train).of_leads(train_tags or leads)
        val = data.subset(split.val).of_leads(leads)
        test = data.subset(split.test).of_leads(["MLII", "other"])
        log.info("seed %d: %s; %d train / %d val / %d test beats", seed, label, len(train), len(val), len(test))
        t0 = time.perf_counter()
        trained = calibrate(train_fn(train, val, test.of_leads(["MLII"]), seed), train.labels, val)
        runs.append(export_and_evaluate(trained, train, test, protocol, seed, split.description,
                                        Path(out_dir) / f"{label}_seed{seed}", time.perf_counter() - t0))
    return runs
