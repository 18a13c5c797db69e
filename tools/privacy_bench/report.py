"""The privacy bench's report: cells as mean ± std over seeds, the attack goal judged on the means, and the
markdown tables."""
from __future__ import annotations

import math
from typing import Any

from tools.privacy_bench.settings import STAGES


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
    if results.get("targets"):
        from tools.privacy_bench.targets import targets_markdown

        out.append("## Targets\n")
        out += targets_markdown(results["targets"]) + [""]
    if results.get("dp"):
        out.append("## (a) DS2 macro F1 against ε (DP-FedAvg, every device every round)\n")
        out += _dp_table(results["dp"], len(seeds))
    if results.get("secagg"):
        out.append("\n## (b) Secure aggregation over Mosquitto against plain FedAvg (one round)\n")
        out.append("| devices | mode | dropped | kB up per device | kB down per device | "
                   "round seconds | aggregator unmask seconds | sum error (max abs) |")
        out.append("|---|---|---|---|---|---|---|---|")
        for r in (r for r in results["secagg"] if not r.get("key", "").startswith("secagg-fleet/")):
            dropped = f"{r['dropped']} ({r['drop_mode']} input)" if r["dropped"] else "0"
            out.append(f"| {r['devices']} | {r['mode']} | {dropped} | {_f(r['kb_up_per_device'], 1)} | "
                       f"{_f(r['kb_down_per_device'], 1)} | {_f(r['round_seconds'], 2)} | "
                       f"{_f(r.get('unmask_seconds'), 3)} | {r['max_abs_error']:.1e} |")
        out += _fleet_table([r for r in results["secagg"] if r.get("key", "").startswith("secagg-fleet/")])
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
            seed = k.split("/")[0] if k.startswith("s") and not k.startswith("secagg") else "no seed"
            groups.setdefault(seed, {}).setdefault(stage, 0)
            groups[seed][stage] += 1
        out.append(f"\nNot run (the bench stopped before them, or they were not asked for; fewer seeds in the cells "
                   f"above): {len(missing)} runs, listed in the JSON's `missing_runs`: "
                   + "; ".join(f"{seed}: " + ", ".join(f"{stage} ({n})" for stage, n in by.items())
                               for seed, by in groups.items()) + ".\n")
    return "\n".join(out) + "\n"


def _fleet_table(rows: list[dict]) -> list[str]:
    """Rounds of simulated devices running the real client (``tools.fleet_sim.secagg_devices``)."""
    if not rows:
        return []
    intro = ("\nAt fleet scale (simulated devices on asyncio MQTT connections, the real secure-aggregation client; "
             "plain and SecAgg+ back to back, repeat by repeat). Round s is wall time on the shared bench machine, "
             "where every simulated device's cryptography queues for its 2 cores; the round-time target is judged "
             "on the critical path instead: aggregator CPU + Mosquitto CPU + per step the slowest device's own CPU "
             "(devices in parallel, as deployed; the JSON's `critical_path_method` says exactly how):\n")
    header = ("| devices | mode | repeat | dropped after input | k / t | kB up per device | kB down per device | "
              "round s (wall) | critical path s | slowest device CPU s | aggregator CPU s | simulated devices' CPU s | "
              "Mosquitto CPU s | last input → sum s (aggregator CPU s) | unmask s | sum error (max abs) |")
    out = [intro, header, "|" + "---|" * 16]
    for r in rows:
        if r.get("error"):
            out.append(f"| {r['devices']} | {r['mode']} | {r.get('repeat', 0)} | {r['dropped']} | failed: "
                       f"{r['error']} |" + " |" * 11)
            continue
        kt = f"{r['degree']} / {r['threshold']}" if r.get("degree") else "–"
        out.append(f"| {r['devices']} | {r['mode']} | {r.get('repeat', 0)} | {r['dropped']} | {kt} | "
                   f"{_f(r['kb_up_per_device'], 1)} | {_f(r['kb_down_per_device'], 1)} | {_f(r['round_seconds'], 1)} | "
                   f"{_f(r.get('critical_path_seconds'), 2)} | {_f(r.get('slowest_device_cpu_seconds'), 3)} | "
                   f"{_f(r['aggregator_cpu_seconds'], 2)} | {_f(r['simulation'].get('cpu_seconds'), 1)} | "
                   f"{_f(r.get('broker_cpu_seconds'), 2)} | {_after_input(r)} | "
                   f"{_f(r.get('unmask_seconds'), 2)} | {r['max_abs_error']:.1e} |")
    return out


def _after_input(r: dict) -> str:
    """From the last masked input to the decoded sum: wall seconds (aggregator CPU seconds); – without it."""
    if r.get("last_input_to_sum_seconds") is None:
        return "–"
    return f"{_f(r['last_input_to_sum_seconds'], 1)} ({_f(r.get('aggregator_cpu_after_last_input_seconds'), 2)})"


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
