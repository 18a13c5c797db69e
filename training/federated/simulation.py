"""In-process federated simulation: the MQTT aggregator's round engine, devices taking turns.

Each device holds one partition of the training beats; raw beats never leave it, only deltas do. The rounds
are ``RoundEngine``'s (``training.federated.in_process``): the same selection, outlier screen, budget stop
and strategy hooks as the deployed aggregator, and the same device trainer (``KerasDeviceUpdater``) as
``run_fleet``, so what the benches measure in process is what deploys.
The RR-feature scaler and class weights come from fleet-wide sums and counts (aggregate statistics a
real fleet can collect, e.g. under secure aggregation), not from any device's raw data.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np
from tqdm import tqdm

from edge_runtime.aami import AAMI_CLASSES
from edge_runtime.dp_noise import check_noise_name
from training.config import TrainConfig
from training.data.beat_dataset import BeatDataset
from training.data.partition import (
    partition_by_patient,
    partition_dirichlet,
    partition_iid,
)
from training.federated.aggregator_config import RoundPolicy
from training.federated.attacks import Attack, choose_attackers
from training.federated.device_trainer import KerasDeviceUpdater
from training.federated.in_process import run_in_process
from training.federated.label_shift import prior_ratio
from training.federated.local_training import Inputs, LocalConfig, LocalTrainer
from training.federated.registry import make_fleet_strategy
from training.federated.round_engine import RoundEngine
from training.federated.strategies import ClientUpdate
from training.model import RR_INPUT, WAVE_INPUT, build_classifier
from training.train import RRScaler, TrainedModel, class_weights, evaluate_keras

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FederatedConfig:
    rounds: int = 20
    strategy: str = "fedavg"
    strategy_args: dict[str, Any] = field(default_factory=dict)
    local: LocalConfig = field(default_factory=LocalConfig)
    #: "patient" (one device per record), "subpatient:K" (each record's beats cut into K consecutive
    #: stretches, K devices per patient), "iid:N" or "dirichlet:ALPHA:N".
    partition: str = "patient"
    #: Share of devices selected each round.
    fraction: float = 1.0
    seed: int = 0
    #: Malicious devices (simulation only): an ``Attack`` spec such as "sign_flip" or "scale:10", and their share.
    attack: str | None = None
    attackers: float = 0.0
    #: Drop an update longer than this multiple of the round's median norm, as the aggregator does (None: off).
    max_norm_ratio: float | None = RoundPolicy.max_norm_ratio
    #: A ``RoundPolicy.selection`` spec (e.g. a status-fed policy "oort:k=5"); None: by ``fraction``.
    selection: str | None = None
    #: The DP noise of this run's strategy and devices' DP-SGD (``edge_runtime.dp_noise``): "seeded" (default in
    #: process: reproducible; the strategy's ``seed`` argument and each device's seed) or "secure". A run over
    #: MQTT takes ``FleetConfig.dp_noise`` instead (secure by default, as a deployment).
    dp_noise: str = "seeded"

    def __post_init__(self) -> None:
        if self.rounds < 1 or not 0 < self.fraction <= 1:
            raise ValueError("rounds must be >= 1 and fraction in (0, 1]")
        _ = self.policy  # validates
        check_noise_name(self.dp_noise)

    @property
    def policy(self) -> RoundPolicy:
        """The aggregator's round policy for this run (in process there are no deadlines to wait for)."""
        selection = self.selection or ("all" if self.fraction == 1 else f"fraction:{self.fraction}")
        return RoundPolicy(selection=selection, max_norm_ratio=self.max_norm_ratio)


def make_partition(spec: str, data: BeatDataset, seed: int) -> list[np.ndarray]:
    """Device index sets for ``spec``: "patient", "subpatient:K", "iid:N" or "dirichlet:ALPHA:N"."""
    kind, *args = spec.split(":")
    try:
        if kind == "patient" and not args:
            return partition_by_patient(data.record)
        if kind == "subpatient" and len(args) == 1 and int(args[0]) >= 1:
            # more, smaller devices with the same data: how DP noise on the mean shrinks with fleet size
            return [part for d in partition_by_patient(data.record) for part in np.array_split(d, int(args[0]))]
        if kind == "iid" and len(args) == 1:
            return partition_iid(len(data), int(args[0]), seed)
        if kind == "dirichlet" and len(args) == 2:
            return partition_dirichlet(data.labels, int(args[1]), float(args[0]), seed)
    except ValueError as exc:
        raise ValueError(f"partition {spec!r}: {exc}") from exc
    raise ValueError(f"partition {spec!r} not understood; use patient, subpatient:K, iid:N or dirichlet:ALPHA:N")


@dataclass
class FleetData:
    """What every federated run needs before its first round, computed the same way in-process and over MQTT."""

    devices: list[np.ndarray]  # beat indices per device
    scaler: RRScaler
    class_weights: np.ndarray
    model: keras.Model
    per_device: list[tuple[Inputs, np.ndarray]]  # ({"wave": wave[..., None], "rr": scaled rr}, labels)
    #: Per device, its class frequencies over the fleet's (``label_shift.prior_ratio``): used when the plan
    #: asks for ``LocalConfig.label_shift``.
    prior_ratios: list[np.ndarray]

    def updater(self, k: int, name: str, trainer: LocalTrainer, seed: int, labels: np.ndarray | None = None,
                dp_noise: str = "seeded") -> KerasDeviceUpdater:
        """Device ``k``'s trainer: its rows, the fleet's class weights and its prior ratio (``labels``: other
        labels than its own, e.g. an attacker's poisoned ones; weights follow them, the prior stays)."""
        inputs, own = self.per_device[k]
        y = own if labels is None else labels
        return KerasDeviceUpdater(name, trainer, inputs, y, seed=seed, row_weights=self.class_weights[y],
                                  prior_ratio=self.prior_ratios[k], dp_noise=dp_noise)


def prepare_fleet(train: BeatDataset, fed: FederatedConfig, base: TrainConfig) -> FleetData:
    base.check_rr_width(train.rr.shape[1])
    keras.utils.set_random_seed(fed.seed)
    devices = make_partition(fed.partition, train, fed.seed)
    scaler = RRScaler.fit(train.rr)
    cw = class_weights(train.labels, len(AAMI_CLASSES), base.class_weight_power, base.max_class_weight)
    model = build_classifier(train.waves.shape[1], train.rr.shape[1], len(AAMI_CLASSES), base.model)
    per_device = [({WAVE_INPUT: train.waves[d][..., None], RR_INPUT: scaler(train.rr[d])}, train.labels[d])
                  for d in devices]
    fleet_counts = np.bincount(train.labels, minlength=len(AAMI_CLASSES))  # the sums the class weights use
    return FleetData(devices, scaler, np.asarray([cw[c] for c in range(len(AAMI_CLASSES))], np.float32), model,
                     per_device, [prior_ratio(train.labels[d], fleet_counts) for d in devices])


def simulate_rounds(model: keras.Model, devices: dict[str, KerasDeviceUpdater], fed: FederatedConfig,
                    evaluate, select_on: str, progress: bool = True, tamper=None) -> RoundEngine:
    """The in-process rounds every task shares: the fleet strategy, ``RoundEngine`` selecting rounds on
    ``evaluate(weights)[select_on]`` (held-out persons), devices taking turns. Returns the finished engine."""
    strategy = make_fleet_strategy(fed.strategy, fed.strategy_args, len(devices), fed.dp_noise, fed.seed)
    engine = RoundEngine(strategy, list(devices), fed.policy, fed.rounds, model.get_weights(), fed.seed, evaluate,
                         select_on=select_on)
    bar = tqdm(total=fed.rounds, desc=f"{fed.strategy} rounds", disable=not progress)

    def on_round(row: dict) -> None:
        bar.update(1)
        log.info("round %d: %d devices, %s %.4f", row["round"], row["participants"], select_on,
                 row.get(select_on) or 0.0)

    try:
        run_in_process(engine, devices, asdict(fed.local), on_round, tamper)
    finally:
        bar.close()
    return engine


def run_simulation(train: BeatDataset, val: BeatDataset, fed: FederatedConfig, base: TrainConfig,
                   progress: bool = True, keep: str = "best") -> TrainedModel:
    """Federated training; the returned model's ``history`` has one row per round (validation only). ``keep``:
    "best" returns the round selected on ``val``; "last" the final round's model, for cross-validation, where
    ``val`` is a held-out fold that must choose nothing (``training.cross_validation``)."""
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
    fleet = prepare_fleet(train, fed, base)
    model, scaler = fleet.model, fleet.scaler
    trainer = LocalTrainer(model)
    names = [f"dev{k:03d}" for k in range(len(fleet.devices))]
    attack = Attack.parse(fed.attack) if fed.attack else None
    attackers = {names[k] for k in choose_attackers(len(names), fed.attackers, fed.seed)} if attack else set()
    if attack:
        log.info("%d of %d devices attack with %s", len(attackers), len(names), fed.attack)
    devices = {}
    for k, name in enumerate(names):
        y = fleet.per_device[k][1]
        poisoned = attack.poison_labels(y, len(AAMI_CLASSES)) if name in attackers else None
        devices[name] = fleet.updater(k, name, trainer, fed.seed * 1000 + k + 1, poisoned, fed.dp_noise)
    # the attack's own random stream: honest devices train exactly as in the clean run
    attack_rng = np.random.default_rng([fed.seed, 11])

    def tamper(name: str, update: ClientUpdate) -> ClientUpdate:
        return attack.corrupt(update, attack_rng) if name in attackers else update

    def evaluate(weights: list[np.ndarray]) -> dict[str, float]:
        model.set_weights(weights)
        rep = evaluate_keras(model, val, scaler)
        return {"val_macro_f1": rep["macro_f1"], "val_accuracy": rep["accuracy"]}

    engine = simulate_rounds(model, devices, fed, evaluate, "val_macro_f1", progress, tamper if attack else None)
    model.set_weights(engine.best_weights if keep == "best" else engine.weights)
    return TrainedModel(model=model, rr_scaler=scaler, config=base, history=engine.history,
                        best_epoch=engine.best_round if keep == "best" else engine.round - 1)
