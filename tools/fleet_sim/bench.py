"""`pulsewire scale-bench`: the scale section of `make bench`. N simulated devices held on one Mosquitto
(started here) with a status every 60 s, alerts and transport rounds; targets, the full report and the
million-device projection -> bench/results/scale.json + .md."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tools.fleet_sim.cli import add_sim_args, run_simulation, summary_lines
from tools.fleet_sim.projection import project, projection_markdown


def scale_targets(report: dict) -> list[dict]:
    """{target, mean, threshold, met}: ``mean`` is the one measured value of this run."""
    cfg, d, a = report["config"], report["devices"], report["alerts"]
    rounds = report["rounds"]
    delivered = min((r["updates_seen"] for r in rounds.values()), default=None)
    res = report["resources"]
    broker = res["per_process"].get("broker", {})
    return [
        {"target": f"{cfg['devices']} devices connected to one Mosquitto, held for {cfg['duration_s']:.0f} s "
                   "(fewest connected after the ramp)",
         "mean": d["min_connected_while_held"], "threshold": f">= {cfg['devices']}",
         "met": d["min_connected_while_held"] is not None and d["min_connected_while_held"] >= cfg["devices"]},
        {"target": "alerts lost (acknowledged by the broker, never seen by the subscriber)", "mean": a["lost"],
         "threshold": "== 0 (with >= 1 alert sent)", "met": a["lost"] == 0 and a["acked"] > 0},
        {"target": f"transport rounds: fewest updates delivered in a round of {cfg['round_devices']} selected devices",
         "mean": delivered, "threshold": f">= {cfg['round_devices']}",
         "met": None if delivered is None else delivered >= cfg["round_devices"]},
        {"target": "messages/s acknowledged by the broker (reported)", "mean": report["messages"]["acked_per_s"],
         "threshold": "reported", "met": None},
        {"target": "simulator workers: CPU % of one core (reported)", "mean": res["workers_cpu_percent_of_one_core"],
         "threshold": "reported", "met": None},
        {"target": "simulator workers: peak RSS MiB, summed (reported)", "mean": res["workers_peak_rss_mib"],
         "threshold": "reported", "met": None},
        {"target": "Mosquitto peak RSS MiB (reported)", "mean": broker.get("peak_rss_mib"), "threshold": "reported",
         "met": None},
        {"target": "Mosquitto CPU % of one core (reported)", "mean": broker.get("cpu_percent_of_one_core"),
         "threshold": "reported", "met": None},
    ]


def targets_markdown(targets: list[dict]) -> str:
    lines = ["| target | measured | threshold | met |", "|---|---|---|---|"]
    for t in targets:
        measured = "–" if t["mean"] is None else f"{t['mean']:g}"
        met = {True: "yes", False: "**no**", None: "–"}[t["met"]]
        lines.append(f"| {t['target']} | {measured} | {t['threshold']} | {met} |")
    return "\n".join(lines)


def results_markdown(results: dict) -> str:
    report = results["report"]
    return "\n".join([f"# Scale bench\n\n`{results['command']}`\n", targets_markdown(results["targets"]), "",
                      *(f"- {line}" for line in summary_lines(report)), "", "## A million devices", "",
                      projection_markdown(results["projection"]), ""])


def cmd_scale_bench(args: argparse.Namespace) -> int:
    if args.quick:
        args.devices, args.duration = min(args.devices, 2000), min(args.duration, 120.0)
        args.round_devices = min(args.round_devices, 200)
        args.round_every = min(args.round_every, 40.0)
    try:
        report = run_simulation(args)
    except ValueError as exc:
        print(f"pulsewire scale-bench: error: {exc}", file=sys.stderr)
        return 2
    results = {"command": " ".join(["pulsewire"] + sys.argv[1:]), "targets": scale_targets(report),
               "projection": project(report), "report": report}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    md = results_markdown(results)
    out.with_suffix(".md").write_text(md)
    print(md)
    print(f"results: {out}\nreport:  {out.with_suffix('.md')}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("scale-bench", help="the scale bench: 10,000 simulated devices on one Mosquitto for 10 min",
                       description="Start a Mosquitto, hold --devices simulated devices on it (a status every "
                                   "--status-every s, alerts, a transport round of --round-devices int8 updates "
                                   "every --round-every s) and write targets, the full report and the projection "
                                   "for a million devices (docs/scale.md).")
    add_sim_args(p, devices=10000, duration=600.0)
    p.set_defaults(workers=4, alerts_per_second=20.0, round_every=120.0, round_devices=1000,
                   json="bench/results/scale.json")
    p.add_argument("--quick", action="store_true", help="2,000 devices for 2 minutes (make bench QUICK=1)")
    p.set_defaults(func=cmd_scale_bench)
