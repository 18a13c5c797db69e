"""Part (d) of the privacy bench: what the accountant charges for the participation pulsewire sees, no training.

Each row is one scenario of ``rounds`` rounds with the ε the composed accountant reports
(``training.federated.accountant``: one event per round, RDP and PLD) and, for DP-FedAvg, what the old
per-round recomputation reported (this round's participants / registered devices taken as a Poisson rate for
every round so far): it fell when devices dropped and claimed amplification the public selection does not
give. The reference rows reproduce dp-accounting's published example (ENVIRONMENT.md) and a published DP-FedAvg
setting (TensorFlow Federated's DP tutorial: (2, 1e-5)-DP).
"""
from __future__ import annotations

import math

from training.federated.accountant import RoundCharge, Sampling, epsilon_of_charges
from training.federated.privacy import epsilon

#: dp-accounting's reference: Poisson q = 0.01, σ = 1.1, 1,000 steps, δ = 1e-5 -> RDP 1.7118, PLD 1.5154.
REFERENCE = {"q": 0.01, "z": 1.1, "rounds": 1000, "delta": 1e-5, "rdp": 1.7118, "pld": 1.5154}
#: A published DP-FedAvg setting: TensorFlow Federated's tutorial "Differential Privacy in TFF"
#: (docs/tutorials/federated_learning_with_differential_privacy.ipynb, user-level DP-FedAvg after McMahan et al.
#: 2018): federated EMNIST digits (3,383 training clients), Poisson sampling of 120 expected clients per round,
#: noise multiplier 1.2, 100 rounds: "satisfies (2, 1e-5)-DP" (RDP accountant; the ε is published to one digit).
PUBLISHED_DP_FEDAVG = {"source": "TFF tutorial 'Differential Privacy in TFF' (EMNIST, DP-FedAvg)", "clients": 3383,
                       "per_round": 120, "z": 1.2, "rounds": 100, "delta": 1e-5, "epsilon": 2.0}


def _dropping(start: int, end: int, rounds: int) -> list[int]:
    """Participants per round, falling linearly from ``start`` to ``end``."""
    return [round(start + (end - start) * r / max(1, rounds - 1)) for r in range(rounds)]


def _row(scenario: str, charges: list[RoundCharge], delta: float, running: bool = True, **extra) -> dict:
    """``running``: also check the ε after every round (not for the 1,000-round reference: too slow to matter)."""
    rdp = [epsilon_of_charges(charges[:r], delta, "rdp") for r in range(1, len(charges) + 1)] if running else \
        [epsilon_of_charges(charges, delta, "rdp")]
    return {"scenario": scenario, "rounds": len(charges), "delta": delta, "epsilon_rdp": rdp[-1],
            "epsilon_pld": epsilon_of_charges(charges, delta, "pld"),
            "never_decreases": all(b >= a for a, b in zip(rdp, rdp[1:])) if running else None, **extra}


def accounting_rows(rounds: int, delta: float, z: float, devices: int = 100) -> list[dict]:
    """The scenarios, each ``rounds`` long at noise multiplier ``z`` (the ε = 4 calibration of part (a))."""
    ref = REFERENCE
    rows = [_row("reference: Poisson q = 0.01, σ = 1.1, 1,000 rounds (dp-accounting)",
                 [RoundCharge(r, ref["z"], Sampling.DEVICE_POISSON, ref["q"]) for r in range(1, ref["rounds"] + 1)],
                 ref["delta"], running=False, published_rdp=ref["rdp"], published_pld=ref["pld"])]
    pub = PUBLISHED_DP_FEDAVG
    q = pub["per_round"] / pub["clients"]
    rows.append(_row(f"published DP-FedAvg: {pub['source']}: Poisson q = {pub['per_round']}/{pub['clients']}, "
                     f"z = {pub['z']}, {pub['rounds']} rounds", [RoundCharge(r, pub["z"], Sampling.DEVICE_POISSON, q)
                                                                 for r in range(1, pub["rounds"] + 1)],
                     pub["delta"], running=False, source=pub["source"], published_epsilon=pub["epsilon"],
                     published_accountant="rdp"))
    full, dropping = [devices] * rounds, _dropping(devices, int(0.4 * devices), rounds)
    for label, participants in (("all", full), ("dropping 100 % -> 40 %", dropping)):
        old = [epsilon(z, p / devices, r, delta) for r, p in enumerate(participants, 1)]
        rows.append(_row(f"DP-FedAvg, {devices} devices, participation {label} (public selection: q = 1)",
                         [RoundCharge(r, z) for r in range(1, rounds + 1)], delta, noise_multiplier=z,
                         old_recomputed_rdp=old[-1], old_never_decreases=all(b >= a for a, b in zip(old, old[1:]))))
    t = math.ceil(2 / 3 * devices)
    inputs = _dropping(devices, t, rounds)
    rows.append(_row(f"secure aggregation + distributed DP, {devices} selected, t = {t}, inputs "
                     f"{devices} -> {t} (z_eff = z·sqrt(inputs / t))",
                     [RoundCharge(r, z * math.sqrt(n / t)) for r, n in enumerate(inputs, 1)], delta,
                     noise_multiplier=z))
    for q in (0.1,):
        rows.append(_row(f"secure aggregation, devices sample themselves (q = {q}), all {devices} inputs",
                         [RoundCharge(r, z * math.sqrt(devices / t), Sampling.DEVICE_POISSON, q)
                          for r in range(1, rounds + 1)], delta, noise_multiplier=z))
    return rows


def accounting_table(rows: list[dict]) -> list[str]:
    def f(x, digits=3):
        return "–" if x is None else ("∞" if math.isinf(x) else f"{x:.{digits}f}")

    out = ["| scenario | rounds | δ | ε (RDP) | ε (PLD) | ε never decreases | old per-round recomputation (RDP) | "
           "published |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        old = (f"{f(r['old_recomputed_rdp'])}{'' if r['old_never_decreases'] else ' (fell during the run)'}"
               if "old_recomputed_rdp" in r else "–")
        published = (f"RDP {r['published_rdp']}, PLD {r['published_pld']}" if "published_rdp" in r else
                     f"{r['published_epsilon']:g} ({r['published_accountant'].upper()})" if "published_epsilon" in r
                     else "–")
        out.append(f"| {r['scenario']} | {r['rounds']} | {r['delta']:g} | {f(r['epsilon_rdp'], 4)} | "
                   f"{f(r['epsilon_pld'], 4)} | {_yes(r['never_decreases'])} | {old} | {published} |")
    return out


def _yes(flag: bool | None) -> str:
    return "–" if flag is None else ("yes" if flag else "NO")
