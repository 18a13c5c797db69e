"""The privacy bench's parts (the ε sweep, attack x defence, secure-aggregation overhead, the accountant), run
stage by stage over the seeds into one results dict."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable

from tools.privacy_bench.report import goal
from tools.privacy_bench.settings import DELTA, STAGES, Allow, BenchSettings, defences, noise_for_epsilon
from tools.privacy_bench.simulator import Checkpoint, Simulator, load_inter

log = logging.getLogger(__name__)


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
    from tools.secagg_overhead import measure_fleet, measure_overhead

    rows = []
    for n in s.secagg_devices:
        for mode, drop, how in (("plain", 0.0, "after"), ("secagg", 0.0, "after"), ("secagg", 0.3, "after"),
                                ("secagg", 0.3, "before"), ("secagg+", 0.3, "after")):
            key = f"secagg/{n}/{mode}/{drop:g}/{how}"
            run = ck.get_or_run(key, lambda: measure_overhead(n, mode, drop, how), allow(key))
            if run is not None:
                rows.append({"key": key, **run})
    for n in s.secagg_fleet_devices:  # plain first, then SecAgg+, back to back: the same machine load
        for repeat in range(s.secagg_fleet_repeats):
            for mode, drop in (("plain", 0.0), ("secagg+", 0.3)):
                key = f"secagg-fleet/{n}/{mode}/{drop:g}" + (f"/r{repeat}" if repeat else "")
                run = ck.get_or_run(key, lambda: measure_fleet(n, mode, drop), allow(key))
                if run is not None:
                    rows.append({"key": key, "repeat": repeat, **run})
    return rows


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
