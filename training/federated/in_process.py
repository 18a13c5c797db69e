"""The round engine driven in process: devices are ``LocalUpdater`` objects called in turn, no broker.

The same ``RoundEngine`` as the MQTT aggregator (selection, screening, outlier check, budget stop, strategy
hooks); only the transport differs: the round plan and model go to each selected device as the same
``GlobalModel`` the aggregator would publish, and its ``LocalUpdate`` comes back as a ``ClientUpdate``. A
device whose local round diverged (NaN/Inf) declines, as a device client does over MQTT. Imports no
TensorFlow: the simulation passes Keras-backed updaters, tests pass fixed ones.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping

import numpy as np

from broker.fed_messages import GlobalModel, LocalUpdate, RoundPlan
from training.federated.round_engine import Rejected, RoundEngine
from training.federated.strategies import ClientUpdate

log = logging.getLogger(__name__)

#: A hook between a device's update and the engine (the simulation's attackers): (device, update) -> update.
Tamper = Callable[[str, ClientUpdate], ClientUpdate]


def run_in_process(engine: RoundEngine, devices: Mapping[str, Any], local: dict[str, Any] | None = None,
                   on_round: Callable[[dict], None] | None = None, tamper: Tamper | None = None) -> list[dict]:
    """Run the engine's rounds to the end (or its budget stop); ``devices``: name -> object with
    ``fit(GlobalModel) -> LocalUpdate``; ``local``: the round plan's local settings. Returns the history."""
    while not engine.finished:
        if not engine.open_round():
            break
        started = time.perf_counter()
        plan = RoundPlan(engine.round, tuple(engine.selected), {**(local or {}), **engine.strategy.client_config()},
                         "float32", None, False)
        model = GlobalModel(plan, [w.copy() for w in engine.weights], engine.strategy.server_control(engine.weights))
        bytes_up = 0
        for name in engine.selected:
            got: LocalUpdate = devices[name].fit(model)
            if not all(np.all(np.isfinite(d)) for d in got.delta):
                engine.decline(name)  # as over MQTT: a device whose local round diverged sends nothing
                log.warning("round %d: %s's local training diverged (NaN/Inf); it declines the round", engine.round,
                            name)
                continue
            update = ClientUpdate(name, got.delta, got.num_examples, got.local_steps, got.control_delta,
                                  {"train_loss": got.train_loss})
            if tamper is not None:
                update = tamper(name, update)
            bytes_up += int(sum(d.nbytes for d in update.delta))
            try:
                engine.accept(name, engine.round, update)
            except Rejected as rej:
                engine.reject(rej.reason)
                log.warning("round %d: rejected %s's update (%s): %s", engine.round, name, rej.reason, rej.detail)
        row = engine.close_round(extra={"seconds": time.perf_counter() - started, "float32_bytes_up": bytes_up})
        if on_round:
            on_round(row)
    return engine.history
