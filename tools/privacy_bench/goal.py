"""The attack goal of the privacy bench (issue 16): at 30 % attackers the defence chosen on DS1 validation keeps
DS2 macro F1 within ``tolerance`` of clean FedAvg, on the means over seeds; with what was chosen, how, and the
per-seed values and spread behind the judgement."""
from __future__ import annotations

import math

from tools.privacy_bench.cells import paired_gap, seed_cells
from tools.privacy_bench.selection import RULE, defence_chosen_on_validation, ruled_out, validation_table

#: What ``met`` compares (the issue: "within 0.03 macro F1 of clean FedAvg", the defence chosen on validation).
MET_METRIC = ("DS2 macro F1 (the held-out test patients): the chosen defence's mean over the seeds under its worst "
              "attack minus clean FedAvg's mean over the same seeds; validation macro F1 (the selection metric) "
              "is reported beside it, not judged")


def goal(rows: list[dict], share: float = 0.3, tolerance: float = 0.03) -> dict:
    """The target judged on the means (``paired_gap``: over the seeds both ran), for the defence chosen on
    validation (``selection.RULE``), and as context per attack (the best defence on DS2, an oracle) and for the
    single defence whose worst DS2 attack is the least bad."""
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
    chosen = defence_chosen_on_validation(rows, share, attacks, list(worst), clean["seeds"])
    table = validation_table(rows, share, attacks, robust, clean["seeds"])
    out_by_bound = ruled_out(table, chosen)
    return {"share": share, "tolerance": tolerance, "judged": True, "clean_fedavg": clean,
            "selection_rule": RULE.format(share=share), "met_metric": MET_METRIC, "validation_by_defence": table,
            "ruled_out_by_bound": out_by_bound,
            "choice_settled": chosen is not None and all(v is True for v in out_by_bound.values()),
            "chosen_on_validation": chosen, "chosen_worst_gap": worst.get(chosen),
            "holds_with_validation_choice": chosen is not None and worst[chosen] >= -tolerance,
            **(_chosen_detail(rows, cells, clean, chosen, attacks, share, tolerance) if chosen else {}),
            "per_attack": {a: {"best_defence": d, "gap": g, "holds": g is not None and g >= -tolerance}
                           for a, (g, d) in per_attack.items()},
            "holds_per_attack": all(g is not None and g >= -tolerance for g, _ in per_attack.values()),
            "single_defence": single, "single_defence_worst_gap": worst.get(single),
            "holds_with_one_defence": single is not None and worst[single] >= -tolerance}


def _chosen_detail(rows: list[dict], cells: dict, clean: dict, chosen: str, attacks: list[str], share: float,
                   tolerance: float) -> dict:
    """The chosen defence's worst DS2 attack as per-seed values and spread against clean FedAvg's, each seed's
    gap, the same gap on validation, and by how much the target is missed (0 when met)."""
    gaps = {a: paired_gap(cells[(a, share, chosen)], clean) for a in attacks}
    attack = min(gaps, key=lambda a: gaps[a])
    cell = cells[(attack, share, chosen)]
    val = seed_cells([r for r in rows if r.get("best_val_macro_f1") is not None], ("attack", "share", "defence"),
                     "best_val_macro_f1")
    val_clean, val_cell = val.get(("none", 0.0, "fedavg")), val.get((attack, share, chosen))
    return {"chosen_worst_attack": attack, "chosen_worst_ds2": cell,
            "chosen_gap_by_seed": {s: cell["by_seed"][s] - clean["by_seed"][s] for s in cell["by_seed"]
                                   if s in clean["by_seed"]},
            "chosen_worst_val_gap": paired_gap(val_cell, val_clean) if val_cell and val_clean else None,
            "missed_by": max(0.0, -tolerance - gaps[attack])}
