"""What a device's local training round is asked to do: the round plan's ``local`` settings, validated.

Apart from the trainer (``local_training``, TensorFlow) so that the aggregator, which only sends these
settings, runs without importing TensorFlow (661 MiB of RSS and seconds of start-up otherwise).
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class LocalConfig:
    epochs: int = 2
    batch_size: int = 64
    #: Plain SGD on this small net needs a large step: on held-out DS1 patients (seed 0) 0.01 and 0.05
    #: left FedAvg near an all-N model after 10 rounds, 0.3 climbed steadily.
    learning_rate: float = 0.3
    #: The local learning rate of round r is ``learning_rate * lr_decay ** (r - 1)``; 1 keeps it constant. The
    #: devices apply it from the round number in the plan, so the aggregator publishes nothing new.
    lr_decay: float = 1.0
    #: FedProx: weight of (mu/2)·||w - w_global||²; 0 disables it.
    proximal_mu: float = 0.0
    #: Clip each local step (gradient plus SCAFFOLD's correction) to this global L2 norm; 0 disables it.
    #: A large step on an outlier batch, or a large drift correction, otherwise sends weights to NaN.
    grad_clip: float = 0.0
    #: Record-level DP-SGD inside the device (a hospital protecting its own patients): noise multiplier σ of
    #: the Gaussian added to the sum of per-record gradients clipped to ``dpsgd_clip``; 0 disables DP-SGD.
    dpsgd_noise: float = 0.0
    dpsgd_clip: float = 1.0
    #: DP-SGD's Poisson sampling rate q: each step takes every record with probability q (an epoch is
    #: round(1/q) steps); the same q for every device, so equal σ gives every device the same ε.
    dpsgd_rate: float = 0.1
    #: Label-shift correction of the local loss (``training.federated.label_shift``): a classifier device trains
    #: ``p·r / Σ p·r`` against its labels, r = its own class frequencies over the fleet's, so the shared model
    #: learns the fleet-wide posterior and a device never pushes down a class it has no example of. Needs a
    #: device that knows both priors (the beat classifier's); other tasks keep it off.
    label_shift: bool = False
    #: With ``label_shift``: every class counts as at least this share of its fleet frequency on the device
    #: (0: a class the device lacks is left out of its softmax entirely).
    label_shift_floor: float = 0.0

    def __post_init__(self) -> None:
        if (self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0 or self.proximal_mu < 0
                or self.grad_clip < 0):
            raise ValueError("epochs and batch_size >= 1, learning_rate > 0, proximal_mu >= 0 and grad_clip >= 0 "
                             "required")
        if self.dpsgd_noise < 0 or self.dpsgd_clip <= 0 or not 0 < self.dpsgd_rate <= 1:
            raise ValueError("dpsgd_noise >= 0, dpsgd_clip > 0 and dpsgd_rate in (0, 1] required")
        if not 0 <= self.label_shift_floor <= 1:
            raise ValueError(f"label_shift_floor must be in [0, 1], got {self.label_shift_floor}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")

    def for_round(self, round_: int) -> LocalConfig:
        """The settings a device trains with in round ``round_`` (1-based): the decayed learning rate."""
        if round_ < 1:
            raise ValueError(f"rounds count from 1, got {round_}")
        return replace(self, learning_rate=self.learning_rate * self.lr_decay ** (round_ - 1), lr_decay=1.0)

    @property
    def dpsgd_steps_per_epoch(self) -> int:
        return max(1, round(1 / self.dpsgd_rate))
