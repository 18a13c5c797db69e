"""`pulsewire selection-fairness`: every selection policy on the simulator's device population for a number
of rounds: how often each device is chosen (Jain's index, never chosen, min/max) and what the chosen
devices look like (mean battery, reliability, share charging). Battery, links and reliability are static
(reliability drawn per device from the seed); Oort's inputs evolve as in a real run: a device's statistical
utility is unknown until it first takes part, then measured as its base utility (drawn per device) times
0.85 per participation (its loss falls as the model learns its data), and its last selected round is kept."""
from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import replace
from pathlib import Path

from tools.fleet_sim.device import SimDevice
from training.federated.selection import POLICIES, DeviceStatus, fairness_report, make_policy


def population(devices: int, seed: int) -> list[DeviceStatus]:
    r = random.Random(seed)
    out = []
    for i in range(devices):
        dev = SimDevice.create(i, seed, slow_fraction=0.0)
        out.append(DeviceStatus.from_status(dev.name, dev.status(), reliability=r.betavariate(4, 1.5)))
    return out


def run_policy(name: str, statuses: list[DeviceStatus], k: int, rounds: int, seed: int) -> dict:
    policy = make_policy(name)
    by_name = {s.device: s for s in statuses}
    r = random.Random(seed)
    base = {s.device: r.lognormvariate(0, 0.5) for s in statuses}
    times: dict[str, int] = {}
    picks = []
    for rnd in range(1, rounds + 1):
        chosen = policy.select(list(by_name.values()), k, rnd, seed)
        picks.append(chosen)
        for d in chosen:  # what the round engine would record after the round
            times[d] = times.get(d, 0) + 1
            by_name[d] = replace(by_name[d], last_selected_round=rnd, statistical_utility=base[d] * 0.85 ** times[d])
    report = fairness_report(picks, [s.device for s in statuses])
    chosen = [by_name[d] for p in picks for d in p]
    return {"policy": name, "jain_index": round(report.jain_index, 4), "never_chosen": report.never_chosen,
            "min_count": report.min_count, "max_count": report.max_count,
            "eligible_devices": sum(1 for s in statuses if s.consent and s.online and policy.eligible(s)),
            "chosen_mean_battery_pct": round(sum(s.battery_pct for s in chosen) / len(chosen), 1),
            "chosen_share_charging": round(sum(s.charging for s in chosen) / len(chosen), 3),
            "chosen_mean_reliability": round(sum(s.reliability for s in chosen) / len(chosen), 3)}


def cmd_selection_fairness(args: argparse.Namespace) -> int:
    if args.devices < 1 or not 0 < args.k <= args.devices or args.rounds < 1:
        print("pulsewire selection-fairness: error: need --devices >= 1, 0 < --k <= --devices, --rounds >= 1",
              file=sys.stderr)
        return 2
    statuses = population(args.devices, args.seed)
    rows = [run_policy(name, statuses, args.k, args.rounds, args.seed) for name in sorted(POLICIES)]
    print("| policy | eligible | Jain | never chosen | min–max | chosen: battery % | charging | reliability |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['policy']} | {r['eligible_devices']} | {r['jain_index']} | {r['never_chosen']} | "
              f"{r['min_count']}–{r['max_count']} | {r['chosen_mean_battery_pct']} | {r['chosen_share_charging']} | "
              f"{r['chosen_mean_reliability']} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"devices": args.devices, "k": args.k, "rounds": args.rounds,
                                               "seed": args.seed, "policies": rows}, indent=2) + "\n")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("selection-fairness", help="compare the device selection policies on a simulated population",
                       description="Run every selection policy (training/federated/selection.py) for --rounds rounds "
                                   "choosing --k of --devices simulated devices; print fairness and what the "
                                   "chosen devices look like.")
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--k", type=int, default=100, help="devices per round")
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the table as JSON here")
    p.set_defaults(func=cmd_selection_fairness)
