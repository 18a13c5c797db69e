"""`pulsewire fedbuff-bench`: asynchronous FedBuff against synchronous FedAvg on wall time, with slow devices.

Per seed, on the MIT-BIH inter-patient split (DS1 training patients as devices, held-out DS1 patients as
validation; DS2 is never looked at): synchronous FedAvg runs ``--rounds`` rounds; its final validation macro
F1 is the target; FedBuff then runs from the same initial model, the same devices and the same delays until a
version reaches that target (or until ``--cap`` times the synchronous run's time). Both runs go through the one round
engine (``run_in_process``) with the same screening and the same devices training for real; only time is
simulated: ``--slow-fraction`` of the devices (drawn per seed) need ``--slow-factor`` times longer for a round
(each round time is ``--base-seconds`` × a log-normal jitter, × the factor when slow). A synchronous round
closes by the ``RoundPolicy`` rule the deployed aggregator uses (every selected device answered, or the
deadline with a quorum): its slow devices hold it. FedBuff's slow devices deliver late (weighted by s(τ); the
defaults, `--strategy fedbuff`'s `FedBuffConfig`, do not discount them).
Wall time is that simulated clock, the same for both; the CPU seconds spent are reported beside it.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from training.federated.fedbuff import DEFAULTS

log = logging.getLogger(__name__)
#: Versions in a row that must hold the target for the stricter, reported time-to-target.
SUSTAINED = 3


@dataclass(frozen=True)
class SlowDevices:
    """Deterministic per-(device, round) round times: ``base_s`` × lognormal(0, ``jitter``), × ``slow_factor``
    for the ``slow_fraction`` of devices drawn with ``seed``."""

    names: tuple[str, ...]
    slow_fraction: float = 0.3
    slow_factor: float = 5.0
    base_s: float = 10.0
    jitter: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.slow_fraction <= 1 or self.slow_factor < 1 or self.base_s <= 0 or self.jitter < 0:
            raise ValueError("--slow-fraction in [0, 1], --slow-factor >= 1, --base-seconds > 0 and jitter >= 0")

    @property
    def slow(self) -> frozenset[str]:
        rng = np.random.default_rng([self.seed, 7])
        n = round(self.slow_fraction * len(self.names))
        return frozenset(rng.choice(sorted(self.names), n, replace=False).tolist()) if n else frozenset()

    def __call__(self, device: str, round_: int) -> float:
        rng = np.random.default_rng([self.seed, sorted(self.names).index(device), round_])
        factor = self.slow_factor if device in self.slow else 1.0
        return float(self.base_s * factor * rng.lognormal(0.0, self.jitter))


@dataclass(frozen=True)
class BenchSettings:
    rounds: int = 10
    partition: str = "patient"
    local_epochs: int = 2
    lr: float = 0.3
    buffer_size: int = DEFAULTS.buffer_size  # FedBuff's settings default to --strategy fedbuff's
    server_lr: float = DEFAULTS.server_lr
    server_momentum: float = DEFAULTS.server_momentum
    staleness_power: float = DEFAULTS.staleness_power
    max_staleness: int = DEFAULTS.max_staleness
    deadline_s: float = 120.0
    quorum: float = 0.8
    slow_fraction: float = 0.3
    slow_factor: float = 5.0
    base_s: float = 10.0
    #: FedBuff stops at this multiple of the synchronous run's wall time if it has not held the target.
    cap: float = 1.0

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.buffer_size < 1 or self.local_epochs < 1 or self.cap <= 0:
            raise ValueError("--rounds, --buffer-size and --local-epochs must be >= 1, --cap > 0")

    def fedbuff_args(self) -> dict[str, Any]:
        return {"buffer_size": self.buffer_size, "server_lr": self.server_lr, "server_momentum": self.server_momentum,
                "staleness_power": self.staleness_power, "max_staleness": self.max_staleness}


def _summary(history: list[dict], cpu_s: float) -> dict:
    return {"versions": len(history), "final_val_macro_f1": history[-1]["val_macro_f1"],
            "wall_s": history[-1]["sim_time"], "device_updates": history[-1]["trained"], "cpu_s": cpu_s,
            "curve": [{"round": r["round"], "sim_time": r["sim_time"], "val_macro_f1": round(r["val_macro_f1"], 4),
                       "participants": r["participants"], "staleness_max": (r.get("buffer") or {}).get("staleness_max"),
                       "closed_by": r["closed_by"]} for r in history]}


def _sustained(history: list[dict], target: float, versions: int = SUSTAINED) -> dict | None:
    """The first row of ``versions`` consecutive rows at or above ``target`` (a noisy validation score crosses
    a line by chance more often the more often it is measured: FedBuff is measured every K updates)."""
    for i in range(len(history) - versions + 1):
        if all(r["val_macro_f1"] >= target for r in history[i:i + versions]):
            return history[i]
    return None


@dataclass
class Arena:
    """One seed's fleet, devices, delays and evaluator: what both arms (and every swept FedBuff setting) share."""

    seed: int
    names: list[str]
    initial: list
    delays: SlowDevices
    policy: Any
    local: dict
    devices: Callable[[], dict]
    evaluate: Callable[[list], dict]


def make_arena(train, val, seed: int, s: BenchSettings) -> Arena:
    from training.config import TrainConfig
    from training.federated.aggregator_config import RoundPolicy
    from training.federated.local_training import LocalConfig, LocalTrainer
    from training.federated.simulation import FederatedConfig, prepare_fleet
    from training.train import evaluate_keras

    local = LocalConfig(epochs=s.local_epochs, learning_rate=s.lr)
    fleet = prepare_fleet(train, FederatedConfig(rounds=s.rounds, partition=s.partition, seed=seed, local=local),
                          TrainConfig(seed=seed))
    model, trainer = fleet.model, LocalTrainer(fleet.model)
    names = [f"dev{k:03d}" for k in range(len(fleet.devices))]

    def evaluate(weights):
        model.set_weights(weights)
        return {"val_macro_f1": evaluate_keras(model, val, fleet.scaler)["macro_f1"]}

    def devices():  # the same devices, data and random streams for every run
        return {n: fleet.updater(k, n, trainer, seed * 1000 + k + 1) for k, n in enumerate(names)}

    return Arena(seed, names, model.get_weights(),
                 SlowDevices(tuple(names), s.slow_fraction, s.slow_factor, s.base_s, seed=seed),
                 RoundPolicy(deadline_s=s.deadline_s, quorum=s.quorum), asdict(local), devices, evaluate)


def run_sync(arena: Arena, rounds: int) -> dict:
    """Synchronous FedAvg for ``rounds`` rounds; its final validation macro F1 is FedBuff's target."""
    from training.federated.in_process import run_in_process
    from training.federated.registry import make_fleet_strategy
    from training.federated.round_engine import RoundEngine

    cpu = time.process_time()
    sync = RoundEngine(make_fleet_strategy("fedavg", {}, len(arena.names)), arena.names, arena.policy, rounds,
                       arena.initial, arena.seed, arena.evaluate)
    run_in_process(sync, arena.devices(), arena.local, delays=arena.delays)
    return _summary(sync.history, time.process_time() - cpu)


def run_fedbuff(arena: Arena, fedbuff_args: dict, target: float, until_s: float) -> dict:
    """FedBuff from the same start until ``SUSTAINED`` versions in a row hold ``target`` or the simulated
    clock reaches ``until_s``."""
    from training.federated.in_process import run_in_process
    from training.federated.registry import make_fleet_strategy
    from training.federated.round_engine import RoundEngine

    cpu = time.process_time()
    engine = RoundEngine(make_fleet_strategy("fedbuff", fedbuff_args, len(arena.names)), arena.names, arena.policy,
                         100_000, arena.initial, arena.seed, arena.evaluate)
    run_in_process(engine, arena.devices(), arena.local, delays=arena.delays,
                   until=lambda row: _sustained(engine.history, target) is not None or row["sim_time"] >= until_s)
    out = _summary(engine.history, time.process_time() - cpu)
    reached = next((r for r in engine.history if r["val_macro_f1"] >= target), None)
    sustained = _sustained(engine.history, target)
    out.update(reached=reached is not None, wall_s_to_target=reached["sim_time"] if reached else None,
               device_updates_to_target=reached["trained"] if reached else None,
               wall_s_to_sustained_target=sustained["sim_time"] if sustained else None,
               best_val_macro_f1=max(r["val_macro_f1"] for r in engine.history),
               rejected_stale=sum(r["rejected"].get("stale", 0) for r in engine.history))
    return out


def run_seed(train, val, seed: int, s: BenchSettings) -> dict:
    """Synchronous FedAvg, then FedBuff to the synchronous final validation macro F1, on one seed."""
    arena = make_arena(train, val, seed, s)
    sync_out = run_sync(arena, s.rounds)
    target = sync_out["final_val_macro_f1"]
    buff_out = run_fedbuff(arena, s.fedbuff_args(), target, s.cap * sync_out["wall_s"])
    ratio = buff_out["wall_s_to_target"] / sync_out["wall_s"] if buff_out["reached"] else None
    log.info("seed %d: sync %d rounds, %.0f s, val F1 %.4f; fedbuff %s", seed, s.rounds, sync_out["wall_s"], target,
             f"{buff_out['wall_s_to_target']:.0f} s ({ratio:.2f}x)" if ratio is not None else "did not reach it")
    return {"seed": seed, "devices": len(arena.names), "slow_devices": sorted(arena.delays.slow), "sync": sync_out,
            "fedbuff": buff_out, "wall_time_ratio": ratio}


def _stats(values: list[float | None]) -> tuple[float | None, float | None]:
    got = [v for v in values if v is not None]
    if not got:
        return None, None
    return float(np.mean(got)), float(np.std(got))


def _first_at(curve: list[dict], target: float) -> float:
    """Simulated time of the first row at or above ``target`` (a noisy curve may touch its final value early)."""
    return next(r["sim_time"] for r in curve if r["val_macro_f1"] >= round(target, 4))


def fedbuff_targets(runs: list[dict]) -> list[dict]:
    """{target, mean, threshold, met} (+ std and per-seed values): met when every seed reached the target within
    0.5x (a seed that never reached it, or took longer, fails it, whatever the mean)."""
    ratios = [r["wall_time_ratio"] for r in runs]
    mean, std = _stats(ratios)
    sync_f1 = [r["sync"]["final_val_macro_f1"] for r in runs]
    reached = sum(v is not None for v in ratios)
    rows = [{"target": "FedBuff wall time to the synchronous run's final val macro F1, / the synchronous run's "
                       f"(30 % slow devices; mean over the {reached} of {len(ratios)} seeds that reached it)",
             "mean": mean, "std": std, "values": ratios, "reached_seeds": reached, "threshold": "<= 0.5 on every seed",
             "met": None if mean is None else reached == len(ratios) and max(ratios) <= 0.5}]
    for what, values in (
            ("synchronous FedAvg final val macro F1 (the target)", sync_f1),
            ("synchronous wall time, simulated s", [r["sync"]["wall_s"] for r in runs]),
            ("FedBuff wall time to target, simulated s", [r["fedbuff"]["wall_s_to_target"] for r in runs]),
            (f"FedBuff wall time until {SUSTAINED} versions in a row hold the target, / the synchronous run's",
             [r["fedbuff"]["wall_s_to_sustained_target"] / r["sync"]["wall_s"]
              if r["fedbuff"]["wall_s_to_sustained_target"] else None for r in runs]),
            ("synchronous FedAvg's own first round at its final val macro F1, / its whole run's wall time",
             [_first_at(r["sync"]["curve"], r["sync"]["final_val_macro_f1"]) / r["sync"]["wall_s"] for r in runs]),
            ("FedBuff wall time to target / the synchronous run's time to first reach it",
             [r["fedbuff"]["wall_s_to_target"] / _first_at(r["sync"]["curve"], r["sync"]["final_val_macro_f1"])
              if r["fedbuff"]["wall_s_to_target"] else None for r in runs]),
            ("synchronous device updates trained", [r["sync"]["device_updates"] for r in runs]),
            ("FedBuff device updates trained to target",
             [r["fedbuff"]["device_updates_to_target"] for r in runs])):
        m, sd = _stats(values)
        rows.append({"target": f"{what} (reported)", "mean": m, "std": sd, "values": values, "threshold": "reported",
                     "met": None})
    return rows


def results_markdown(results: dict) -> str:
    lines = [f"# FedBuff vs synchronous FedAvg\n\n`{results['command']}`\n",
             *[f"- runs from `{m['command']}`" for m in results.get("merged", [])], "",
             "| target | mean ± std | per seed | threshold | met |", "|---|---|---|---|---|"]
    fmt = lambda v: "–" if v is None else f"{v:.3g}"
    for t in results["targets"]:
        met = {True: "yes", False: "**no**", None: "–"}[t["met"]]
        lines.append(f"| {t['target']} | {fmt(t['mean'])} ± {fmt(t['std'])} | "
                     f"{', '.join(fmt(v) for v in t['values'])} | {t['threshold']} | {met} |")
    return "\n".join(lines) + "\n"


def load_split(data_dir: Path, seed: int) -> tuple:
    """(train, val) MLII beats of the inter-patient split: DS1 training patients and held-out DS1 patients."""
    from tools.data_args import cache_root
    from training.data.feature_sets import load_feature_beats
    from training.data.protocols import make_split, protocol_records

    data = load_feature_beats(data_dir, protocol_records("inter"), cache_root())
    split = make_split("inter", data, seed)
    return data.subset(split.train).of_leads(["MLII"]), data.subset(split.val).of_leads(["MLII"])


def _run_seeds(data_dir: Path, seeds: list[int], settings: BenchSettings) -> list[dict]:
    return [run_seed(*load_split(data_dir, seed), seed, settings) for seed in seeds]


def cmd_fedbuff_bench(args: argparse.Namespace) -> int:
    from tools.data_args import resolve_data_dir

    if args.quick:
        args.rounds, args.local_epochs = min(args.rounds, 4), 1
    try:
        settings = BenchSettings(rounds=args.rounds, partition=args.partition, local_epochs=args.local_epochs,
                                 lr=args.lr, buffer_size=args.buffer_size, server_lr=args.server_lr,
                                 server_momentum=args.server_momentum, staleness_power=args.staleness_power,
                                 max_staleness=args.max_staleness,
                                 deadline_s=args.deadline, quorum=args.quorum, slow_fraction=args.slow_fraction,
                                 slow_factor=args.slow_factor, base_s=args.base_seconds, cap=args.cap)
        SlowDevices(("x",), settings.slow_fraction, settings.slow_factor, settings.base_s)
        data_dir = resolve_data_dir(args)
    except ValueError as exc:
        print(f"pulsewire fedbuff-bench: error: {exc}", file=sys.stderr)
        return 2
    started = time.time()
    if args.merge:
        parts = [json.loads(Path(p).read_text()) for p in args.merge]
        if any(p["settings"] != asdict(settings) for p in parts):
            print("pulsewire fedbuff-bench: error: --merge files were made with other settings than these flags",
                  file=sys.stderr)
            return 2
        runs = sorted((r for p in parts for r in p["runs"]), key=lambda r: r["seed"])
        merged = {"merged": [{"file": p, "command": part["command"]} for p, part in zip(args.merge, parts)]}
    else:
        runs, merged = _run_seeds(data_dir, args.seeds, settings), {}
    results = {"command": " ".join(["pulsewire"] + sys.argv[1:]), **merged, "settings": asdict(settings),
               "validation": "held-out DS1 patients (make_split('inter', seed)); DS2 unused",
               "wall_time": "simulated seconds of the one clock both runs share (see tools/fedbuff_bench.py)",
               "targets": fedbuff_targets(runs), "runs": runs, "wall_seconds": time.time() - started}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(results_markdown(results))
    print(results_markdown(results) + f"\nresults: {out}")
    return 0


def add_parser(sub) -> None:
    from tools.data_args import add_data_args

    p = sub.add_parser("fedbuff-bench", help="FedBuff vs synchronous FedAvg: wall time to the same val F1 "
                                             "with slow devices",
                       description="Per seed: synchronous FedAvg for --rounds rounds, then FedBuff from the same "
                                   "start until it reaches the synchronous final validation macro F1 (held-out DS1 "
                                   "patients), both with the same simulated slow devices; writes targets to --json "
                                   "(docs/scale.md).")
    add_data_args(p)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=10, help="synchronous rounds (default 10)")
    p.add_argument("--partition", default="patient", help="patient | subpatient:K | iid:N | dirichlet:ALPHA:N")
    p.add_argument("--local-epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.3, help="local SGD learning rate")
    p.add_argument("--buffer-size", type=int, default=DEFAULTS.buffer_size,
                   help=f"FedBuff's K (default {DEFAULTS.buffer_size}, --strategy fedbuff's)")
    p.add_argument("--server-lr", type=float, default=DEFAULTS.server_lr)
    p.add_argument("--server-momentum", type=float, default=DEFAULTS.server_momentum)
    p.add_argument("--staleness-power", type=float, default=DEFAULTS.staleness_power,
                   help="weight (1 + staleness)^-P (0.5: 1/sqrt)")
    p.add_argument("--max-staleness", type=int, default=DEFAULTS.max_staleness)
    p.add_argument("--deadline", type=float, default=120.0, help="synchronous round deadline, simulated s")
    p.add_argument("--quorum", type=float, default=0.8)
    p.add_argument("--slow-fraction", type=float, default=0.3)
    p.add_argument("--slow-factor", type=float, default=5.0, help="how many times longer a slow device takes")
    p.add_argument("--base-seconds", type=float, default=10.0, help="a fast device's round time, simulated s")
    p.add_argument("--cap", type=float, default=1.0, help="FedBuff stops at this multiple of the synchronous "
                                                          "run's wall time unless it held the target earlier "
                                                          "(default 1)")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="combine the runs of results files made with the same "
                                                              "settings (e.g. one seed each, run in parallel)")
    p.add_argument("--quick", action="store_true", help="4 rounds of 1 local epoch (make bench QUICK=1)")
    p.add_argument("--json", default="bench/results/fedbuff.json")
    p.set_defaults(func=cmd_fedbuff_bench)
