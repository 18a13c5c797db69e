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
from typing import Any

import keras
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tqdm import tqdm

from broker.launcher import broker_url, start_broker
from broker.mqtt_link import BrokerSettings
from edge_runtime.fed_client import DeviceClient
from training.config import TrainConfig
from training.data.beat_dataset import BeatDataset
from training.federated.aggregator import CHECKPOINT_FILE, AggregationResult, Aggregator
from training.federated.aggregator_config import AggregatorConfig, RoundPolicy
from training.federated.local_training import LocalTrainer
from training.federated.round_events import RoundEventPublisher
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
    #: DP noise of the aggregator's strategy and the devices' DP-SGD (``edge_runtime.dp_noise``): "secure" as in
    #: a deployment, or "seeded" (reproducible, predictable; warned and recorded in the ledger).
    dp_noise: str = "secure"


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


@dataclass
class MqttRun:
    """What ``rounds_over_mqtt`` hands back: the aggregator's result and the transport's facts."""

    result: AggregationResult
    broker: str
    devices: int
    wall_seconds: float


def rounds_over_mqtt(model: keras.Model, updaters: dict[str, tuple[int, Any]], cfg: FleetConfig, evaluate,
                     select_on: str, run_dir: Path, progress: bool = True) -> MqttRun:
    """The MQTT rounds every task shares: a broker (started unless ``cfg.broker_url``), one ``DeviceClient``
    per entry of ``updaters`` (topic name -> (wire id, ``LocalUpdater``)) with its own connection, and the
    aggregator selecting rounds on ``evaluate(weights)[select_on]`` (held-out persons only)."""
    started = time.perf_counter()
    fed = cfg.federated
    registry = {name: dev_id for name, (dev_id, _) in updaters.items()}
    run_dir = Path(run_dir)
    (run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)  # a fleet run starts afresh; `aggregate` resumes
    broker = start_broker() if cfg.broker_url is None else None
    url = cfg.broker_url or broker_url(broker)
    fleet_name = f"{cfg.fleet_prefix}-s{fed.seed}-{secrets.token_hex(3)}"
    executor = ThreadPoolExecutor(1, thread_name_prefix="device-training")
    keys = {name: Ed25519PrivateKey.generate() for name in [*registry, "aggregator"]} if cfg.signed else {}
    aggregator_public = keys["aggregator"].public_key() if keys else None
    clients = [DeviceClient(name, dev_id, fleet_name, url, updater, executor, signing_key=keys.get(name),
                            aggregator_key=aggregator_public,
                            peer_keys={i: keys[n].public_key() for n, i in registry.items()} if keys else None)
               for name, (dev_id, updater) in updaters.items()]
    agg_cfg = AggregatorConfig(fleet=fleet_name, devices=registry, rounds=fed.rounds, strategy=fed.strategy,
                               strategy_args=fed.strategy_args, policy=cfg.policy,
                               local=asdict(fed.local), encoding=cfg.encoding, chunk_size=cfg.chunk_size,
                               seed=fed.seed, dp_noise=cfg.dp_noise,
                               device_keys={n: keys[n].public_key() for n in registry} if keys else None,
                               observer=RoundEventPublisher(fleet_name))
    bar = tqdm(total=fed.rounds, desc=f"{fed.strategy} over MQTT ({len(clients)} devices)", disable=not progress)

    def on_round(row: dict) -> None:
        bar.update(1)
        bar.set_postfix({select_on: f"{row.get(select_on) or 0:.3f}", "devices": row["participants"],
                         "kB": row["bytes_received"] // 1024})
        log.info("round %d: %d/%d devices, %.1f kB up, %s %.4f, %.1f s", row["round"], row["participants"],
                 row["selected"], row["bytes_received"] / 1024, select_on, row.get(select_on) or 0, row["seconds"])

    extra = {"secagg": cfg.secagg} if cfg.secagg is not None else {}
    aggregator = (SecAggAggregator if cfg.secagg is not None else Aggregator)(
        agg_cfg, model.get_weights(), url, run_dir, evaluate=evaluate, on_round=on_round, select_on=select_on,
        signing_key=keys.get("aggregator"), **extra)
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
    return MqttRun(result, broker.kind if broker else BrokerSettings.of(url).url, len(clients),
                   time.perf_counter() - started)


def limit_devices(registry: dict[str, int], max_devices: int | None, partition: str) -> dict[str, int]:
    """The first ``max_devices`` devices of the partition (``--devices``)."""
    if max_devices is None:
        return registry
    if not 1 <= max_devices <= len(registry):
        raise ValueError(f"--devices {max_devices}: the {partition} partition has {len(registry)} devices")
    return dict(list(registry.items())[:max_devices])


def run_fleet(train: BeatDataset, val: BeatDataset, test: BeatDataset | None, cfg: FleetConfig, base: TrainConfig,
              run_dir: Path, progress: bool = True) -> FleetResult:
    """Federated training over MQTT; the model is the round with the best validation macro F1.
    ``test`` is only scored per round for the report (never used for selection)."""
    fed = cfg.federated
    fleet = prepare_fleet(train, fed, base)
    registry = limit_devices(device_registry(fed.partition, train, fleet.devices), cfg.max_devices, fed.partition)
    trainer = LocalTrainer(fleet.model)
    updaters = {}
    for k, (name, dev_id) in enumerate(registry.items()):
        updaters[name] = (dev_id, fleet.updater(k, name, trainer, fed.seed * 1000 + dev_id, dp_noise=cfg.dp_noise))
    run = rounds_over_mqtt(fleet.model, updaters, cfg, _evaluator(fleet.model, val, test, fleet.scaler),
                           "val_macro_f1", run_dir, progress)
    fleet.model.set_weights(run.result.best_weights)
    trained = TrainedModel(model=fleet.model, rr_scaler=fleet.scaler, config=base, history=run.result.history,
                           best_epoch=run.result.best_round)
    return FleetResult(trained, run.broker, run.result.rejected, run.devices, run.wall_seconds)
