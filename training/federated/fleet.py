"""A whole federation over MQTT in one process: a broker (unless given), the aggregator, N devices.

Each virtual device has its own MQTT connection, its own beats and its own state, and talks to the
aggregator only through the broker, exactly as separate machines would. They share one Keras model
and one training executor because a 2-core machine trains one device at a time anyway.
"""
from __future__ import annotations

import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tqdm import tqdm

from broker.launcher import broker_url, start_broker
from broker.mqtt_link import BrokerSettings
from edge_runtime.fed_client import DeviceClient
from training.config import TrainConfig
from training.data.beat_dataset import BeatDataset
from training.federated.aggregator import CHECKPOINT_FILE, Aggregator
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy
from training.federated.round_events import RoundEventPublisher
from training.federated.device_trainer import KerasDeviceUpdater
from training.federated.local_training import LocalTrainer
from training.federated.secagg_round import SecAggAggregator, SecAggSettings
from training.federated.simulation import FederatedConfig, prepare_fleet
from training.train import RRScaler, TrainedModel, evaluate_keras

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FleetConfig:
    federated: FederatedConfig = field(default_factory=FederatedConfig)
    policy: RoundPolicy = field(default_factory=RoundPolicy)
    encoding: str = "float32"
    chunk_size: int | None = None
    #: An existing broker (a URL, or ``BrokerSettings`` with TLS files); None starts Mosquitto, or the embedded
    #: broker without it.
    broker_url: BrokerSettings | str | None = None
    #: Topic prefix; a random suffix keeps runs on a shared broker apart.
    fleet_prefix: str = "pw"
    #: Only the first N devices of the partition take part (None: all of them).
    max_devices: int | None = None
    #: Ed25519 everywhere: devices sign updates, the aggregator signs global models (keys made per run).
    signed: bool = True
    #: Secure aggregation (and optionally distributed DP) instead of plain updates; needs the fedavg strategy.
    secagg: SecAggSettings | None = None


@dataclass
class FleetResult:
    trained: TrainedModel
    broker: str
    rejected: dict[str, int]
    devices: int
    wall_seconds: float


def device_registry(partition: str, train: BeatDataset, devices: list[np.ndarray]) -> dict[str, int]:
    """Topic names and wire ids: ``p<record>``/record number for patient devices, else ``d<k>``/k+1."""
    if partition == "patient":
        records = [str(train.record[d[0]]) for d in devices]
        return {f"p{r}": int(r) for r in records}
    return {f"d{k:03d}": k + 1 for k in range(len(devices))}


def _evaluator(template: keras.Model, val: BeatDataset, test: BeatDataset | None, scaler: RRScaler):
    model = keras.models.clone_model(template)

    def evaluate(weights: list[np.ndarray]) -> dict[str, float]:
        model.set_weights(weights)
        out = {}
        for prefix, data in (("val", val), ("test", test)):
            if data is not None:
                rep = evaluate_keras(model, data, scaler)
                out.update({f"{prefix}_macro_f1": rep["macro_f1"], f"{prefix}_accuracy": rep["accuracy"]})
        return out

    return evaluate


def run_fleet(train: BeatDataset, val: BeatDataset, test: BeatDataset | None, cfg: FleetConfig, base: TrainConfig,
              run_dir: Path, progress: bool = True) -> FleetResult:
    """Federated training over MQTT; the model is the round with the best validation macro F1.
    ``test`` is only scored per round for the report (never used for selection)."""
    started = time.perf_counter()
    fed = cfg.federated
    fleet = prepare_fleet(train, fed, base)
    registry = device_registry(fed.partition, train, fleet.devices)
    if cfg.max_devices is not None:
        if not 1 <= cfg.max_devices <= len(registry):
            raise ValueError(f"--devices {cfg.max_devices}: the {fed.partition} partition has {len(registry)} devices")
        registry = dict(list(registry.items())[:cfg.max_devices])
    run_dir = Path(run_dir)
    (run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)  # a fleet run starts afresh; `aggregate` resumes
    broker = start_broker() if cfg.broker_url is None else None
    url = cfg.broker_url or broker_url(broker)
    fleet_name = f"{cfg.fleet_prefix}-s{fed.seed}-{secrets.token_hex(3)}"
    trainer = LocalTrainer(fleet.model, fleet.class_weights)
    executor = ThreadPoolExecutor(1, thread_name_prefix="device-training")
    keys = {name: Ed25519PrivateKey.generate() for name in [*registry, "aggregator"]} if cfg.signed else {}
    aggregator_public = keys["aggregator"].public_key() if keys else None
    clients = [DeviceClient(name, dev_id, fleet_name, url,
                            KerasDeviceUpdater(name, trainer, *fleet.per_device[k], seed=fed.seed * 1000 + dev_id),
                            executor, signing_key=keys.get(name), aggregator_key=aggregator_public,
                            peer_keys={i: keys[n].public_key() for n, i in registry.items()} if keys else None)
               for k, (name, dev_id) in enumerate(registry.items())]
    agg_cfg = AggregatorConfig(fleet=fleet_name, devices=registry, rounds=fed.rounds, strategy=fed.strategy,
                               strategy_args=fed.strategy_args, policy=cfg.policy,
                               local=asdict(fed.local), encoding=cfg.encoding, chunk_size=cfg.chunk_size,
                               seed=fed.seed,
                               device_keys={n: keys[n].public_key() for n in registry} if keys else None,
                               observer=RoundEventPublisher(fleet_name))
    bar = tqdm(total=fed.rounds, desc=f"{fed.strategy} over MQTT ({len(clients)} devices)", disable=not progress)

    def on_round(row: dict) -> None:
        bar.update(1)
        bar.set_postfix(val_f1=f"{row.get('val_macro_f1', 0):.3f}", devices=row["participants"],
                        kB=row["bytes_received"] // 1024)
        log.info("round %d: %d/%d devices, %.1f kB up, val macro F1 %.4f, %.1f s", row["round"],
                 row["participants"], row["selected"], row["bytes_received"] / 1024, row.get("val_macro_f1", 0),
                 row["seconds"])

    extra = {"secagg": cfg.secagg} if cfg.secagg is not None else {}
    aggregator = (SecAggAggregator if cfg.secagg is not None else Aggregator)(
        agg_cfg, fleet.model.get_weights(), url, run_dir, evaluate=_evaluator(fleet.model, val, test, fleet.scaler),
        on_round=on_round, signing_key=keys.get("aggregator"), **extra)
    try:
        for c in clients:
            c.start()
        result = aggregator.run()
    finally:
        bar.close()
        for c in clients:
            c.stop()
        executor.shutdown(wait=True, cancel_futures=True)
        if broker is not None:
            broker.close()
    fleet.model.set_weights(result.best_weights)
    trained = TrainedModel(model=fleet.model, rr_scaler=fleet.scaler, config=base, history=result.history,
                           best_epoch=result.best_round)
    return FleetResult(trained, broker.kind if broker else BrokerSettings.of(url).url, result.rejected, len(clients),
                       time.perf_counter() - started)
