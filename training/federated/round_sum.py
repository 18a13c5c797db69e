"""The aggregator service's running sum of a round: O(1) per accepted update for the strategies that allow it.

An accepted update is added into the round's fixed-point sum (``partial_sums.RunningSum``) with the offset of
its record in the round's log, and the engine forgets its tensors; at the close the outlier screen runs on
the norms, an outlier is read back from the log and subtracted exactly, and the strategy gets the sum as one
combined update. A strategy without a sum rule (median, Krum, ...) needs the individual updates: then
``rule`` is None and the engine keeps them.

Why an object of its own (``RoundSum``): the sum needs the strategy's name and arguments and the round's
arguments of its rule (DP-FedAvg's clip moves between rounds; an aggregator worker gets them from its
coordinator), nothing of the transport; the service holds one and calls it.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from training.federated.partial_sums import RunningSum, SumRule, rule_for, summable
from training.federated.round_engine import RoundEngine
from training.federated.strategies import ClientUpdate, Weights

log = logging.getLogger(__name__)


class RoundSum:
    """The current round's running sum under the round's sum rule. ``strategy``, ``strategy_args``: the fleet's
    strategy; ``args``: the round's arguments of its rule (replaceable: a worker's come from its coordinator)."""

    def __init__(self, strategy: str, strategy_args: dict[str, Any], args: Callable[[], dict[str, Any]]) -> None:
        self.strategy, self.strategy_args = strategy, strategy_args
        self.args = args
        #: The running sum's rule (None: the strategy needs the individual updates, which the engine keeps).
        self.rule: SumRule | None = self.current_rule()
        #: The current round's sum, with the rule (None until a round starts, or without a rule).
        self.running: RunningSum | None = None

    def current_rule(self) -> SumRule | None:
        """The current round's sum rule; None when the strategy needs the individual updates."""
        args = {**self.strategy_args, **self.args()}
        return rule_for(self.strategy, args) if summable(self.strategy, args) else None

    def restart(self, size: int) -> None:
        """A fresh sum for a new round of a ``size``-parameter model, under the round's rule."""
        self.rule = self.current_rule()
        self.running = RunningSum(self.rule, size) if self.rule else None

    def add(self, update: ClientUpdate, offset: int) -> bool:
        """Add an accepted update (its record at ``offset`` in the round's log); False: no sum, keep the update."""
        if self.running is None:
            return False
        self.running.add(update, offset)
        return True

    def combined(self, engine: RoundEngine, ratio: float | None, reread: Callable[[str], ClientUpdate],
                 weights: Weights) -> list[ClientUpdate]:
        """The sum as the strategy's input, after the outlier screen (an update longer than ``ratio`` × the
        median norm is ``reread`` from the log and subtracted exactly); rejections go to ``engine``'s counters."""
        dropped, too_large = self.running.screen(ratio, reread)
        for device in too_large:
            engine.reject("too_large")
            log.warning("round %d: %s's update is beyond the fixed-point sum's range and not an outlier of this "
                        "round: left out", engine.round, device)
        for device in dropped:
            engine.reject("outlier_norm")
            log.warning("round %d: dropped %s's update, norm > %g x the round's median", engine.round, device, ratio)
        return self.rule.combined(self.running.total, weights)
