"""The topics between aggregator workers (or ward aggregators) and their coordinator: part of the bus contract.

Under ``pw/FLEET/agg/``, all QoS 1: ``ready/W`` (retained: worker W is subscribed), ``progress/W`` (worker W's
recently accepted devices), ``close/R`` (the coordinator asks for round R's partial sums), ``partial/R/W``
(worker W's sum), ``drop/R`` (devices whose updates the outlier screen takes out), ``dropped/R/W`` (their exact
contributions), ``rule/R`` (the sum rule's arguments for round R, e.g. DP-FedAvg's clip, sent before the round
is announced), ``ruled/R/W`` (worker W has them); for strategies that need every update ``forward/W``
(a batch of worker W's accepted updates, decoded: ``training.federated.forwarded_updates``) and ``fetch/R``
(updates of round R to forward again). Workers receive the fleet's updates through one shared
subscription group per fleet (MQTT 5 ``$share``).
"""
from __future__ import annotations

from typing import Any

from broker.topics import ROOT, FleetTopics

#: Worker -> coordinator.
UPWARD = ("ready/+", "progress/+", "partial/+/+", "dropped/+/+", "ruled/+/+", "forward/+")
#: Coordinator -> worker.
DOWNWARD = ("close/+", "drop/+", "rule/+", "fetch/+")


def agg_topic(fleet: str, *parts: Any) -> str:
    FleetTopics(fleet)  # the fleet naming rule
    return "/".join([ROOT, fleet, "agg", *(str(p) for p in parts)])


def shared_updates(fleet: str) -> str:
    """The workers' shared subscription to the fleet's updates (one group per fleet)."""
    return f"$share/pw-{fleet}-agg/{FleetTopics(fleet).all_updates()}"
