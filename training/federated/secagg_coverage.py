"""SecAgg+'s stopping rule for the confirmation and unmask steps: which devices that shared still lack t
repliers among their neighbours. Once none does, waiting for more replies (the dropouts') gains nothing."""
from __future__ import annotations

from broker.secagg_messages import Step
from edge_runtime.secagg_plus import MaskingGraph


class Coverage:
    """Which shared devices still lack t repliers among their neighbours (and themselves), kept up to date one
    new replier at a time: O(k) per message instead of re-counting every neighbourhood (O(n·k)) each time."""

    def __init__(self, step: Step, graph: MaskingGraph, shared: set[int], threshold: int) -> None:
        self.step, self._graph = step, graph
        self._short = {i: threshold for i in shared}
        self._counted: set[int] = set()

    def update(self, new: list[int]) -> bool:
        """Count the repliers ``new`` (not counted yet); True once every shared device is covered."""
        for d in new:
            if d in self._counted:
                continue
            self._counted.add(d)
            for i in self._graph.neighbours(d) | {d}:  # the graph is symmetric: d is in these neighbourhoods
                left = self._short.get(i)
                if left is not None:
                    if left <= 1:
                        del self._short[i]
                    else:
                        self._short[i] = left - 1
        return not self._short
