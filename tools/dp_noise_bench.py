"""`pulsewire dp-noise-bench`: what the secure DP noise source costs, per million Gaussian draws, against numpy.

Why: every deployed DP draw now goes through ChaCha20 (``edge_runtime.dp_noise``); the question is whether a
round of 1,000 devices × ~5k parameters (5 M draws if one machine simulated the whole fleet; 5 k per device in
reality) stays cheap next to a round's training and deadline. CPU seconds are measured (the machine is shared,
so wall time would measure the neighbours), and the JSON carries the usual ``targets`` list.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Callable

#: A round of the issue's fleet: 1,000 devices, ~5k parameters each (the classifier has 4,757).
DEVICES, PARAMETERS = 1000, 5000
#: The secure source must draw a whole simulated round's noise (5 M Gaussians) within this many CPU seconds.
ROUND_THRESHOLD_S = 5.0


def _cpu_seconds(draw: Callable[[int], object], n: int) -> float:
    started = time.process_time()
    draw(n)
    return time.process_time() - started


def measure(repeats: int, draws: int) -> dict[str, dict]:
    """CPU seconds per ``draws`` N(0, 1) draws, over ``repeats`` fresh sources of each kind."""
    from edge_runtime.dp_noise import make_noise

    out = {}
    for name, seed in (("secure", None), ("seeded", 0)):
        times = [_cpu_seconds(partial(make_noise(name, seed).normal, 0.0, 1.0), draws) for _ in range(repeats)]
        per_million = [t * 1e6 / draws for t in times]
        out[name] = {"cpu_s_per_million": statistics.mean(per_million),
                     "std": statistics.stdev(per_million) if repeats > 1 else None, "runs": per_million}
    return out


def targets(rows: dict[str, dict]) -> list[dict]:
    round_s = rows["secure"]["cpu_s_per_million"] * DEVICES * PARAMETERS / 1e6
    return [{"target": f"secure DP noise for one round of {DEVICES} devices x {PARAMETERS} parameters, CPU s",
             "mean": round(round_s, 4), "threshold": ROUND_THRESHOLD_S, "met": round_s <= ROUND_THRESHOLD_S}]


def run(args: argparse.Namespace) -> int:
    if args.draws < 1 or args.repeats < 1:
        raise ValueError("--draws and --repeats must be >= 1")
    rows = measure(args.repeats, args.draws)
    results = {"bench": "dp-noise", "draws": args.draws, "repeats": args.repeats, "rows": rows,
               "secure_over_seeded": rows["secure"]["cpu_s_per_million"] / rows["seeded"]["cpu_s_per_million"],
               "targets": targets(rows)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    for name, row in rows.items():
        print(f"{name}: {row['cpu_s_per_million']:.3f} CPU s per 1M Gaussian draws")
    for t in results["targets"]:
        print(f"{t['target']}: {t['mean']} (threshold {t['threshold']}) {'met' if t['met'] else 'MISSED'}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("dp-noise-bench", help="CPU cost of the secure (ChaCha20) DP noise source per 1M draws",
                       description="Gaussian draws from the secure source (ChaCha20 keystream, Box-Muller) and the "
                                   "seeded one (numpy PCG64), CPU seconds per million, and the cost of one round "
                                   "of 1,000 devices x 5k parameters.")
    p.add_argument("--draws", type=int, default=1_000_000, help="draws per measurement (default 1,000,000)")
    p.add_argument("--repeats", type=int, default=5, help="measurements per source (default 5)")
    p.add_argument("--json", default="out/dp-noise.json", help="results JSON (default out/dp-noise.json)")
    p.set_defaults(func=run)
