"""Record-level DP-SGD inside each device (a hospital protecting its own patients): the privacy ledger.

Each local DP-SGD step (``LocalConfig.dpsgd_*``; ``LocalTrainer`` clips every record's gradient to C, adds
N(0, σ²C²) to the sum and divides by the expected batch q·n) is the sampled Gaussian mechanism on the device's
records: every record is in the step's batch with probability q (Poisson, the device's own coins), so one
step is ``PoissonSampledDpEvent(q, GaussianDpEvent(σ))`` for the add/remove-one-record neighbourhood. A device
that took part in R rounds of E local epochs ran T = R·E·round(1/q) steps; its ε at δ is those T steps
composed by the project's accountant (``training.federated.accountant``: dp-accounting's PLD, tight, which
calibrates σ, and RDP, a looser upper bound, reported beside it). Everything after the steps (the delta sent, the aggregate, later rounds) is post-processing.
A device that also releases something else about the same records once with the Gaussian mechanism (the tabular
task's standardisation statistics) has that release composed into the same ε (``release_noise``).
What the ε does not cover: the choice of round on the validation patients (they do not train) and the number
of records each device reports as its FedAvg weight.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from training.federated.accountant import RoundCharge, Sampling, epsilon_of_charges
from training.federated.local_training import LocalConfig


def dpsgd_epsilon(noise: float, rate: float, steps: int, delta: float, accountant: str = "rdp",
                  release_noise: float = math.inf) -> float:
    """ε of ``steps`` Poisson-sampled Gaussian DP-SGD steps (rate q, noise multiplier σ) at ``delta``, composed
    with one Gaussian release of the same records with multiplier ``release_noise`` (inf: none), e.g. the
    standardisation statistics of ``training.tasks.tabular_dp_stats``."""
    charges = [RoundCharge(k, noise, Sampling.DEVICE_POISSON if rate < 1 else Sampling.PUBLIC, rate)
               for k in range(1, steps + 1)]
    if not math.isinf(release_noise):
        charges.append(RoundCharge(0, release_noise))
    return epsilon_of_charges(charges, delta, accountant) if charges else 0.0


def calibrate_noise(target_epsilon: float, delta: float, rate: float, steps: int, accountant: str = "pld",
                    tolerance: float = 1e-3, release_noise: float = math.inf) -> float:
    """The smallest noise multiplier σ (to ``tolerance``) whose ε after ``steps`` steps is <= the target.

    Default "pld": dp-accounting's PLD accountant is tight (its pessimistic discretization keeps it an upper
    bound); RDP is a looser upper bound, about 8 % more noise for the same ε at these settings."""
    if target_epsilon <= 0 or not 0 < delta < 1 or steps < 1:
        raise ValueError("target_epsilon > 0, 0 < delta < 1 and steps >= 1 required")
    low, high = 0.1, 1.0
    while dpsgd_epsilon(high, rate, steps, delta, accountant, release_noise) > target_epsilon:
        low, high = high, high * 2
        if high > 1e4:
            raise ValueError(f"no noise multiplier reaches ε={target_epsilon} in {steps} steps at q={rate}")
    while high - low > tolerance:
        mid = (low + high) / 2
        low, high = (low, mid) if dpsgd_epsilon(mid, rate, steps, delta, accountant, release_noise) <= target_epsilon else (mid, high)
    return high


@dataclass(frozen=True)
class LedgerRow:
    """One device's privacy account for a run."""

    device: str
    records: int
    rounds: int
    steps: int
    noise_multiplier: float
    sampling_rate: float
    clip: float
    delta: float
    epsilon_rdp: float
    epsilon_pld: float
    #: Noise multiplier of the one Gaussian release composed with the steps (inf: none).
    release_noise: float = math.inf


def ledger(rounds_by_device: dict[str, int], records: dict[str, int], local: LocalConfig, delta: float,
           release_noise: float = math.inf) -> list[LedgerRow]:
    """ε per device from the rounds it actually trained in (a declined round spends nothing), composed with the
    device's one Gaussian release of ``release_noise`` (inf: none)."""
    rows = []
    for device, rounds in sorted(rounds_by_device.items()):
        steps = rounds * local.epochs * local.dpsgd_steps_per_epoch
        eps = {a: dpsgd_epsilon(local.dpsgd_noise, local.dpsgd_rate, steps, delta, a, release_noise)
               for a in ("rdp", "pld")}
        rows.append(LedgerRow(device, records[device], rounds, steps, local.dpsgd_noise, local.dpsgd_rate,
                              local.dpsgd_clip, delta, eps["rdp"], eps["pld"], release_noise))
    return rows
