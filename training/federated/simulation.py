"""In-process federated simulation: the same strategies as the MQTT aggregator, devices taking turns.

Each device holds one partition of the training beats; raw beats never leave it, only deltas do.
The RR-feature scaler and class weights come from fleet-wide sums and counts (aggregate statistics a
real fleet can collect, e.g. under secure aggregation), not from any device's raw data.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from tqdm import tqdm

from training.config import TrainConfig
from edge_runtime.aami import AAMI_CLASSES
from training.data.beat_dataset import BeatDataset
from training.data.partition import partition_by_patient, partition_dirichlet, partition_iid
from training.federated.attacks import Attack, choose_attackers
from training.federated.local_training import LocalConfig, LocalTrainer
from training.federated.privacy import latest_ledger_row
from training.federated.registry import make_fleet_strategy
from training.federated.strategies import Scaffold
from training.model import build_classifier
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

    def __post_init__(self) -> None:
        if self.rounds < 1 or not 0 < self.fraction <= 1:
            raise ValueError("rounds must be >= 1 and fraction in (0, 1]")


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
    per_device: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # (wave[..., None], scaled rr, labels)


def prepare_fleet(train: BeatDataset, fed: FederatedConfig, base: TrainConfig) -> FleetData:
    keras.utils.set_random_seed(fed.seed)
    devices = make_partition(fed.partition, train, fed.seed)
    scaler = RRScaler.fit(train.rr)
    cw = class_weights(train.labels, len(AAMI_CLASSES), base.class_weight_power, base.max_class_weight)
    model = build_classifier(train.waves.shape[1], train.rr.shape[1], len(AAMI_CLASSES), base.model)
    per_device = [(train.waves[d][..., None], scaler(train.rr[d]), train.labels[d]) for d in devices]
    return FleetData(devices, scaler, np.asarray([cw[c] for c in range(len(AAMI_CLASSES))], np.float32), model,
                     per_device)


def run_simulation(train: BeatDataset, val: BeatDataset, fed: FederatedConfig, base: TrainConfig,
                   progress: bool = True) -> TrainedModel:
    """Federated training; the returned model's ``history`` has one row per round (validation only)."""
    rng = np.random.default_rng(fed.seed)
    fleet = prepare_fleet(train, fed, base)
    model, scaler, devices, per_device = fleet.model, fleet.scaler, fleet.devices, fleet.per_device
    trainer = LocalTrainer(model, fleet.class_weights)
    strategy = make_fleet_strategy(fed.strategy, fed.strategy_args, len(devices))
    local_cfg = fed.local
    if strategy.client_config():  # what the strategy asks of local training (FedProx's mu, SCAFFOLD's clip)
        local_cfg = LocalConfig(**{**local_cfg.__dict__, **strategy.client_config()})
    weights = model.get_weights()
    controls: dict[int, list] = {}
    attack = Attack.parse(fed.attack) if fed.attack else None
    attackers = choose_attackers(len(devices), fed.attackers, fed.seed) if attack else set()
    # the attack's own random stream: honest devices then shuffle their beats exactly as in the clean run, so an
    # attacked run differs from the clean one by the attack and not by a reshuffled fleet
    attack_rng = np.random.default_rng([fed.seed, 11])
    if attack:
        log.info("%d of %d devices attack with %s", len(attackers), len(devices), fed.attack)
    history: list[dict] = []
    best = (-1.0, 0, weights)
    n_select = max(1, int(round(fed.fraction * len(devices))))
    for rnd in tqdm(range(1, fed.rounds + 1), desc=f"{fed.strategy} rounds", disable=not progress):
        t0 = time.perf_counter()
        chosen = np.sort(rng.choice(len(devices), n_select, replace=False))
        updates, declined = [], 0
        for k in chosen:
            wave, rr, y = per_device[k]
            malicious = attack is not None and k in attackers
            if malicious:
                y = attack.poison_labels(y, len(AAMI_CLASSES))
            server_c = strategy.server_control(weights) if isinstance(strategy, Scaffold) else None
            update, new_c = trainer.run(f"dev{k}", weights, wave, rr, y, local_cfg, rng, server_c, controls.get(k))
            if new_c is not None:
                controls[k] = new_c
            if not all(np.all(np.isfinite(d)) for d in update.delta):
                declined += 1  # as over MQTT: a device whose local round diverged sends nothing
                log.warning("round %d: dev%d's local training diverged (NaN/Inf); it declines the round", rnd, k)
                continue
            updates.append(attack.corrupt(update, attack_rng) if malicious else update)
        weights = strategy.aggregate(weights, updates)
        model.set_weights(weights)
        rep = evaluate_keras(model, val, scaler)
        losses = [u.meta["train_loss"] for u in updates if u.meta.get("train_loss") is not None]
        row = {"round": rnd, "epoch": rnd, "loss": float(np.mean(losses)) if losses else None,
               "participants": len(updates), "declined": declined, "val_macro_f1": rep["macro_f1"],
               "val_accuracy": rep["accuracy"], "seconds": time.perf_counter() - t0,
               "float32_bytes_up": int(sum(sum(d.nbytes for d in u.delta) for u in updates))}
        if (spent := latest_ledger_row(strategy)) is not None:  # DP-FedAvg: what this round spent
            row["privacy"] = spent
        history.append(row)
        log.info("round %d: %d devices, val macro F1 %.4f", rnd, len(updates), row["val_macro_f1"])
        if row["val_macro_f1"] > best[0]:
            best = (row["val_macro_f1"], rnd, [w.copy() for w in weights])
    model.set_weights(best[2])
    return TrainedModel(model=model, rr_scaler=scaler, config=base, history=history, best_epoch=best[1])
