"""A bench cell over seeds: the runs with the same settings, as mean, sample spread and each seed's value, and the
gap of two cells over the seeds both ran."""
from __future__ import annotations

import math


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
