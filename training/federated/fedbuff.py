"""FedBuff (Nguyen et al., AISTATS 2022): asynchronous rounds, updates aggregated in buffers of K.

Devices train from whatever model version they fetched and send their delta tagged with that version; the
round engine (``Strategy.buffering``) accepts it if it is at most ``max_staleness`` versions old and closes
a round, i.e. publishes a new version, every ``buffer_size`` accepted updates. This strategy only says how
a buffer is combined: each delta is scaled by the staleness weight s(τ) = (1 + τ)^-``staleness_power``
(τ: versions between the one it trained on and the one it lands in; 0.5 is the paper's 1/√(1+τ)), the
``inner`` strategy combines the scaled deltas (FedAvg: their example-weighted mean; any registered strategy,
e.g. ``dp_fedavg`` to clip, noise and account each buffer as a round, or ``median``), and the server step is
``server_lr`` × that change. Privacy accounting, the budget stop and checkpoints are the inner strategy's,
reached through the same hooks the engine calls for synchronous rounds; scaling by s(τ) <= 1 never raises a
clipped delta's norm, so DP-FedAvg's sensitivity argument holds unchanged.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from training.federated.strategies import Buffering, ClientUpdate, RoundContext, Strategy, Weights, add


def staleness_weight(staleness: int, power: float) -> float:
    """s(τ) = (1 + τ)^-power: 1 for a fresh update, 1/√2 one version late with power 0.5."""
    if staleness < 0:
        raise ValueError(f"staleness must be >= 0, got {staleness}")
    return float((1.0 + staleness) ** -power)


class FedBuff(Strategy):
    """Buffered asynchronous aggregation around an inner strategy chosen by name."""

    name = "fedbuff"

    def __init__(self, buffer_size: int = 10, server_lr: float = 1.0, staleness_power: float = 0.5,
                 max_staleness: int = 10, inner: str = "fedavg",
                 make_inner: Callable[..., Strategy] | None = None, **inner_args: Any) -> None:
        self._buffering = Buffering(buffer_size, max_staleness)  # validates both
        if server_lr <= 0 or staleness_power < 0:
            raise ValueError(f"server_lr must be > 0 (got {server_lr}) and staleness_power >= 0 "
                             f"(got {staleness_power})")
        if inner == self.name or make_inner is None:
            raise ValueError("fedbuff needs an inner strategy other than fedbuff, made through the registry "
                             "(training.federated.registry.make_strategy)")
        self.server_lr, self.staleness_power = server_lr, staleness_power
        self.inner: Strategy = make_inner(inner, **inner_args)
        if self.inner.buffering() is not None:
            raise ValueError(f"inner strategy {inner!r} is itself asynchronous")

    def buffering(self) -> Buffering:
        return self._buffering

    # the inner strategy's hooks: its budget, its ledger, its device settings
    def client_config(self) -> dict[str, Any]:
        return self.inner.client_config()

    def server_control(self, global_weights: Weights) -> Weights | None:
        return self.inner.server_control(global_weights)

    def allows_round(self, ctx: RoundContext) -> bool:
        return self.inner.allows_round(ctx)

    def begin_round(self, ctx: RoundContext) -> None:
        self.inner.begin_round(ctx)

    def privacy_row(self) -> dict[str, Any] | None:
        return self.inner.privacy_row()

    def privacy_budget(self) -> float | None:
        return self.inner.privacy_budget()

    def _combine(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        scaled = []
        for u in updates:
            s = staleness_weight(int(u.meta.get("staleness", 0)), self.staleness_power)
            scaled.append(ClientUpdate(u.device, [d * s for d in u.delta], u.num_examples, u.local_steps,
                                       u.control_delta, u.meta))
        moved = self.inner.aggregate(global_weights, scaled)
        return add(global_weights, [m - g for m, g in zip(moved, global_weights)], scale=self.server_lr)

    def state(self) -> dict[str, Any]:
        return {f"inner.{k}": v for k, v in self.inner.state().items()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.inner.load_state({k.removeprefix("inner."): v for k, v in state.items() if k.startswith("inner.")})
