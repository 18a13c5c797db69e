"""Compose the stages into variants, export each to int8, and measure it (size, cost, microcontroller
check, test metrics).

A variant is a chain of stage names, e.g. ``("distill", "structured", "qat")``; chains that share a prefix
share its trained model (the distilled student is trained once for every chain that starts with it).
Roots: ``baseline`` (the foundation's training), ``mid`` (1.5x wider, trained the same way),
``teacher`` (4x the filters), ``distill`` / ``distill_mid`` (baseline-sized / 1.5x students taught by the
teacher). Fine-tuning stages: ``prune`` (magnitude), ``structured``
(filters and units removed), ``qat``. Chains rooted at ``distill`` keep the teacher's soft targets in
their fine-tuning losses. Every stage selects its epoch on the protocol's validation split; the test set
is scored once per exported model, for the report.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np

from edge_runtime.aami import AAMI_CLASSES
from edge_runtime.classifier import BeatClassifier
from edge_runtime.metrics import classification_report
from training.config import ModelConfig, TrainConfig
from training.data.beat_dataset import BeatDataset
from training.export import export_model, representative_beats
from training.model import build_classifier
from training.model_stats import model_stats
from training.optimize.deploy import conv_head, flatbuffer_facts
from training.optimize.distill import MID_MODEL, DistillConfig, teacher_targets, train_teacher
from training.optimize.fitting import FitConfig, distillation_loss, fit_selected, packed_targets
from training.optimize.prune import MagnitudePruning, kernel_sparsity, structured_prune
from training.optimize.qat import deployable_qat, quantize_aware
from training.tflm_check import check_model
from training.train import SCORED_CLASSES, RRScaler, TrainedModel, train_centralized

log = logging.getLogger(__name__)
ROOTS = ("baseline", "mid", "teacher", "distill", "distill_mid")
STAGES = ("prune", "structured", "qat")

#: The benchmark's variants (name -> chain); the CLI builds its own chain from flags.
BENCH_VARIANTS: dict[str, tuple[str, ...]] = {
    "baseline": ("baseline",),
    "teacher": ("teacher",),
    "mid": ("mid",),
    "distilled": ("distill",),
    "distilled_mid": ("distill_mid",),
    "pruned": ("baseline", "prune"),
    "structured": ("baseline", "structured"),
    "qat": ("baseline", "qat"),
    "distilled_structured": ("distill", "structured"),
    "distilled_structured_qat": ("distill", "structured", "qat"),
}


@dataclass(frozen=True)
class OptimizeConfig:
    """Every knob of the stages, fixed before any test-set number is seen."""

    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    sparsity: float = 0.5  # magnitude pruning target
    structured_fraction: float = 0.5  # share of filters and units removed
    finetune_epochs: int = 15
    finetune_learning_rate: float = 1e-3
    #: QAT fine-tunes gently: at 1e-3 the fake-quant ranges and weights moved together and validation
    #: macro F1 collapsed within one epoch on a small set; 1e-4 kept it (seen on 8 DS1 records, not DS2)
    qat_epochs: int = 5
    qat_learning_rate: float = 1e-4
    calibration_beats: int = 1000
    tflm_beats: int = 2000

    def __post_init__(self) -> None:
        if not 0 < self.sparsity < 1 or not 0 < self.structured_fraction < 1:
            raise ValueError("sparsity and structured_fraction must be in (0, 1)")
        if min(self.finetune_epochs, self.qat_epochs, self.calibration_beats, self.tflm_beats) < 1:
            raise ValueError("epochs and beat counts must be >= 1")


def validate_chain(chain: tuple[str, ...]) -> tuple[str, ...]:
    if not chain or chain[0] not in ROOTS or any(s not in STAGES for s in chain[1:]):
        raise ValueError(f"a chain is a root {ROOTS} then stages from {STAGES}, got {chain}")
    if "qat" in chain[:-1] or chain[0] == "teacher" and len(chain) > 1:
        raise ValueError(f"QAT must be the last stage and the teacher is not optimized further: {chain}")
    return chain


@dataclass
class Candidate:
    """A trained model at some point of a chain, ready to export or to optimize further."""

    chain: tuple[str, ...]
    network: keras.Model  # the Keras 3 network (stats, later stages)
    model_cfg: ModelConfig
    qat_model: Any = None  # the tf_keras QAT model when the chain ends in "qat"
    best_epoch: int = 0
    val_macro_f1: float = 0.0
    history: list = field(default_factory=list)
    seconds: float = 0.0


class ChainRunner:
    """Trains chains on one protocol split and seed; shares trained prefixes between chains."""

    def __init__(self, train: BeatDataset, val: BeatDataset, cfg: OptimizeConfig) -> None:
        self.train, self.val, self.cfg = train, val, cfg
        self.scaler = RRScaler.fit(train.rr)
        self._done: dict[tuple[str, ...], Candidate] = {}
        self._soft: np.ndarray | None = None
        self.teacher: Candidate | None = None

    def _fit_cfg(self, epochs: int, min_epochs: int, lr: float) -> FitConfig:
        t = self.cfg.train
        return FitConfig(epochs=epochs, min_epochs=min(min_epochs, epochs), patience=t.patience,
                         batch_size=t.batch_size, learning_rate=lr, class_weight_power=t.class_weight_power,
                         max_class_weight=t.max_class_weight, seed=t.seed)

    def _loss_parts(self, chain: tuple[str, ...], fit: FitConfig) -> tuple[np.ndarray, float, float]:
        """Packed targets and (alpha, T): the teacher's soft targets for chains rooted at ``distill``."""
        if chain[0].startswith("distill"):
            d = self.cfg.distill
            return packed_targets(self.train.labels, fit, self._soft), d.alpha, d.temperature
        return packed_targets(self.train.labels, fit), 1.0, 1.0

    def run(self, chain: tuple[str, ...]) -> Candidate:
        chain = validate_chain(tuple(chain))
        if chain in self._done:
            return self._done[chain]
        started = time.perf_counter()
        if len(chain) == 1:
            cand = self._root(chain[0])
        else:
            cand = self._stage(self.run(chain[:-1]), chain)
        cand.seconds = time.perf_counter() - started
        log.info("%s: val macro F1 %.4f (epoch %d, %.0f s)", "->".join(chain), cand.val_macro_f1,
                 cand.best_epoch, cand.seconds)
        self._done[chain] = cand
        return cand

    def _root(self, root: str) -> Candidate:
        cfg = self.cfg.train
        student_cfg = MID_MODEL if root.endswith("mid") else cfg.model
        if root in ("baseline", "mid", "teacher"):
            trained = (train_teacher(self.train, self.val, cfg, self.cfg.distill) if root == "teacher"
                       else train_centralized(self.train, self.val, replace(cfg, model=student_cfg), verbose=0))
            val_f1 = max((h["val_macro_f1"] for h in trained.history if h["epoch"] == trained.best_epoch), default=0.0)
            return Candidate((root,), trained.model, trained.config.model, best_epoch=trained.best_epoch,
                             val_macro_f1=val_f1, history=trained.history)
        teacher = self.teacher_candidate()
        self._soft = teacher_targets(TrainedModel(teacher.network, self.scaler, cfg), self.train, self.cfg.distill)
        keras.utils.set_random_seed(cfg.seed)
        student = build_classifier(self.train.waves.shape[1], self.train.rr.shape[1], len(AAMI_CLASSES), student_cfg)
        fit = self._fit_cfg(cfg.epochs, cfg.min_epochs, cfg.learning_rate)
        return self._fit((root,), student, student_cfg, fit)

    def teacher_candidate(self) -> Candidate:
        if self.teacher is None:
            self.teacher = self.run(("teacher",))
        return self.teacher

    def _fit(self, chain: tuple[str, ...], model: keras.Model, model_cfg: ModelConfig, fit: FitConfig,
             callbacks: list | None = None) -> Candidate:
        targets, alpha, temperature = self._loss_parts(chain, fit)
        model.compile(optimizer=keras.optimizers.Adam(fit.learning_rate), loss=distillation_loss(alpha, temperature))
        result = fit_selected(model, self.train, self.val, self.scaler, targets, fit, callbacks, "->".join(chain))
        return Candidate(chain, model, model_cfg, best_epoch=result.best_epoch,
                         val_macro_f1=result.best_val_macro_f1, history=result.history)

    def _stage(self, parent: Candidate, chain: tuple[str, ...]) -> Candidate:
        stage, cfg = chain[-1], self.cfg
        keras.utils.set_random_seed(cfg.train.seed)
        if stage == "qat":
            fit = self._fit_cfg(cfg.qat_epochs, 1, cfg.qat_learning_rate)
            targets, alpha, temperature = self._loss_parts(chain, fit)
            qat, result = quantize_aware(parent.network, parent.model_cfg, self.train, self.val, self.scaler,
                                         targets, fit, alpha, temperature)
            return Candidate(chain, parent.network, parent.model_cfg, qat_model=qat, best_epoch=result.best_epoch,
                             val_macro_f1=result.best_val_macro_f1, history=result.history)
        if stage == "structured":
            model, model_cfg = structured_prune(parent.network, parent.model_cfg, cfg.structured_fraction)
            fit = self._fit_cfg(cfg.finetune_epochs, 1, cfg.finetune_learning_rate)
            return self._fit(chain, model, model_cfg, fit)
        # magnitude pruning: the schedule reaches the target at half the fine-tuning epochs; only epochs
        # from there on can be selected, so the kept weights have the full sparsity
        model = keras.models.clone_model(parent.network)
        model.set_weights(parent.network.get_weights())
        ramp = max(1, cfg.finetune_epochs // 2)
        steps = int(np.ceil(len(self.train) / cfg.train.batch_size))
        fit = self._fit_cfg(cfg.finetune_epochs, ramp, cfg.finetune_learning_rate)
        return self._fit(chain, model, parent.model_cfg, fit, [MagnitudePruning(cfg.sparsity, ramp * steps)])

    def deployable(self, cand: Candidate) -> TrainedModel:
        """What gets converted: the 1x1-conv-head twin at batch 1 (PTQ), or the QAT model rebuilt at batch 1."""
        config = replace(self.cfg.train, model=cand.model_cfg)
        if cand.qat_model is not None:
            model = deployable_qat(cand.qat_model, cand.model_cfg, self.train.waves.shape[1],
                                   self.train.rr.shape[1], len(AAMI_CLASSES))
        else:
            model = conv_head(cand.network)
        return TrainedModel(model, self.scaler, config, history=cand.history, best_epoch=cand.best_epoch)


def _tflm_sample(test: BeatDataset, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` test beats for the bit-exactness check: every class represented, the rest random."""
    rng = np.random.default_rng(seed)
    rare = np.flatnonzero(test.labels != AAMI_CLASSES.index("N"))
    rare = rng.choice(rare, size=min(rare.size, n // 2), replace=False)
    rest = rng.choice(len(test), size=min(len(test), n - rare.size), replace=False)
    return np.unique(np.concatenate([rare, rest]))


def evaluate_variant(runner: ChainRunner, cand: Candidate, test: BeatDataset, path: Path, version: str) -> dict:
    """Export ``cand`` to int8 and measure everything the report lists (test set scored here only)."""
    cfg = runner.cfg
    deploy = runner.deployable(cand)
    calib = runner.train.subset(representative_beats(runner.train, cfg.calibration_beats, cfg.train.seed))
    exported = export_model(deploy, path, "int8", version, calib, extra={"chain": list(cand.chain)})
    blob = exported.tflite_path.read_bytes()
    facts = flatbuffer_facts(blob)
    clf = BeatClassifier.from_file(exported.tflite_path)
    pred = clf.predict(test.waves, test.rr)
    keras_model = cand.qat_model if cand.qat_model is not None else cand.network
    float_pred = np.argmax(keras_model.predict([test.waves[..., None], runner.scaler(test.rr)], batch_size=2048,
                                               verbose=0), axis=1)
    pick = _tflm_sample(test, cfg.tflm_beats, cfg.train.seed)
    tflm = check_model(blob, clf, test.waves[pick], test.rr[pick])
    stats = model_stats(cand.network)
    return {
        "chain": list(cand.chain),
        "model_config": {"conv_filters": list(cand.model_cfg.conv_filters), "dense_units": cand.model_cfg.dense_units},
        "int8": classification_report(test.labels, pred, AAMI_CLASSES, macro_over=SCORED_CLASSES),
        "keras": classification_report(test.labels, float_pred, AAMI_CLASSES, macro_over=SCORED_CLASSES),
        "int8_agreement_with_keras": float(np.mean(pred == float_pred)),
        "parameters": stats.parameters, "macs_per_beat": stats.macs_per_beat,
        "flatbuffer": facts.to_dict(), "kernel_sparsity_keras": kernel_sparsity(cand.network)
        if cand.qat_model is None else None,
        "tflm": {**tflm.to_dict(), "ops_supported": True},  # check_model raises if TFLite-Micro cannot run it
        "best_epoch": cand.best_epoch, "val_macro_f1": cand.val_macro_f1, "train_seconds": cand.seconds,
        "model_path": str(exported.tflite_path),
    }


def run_variants(train: BeatDataset, val: BeatDataset, test: BeatDataset, variants: dict[str, tuple[str, ...]],
                 cfg: OptimizeConfig, out_dir: Path, label: str) -> dict[str, dict]:
    """Train every variant's chain on one split and seed, export and measure each one."""
    runner = ChainRunner(train, val, cfg)
    results = {}
    for name, chain in variants.items():
        cand = runner.run(chain)
        results[name] = evaluate_variant(runner, cand, test, Path(out_dir) / f"{label}_{name}_int8.tflite",
                                         f"{label}-{name}-{cfg.train.digest()}")
        m = results[name]
        log.info("%s %s: %d B file, %d B weights, arena %d B, int8 macro F1 %.4f, TFLM exact %d/%d",
                 label, name, m["flatbuffer"]["file_bytes"], m["flatbuffer"]["weight_bytes"],
                 m["tflm"]["arena_bytes"], m["int8"]["macro_f1"] or 0, m["tflm"]["identical_reference"],
                 m["tflm"]["beats"])
    return results
