"""The defence a deployment could choose without the test set: picked on DS1 validation (held-out DS1 patients),
by a rule fixed before the runs and written into the results, never on DS2."""
from __future__ import annotations

from tools.privacy_bench.cells import seed_cells

RULE = ("at {share:.0%} attackers, among the robust defences (each with the hyper-parameters set in "
        "tools/privacy_bench/settings.defences: trimmed mean β = 0.3, Multi-Krum f = round(0.3 n) averaging the "
        "n − f best, norm bound and cosine filter at the round's median norm, cosine filter keeping n − f, ranked "
        "by this round's cosine or by each device's trust with memory 0.9) that ran "
        "under every attack on every seed of clean FedAvg, choose the one whose worst attack has the highest mean "
        "over the seeds of the best-round validation macro F1 (held-out DS1 patients); DS2 is never read. A "
        "defence run under only some attacks (on every seed) is ruled out when the lowest of those means, an "
        "upper bound on its worst attack's, is below the chosen defence's worst; the choice is settled when "
        "every defence that did not compete is ruled out")


def validation_table(rows: list[dict], share: float, attacks: list[str], defences: list[str],
                     seeds: list[int]) -> dict[str, dict]:
    """Per defence: each attack's mean validation macro F1 over the seeds it ran, whether it ran every attack on
    every one of ``seeds`` (only those compete), and its worst attack's mean."""
    val = seed_cells([r for r in rows if r.get("best_val_macro_f1") is not None], ("attack", "share", "defence"),
                     "best_val_macro_f1")
    table = {}
    for d in defences:
        cells = {a: val.get((a, share, d)) for a in attacks}
        complete = all(c is not None and set(seeds) <= set(c["seeds"]) for c in cells.values())
        means = {a: (c["mean"] if c else None) for a, c in cells.items()}
        worst = min(means, key=lambda a: means[a]) if complete else None
        full = [means[a] for a, c in cells.items() if c is not None and set(seeds) <= set(c["seeds"])]
        table[d] = {"complete": complete, "val_mean_by_attack": means, "worst_attack": worst,
                    "worst_val_mean": means[worst] if worst else None,
                    "bound_on_worst": min(full) if full else None}
    return table


def ruled_out(table: dict[str, dict], chosen: str | None) -> dict[str, bool | None]:
    """Per defence that did not compete: True when its bound is below the chosen defence's worst (it could not
    have been chosen), False when it could have been (the choice is not settled), None when it has no bound."""
    if chosen is None:
        return {}
    best = table[chosen]["worst_val_mean"]
    return {d: (None if t["bound_on_worst"] is None else t["bound_on_worst"] < best)
            for d, t in table.items() if not t["complete"]}


def defence_chosen_on_validation(rows: list[dict], share: float, attacks: list[str], defences: list[str],
                                 seeds: list[int] | None = None) -> str | None:
    """``RULE``: the complete defence with the highest worst-attack mean validation macro F1 (ties: the first in
    ``defences``). The per-attack best on DS2 is an oracle; this is not."""
    seeds = seeds if seeds is not None else sorted({r["seed"] for r in rows if "seed" in r})
    table = validation_table(rows, share, attacks, defences, seeds)
    complete = [d for d in defences if table[d]["complete"]]
    return max(complete, key=lambda d: table[d]["worst_val_mean"]) if complete else None
