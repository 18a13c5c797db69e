"""The privacy bench's report: cells as mean ± std over seeds, the attack goal judged on the means, and the
markdown tables."""
from __future__ import annotations

import math
from typing import Any

from tools.privacy_bench.cells import paired_gap, seed_cells
from tools.privacy_bench.goal import goal
from tools.privacy_bench.settings import STAGES

__all__ = ["goal", "markdown", "seed_cells"]


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return "∞" if math.isinf(x) else f"{x:.{digits}f}"
    return str(x)


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
        if len(seeds) > 1:
            out += _goal_text(results["attacks"], len(seeds))
        if any(r.get("best_val_macro_f1") is not None for r in results["attacks"]):
            out.append("\n## (c') The same runs: best-round validation macro F1 (held-out DS1 patients; the "
                       "selection metric)\n")
            out += _attack_table([r for r in results["attacks"] if r.get("best_val_macro_f1") is not None],
                                 len(seeds), "best_val_macro_f1")
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
              "Mosquitto CPU s | last input → sum s (aggregator CPU s) | unmask s | sum error (max abs) | "
              "machine load (1 min, start → end) |")
    out = [intro, header, "|" + "---|" * 17]
    for r in rows:
        if r.get("error"):
            out.append(f"| {r['devices']} | {r['mode']} | {r.get('repeat', 0)} | {r['dropped']} | failed: "
                       f"{r['error']} |" + " |" * 12)
            continue
        kt = f"{r['degree']} / {r['threshold']}" if r.get("degree") else "–"
        out.append(f"| {r['devices']} | {r['mode']} | {r.get('repeat', 0)} | {r['dropped']} | {kt} | "
                   f"{_f(r['kb_up_per_device'], 1)} | {_f(r['kb_down_per_device'], 1)} | {_f(r['round_seconds'], 1)} | "
                   f"{_f(r.get('critical_path_seconds'), 2)} | {_f(r.get('slowest_device_cpu_seconds'), 3)} | "
                   f"{_f(r['aggregator_cpu_seconds'], 2)} | {_f(r['simulation'].get('cpu_seconds'), 1)} | "
                   f"{_f(r.get('broker_cpu_seconds'), 2)} | {_after_input(r)} | "
                   f"{_f(r.get('unmask_seconds'), 2)} | {r['max_abs_error']:.1e} | {_load(r)} |")
    return out


def _load(r: dict) -> str:
    """The machine's 1-minute load average when the round started and ended (rows from before session 8: –)."""
    load = r.get("load_average")
    return f"{load['start'][0]:.1f} → {load['end'][0]:.1f} on {load['cores']} cores" if load else "–"


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


def _attack_table(rows: list[dict], asked: int, field: str = "ds2_macro_f1") -> list[str]:
    """Attack x share rows, a column per defence: ``field``'s mean ± std over seeds, and the best robust
    defence's gap to clean FedAvg."""
    names = list(dict.fromkeys(r["defence"] for r in rows))
    gap_title = "best robust defence − clean FedAvg" + (" (means, same seeds)" if asked > 1 else "")
    out = ["| attack | share (attackers) | " + " | ".join(names) + f" | {gap_title} |",
           "|---|---|" + "---|" * (len(names) + 1)]
    cells = seed_cells(rows, ("attack", "share", "defence"), field)
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
    return out


def _goal_text(rows: list[dict], asked: int) -> list[str]:
    """The goal in words: per attack, one defence, and the defence chosen on validation with its per-seed values."""
    g = goal(rows)
    if not g["judged"]:
        return []
    per = "; ".join(f"{a}: {v['best_defence']} {_f(v['gap'])}" for a, v in g["per_attack"].items())
    out = [(f"\nGoal (at {g['share']:.0%} attackers the defence keeps DS2 macro F1 within {g['tolerance']} of the "
           f"clean FedAvg run, on the means; clean FedAvg {_ms(g['clean_fedavg'], asked)}): best defence per attack "
           f"on DS2 (an oracle), mean − clean mean: {per}; it {'holds' if g['holds_per_attack'] else 'fails'} that "
           f"way. With one defence against every attack ({g['single_defence']}, worst "
           f"{_f(g['single_defence_worst_gap'])}) it {'holds' if g['holds_with_one_defence'] else 'fails'}.")]
    chosen = g.get("chosen_on_validation")
    if not chosen:
        return out + ["\nNo defence ran under every attack on every seed: none chosen on validation."]
    cell, clean = g["chosen_worst_ds2"], g["clean_fedavg"]
    seeds = ", ".join(f"seed {s}: {_f(cell['by_seed'][s])} vs {_f(clean['by_seed'][s])} ({_f(gap)})"
                      for s, gap in g["chosen_gap_by_seed"].items())
    out.append(f"\n**Chosen on DS1 validation: {chosen}** (rule: {g['selection_rule']}). Its worst attack on DS2 is "
               f"{g['chosen_worst_attack']}: {_ms(cell, asked)} against clean FedAvg's {_ms(clean, asked)}, mean gap "
               f"{_f(g['chosen_worst_gap'])} ({seeds}); validation gap on the same attack "
               f"{_f(g['chosen_worst_val_gap'])}. `met` uses {g['met_metric']}: the goal "
               + ("holds." if g["holds_with_validation_choice"] else f"fails, missed by {_f(g['missed_by'])}."))
    table, bound = g["validation_by_defence"], g["ruled_out_by_bound"]
    out.append("\n| defence | ran every attack × seed | worst attack on validation | its mean validation macro F1 "
               "| otherwise: lowest mean of the attacks run on every seed (bound) | ruled out |")
    out.append("|---|---|---|---|---|---|")
    out += [f"| {d}{' (chosen)' if d == chosen else ''} | {'yes' if t['complete'] else 'no'} | "
            f"{t['worst_attack'] or '–'} | {_f(t['worst_val_mean'])} | "
            f"{'–' if t['complete'] else _f(t['bound_on_worst'])} | "
            f"{'–' if t['complete'] else {True: 'yes', False: 'no', None: 'not run'}[bound.get(d)]} |"
            for d, t in table.items()]
    out.append(f"\nThe choice is {'settled' if g['choice_settled'] else 'not settled'}: "
               + ("every defence that did not compete is ruled out by its bound." if g["choice_settled"] else
                  "a defence that did not run under every attack on every seed is not ruled out."))
    return out
