"""The privacy and robustness benchmark (`pulsewire privacy-bench`) -> privacy.json + privacy.md.

(a) DS2 macro F1 against ε ∈ {1, 4, 8, ∞} at δ = 1e-6 (DP-FedAvg: clip C, Gaussian noise calibrated with the
    RDP accountant for every device in every round, q = 1), on the patient split and with each patient cut
    into K sub-devices (``subpatient:K``: more, smaller devices, so the noise on the mean shrinks; ε is then
    per sub-device, and a patient's own guarantee is the group guarantee of K devices, weaker). A sub-device
    runs K local epochs over its 1/K of the beats, as many steps as a whole patient's device: K times the
    compute of the patient split (a 20-round K = 16 run takes about 10 minutes on one core).
    Distributed DP under secure aggregation adds the same total noise to the sum (up to fixed-point
    rounding), so these numbers stand for it too.
(b) Secure-aggregation overhead over a real Mosquitto: bytes and seconds per round against a plain FedAvg
    round, at 22 and 100 devices with a model-sized update, and rounds in which 30 % drop after their masked
    input or before it (``tools.secagg_overhead``, ``training.federated.secagg_round``).
(c) Attack x defence x attacker share: every attack in ``training.federated.attacks`` against FedAvg and the
    robust strategies at 10/20/30 % attackers, DS2 macro F1, and each defence's clean run.
(d) The accountant on the participation pulsewire sees (``tools.privacy_accounting``, no training): devices
    dropping, secure aggregation's varying inputs, device-side Poisson sampling, and dp-accounting's reference.

(a) and (c) run in process (``training.federated.simulation``) for each seed of ``--seeds`` (inter-patient results
swing with the seed, so the report gives mean ± std over the seeds, and a target counts on the mean), 20 rounds
of one local epoch (the settings are written into the results). Attacks draw their noise from a random stream of
their own, so an attacked run's honest devices train exactly as in the clean run of the same seed and defence:
the difference is the attack's. ``--jobs 2`` runs seeds in parallel worker processes. The round is selected
on held-out DS1 patients; DS2 is scored once per run (float32 Keras model). Every finished run is written to a
checkpoint JSON at once, keyed by seed (``s{seed}/...``); a restarted bench skips what it holds.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

EPSILONS = (1.0, 4.0, 8.0, math.inf)
ATTACKS = ("sign_flip", "scale:10", "gaussian:1", "label_flip", "replacement:10")
SHARES = (0.1, 0.2, 0.3)
DELTA = 1e-6


@dataclass(frozen=True)
class BenchSettings:
    #: 20 rounds as in the federated bench; at 10 the clean runs' validation F1 was still flat (0.27-0.30 on
    #: seed 0), so attack and defence differences were mostly noise of an untrained model.
    rounds: int = 20
    local_epochs: int = 1
    seed: int = 0
    #: DP-FedAvg's clipping norm, fixed before any run: about the median norm of the first round's honest
    #: deltas on the DS1 training patients (1.4-2.3, median 2.0; never DS2).
    clip: float = 1.0
    sub_devices: tuple[int, ...] = (1, 4, 16)
    epsilons: tuple[float, ...] = EPSILONS
    attacks: tuple[str, ...] = ATTACKS
    shares: tuple[float, ...] = SHARES
    secagg_devices: tuple[int, ...] = (22, 100)

    @classmethod
    def quick(cls) -> "BenchSettings":
        return cls(rounds=2, sub_devices=(1,), epsilons=(4.0, math.inf), attacks=("sign_flip",), shares=(0.3,),
                   secagg_devices=(10,))


def noise_for_epsilon(eps: float, rounds: int, delta: float = DELTA, sampling_rate: float = 1.0) -> float:
    """The smallest noise multiplier whose RDP ε after ``rounds`` is at most ``eps`` (bisection)."""
    from training.federated.privacy import epsilon

    if math.isinf(eps):
        return 0.0
    lo, hi = 0.05, 1.0
    while epsilon(hi, sampling_rate, rounds, delta) > eps:
        lo, hi = hi, hi * 2
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if epsilon(mid, sampling_rate, rounds, delta) > eps else (lo, mid)
    return hi


def defences(n_devices: int) -> dict[str, tuple[str, dict]]:
    """Each defence's strategy and arguments, set for up to 30 % attackers (the largest share tested)."""
    f = max(1, round(0.3 * n_devices))
    return {"fedavg": ("fedavg", {}), "median": ("median", {}), "trimmed_mean": ("trimmed_mean", {"trim": 0.3}),
            "multi_krum": ("krum", {"byzantine": f, "multi": n_devices - f}),
            "norm_bounded": ("norm_bounded", {})}  # clipped to each round's median norm


class Checkpoint:
    """Finished runs by key, written to disk after each one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.runs: dict[str, Any] = json.loads(path.read_text())["runs"] if path.is_file() else {}
        self.missing: list[str] = []

    def get_or_run(self, key: str, fn: Callable[[], dict], allowed: bool = True) -> dict | None:
        """The stored run, or a new one when ``allowed``; None for a run not (yet) done."""
        if key not in self.runs:
            if not allowed:
                self.missing.append(key)
                return None
            started = time.perf_counter()
            self.runs[key] = {**fn(), "wall_seconds": round(time.perf_counter() - started, 1)}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"runs": self.runs}, indent=1) + "\n")
            tmp.replace(self.path)
            log.info("%s: %s", key, {k: v for k, v in self.runs[key].items() if k != "history"})
        return self.runs[key]


def load_inter(data_dir: Path | None, cache_root: Path) -> Any:
    """The beats of the inter-patient protocol's records (DS1 and DS2), loaded once for every seed."""
    from edge_runtime.signal_config import SignalConfig
    from training.data.beat_dataset import load_beats
    from training.data.protocols import protocol_records

    return load_beats(data_dir, protocol_records("inter"), SignalConfig(), cache_root, progress=False)


class Simulator:
    """The inter-patient split of ``settings.seed`` (which DS1 patients validate) and in-process federations on
    it, each scored once on DS2."""

    def __init__(self, data: Any, settings: BenchSettings) -> None:
        from training.data.protocols import make_split

        split = make_split("inter", data, settings.seed)
        self.train, self.val, self.test = (data.subset(split.train), data.subset(split.val),
                                           data.subset(split.test))
        self.settings = settings
        self.patients = len(set(self.train.record.tolist()))

    def run(self, strategy: str, args: dict, partition: str = "patient", attack: str | None = None,
            share: float = 0.0, epochs_factor: int = 1) -> dict:
        from training.config import TrainConfig
        from training.federated.local_training import LocalConfig
        from training.federated.simulation import FederatedConfig, run_simulation
        from training.train import evaluate_keras

        s = self.settings
        fed = FederatedConfig(rounds=s.rounds, strategy=strategy, strategy_args=args, partition=partition, seed=s.seed,
                              local=LocalConfig(epochs=s.local_epochs * epochs_factor), attack=attack, attackers=share)
        trained = run_simulation(self.train, self.val, fed, TrainConfig(seed=s.seed), progress=False)
        rep = evaluate_keras(trained.model, self.test, trained.rr_scaler)
        per = rep["per_class"]
        return {"ds2_macro_f1": rep["macro_f1"], "ds2_accuracy": rep["accuracy"],
                "s_se": per["S"]["se"], "v_se": per["V"]["se"], "best_round": trained.best_epoch,
                "best_val_macro_f1": max(h["val_macro_f1"] for h in trained.history),
                "declined_updates": sum(h.get("declined", 0) for h in trained.history),
                "val_macro_f1_by_round": [round(h["val_macro_f1"], 4) for h in trained.history]}


Allow = Callable[[str], bool]


def dp_part(sim: Simulator, ck: Checkpoint, allow: Allow) -> list[dict]:
    from training.federated.privacy import epsilon

    s, rows = sim.settings, []
    for k in s.sub_devices:
        partition = "patient" if k == 1 else f"subpatient:{k}"
        for eps in s.epsilons:
            z = noise_for_epsilon(eps, s.rounds)
            key = f"s{s.seed}/dp/k{k}/eps{eps:g}"
            # a sub-device holds 1/k of a patient's beats and runs k local epochs: every device then takes about
            # as many SGD steps per round as a whole patient's device, and a larger fleet differs by the noise on
            # its mean, not by training k times less per round
            run = ck.get_or_run(key, lambda: sim.run("dp_fedavg", {"clip": s.clip, "noise_multiplier": z,
                                                                   "delta": DELTA, "seed": s.seed}, partition,
                                                     epochs_factor=k),
                                allow(key))
            if run is None:
                continue
            rows.append({"key": key, "seed": s.seed, "sub_devices_per_patient": k, "devices": sim.patients * k,
                         "epsilon_target": eps,
                         "noise_multiplier": z, "clip": s.clip, "local_epochs": s.local_epochs * k,
                         "epsilon_rdp": epsilon(z, 1.0, s.rounds, DELTA) if z else math.inf,
                         "epsilon_pld": epsilon(z, 1.0, s.rounds, DELTA, "pld") if z else math.inf,
                         "noise_sd_on_mean": z * s.clip / (sim.patients * k), **run})
    return rows


def attack_part(sim: Simulator, ck: Checkpoint, allow: Allow) -> list[dict]:
    from training.federated.attacks import choose_attackers

    s, rows = sim.settings, []
    for name, (strategy, args) in defences(sim.patients).items():
        key = f"s{s.seed}/attack/clean/{name}"
        run = ck.get_or_run(key, lambda: sim.run(strategy, args), allow(key))
        if run is not None:
            rows.append({"key": key, "seed": s.seed, "attack": "none", "share": 0.0, "attackers": 0, "defence": name,
                         **run})
        for attack in s.attacks:
            for share in s.shares:
                key = f"s{s.seed}/attack/{attack}/{share:g}/{name}"
                run = ck.get_or_run(key, lambda: sim.run(strategy, args, attack=attack, share=share), allow(key))
                if run is None:
                    continue
                rows.append({"key": key, "seed": s.seed, "attack": attack, "share": share, "defence": name,
                             "attackers": len(choose_attackers(sim.patients, share, s.seed)), **run})
    return rows


def secagg_part(s: BenchSettings, ck: Checkpoint, allow: Allow) -> list[dict]:
    from tools.secagg_overhead import measure_overhead

    rows = []
    for n in s.secagg_devices:
        for mode, drop, how in (("plain", 0.0, "after"), ("secagg", 0.0, "after"), ("secagg", 0.3, "after"),
                                ("secagg", 0.3, "before"), ("secagg+", 0.3, "after")):
            key = f"secagg/{n}/{mode}/{drop:g}/{how}"
            run = ck.get_or_run(key, lambda: measure_overhead(n, mode, drop, how), allow(key))
            if run is not None:
                rows.append({"key": key, **run})
    return rows


#: The order runs are done in, most wanted first, so that a bench stopped early has the important cells: the
#: 30 % attacker row (the goal), the secure-aggregation overhead, the other shares, then the ε sweep.
STAGES: tuple[tuple[str, Allow], ...] = (
    ("clean runs and 30 % attackers", lambda k: "/attack/clean/" in k or "/0.3/" in k),
    ("secure-aggregation overhead", lambda k: k.startswith("secagg/")),
    ("20 % attackers", lambda k: "/0.2/" in k),
    ("10 % attackers", lambda k: "/0.1/" in k),
    ("epsilon sweep", lambda k: "/dp/" in k),
)


def run_bench(data_dir: Path | None, cache_root: Path, settings: BenchSettings, checkpoint: Path,
              parts: tuple[str, ...] = ("dp", "attacks", "secagg", "accounting"),
              on_stage: Callable[[dict], None] | None = None, run: bool = True, only: tuple[str, ...] = (),
              seeds: tuple[int, ...] = ()) -> dict:
    """Every run of ``parts`` for each of ``seeds`` (default: ``settings.seed``), stage by stage, each stage for
    every seed before the next; after each stage ``on_stage`` gets the results so far (the rows of every seed).
    ``run=False`` runs nothing and reports what the checkpoint holds."""
    import dataclasses

    seeds = tuple(seeds) or (settings.seed,)
    ck = Checkpoint(checkpoint)
    data = load_inter(data_dir, cache_root) if {"dp", "attacks"} & set(parts) else None
    sims = [Simulator(data, dataclasses.replace(settings, seed=seed)) for seed in seeds] if data is not None else []
    results: dict[str, Any] = {}
    stages = [(name, (lambda a: lambda k: a(k) and (not only or any(o in k for o in only)))(allow))
              for name, allow in STAGES] if run else []
    for i, (stage, allow) in enumerate(stages + [("report", lambda k: False)]):
        if stage != "report":
            log.info("stage %d/%d: %s", i + 1, len(STAGES), stage)
        ck.missing = []
        results = {"settings": {**settings.__dict__, "seed": seeds[0], "seeds": list(seeds), "delta": DELTA,
                                "protocol": "inter (DS1 -> DS2)",
                                "evaluation": "float32 Keras model of the round with the best validation macro F1 "
                                              "(held-out DS1 patients), scored once on DS2"}}
        if "dp" in parts:
            results["dp"] = [row for sim in sims for row in dp_part(sim, ck, allow)]
        if "attacks" in parts:
            results["attacks"] = [row for sim in sims for row in attack_part(sim, ck, allow)]
            results["goal"] = goal(results["attacks"])
        if "secagg" in parts:
            results["secagg"] = secagg_part(settings, ck, allow)
        if "accounting" in parts and stage == "report":
            from tools.privacy_accounting import accounting_rows

            results["accounting"] = accounting_rows(settings.rounds, DELTA, noise_for_epsilon(4.0, settings.rounds))
        results["missing_runs"] = list(ck.missing)
        if sims:
            results["patients"] = sims[0].patients
            results["patients_by_seed"] = {sim.settings.seed: sim.patients for sim in sims}
        if on_stage is not None:
            on_stage(results)
    return results


# ----------------------------------------------------------------------------------------------- report
def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return "∞" if math.isinf(x) else f"{x:.{digits}f}"
    return str(x)


def seed_cells(rows: list[dict], by: tuple[str, ...], field: str = "ds2_macro_f1") -> dict[tuple, dict]:
    """The runs of one cell (the same values of ``by``) from every seed present: their ``field`` as mean, sample
    standard deviation (None for one run), n and the value of each seed, in the order the cells first appear."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[b] for b in by), []).append(r)
    out = {}
    for cell, runs in groups.items():
        values = [r[field] for r in runs]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
        out[cell] = {"mean": mean, "std": std, "n": len(values), "seeds": [r.get("seed") for r in runs],
                     "by_seed": {r.get("seed"): r[field] for r in runs}}
    return out


def paired_gap(cell: dict, clean: dict) -> float | None:
    """``cell``'s mean minus ``clean``'s over the seeds both ran: the difference of the means when every seed ran
    both, and no mixing of seeds when a cell has fewer (a seed's clean run can differ from another's by more
    than the gap)."""
    common = [seed for seed in cell["by_seed"] if seed in clean["by_seed"]]
    if not common:
        return None
    return sum(cell["by_seed"][x] - clean["by_seed"][x] for x in common) / len(common)


def goal(rows: list[dict], share: float = 0.3, tolerance: float = 0.03) -> dict:
    """The issue's target on the means over seeds: at ``share`` attackers the best robust defence's DS2 macro F1
    is at least the clean FedAvg run's minus ``tolerance`` (``paired_gap``: over the seeds both ran). Judged per
    attack (the best defence for that attack) and for the single defence whose worst attack is the least bad (one
    defence that holds against them all)."""
    cells = seed_cells(rows, ("attack", "share", "defence"))
    clean = cells.get(("none", 0.0, "fedavg"))
    attacks = list(dict.fromkeys(a for a, sh, _ in cells if a != "none" and sh == share))
    robust = list(dict.fromkeys(d for _, _, d in cells if d != "fedavg"))
    if clean is None or not attacks or not robust:
        return {"share": share, "tolerance": tolerance, "judged": False}
    gap = {(a, d): paired_gap(cells[(a, share, d)], clean) for a in attacks for d in robust if (a, share, d) in cells}
    gap = {k: g for k, g in gap.items() if g is not None}
    per_attack = {a: max(((g, d) for (a2, d), g in gap.items() if a2 == a), default=(None, None)) for a in attacks}
    worst = {d: min((g for (_, d2), g in gap.items() if d2 == d), default=-math.inf) for d in robust
             if all((a, d) in gap for a in attacks)}
    single = max(worst, key=worst.get) if worst else None
    chosen = defence_chosen_on_validation(rows, share, attacks, list(worst))
    return {"share": share, "tolerance": tolerance, "judged": True, "clean_fedavg": clean,
            "chosen_on_validation": chosen, "chosen_worst_gap": worst.get(chosen),
            "holds_with_validation_choice": chosen is not None and worst[chosen] >= -tolerance,
            "per_attack": {a: {"best_defence": d, "gap": g, "holds": g is not None and g >= -tolerance}
                           for a, (g, d) in per_attack.items()},
            "holds_per_attack": all(g is not None and g >= -tolerance for g, _ in per_attack.values()),
            "single_defence": single, "single_defence_worst_gap": worst.get(single),
            "holds_with_one_defence": single is not None and worst[single] >= -tolerance}


def defence_chosen_on_validation(rows: list[dict], share: float, attacks: list[str],
                                  defences: list[str]) -> str | None:
    """The defence a deployment could pick without DS2: the one whose worst mean validation macro F1 (held-out DS1
    patients) over the attacks at ``share`` is highest. The per-attack best on DS2 is an oracle; this is not."""
    val = seed_cells([r for r in rows if r.get("best_val_macro_f1") is not None], ("attack", "share", "defence"),
                     "best_val_macro_f1")
    worst = {d: min(val[(a, share, d)]["mean"] for a in attacks) for d in defences
             if all((a, share, d) in val for a in attacks)}
    return max(worst, key=worst.get) if worst else None


def _ms(cell: dict | None, asked: int, digits: int = 3, n: bool = True) -> str:
    """A cell's mean ± std with its number of seeds, saying when fewer seeds than asked are in."""
    if cell is None:
        return "–"
    text = _f(cell["mean"], digits) + (f" ± {cell['std']:.{digits}f}" if cell["std"] is not None else "")
    if not n:
        return text
    return text + (f" (n={cell['n']})" if cell["n"] >= asked else f" (n={cell['n']} of {asked})")


def _span(values: list, digits: int = 3) -> str:
    """One value, or the range when seeds differ (e.g. the number of training patients)."""
    values = sorted(set(values))
    return _f(values[0], digits) if len(values) == 1 else f"{_f(values[0], digits)}–{_f(values[-1], digits)}"


def markdown(results: dict, command: str) -> str:
    """The report. With several seeds each cell of (a) and (c) is the mean ± sample std over the seeds present
    and says how many; with one seed it is that run."""
    s = results["settings"]
    seeds = s.get("seeds", [s["seed"]])
    if len(seeds) == 1:
        seed_text = f"seed {seeds[0]}"
    else:
        seed_text = f"seeds {', '.join(map(str, seeds))}"
    out = [(f"# Privacy and robustness benchmark\n\n`{command}`; {s['rounds']} rounds, {s['local_epochs']} local "
            f"epoch(s), {seed_text}, δ = {s['delta']:g}. {s['evaluation']}."
            + ("" if len(seeds) == 1 else
               " Each DS2 cell of (a) and (c) is the mean ± sample standard deviation over the seeds that ran it, "
               f"n of them ('n=1 of {len(seeds)}': fewer than asked); differences and the goal are taken on the "
               "means, against clean FedAvg over the same seeds.") + "\n")]
    if results.get("note"):
        out.append(results["note"] + "\n")
    if results.get("dp"):
        out.append("## (a) DS2 macro F1 against ε (DP-FedAvg, every device every round)\n")
        out += _dp_table(results["dp"], len(seeds))
    if results.get("secagg"):
        out.append("\n## (b) Secure aggregation over Mosquitto against plain FedAvg (one round)\n")
        out.append("| devices | mode | dropped | kB up per device | kB down per device | "
                   "round seconds | aggregator unmask seconds | sum error (max abs) |")
        out.append("|---|---|---|---|---|---|---|---|")
        for r in results["secagg"]:
            dropped = f"{r['dropped']} ({r['drop_mode']} input)" if r["dropped"] else "0"
            out.append(f"| {r['devices']} | {r['mode']} | {dropped} | {_f(r['kb_up_per_device'], 1)} | "
                       f"{_f(r['kb_down_per_device'], 1)} | {_f(r['round_seconds'], 2)} | "
                       f"{_f(r.get('unmask_seconds'), 3)} | {r['max_abs_error']:.1e} |")
    if results.get("attacks"):
        out.append("\n## (c) Attack x defence x attacker share: DS2 macro F1\n")
        out += _attack_table(results["attacks"], len(seeds))
    if results.get("accounting"):
        from tools.privacy_accounting import accounting_table

        out.append(f"\n## (d) The accountant on heterogeneous participation (noise for ε = 4 over {s['rounds']} "
                   "rounds; no training)\n")
        out += accounting_table(results["accounting"])
    missing = results.get("missing_runs") or []
    if missing and len(seeds) == 1:
        out.append(f"\nNot run (the bench stopped before them; '–' above): {len(missing)} runs: "
                   + ", ".join(f"`{k}`" for k in missing) + "\n")
    elif missing:
        groups: dict[str, dict[str, int]] = {}
        for k in missing:
            stage = next((name for name, allow in STAGES if allow(k)), "other")
            seed = k.split("/")[0] if k.startswith("s") and not k.startswith("secagg/") else "no seed"
            groups.setdefault(seed, {}).setdefault(stage, 0)
            groups[seed][stage] += 1
        out.append(f"\nNot run (the bench stopped before them, or they were not asked for; fewer seeds in the cells "
                   f"above): {len(missing)} runs, listed in the JSON's `missing_runs`: "
                   + "; ".join(f"{seed}: " + ", ".join(f"{stage} ({n})" for stage, n in by.items())
                               for seed, by in groups.items()) + ".\n")
    return "\n".join(out) + "\n"


def _dp_table(rows: list[dict], asked: int) -> list[str]:
    out = [("| devices per patient | devices | ε target | noise multiplier z | clip C | ε (RDP) | ε (PLD) | "
            "noise sd on the mean | DS2 macro F1 | S Se | V Se | best round |"), "|" + "---|" * 12]
    if asked == 1:
        return out + [f"| {r['sub_devices_per_patient']} | {r['devices']} | {_f(r['epsilon_target'], 0)} | "
                      f"{_f(r['noise_multiplier'], 2)} | {r['clip']} | {_f(r['epsilon_rdp'], 2)} | "
                      f"{_f(r['epsilon_pld'], 2)} | {_f(r['noise_sd_on_mean'], 4)} | {_f(r['ds2_macro_f1'])} | "
                      f"{_f(r['s_se'])} | {_f(r['v_se'])} | {r['best_round']} |" for r in rows]
    by = ("sub_devices_per_patient", "epsilon_target")
    f1, s_se, v_se = (seed_cells(rows, by, field) for field in ("ds2_macro_f1", "s_se", "v_se"))
    for cell in f1:
        runs = [r for r in rows if tuple(r[b] for b in by) == cell]
        r = runs[0]  # z, C and ε do not depend on the seed; the number of training patients may
        out.append(f"| {cell[0]} | {_span([x['devices'] for x in runs])} | {_f(cell[1], 0)} | "
                   f"{_f(r['noise_multiplier'], 2)} | {r['clip']} | {_f(r['epsilon_rdp'], 2)} | "
                   f"{_f(r['epsilon_pld'], 2)} | {_span([x['noise_sd_on_mean'] for x in runs], 4)} | "
                   f"{_ms(f1[cell], asked)} | {_ms(s_se[cell], asked, n=False)} | {_ms(v_se[cell], asked, n=False)} | "
                   f"{', '.join(str(x['best_round']) for x in runs)} |")
    return out


def _attack_table(rows: list[dict], asked: int) -> list[str]:
    names = list(dict.fromkeys(r["defence"] for r in rows))
    gap_title = "best robust defence − clean FedAvg" + (" (means, same seeds)" if asked > 1 else "")
    out = ["| attack | share (attackers) | " + " | ".join(names) + f" | {gap_title} |",
           "|---|---|" + "---|" * (len(names) + 1)]
    cells = seed_cells(rows, ("attack", "share", "defence"))
    attackers: dict[tuple[str, float], list[int]] = {}
    for r in rows:
        attackers.setdefault((r["attack"], r["share"]), []).append(r["attackers"])
    clean = cells.get(("none", 0.0, "fedavg"))
    for (attack, share), counts in attackers.items():
        by = {d: cells[(attack, share, d)] for d in names if (attack, share, d) in cells}
        gaps = [paired_gap(c, clean) for d, c in by.items() if d != "fedavg"] if clean and attack != "none" else []
        gap = max((g for g in gaps if g is not None), default=None)
        shown = (lambda c: _f(c["mean"]) if c else "–") if asked == 1 else (lambda c: _ms(c, asked))
        out.append(f"| {attack} | {share:.0%} ({_span(counts)}) | "
                   + " | ".join(shown(by.get(d)) for d in names) + f" | {_f(gap)} |")
    if asked > 1:
        g = goal(rows)
        if g["judged"]:
            per = "; ".join(f"{a}: {v['best_defence']} {_f(v['gap'])}" for a, v in g["per_attack"].items())
            out.append(f"\nGoal (at {g['share']:.0%} attackers the best defence keeps DS2 macro F1 within "
                       f"{g['tolerance']} of the clean FedAvg run, on the means; clean FedAvg "
                       f"{_ms(g['clean_fedavg'], asked)}): best defence per attack, mean − clean mean: {per}. "
                       "With the best defence chosen per attack the goal "
                       f"{'holds' if g['holds_per_attack'] else 'fails'}; with one defence against every attack "
                       f"({g['single_defence']}, worst {_f(g['single_defence_worst_gap'])}) it "
                       f"{'holds' if g['holds_with_one_defence'] else 'fails'}."
                       + (f" Chosen without DS2 (the best worst-case validation macro F1 on held-out DS1 patients): "
                          f"{g['chosen_on_validation']}, worst DS2 gap {_f(g['chosen_worst_gap'])}: the goal "
                          f"{'holds' if g['holds_with_validation_choice'] else 'fails'} with it."
                          if g.get("chosen_on_validation") else ""))
    return out


def add_parser(sub, add_data_args) -> None:
    p = sub.add_parser("privacy-bench", help="DS2 macro F1 against epsilon, secure-aggregation overhead over MQTT, "
                                             "attack x defence table -> privacy.json + privacy.md",
                       description=__doc__.split("\n\n")[0])
    add_data_args(p)
    p.add_argument("--quick", action="store_true", help="2 rounds, a few cases: checks that everything runs")
    p.add_argument("--parts", nargs="+", choices=("dp", "attacks", "secagg", "accounting"),
                   default=["dp", "attacks", "secagg", "accounting"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="seeds of the federated runs (the inter-patient split's validation patients, the devices' "
                        "order, the attackers, the DP noise); the report gives mean ± std over them (default: 0 1 2)")
    p.add_argument("--rounds", type=int, help="federated rounds per run (default 10; quick: 2)")
    p.add_argument("--out", default="out/bench", help="folder for privacy.json and privacy.md (the committed "
                                                      "bench/results only when asked for, as `make bench` does)")
    p.add_argument("--checkpoint", help="partial results, resumed from (default: out/privacy-bench/<name>.partial.json)")
    p.add_argument("--merge", nargs="+", metavar="JSON", default=[],
                   help="add the runs of other checkpoints (e.g. parts run in parallel) to --checkpoint first")
    p.add_argument("--report-only", action="store_true", help="run nothing: write the report of the checkpoint")
    p.add_argument("--note", help="a sentence for the report's header (e.g. how parallel parts were run)")
    p.add_argument("--jobs", type=int, default=1,
                   help="run the seeds in this many worker processes, one TensorFlow thread each, then merge (on 2 "
                        "cores two single-threaded workers finish about twice as many runs per hour as one process)")
    p.add_argument("--only", nargs="+", metavar="TEXT", help="run only the runs whose key contains one of these "
                                                            "(e.g. /0.1/ for the 10 %% attacker share)")


def run_command(args, data_dir: Path | None, cache_root: Path) -> int:
    import dataclasses
    import sys

    settings = BenchSettings.quick() if args.quick else BenchSettings()
    if args.rounds:
        settings = dataclasses.replace(settings, rounds=args.rounds)
    name = "privacy-quick" if args.quick else "privacy"
    checkpoint = Path(args.checkpoint or f"out/privacy-bench/{name}.partial.json")
    started = time.time()
    argv = sys.argv[1:]
    if "--note" in argv:  # the note is printed on its own
        at = argv.index("--note")
        argv = argv[:at] + argv[at + 2:]
    command = " ".join(["pulsewire"] + argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def write(results: dict) -> None:
        results.update(command=command, wall_seconds=round(time.time() - started, 1), checkpoint=str(checkpoint),
                       note=args.note)
        (out / f"{name}.json").write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
        (out / f"{name}.md").write_text(markdown(results, command))

    merge = list(args.merge)
    if args.jobs > 1 and len(args.seeds) > 1 and not args.report_only and set(args.parts) - {"secagg", "accounting"}:
        merge += run_workers(args, checkpoint)
    if merge:
        runs = json.loads(checkpoint.read_text())["runs"] if checkpoint.is_file() else {}
        for other in merge:
            runs.update({k: v for k, v in json.loads(Path(other).read_text())["runs"].items() if k not in runs})
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    results = run_bench(data_dir, cache_root, settings, checkpoint, tuple(args.parts), on_stage=write,
                        run=not args.report_only, only=tuple(args.only or ()), seeds=tuple(args.seeds))
    print(markdown(results, command))
    print(f"results: {out / (name + '.json')}, {out / (name + '.md')}")
    return 0


def worker_arguments(args, seed: int, part: Path) -> list[str]:
    """The command line of the worker for one seed: the parent's settings, that seed, its own checkpoint, and no
    secure-aggregation part (it has no seed; the parent runs it once)."""
    seeded = [p for p in args.parts if p not in ("secagg", "accounting")]
    argv = ["privacy-bench", "--parts", *seeded, "--seeds", str(seed),
            "--checkpoint", str(part), "--out", str(part.parent / f"seed{seed}")]
    argv += (["--quick"] if args.quick else []) + (["--rounds", str(args.rounds)] if args.rounds else [])
    argv += (["--only", *args.only] if args.only else [])
    return argv + (["--data-dir", str(args.data_dir)] if args.data_dir else [])


def run_workers(args, checkpoint: Path) -> list[str]:
    """Each seed's simulated runs in a worker process of its own (at most ``args.jobs`` at a time, one TensorFlow
    thread each: the tiny model's ops do not use a second core, a second process does). Every worker resumes
    from and writes to its own checkpoint; the secure-aggregation part is left to the parent. Returns the
    workers' checkpoints, for the parent to merge."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    pending, running, done = list(args.seeds), [], []
    while pending or running:
        while pending and len(running) < args.jobs:
            seed = pending.pop(0)
            part = checkpoint.with_name(f"{checkpoint.stem}.seed{seed}.json")
            cmd = [sys.executable, "-m", "tools.cli", *worker_arguments(args, seed, part)]
            part.parent.mkdir(parents=True, exist_ok=True)
            with open(part.with_suffix(".log"), "ab") as out:
                running.append((seed, part, subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)))
            log.info("seed %d: a worker started; progress in %s", seed, part.with_suffix(".log"))
        seed, part, proc = running[0]
        if proc.wait() != 0:
            log.warning("the worker for seed %d exited with %d; its finished runs are kept in %s, rerun to resume",
                        seed, proc.returncode, part)
        running.pop(0)
        if part.is_file():
            done.append(str(part))
    return done


def _json_default(x: Any) -> Any:
    return str(x)
