"""Bench of the tabular task: four hospitals, four strategies, record-level DP at ε = 1, the privacy ledger.

Per seed, on the fixed test split (20 % of patients, never used to choose anything): centralized training (the
reference), FedAvg / FedProx / SCAFFOLD / FedNova on the "hospitals" (35/25/22/18 %, stratified) and
"hospitals-skewed" (same sizes, dealt out by label) partitions, and FedAvg with DP-SGD inside every hospital at
ε = 1, δ = 1e-6 (σ calibrated with dp-accounting's RDP accountant for the steps every hospital runs). Rounds are
selected on the validation patients (a held-out share inside each hospital). The DP models are also exported to
int8 and scored by the edge-side interpreter. Writes tabular.md/.html (strategy table, ledger, consent).
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

log = logging.getLogger("pulsewire.bench.tabular")

DELTA, EPSILON = 1e-6, 1.0
STRATEGIES = {"fedavg": {}, "fedprox": {"proximal_mu": 0.01}, "scaffold": {}, "fednova": {}}
PARTITIONS = ("hospitals", "hospitals-skewed")
ROUNDS, DP_ROUNDS = 30, 10
#: Chosen on the validation patients (docs/tasks.md): plain SGD for the strategy table; for DP-SGD a small clip
#: (most per-record gradients are clipped, so the signal keeps its size while the noise is σ·C) and a large step.
LOCAL = {"epochs": 1, "batch_size": 16, "learning_rate": 0.1}
DP_LOCAL = {"epochs": 1, "learning_rate": 10.0, "dpsgd_clip": 0.1, "dpsgd_rate": 0.1}
#: Each hospital's consent, as its data-use agreement states it (the scenario's input, shown in the report):
#: training on its records for this model, only under record-level DP within this budget.
CONSENT = {h: {"training": True, "purpose": "breast-cancer diagnosis model", "record_level_dp": True,
               "max_epsilon": EPSILON, "delta": DELTA} for h in ("H1", "H2", "H3", "H4")}


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def run(seeds: list[int], quick: bool, out_dir: Path) -> dict:
    from training.federated.dpsgd import calibrate_noise, ledger
    from training.federated.local_training import LocalConfig
    from training.federated.simulation import FederatedConfig
    from training.tasks.fit import fit_task
    from training.tasks.federated import run_task_federated
    from training.tasks.tabular import TabularTask

    out_dir = Path(out_dir)
    task = TabularTask()
    train, val, test = (task.load(s) for s in ("train", "val", "test"))
    rounds, dp_rounds = (5, 3) if quick else (ROUNDS, DP_ROUNDS)
    seeds = seeds[:1] if quick else seeds
    results: dict = {"splits": {"train": len(train), "val": len(val), "test": len(test)},
                     "hospitals": {p: [int(len(d)) for d in task.partition(train, p, 0)] for p in PARTITIONS}}

    central = []
    for seed in seeds:
        m = fit_task(task, train, val, epochs=10 if quick else 100, batch_size=32, learning_rate=1e-3, seed=seed)
        central.append({"seed": seed, "best_epoch": m.best_epoch, **m.evaluate(test)})
    results["centralized"] = {"runs": central, "accuracy": _mean_std([r["accuracy"] for r in central])}

    table: dict = {}
    for partition in PARTITIONS:
        for strategy, args in STRATEGIES.items():
            runs = []
            for seed in seeds:
                fed = FederatedConfig(rounds=rounds, strategy=strategy, strategy_args=args, partition=partition,
                                      seed=seed, local=LocalConfig(**LOCAL))
                m = run_task_federated(task, train, val, fed)
                runs.append({"seed": seed, "best_round": m.best_epoch, **m.evaluate(test)})
                log.info("%s %s seed %d: test accuracy %.4f", partition, strategy, seed, runs[-1]["accuracy"])
            table.setdefault(partition, {})[strategy] = {"runs": runs,
                                                        "accuracy": _mean_std([r["accuracy"] for r in runs])}
    results["strategies"] = table

    base = LocalConfig(**DP_LOCAL)
    steps = dp_rounds * base.epochs * base.dpsgd_steps_per_epoch
    sigma = calibrate_noise(EPSILON, DELTA, base.dpsgd_rate, steps)
    dp_local = replace(base, dpsgd_noise=sigma)
    dp_runs, ledgers = [], {}
    for seed in seeds:
        fed = FederatedConfig(rounds=dp_rounds, partition="hospitals", seed=seed, local=dp_local)
        m = run_task_federated(task, train, val, fed)
        # devices are the partition's hospitals in order (dev000 = H1, ...): every one is selected every round
        records = {f"H{k + 1}": n for k, n in enumerate(m.info["device_rows"].values())}
        rows = ledger({h: len(m.history) for h in records}, records, dp_local, DELTA)
        ledgers[seed] = [asdict(r) for r in rows]
        int8 = _int8_accuracy(task, m, train, test, out_dir / f"dp_seed{seed}", seed)
        dp_runs.append({"seed": seed, "best_round": m.best_epoch, **m.evaluate(test), "int8_accuracy": int8})
        log.info("DP-SGD seed %d: test accuracy %.4f (int8 %.4f), ε %s", seed, dp_runs[-1]["accuracy"], int8,
                 {r.device: round(r.epsilon_rdp, 3) for r in rows})
    results["dp"] = {"epsilon_target": EPSILON, "delta": DELTA, "noise_multiplier": sigma, "steps": steps,
                     "local": asdict(dp_local), "rounds": dp_rounds, "runs": dp_runs, "ledger": ledgers,
                     "accuracy": _mean_std([r["accuracy"] for r in dp_runs]),
                     "int8_accuracy": _mean_std([r["int8_accuracy"] for r in dp_runs])}
    results["consent"] = CONSENT
    results["compliance"] = _compliance(ledgers, CONSENT)

    headline = table["hospitals"]["fedavg"]["accuracy"]["mean"]
    dp_acc = results["dp"]["accuracy"]["mean"]
    targets = [
        {"target": "tabular test accuracy without DP (FedAvg, 4 hospitals)", "mean": headline, "threshold": 0.96,
         "met": headline >= 0.96},
        {"target": "tabular test accuracy at ε=1, δ=1e-6 (DP-SGD per hospital)", "mean": dp_acc, "threshold": 0.93,
         "met": dp_acc >= 0.93},
        {"target": "every hospital's ε within its consent", "mean": max(r["epsilon_rdp"] for rows in ledgers.values()
                                                                         for r in rows),
         "threshold": EPSILON, "met": all(c["within_consent"] for c in results["compliance"])},
    ]
    out = {"task": "tabular", "seeds": list(seeds), "quick": quick,
           "settings": {"rounds": rounds, "local": LOCAL, "strategies": STRATEGIES, "partitions": PARTITIONS},
           "results": results, "targets": targets}
    _write_report(out, out_dir)
    return out


def _int8_accuracy(task, trained, train, test, folder: Path, seed: int) -> float:
    from edge_runtime.task_model import TaskInterpreter
    from training.tasks.export import export_task

    exported = export_task(trained, train, folder, "int8", seed)
    return float(task.evaluate(TaskInterpreter.from_file(exported.tflite_path).predict, test)["accuracy"])


def _compliance(ledgers: dict, consent: dict) -> list[dict]:
    """Per hospital: the largest ε any seed's run spent against what the hospital consented to."""
    rows = []
    for hospital, terms in sorted(consent.items()):
        spent = max(r["epsilon_rdp"] for rows_ in ledgers.values() for r in rows_ if r["device"] == hospital)
        rows.append({"hospital": hospital, "consented": terms["training"], "max_epsilon": terms["max_epsilon"],
                     "delta": terms["delta"], "epsilon_spent_rdp": spent,
                     "within_consent": bool(terms["training"] and spent <= terms["max_epsilon"])})
    return rows


def report_markdown(out: dict) -> str:
    r = out["results"]
    fmt = lambda s: f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"  # noqa: E731
    lines = ["# Tabular task: breast cancer across four hospitals", "",
             f"Seeds {out['seeds']}; test split {r['splits']['test']} patients (fixed, never used to choose); "
             f"rounds selected on {r['splits']['val']} validation patients (a held-out share of each hospital). "
             f"Hospital sizes (training patients): {r['hospitals']}.", "",
             "## Strategies (test accuracy %, mean ± std over seeds)", "",
             "| strategy | " + " | ".join(PARTITIONS) + " |", "|---|" + "---:|" * len(PARTITIONS)]
    for strategy in STRATEGIES:
        lines.append(f"| {strategy} | " + " | ".join(fmt(r["strategies"][p][strategy]["accuracy"]) for p in PARTITIONS)
                     + " |")
    dp = r["dp"]
    lines += [f"| centralized (all training patients, Adam) | {fmt(r['centralized']['accuracy'])} | |",
              f"| FedAvg + DP-SGD per hospital, ε={dp['epsilon_target']:g}, δ={dp['delta']:g} | "
              f"{fmt(dp['accuracy'])} (int8 {fmt(dp['int8_accuracy'])}) | |", "",
              "## Privacy ledger (record-level, per hospital)", "",
              f"DP-SGD inside each hospital: per-record clip C = {dp['local']['dpsgd_clip']}, Poisson sampling "
              f"q = {dp['local']['dpsgd_rate']}, noise multiplier σ = {dp['noise_multiplier']:.3f} calibrated so "
              f"that {dp['steps']} steps ({dp['rounds']} rounds) cost ε ≤ {dp['epsilon_target']:g} at "
              f"δ = {dp['delta']:g} (dp-accounting RDP; PLD shown as the tighter value).", "",
              "| seed | hospital | records | rounds | steps | σ | q | ε (RDP) | ε (PLD) | δ |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for seed, rows in dp["ledger"].items():
        for x in rows:
            lines.append(f"| {seed} | {x['device']} | {x['records']} | {x['rounds']} | {x['steps']} | "
                         f"{x['noise_multiplier']:.3f} | {x['sampling_rate']:g} | {x['epsilon_rdp']:.3f} | "
                         f"{x['epsilon_pld']:.3f} | {x['delta']:g} |")
    lines += ["", "## Consent", "",
              "| hospital | consented to training | purpose | record-level DP | max ε | ε spent (max over seeds) | "
              "within consent |", "|---|---|---|---|---:|---:|---|"]
    for c in r["compliance"]:
        terms = r["consent"][c["hospital"]]
        lines.append(f"| {c['hospital']} | {'yes' if c['consented'] else 'no'} | {terms['purpose']} | "
                     f"{'required' if terms['record_level_dp'] else 'no'} | {c['max_epsilon']:g} | "
                     f"{c['epsilon_spent_rdp']:.3f} | {'yes' if c['within_consent'] else 'NO'} |")
    lines += ["", "What ε does not cover: the choice of round on the validation patients (they do not train) and "
              "each hospital's record count (its FedAvg weight).", "", "## Targets", "",
              "| target | mean | threshold | met |", "|---|---:|---:|---|"]
    lines += [f"| {t['target']} | {t['mean']:.4f} | {t['threshold']} | {'yes' if t['met'] else 'NO'} |"
              for t in out["targets"]]
    return "\n".join(lines) + "\n"


def _write_report(out: dict, out_dir: Path) -> None:
    from server.render import render_report

    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = report_markdown(out)
    (out_dir / "tabular.md").write_text(markdown)
    (out_dir / "tabular.html").write_text(render_report(markdown, "pulsewire: tabular task"))
    (out_dir / "tabular.json").write_text(json.dumps(out, indent=1, default=float) + "\n")
