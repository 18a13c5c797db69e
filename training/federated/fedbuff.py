"""FedBuff (Nguyen et al., AISTATS 2022): asynchronous rounds, updates aggregated in buffers of K.

Devices train from whatever model version they fetched and send their delta tagged with that version; the
round engine (``Strategy.buffering``) accepts it if it is at most ``max_staleness`` versions old and closes
a round, i.e. publishes a new version, every ``buffer_size`` accepted updates. This strategy only says how
a buffer is combined: each delta is scaled by the staleness weight s(τ) = (1 + τ)^-``staleness_power``
(τ: versions between the one it trained on and the one it lands in; 0.5 is the paper's 1/√(1+τ)), the
``inner`` strategy combines the scaled deltas (FedAvg: their example-weighted mean; any registered strategy,
e.g. ``dp_fedavg`` to clip, noise and account each buffer as a round, or ``median``), and the server step is
``server_lr`` × v with v = ``server_momentum`` × v + that change (server momentum on the buffered delta, as
FedAvgM does per round; momentum 0: v is the change). The defaults (``FedBuffConfig``) are what
``--strategy fedbuff`` runs with; they were chosen on DS1 validation by ``pulsewire fedbuff-sweep``. Privacy
accounting, the budget stop and checkpoints are the inner strategy's, reached through the same hooks the
engine calls for synchronous rounds; scaling by s(τ) <= 1 never raises a clipped delta's norm, so
DP-FedAvg's sensitivity argument holds unchanged. (Server momentum carries earlier noised buffers into
later steps: post-processing, so the accountant's ε is unchanged.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from training.federated.strategies import Buffering, ClientUpdate, RoundContext, Strategy, Weights, add


def staleness_weight(staleness: int, power: float) -> float:
    """s(τ) = (1 + τ)^-power: 1 for a fresh update, 1/√2 one version late with power 0.5."""
    if staleness < 0:
        raise ValueError(f"staleness must be >= 0, got {staleness}")
    return float((1.0 + staleness) ** -power)


@dataclass(frozen=True)
class FedBuffConfig:
    """FedBuff's server settings. These defaults are ``--strategy fedbuff``'s (and the bench's): the setting
    ``pulsewire fedbuff-sweep`` chose on held-out DS1 validation patients (docs/scale.md)."""

    buffer_size: int = 5
    server_lr: float = 1.0
    server_momentum: float = 0.0
    #: 0: a late update counts fully. The paper's 1/√(1+τ) (0.5) left the slow devices' patients under-weighted
    #: and never reached the synchronous F1 on seed 2 (bench/results/fedbuff-sweep.md).
    staleness_power: float = 0.0
    max_staleness: int = 30

    def __post_init__(self) -> None:
        Buffering(self.buffer_size, self.max_staleness)  # validates both
        if self.server_lr <= 0 or self.staleness_power < 0 or not 0 <= self.server_momentum < 1:
            raise ValueError(f"server_lr must be > 0 (got {self.server_lr}), staleness_power >= 0 (got "
                             f"{self.staleness_power}) and server_momentum in [0, 1) (got {self.server_momentum})")


DEFAULTS = FedBuffConfig()


class FedBuff(Strategy):
    """Buffered asynchronous aggregation around an inner strategy chosen by name."""

    name = "fedbuff"

    def __init__(self, buffer_size: int = DEFAULTS.buffer_size, server_lr: float = DEFAULTS.server_lr,
                 server_momentum: float = DEFAULTS.server_momentum,
                 staleness_power: float = DEFAULTS.staleness_power, max_staleness: int = DEFAULTS.max_staleness,
                 inner: str = "fedavg", make_inner: Callable[..., Strategy] | None = None,
                 **inner_args: Any) -> None:
        self.config = FedBuffConfig(buffer_size, server_lr, server_momentum, staleness_power, max_staleness)
        self._buffering = Buffering(buffer_size, max_staleness)
        if inner == self.name or make_inner is None:
            raise ValueError("fedbuff needs an inner strategy other than fedbuff, made through the registry "
                             "(training.federated.registry.make_strategy)")
        self.velocity: Weights | None = None  # the server momentum buffer
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

    def combine(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        scaled = []
        for u in updates:
            s = staleness_weight(int(u.meta.get("staleness", 0)), self.config.staleness_power)
            scaled.append(ClientUpdate(u.device, [d * s for d in u.delta], u.num_examples, u.local_steps,
                                       u.control_delta, u.meta))
        moved = self.inner.aggregate(global_weights, scaled)
        change = [m - g for m, g in zip(moved, global_weights)]
        beta = self.config.server_momentum
        if beta == 0:  # plain FedBuff: nothing to carry (and nothing extra in the checkpoint)
            return add(global_weights, change, scale=self.config.server_lr)
        self.velocity = change if self.velocity is None else add([beta * v for v in self.velocity], change)
        return add(global_weights, self.velocity, scale=self.config.server_lr)

    def state(self) -> dict[str, Any]:
        return {"velocity": self.velocity, **{f"inner.{k}": v for k, v in self.inner.state().items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.velocity = state.get("velocity")
        self.inner.load_state({k.removeprefix("inner."): v for k, v in state.items() if k.startswith("inner.")})
