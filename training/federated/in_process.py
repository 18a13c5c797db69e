"""The round engine driven in process: devices are ``LocalUpdater`` objects, no broker, a virtual clock.

The same ``RoundEngine`` as the MQTT aggregator (selection, screening, outlier check, budget stop, strategy
hooks, when a round closes); only the transport differs: the round plan and model go to each selected
device as the same ``GlobalModel`` the aggregator would publish, and its ``LocalUpdate`` comes back as a
``ClientUpdate``. A device whose local round diverged (NaN/Inf) declines, as a device client does over MQTT.

Time is simulated: a device trains (really, on its own data) from the model of the round it was asked in,
and its update *arrives* ``delays(device, round)`` virtual seconds after that round opened. Arrivals are
handed to the engine in time order, and the engine's own rule (``close_due``) decides when a round closes:
a synchronous round waits for its slow devices up to the policy's deadline, an asynchronous (FedBuff) one
closes every K arrivals; an update that arrives after its round closed meets the same screen it would over
MQTT (dropped as late, or folded in as stale). Without ``delays`` every update arrives at once, in
selection order. Imports no TensorFlow: the simulation passes Keras-backed updaters, tests pass fixed ones.
"""
from __future__ import annotations

import heapq
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from broker.fed_messages import GlobalModel, LocalUpdate, RoundPlan
from training.federated.round_engine import Rejected, RoundEngine
from training.federated.strategies import ClientUpdate

log = logging.getLogger(__name__)

#: A hook between a device's update and the engine (the simulation's attackers): (device, update) -> update.
Tamper = Callable[[str, ClientUpdate], ClientUpdate]
#: Virtual seconds from a round's opening until the device's update for it arrives: (device, round) -> s.
Delays = Callable[[str, int], float]


@dataclass
class VirtualClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(order=True)
class _Arrival:
    at: float
    seq: int
    device: str = field(compare=False)
    round: int = field(compare=False)
    update: ClientUpdate | None = field(compare=False)  # None: the device declines (its training diverged)


def run_in_process(engine: RoundEngine, devices: Mapping[str, Any], local: dict[str, Any] | None = None,
                   on_round: Callable[[dict], None] | None = None, tamper: Tamper | None = None,
                   delays: Delays | None = None, until: Callable[[dict], bool] | None = None) -> list[dict]:
    """Run the engine's rounds to the end (or its budget stop, or the first row ``until`` accepts);
    ``devices``: name -> object with ``fit(GlobalModel) -> LocalUpdate``; ``local``: the round plan's local
    settings. Returns the history; each row has ``sim_seconds`` (the round's virtual duration),
    ``sim_time`` (virtual time at its close) and ``trained`` (device updates computed so far)."""
    clock = VirtualClock()
    engine.clock = clock
    engine.opened_at = clock.now
    arrivals: list[_Arrival] = []
    seq = 0  # also the number of device updates trained
    while not engine.finished:
        if not engine.open_round():
            break
        started, opened = time.perf_counter(), clock.now
        plan = RoundPlan(engine.round, tuple(engine.selected), {**(local or {}), **engine.strategy.client_config()},
                         "float32", None, False)
        model = GlobalModel(plan, [w.copy() for w in engine.weights], engine.strategy.server_control(engine.weights))
        bytes_up = 0
        for name in engine.selected:
            update = _train(name, devices[name].fit(model), engine.round, tamper)
            bytes_up += int(sum(d.nbytes for d in update.delta)) if update is not None else 0
            heapq.heappush(arrivals, _Arrival(opened + (delays(name, engine.round) if delays else 0.0), seq, name,
                                              engine.round, update))
            seq += 1
        while engine.close_due() is None:
            due = engine.next_deadline()
            if arrivals and arrivals[0].at <= due:
                arrival = heapq.heappop(arrivals)
                clock.now = max(clock.now, arrival.at)
                _deliver(engine, arrival)
            elif math.isfinite(due):
                clock.now = max(clock.now, due)
        row = engine.close_round(extra={"seconds": time.perf_counter() - started, "float32_bytes_up": bytes_up,
                                        "sim_seconds": clock.now - opened, "sim_time": clock.now, "trained": seq})
        if on_round:
            on_round(row)
        if until is not None and until(row):
            break
    return engine.history


def _train(name: str, got: LocalUpdate, round_: int, tamper: Tamper | None) -> ClientUpdate | None:
    if not all(np.all(np.isfinite(d)) for d in got.delta):
        log.warning("round %d: %s's local training diverged (NaN/Inf); it declines the round", round_, name)
        return None  # as over MQTT: a device whose local round diverged sends nothing
    update = ClientUpdate(name, got.delta, got.num_examples, got.local_steps, got.control_delta,
                          {"train_loss": got.train_loss})
    return tamper(name, update) if tamper is not None else update


def _deliver(engine: RoundEngine, arrival: _Arrival) -> None:
    if arrival.update is None:
        engine.decline(arrival.device, arrival.round)
        return
    try:
        engine.accept(arrival.device, arrival.round, arrival.update)
    except Rejected as rej:
        engine.reject(rej.reason)
        log.warning("round %d: rejected %s's update (%s): %s", engine.round, arrival.device, rej.reason, rej.detail)
