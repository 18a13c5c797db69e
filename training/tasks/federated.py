"""Federated training of any task, in process or over MQTT, through the beat fleet's own machinery.

Devices are the task's partition of its training side (default: one device per person). Each device trains
with the same ``LocalTrainer``/``KerasDeviceUpdater`` as the beat fleet, given the task's named inputs, its
``loss()``, ``training_targets()`` and per-class ``sample_weights()``; rounds go through ``RoundEngine`` in
process (``simulate_rounds``) or through the MQTT aggregator and device clients (``rounds_over_mqtt``), and are
selected on "val" by ``task.selection_metric``. Device k (in partition order) draws from seed ``seed·1000+k+1``
on both transports, so one seed gives the same local training either way (DP-SGD's draws: with the same
``dp_noise`` source, ``FederatedConfig.dp_noise`` in process and ``FleetConfig.dp_noise`` over MQTT).
"""
from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np

from training.federated.device_trainer import KerasDeviceUpdater
from training.federated.fleet import FleetConfig, limit_devices, rounds_over_mqtt
from training.federated.local_training import LocalTrainer
from training.federated.simulation import FederatedConfig, simulate_rounds
from training.tasks.base import Task, TaskSplit
from training.tasks.fit import TaskModel, keras_predict, prefixed_scalars, row_weights

log = logging.getLogger(__name__)


def device_names(task: Task, train: TaskSplit, devices: list[np.ndarray], partition: str) -> list[str]:
    """Topic-safe device names: the person for one-device-per-person partitions, else ``dev<k>``."""
    kind = partition.split(":")[0]
    if kind in ("person", "patient"):
        names = [re.sub(r"[^A-Za-z0-9_-]", "_", f"{task.name}-{train.persons[d[0]]}") for d in devices]
        if len(set(names)) == len(names):
            return names
    return [f"dev{k:03d}" for k in range(len(devices))]


def _evaluator(task: Task, model: keras.Model, val: TaskSplit, test: TaskSplit | None):
    """Round metrics: "val_*" (selects rounds), "rounds_evaluated" (a counter: selecting on it keeps the latest
    round) and, for the report only, "test_*"."""
    scorer = keras.models.clone_model(model)
    predict = keras_predict(scorer)
    calls = [0]

    def evaluate(weights: list[np.ndarray]) -> dict[str, float]:
        scorer.set_weights(weights)
        calls[0] += 1
        out = {"rounds_evaluated": float(calls[0]), **prefixed_scalars("val", task.evaluate(predict, val))}
        if test is not None:
            out.update(prefixed_scalars("test", task.evaluate(predict, test)))
        return out

    return evaluate


def run_task_federated(task: Task, train: TaskSplit, val: TaskSplit, fed: FederatedConfig, over_mqtt: bool = False,
                       fleet: FleetConfig | None = None, run_dir: Path | None = None, test: TaskSplit | None = None,
                       progress: bool = False, last_round: bool = False) -> TaskModel:
    """Federated rounds of ``task`` (``fed.partition`` is the task's partition spec); the returned model holds
    the round with the best ``val_<selection_metric>``. ``over_mqtt``: a real broker (``fleet.broker_url``, or
    Mosquitto started here), one MQTT client per device and the aggregator; ``fleet.federated`` is replaced by
    ``fed``. ``test`` is only scored per round for the report, never used for selection. ``last_round``: keep the
    last round instead (its round count fixed beforehand, e.g. by cross-validation; ``val`` is then only reported,
    and may be rows the devices trained on)."""
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"task {task.name!r}: training and validation splits must both hold rows")
    keras.utils.set_random_seed(fed.seed)
    devices = [d for d in task.partition(train, fed.partition, fed.seed) if len(d)]
    if not devices:
        raise ValueError(f"partition {fed.partition!r} of task {task.name!r} gave no device any rows")
    model = task.build_model(train, fed.seed)
    trainer = LocalTrainer(model, task.loss())
    targets, weights = task.training_targets(train), row_weights(task, train)
    names = device_names(task, train, devices, fed.partition)
    fleet = replace(fleet or FleetConfig(), federated=fed)
    dp_noise = fleet.dp_noise if over_mqtt else fed.dp_noise
    updaters = {name: KerasDeviceUpdater(name, trainer, {k: v[d] for k, v in train.inputs.items()}, targets[d],
                                         seed=fed.seed * 1000 + k + 1,
                                         row_weights=None if weights is None else weights[d], dp_noise=dp_noise)
                for k, (name, d) in enumerate(zip(names, devices))}
    select_on = "rounds_evaluated" if last_round else f"val_{task.selection_metric}"
    evaluate = _evaluator(task, model, val, test)
    info = {"transport": "mqtt" if over_mqtt else "in-process", "partition": fed.partition,
            "device_rows": {n: len(d) for n, d in zip(names, devices)}}
    if over_mqtt:
        registry = limit_devices({n: k + 1 for k, n in enumerate(names)}, fleet.max_devices, fed.partition)
        run = rounds_over_mqtt(model, {n: (i, updaters[n]) for n, i in registry.items()}, fleet, evaluate, select_on,
                               Path(run_dir or f"out/tasks/{task.name}/fleet_seed{fed.seed}"), progress)
        best, best_round, history = run.result.best_weights, run.result.best_round, run.result.history
        info.update(broker=run.broker, devices=run.devices, rejected=dict(run.result.rejected),
                    wall_seconds=run.wall_seconds)
    else:
        engine = simulate_rounds(model, updaters, fed, evaluate, select_on, progress)
        best, best_round, history = engine.best_weights, engine.best_round, engine.history
        info.update(devices=len(updaters), rejected=dict(engine.rejected))
    model.set_weights(best)
    return TaskModel(task, model, history, best_round, info)
